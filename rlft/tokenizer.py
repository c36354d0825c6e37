"""An offline CLIP BPE tokenizer for transformers, built from the vocabulary open_clip ships.

OpenAI's CLIP tokenizer (used by every SD 1.x text encoder) is a byte-level BPE with 49,408 ids:
256 byte symbols, the same 256 with an end-of-word marker, 48,894 merges, and two special tokens.
open_clip carries the merge list as `bpe_simple_vocab_16e6.txt.gz`; from it we write the `vocab.json`
and `merges.txt` that `transformers.CLIPTokenizer` reads, with no download.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from pathlib import Path

VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
N_MERGES = VOCAB_SIZE - 256 - 256 - 2  # 48,894


def _bpe_path() -> Path:
    import open_clip.tokenizer

    return Path(open_clip.tokenizer.default_bpe())


@functools.lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP's reversible byte -> printable character table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def vocab_and_merges(bpe_path: str | os.PathLike | None = None) -> tuple[dict[str, int], list[str]]:
    """The CLIP vocabulary (token -> id) and merge list, exactly as OpenAI's tokenizer builds them."""
    with gzip.open(bpe_path or _bpe_path(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1 : N_MERGES + 1]  # line 0 is a version header
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"CLIP BPE vocabulary has {len(vocab)} tokens, expected {VOCAB_SIZE}")
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_tokenizer_files(folder: str | os.PathLike) -> Path:
    """Write `vocab.json`, `merges.txt` and the special-token config that `CLIPTokenizer` loads from."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}), encoding="utf-8"
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "bos_token": BOS,
                "eos_token": EOS,
                "unk_token": EOS,
                "pad_token": EOS,  # SD 1.x convention: pad with <|endoftext|>
                "do_lower_case": True,
            }
        ),
        encoding="utf-8",
    )
    return folder


@functools.lru_cache(maxsize=1)
def _cached_dir() -> Path:
    import tempfile

    return write_tokenizer_files(Path(tempfile.mkdtemp(prefix="rlft-clip-tokenizer-")))


def clip_tokenizer(model_max_length: int = 77):
    """A `transformers.CLIPTokenizer` with OpenAI CLIP's 49,408 ids, built offline."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(_cached_dir()), model_max_length=model_max_length)
