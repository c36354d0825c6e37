"""The toy world's models: text-tower conversion, shipped weights, and resumable pretraining."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rlft.toy import checker, world
from rlft.toy.convert import text_model_from_open_clip, text_with_projection_from_open_clip
from rlft.toy.pretrain import (ClipConfig, PretrainConfig, VisionConfig, WorldData, clip_model_cfg, extend_context, finetune_vision,
                               train_clip)

ASSETS = Path(__file__).resolve().parent.parent / "rlft" / "assets" / "toy"
PROMPTS = ["a large red circle on a blue background", "", "star, top; yellow", "naïve façade – “quotes” " * 3]


def tiny_clip_cfg(**kw) -> ClipConfig:
    base = dict(embed_dim=16, image_width=32, image_layers=1, text_width=32, text_layers=2, text_heads=2, context_length=16,
                steps=4, batch_size=8, hard_negatives=1, warmup=1, stop_at=None)
    base.update(kw)
    return ClipConfig(**base)


def test_text_tower_conversion_is_exact():
    import open_clip

    from rlft.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    clip = open_clip.model.CLIP(**clip_model_cfg(tiny_clip_cfg(), 77)).eval()
    ids = clip_tokenizer()(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    plain, proj = text_model_from_open_clip(clip), text_with_projection_from_open_clip(clip)
    with torch.no_grad():
        ref = clip.encode_text(ids)
        out = proj(ids)
        hidden = plain(ids).last_hidden_state
        # open_clip's own hidden states, before pooling (ln_final applied, as CLIPTextModel does)
        x = clip.token_embedding(ids) + clip.positional_embedding
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))
    assert torch.allclose(out.text_embeds, ref, atol=1e-5)
    assert torch.allclose(hidden, x, atol=1e-5)
    assert torch.allclose(out.last_hidden_state, hidden)


def test_extend_context_keeps_short_captions_identical():
    import open_clip

    torch.manual_seed(0)
    cfg = tiny_clip_cfg()
    short = open_clip.model.CLIP(**clip_model_cfg(cfg)).eval()
    long = extend_context(short, cfg, 77)
    tok = open_clip.tokenizer.SimpleTokenizer
    with torch.no_grad():
        a = short.encode_text(tok(context_length=16)(PROMPTS[:3]))
        b = long.encode_text(tok(context_length=77)(PROMPTS[:3]))
    assert long.positional_embedding.shape[0] == 77
    assert torch.allclose(a, b, atol=1e-5)


def test_clip_pretraining_resumes_exactly(tmp_path):
    """Stopping after 2 steps and resuming gives the same weights as 4 uninterrupted steps."""

    def run(out, stop_at):
        cfg = PretrainConfig(seed=3, dataset_size=64, checkpoint_every=2, clip=tiny_clip_cfg(stop_at=stop_at))
        return train_clip(cfg, WorldData(64, 3), Path(out), torch.device("cpu"))

    straight = run(tmp_path / "a", None)
    run(tmp_path / "b", 2)
    assert (tmp_path / "b" / "clip.ckpt").exists()
    resumed = run(tmp_path / "b", None)
    for (n, p), (_, q) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(p, q), n
    assert "stopped_early" not in (tmp_path / "a" / "clip.log.jsonl").read_text()


def test_vision_finetune_moves_only_the_image_tower_and_resumes_exactly(tmp_path):
    """Stage 1b (LiT): the text tower, and so the pipeline's text encoder, stays bit-identical."""
    import copy

    def cfg(stop_at):
        return PretrainConfig(seed=3, dataset_size=64, checkpoint_every=2, clip=tiny_clip_cfg(),
                              vision=VisionConfig(steps=4, batch_size=8, hard_negatives=1, warmup=1, lr=1e-3, stop_at=stop_at))

    base = train_clip(PretrainConfig(seed=3, dataset_size=64, clip=tiny_clip_cfg()), WorldData(64, 3), tmp_path / "base", torch.device("cpu"))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    straight = finetune_vision(cfg(None), WorldData(64, 3), copy.deepcopy(base), tmp_path / "a", torch.device("cpu"))
    finetune_vision(cfg(2), WorldData(64, 3), copy.deepcopy(base), tmp_path / "b", torch.device("cpu"))
    resumed = finetune_vision(cfg(None), WorldData(64, 3), copy.deepcopy(base), tmp_path / "b", torch.device("cpu"))
    after = straight.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("visual.") for k in changed)
    assert any(k.startswith("visual.transformer") for k in changed)
    for (n, p), (_, q) in zip(after.items(), resumed.state_dict().items()):
        assert torch.equal(p, q), n
    assert (tmp_path / "a" / "clip" / "vision_finetuned.json").is_file()


# ---------------------------------------------------------------------------------------------------------
# The shipped weights


def test_shipped_weights_fit_the_budget():
    files = [p for p in ASSETS.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 40_000_000
    assert (ASSETS / "pipeline" / "model_index.json").exists()
    assert (ASSETS / "clip" / "open_clip_model.safetensors").exists()


@pytest.fixture(scope="module")
def toy_clip():
    from rlft.models.clip import load_clip

    return load_clip("toy")


def test_toy_clip_ranks_the_true_caption_first(toy_clip):
    model, _, tokenizer = toy_clip
    rng = random.Random(0)
    right = 0
    n = 40
    for _ in range(n):
        scene = world.random_scene(rng)
        img = world.draw(scene, rng.randrange(1000))
        x = torch.from_numpy(world.to_array(img).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        caps = [world.caption(scene, world.full_plan())]
        caps += [world.caption(world.perturb(scene, a, rng), world.full_plan()) for a in ("shape", "color", "background", "size")]
        with torch.no_grad():
            im = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
            tx = torch.nn.functional.normalize(model.encode_text(tokenizer(caps)), dim=-1)
        right += int((im @ tx.T).argmax() == 0)
    assert right >= 0.85 * n


def test_toy_pipeline_text_encoder_is_the_clip_text_tower(toy_clip):
    from rlft.models.pipeline import load_pipeline

    model, _, tokenizer = toy_clip
    pipe = load_pipeline("toy", device="cpu")
    ids = pipe.tokenizer(PROMPTS[:3], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        pooled = pipe.text_encoder(ids).pooler_output
        ref = model.encode_text(ids)
    projected = pooled @ model.text_projection
    assert torch.allclose(projected, ref, atol=1e-4)


def test_toy_generation_follows_the_prompt(tmp_path):
    from PIL import Image

    from rlft.generate import GenerateSettings, generate
    from rlft.models.pipeline import load_pipeline

    pipe = load_pipeline("toy", device="cpu")
    settings = GenerateSettings(n=4, seed=0, steps=12, guidance=3.0)
    recs = generate(pipe, ["a large red square on a blue background"], settings, progress=False, out_dir=tmp_path)
    readings = [checker.read(Image.open(r.path)) for r in recs]
    assert sum(r.background == "blue" for r in readings) >= 3
    assert sum(r.color == "red" for r in readings) >= 3
    assert sum(r.size == "large" for r in readings) >= 2
