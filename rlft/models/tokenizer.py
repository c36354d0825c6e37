"""An offline CLIP BPE tokenizer for transformers, built from the vocabulary open_clip ships.

OpenAI's CLIP tokenizer (used by every SD 1.x text encoder) is a byte-level BPE with 49,408 ids:
256 byte symbols, the same 256 with an end-of-word marker, 48,894 merges, and two special tokens.
open_clip carries the merge list as `bpe_simple_vocab_16e6.txt.gz`; from it we build the vocabulary
and merges that `transformers.CLIPTokenizer` takes, with no download.

transformers 5's `CLIPTokenizer` runs only NFC + whitespace + lowercase, while OpenAI's and open_clip's
tokenizers first run `ftfy.fix_text` and HTML unescaping, so curly quotes, ligatures or `&amp;` got other
ids than the text encoder was trained on. `FtfyCLIPTokenizer` adds that cleaning in front; it saves as a
plain `CLIPTokenizer` (so a saved pipeline folder loads in stock diffusers), and `use_ftfy_tokenizer`
puts it into a loaded pipeline.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import json
import os
from pathlib import Path

import ftfy
from transformers import CLIPTokenizer

VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
N_MERGES = VOCAB_SIZE - 256 - 256 - 2  # 48,894
MAX_LENGTH = 77  # CLIP's context length: 75 tokens plus BOS and EOS


def _bpe_path() -> Path:
    # Located without importing open_clip, which would pull in torch and cost ~1 s.
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed; it ships the CLIP BPE vocabulary")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


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
    return dict(zip(bs, (chr(c) for c in cs), strict=False))


@functools.lru_cache(maxsize=1)
def _vocab_and_merges_cached() -> tuple[dict[str, int], list[str]]:
    return _read_vocab_and_merges(_bpe_path())


def _read_vocab_and_merges(bpe_path) -> tuple[dict[str, int], list[str]]:
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1 : N_MERGES + 1]  # line 0 is a version header
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"CLIP BPE vocabulary has {len(vocab)} tokens, expected {VOCAB_SIZE}")
    return {tok: i for i, tok in enumerate(vocab)}, merges


def vocab_and_merges(bpe_path: str | os.PathLike | None = None) -> tuple[dict[str, int], list[str]]:
    """The CLIP vocabulary (token -> id) and merge list, exactly as OpenAI's tokenizer builds them."""
    if bpe_path is not None:
        return _read_vocab_and_merges(bpe_path)
    vocab, merges = _vocab_and_merges_cached()
    return dict(vocab), list(merges)


def clean_text(text: str) -> str:
    """OpenAI CLIP's text cleaning (open_clip's default `lower`): ftfy, HTML unescape, whitespace, lowercase."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class FtfyCLIPTokenizer(CLIPTokenizer):
    """A `CLIPTokenizer` that cleans text as OpenAI CLIP and open_clip do before encoding.

    Saved folders name the plain `CLIPTokenizer` class, so they load anywhere; the cleaning is added back
    by loading through `rlft.load_pipeline` (or `use_ftfy_tokenizer`).
    """

    def _encode_plus(self, text, text_pair=None, *args, is_split_into_words: bool = False, **kwargs):
        if not is_split_into_words:
            text, text_pair = _clean(text), _clean(text_pair)
        return super()._encode_plus(text, text_pair, *args, is_split_into_words=is_split_into_words, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        files = super().save_pretrained(save_directory, *args, **kwargs)
        config_path = Path(save_directory) / "tokenizer_config.json"
        if config_path.exists():
            config = json.loads(config_path.read_text(encoding="utf-8"))
            config["tokenizer_class"] = "CLIPTokenizer"  # stock transformers can load it without rlft
            config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return files


def _clean(text):
    if text is None:
        return None
    if isinstance(text, str):
        return clean_text(text)
    return [_clean(t) for t in text]  # a batch of strings, or of (text, pair) tuples


def plain_clip_tokenizer(model_max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """The stock `CLIPTokenizer` with OpenAI CLIP's 49,408 ids, built offline, without ftfy cleaning.

    For ASCII text (the toy world's captions) it gives the same ids as `clip_tokenizer()`, faster;
    a pipeline saved with it loads in plain diffusers.
    """
    vocab, merges = _vocab_and_merges_cached()
    return CLIPTokenizer(
        vocab=dict(vocab), merges=[tuple(m.split()) for m in merges], bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=EOS,
        model_max_length=model_max_length,
    )


def clip_tokenizer(model_max_length: int = MAX_LENGTH) -> FtfyCLIPTokenizer:
    """A `CLIPTokenizer` with OpenAI CLIP's 49,408 ids and its ftfy cleaning, built offline.

    Padding uses `<|endoftext|>`, as SD 1.x does.
    """
    return as_ftfy_tokenizer(plain_clip_tokenizer(model_max_length))


def as_ftfy_tokenizer(tokenizer):
    """The same tokenizer with CLIP's ftfy cleaning added; other tokenizer classes are returned as they are."""
    if type(tokenizer) is CLIPTokenizer:
        # Same state, one extra method: swapping the class avoids re-reading the 49k-token vocabulary.
        tokenizer.__class__ = FtfyCLIPTokenizer
    return tokenizer


def use_ftfy_tokenizer(pipe):
    """Give a diffusers pipeline's CLIP tokenizer the ftfy cleaning, and keep its saved form a plain one.

    diffusers records each component's (library, class) in `model_index.json`; we record the stock
    `("transformers", "CLIPTokenizer")` so that a folder saved from `pipe` loads without rlft.
    """
    tokenizer = getattr(pipe, "tokenizer", None)
    if isinstance(tokenizer, CLIPTokenizer):
        as_ftfy_tokenizer(tokenizer)
        pipe.register_to_config(tokenizer=("transformers", "CLIPTokenizer"))
    return pipe
