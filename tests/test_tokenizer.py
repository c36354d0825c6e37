"""The offline CLIP tokenizer gives OpenAI/open_clip's ids, and saves as a plain CLIPTokenizer."""

from __future__ import annotations

import json

import pytest
from transformers import CLIPTokenizer

from rlft.models.tokenizer import EOS, MAX_LENGTH, VOCAB_SIZE, FtfyCLIPTokenizer, clip_tokenizer, vocab_and_merges

PROMPTS = [
    "a photo of a cat",
    "naïve façade – “quotes” and ‘single’ ones",
    "Crème brûlée, Ünïcödé ÀÉÎ, Straße",
    "emoji 🐱🚀 party 🎉🎉",
    "it's, don't!! (wow) [brackets] {braces} 1,234.5%",
    "&amp; html &lt;b&gt; entities &quot;",
    "ﬁne ligatures and ＦＵＬＬ width",
    "Ã©tÃ© mojibake",
    "  tabs\tand\nnewlines   and   spaces  ",
    "日本語のプロンプト, 中文提示",
    "word " * 100,  # truncated at 77, EOS kept last
    "",
]


@pytest.fixture(scope="module")
def tok():
    return clip_tokenizer()


@pytest.fixture(scope="module")
def open_clip_tok():
    open_clip = pytest.importorskip("open_clip")
    return open_clip.get_tokenizer("ViT-L-14")


def test_vocabulary_size_and_known_ids(tok):
    vocab, merges = vocab_and_merges()
    assert len(vocab) == VOCAB_SIZE == len(tok)
    assert len(merges) == VOCAB_SIZE - 514
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ids_match_open_clip(tok, open_clip_tok, prompt):
    expected = open_clip_tok([prompt])[0].tolist()  # zero-padded to 77
    n = sum(1 for i in expected if i != 0)
    got = tok(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
    assert len(got) == MAX_LENGTH
    assert got[:n] == expected[:n]
    assert got[n:] == [tok.convert_tokens_to_ids(EOS)] * (MAX_LENGTH - n)  # SD 1.x pads with <|endoftext|>


def test_batches_are_cleaned_too(tok, open_clip_tok):
    batch = tok(PROMPTS[:4], padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
    for ids, prompt in zip(batch, PROMPTS[:4], strict=False):
        expected = [i for i in open_clip_tok([prompt])[0].tolist() if i != 0]
        assert ids[: len(expected)] == expected


def test_truncation_keeps_eos_last(tok):
    ids = tok("word " * 100, truncation=True, max_length=MAX_LENGTH).input_ids
    assert len(ids) == MAX_LENGTH and ids[0] == 49406 and ids[-1] == 49407


def test_saved_folder_is_a_plain_clip_tokenizer(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "CLIPTokenizer"
    plain = CLIPTokenizer.from_pretrained(tmp_path)
    assert type(plain) is CLIPTokenizer
    assert plain("a photo of a cat").input_ids == tok("a photo of a cat").input_ids
    assert isinstance(tok, FtfyCLIPTokenizer) and isinstance(tok, CLIPTokenizer)
