"""The toy world's models: text-tower conversion, shipped weights, and resumable pretraining."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from prefs.errors import UserError
from rlft.toy import checker, world
from rlft.toy.convert import text_model_from_open_clip, text_with_projection_from_open_clip
from rlft.toy.pretrain import (
    ClipConfig,
    PretrainConfig,
    UnetConfig,
    VaeConfig,
    VisionConfig,
    WorldData,
    clip_model_cfg,
    encode_dataset,
    extend_context,
    finetune_vision,
    random_crops,
    train_clip,
    train_unet,
    train_vae,
)

ASSETS = Path(__file__).resolve().parent.parent / "rlft" / "assets" / "toy"
PROMPTS = ["a large red circle on a blue background", "", "star, top; yellow", "naïve façade – “quotes” " * 3]


def tiny_clip_cfg(**kw) -> ClipConfig:
    base = dict(embed_dim=16, image_width=32, image_layers=1, text_width=32, text_layers=2, text_heads=2, context_length=16,
                steps=4, batch_size=8, hard_negatives=1, warmup=1, stop_at=None)
    base.update(kw)
    return ClipConfig(**base)


def test_text_tower_conversion_is_exact():
    import open_clip

    from rlft.models.tokenizer import clip_tokenizer

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
    for (n, p), (_, q) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=False):
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
    for (n, p), (_, q) in zip(after.items(), resumed.state_dict().items(), strict=False):
        assert torch.equal(p, q), n
    assert (tmp_path / "a" / "clip" / "vision_finetuned.json").is_file()


def tiny_vae_cfg(**kw) -> VaeConfig:
    return VaeConfig(**{**dict(block_out_channels=(8, 16, 16), norm_num_groups=4, steps=4, batch_size=4, crop=32, warmup=1, stop_at=None), **kw})


def test_vae_on_random_crops_resumes_exactly_and_counts_time_across_runs(tmp_path):
    """The cpu preset's VAE trains on crops; a kill and resume gives the weights of an unbroken run, and the
    stage's clock carries the first run's time (to its checkpoint) into the second."""

    def run(out, stop_at):
        cfg = PretrainConfig(seed=3, dataset_size=16, checkpoint_every=2, vae=tiny_vae_cfg(stop_at=stop_at))
        return train_vae(cfg, WorldData(16, 3), Path(out), torch.device("cpu"))

    straight = run(tmp_path / "a", None)
    run(tmp_path / "b", 2)
    ck = torch.load(tmp_path / "b" / "vae.ckpt", weights_only=False)
    assert ck["step"] == 2 and ck["elapsed"] > 0
    resumed = run(tmp_path / "b", None)
    for (n, p), (_, q) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=False):
        assert torch.equal(p, q), n
    import json

    total = json.loads((tmp_path / "b" / "vae.elapsed.json").read_text())["elapsed_s"]
    assert total >= round(ck["elapsed"], 1)


def test_random_crops_cut_the_same_window_from_each_tensor():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    w = x[:, :1] * 10
    cx, cw = random_crops((x, w), 4, torch.Generator().manual_seed(0))
    assert cx.shape == (2, 3, 4, 4) and cw.shape == (2, 1, 4, 4)
    assert torch.equal(cw, cx[:, :1] * 10)
    for i in range(2):  # each crop is a contiguous window of its own image
        y, xx = divmod(int(cx[i, 0, 0, 0].item()) - i * 192, 8)
        assert torch.equal(cx[i], x[i, :, y : y + 4, xx : xx + 4])


def test_unet_on_cached_latents_matches_the_encoder_and_resumes_exactly(tmp_path):
    import open_clip

    from rlft.toy.convert import text_model_from_open_clip
    from rlft.toy.pretrain import build_vae

    torch.manual_seed(0)
    data = WorldData(16, 3)
    vae = build_vae(tiny_vae_cfg()).eval()
    mean, std = encode_dataset(vae, data, torch.device("cpu"), tmp_path / "lat.pt", batch=5)
    with torch.no_grad():
        ref = vae.encode(data.images[3:4].float() / 127.5 - 1).latent_dist
    assert torch.allclose(mean[3:4], ref.mean, atol=1e-5) and torch.allclose(std[3:4], ref.std, atol=1e-5)
    stamp = (tmp_path / "lat.pt").stat().st_mtime_ns
    assert torch.equal(encode_dataset(vae, data, None, tmp_path / "lat.pt")[0], mean)  # read back, not recomputed
    assert (tmp_path / "lat.pt").stat().st_mtime_ns == stamp
    other = build_vae(tiny_vae_cfg()).eval()  # a VAE retrained in the same folder: the cache is stale
    assert not torch.equal(encode_dataset(other, data, torch.device("cpu"), tmp_path / "lat.pt", batch=5)[0], mean)
    text = text_model_from_open_clip(open_clip.model.CLIP(**clip_model_cfg(tiny_clip_cfg(), 77)).eval())

    def run(out, stop_at):
        unet = UnetConfig(block_out_channels=(8, 16, 16), norm_num_groups=4, attention_head_dim=4, steps=4, batch_size=4,
                          warmup=1, stop_at=stop_at, cache_latents=True)
        cfg = PretrainConfig(seed=3, dataset_size=16, checkpoint_every=2, vae=tiny_vae_cfg(), unet=unet)
        return train_unet(cfg, WorldData(16, 3), text, vae, Path(out), torch.device("cpu"))

    straight = run(tmp_path / "a", None)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", None)
    for (n, p), (_, q) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=False):
        assert torch.equal(p, q), n


def test_presets():
    cpu = PretrainConfig.from_preset("cpu", seed=5)
    assert cpu.seed == 5 and cpu.preset == "cpu" and cpu.vae.crop == 32 and cpu.unet.cache_latents
    gpu = PretrainConfig()
    assert (cpu.clip, cpu.vision) == (gpu.clip, gpu.vision)  # the CLIP recipe is the first weights' one
    assert cpu.unet.stop_at == gpu.unet.stop_at and cpu.unet.steps == gpu.unet.steps
    assert PretrainConfig.from_preset("gpu") == PretrainConfig()  # the first weights' schedule is the config default
    with pytest.raises(UserError, match="unknown pretraining preset 'tpu'"):
        PretrainConfig.from_preset("tpu")


def test_pretrain_cli_picks_the_cpu_preset_on_a_cpu(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from rlft.cli import main

    seen = []
    monkeypatch.setattr("rlft.toy.pretrain.pretrain", lambda out, cfg, device=None, deadline=None: seen.append((cfg.preset, device)) or Path(out))
    for args in (["--device", "cpu"], ["--device", "cuda:1"], ["--device", "cpu", "--preset", "gpu"]):
        r = CliRunner().invoke(main, ["toy", "pretrain", "--out", str(tmp_path), *args], prog_name="rlft")
        assert r.exit_code == 0, r.output
    assert seen == [("cpu", "cpu"), ("gpu", "cuda:1"), ("gpu", "cpu")]


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

    from rlft.models.generate import GenerateSettings, generate
    from rlft.models.pipeline import load_pipeline

    pipe = load_pipeline("toy", device="cpu")
    settings = GenerateSettings(n=4, seed=0, steps=12, guidance=3.0)
    recs = generate(pipe, ["a large red square on a blue background"], settings, progress=False, out_dir=tmp_path)
    readings = [checker.read(Image.open(r.path)) for r in recs]
    assert sum(r.background == "blue" for r in readings) >= 3
    assert sum(r.color == "red" for r in readings) >= 3
    assert sum(r.size == "large" for r in readings) >= 2


def test_shipped_toy_folder_generates_in_plain_diffusers_with_its_defaults():
    # A person who copies the folder into their own script calls exactly this, with no dtype: every part must load
    # in one dtype (a saved fp16 `dtype` in the text encoder's config once made transformers load it in fp16 beside
    # diffusers' fp32 UNet, and generation died on mixed dtypes). The pixels equal rlft's own load of the folder.
    import numpy as np
    from diffusers import StableDiffusionPipeline

    from rlft.models.pipeline import ASSETS, load_pipeline

    plain = StableDiffusionPipeline.from_pretrained(ASSETS / "toy" / "pipeline")
    plain.set_progress_bar_config(disable=True)
    assert {plain.text_encoder.dtype, plain.unet.dtype, plain.vae.dtype} == {torch.float32}
    ours = load_pipeline("toy", device="cpu", scheduler="ddim")
    images = [p("a red circle", num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np",
                guidance_scale=3.0).images[0] for p in (plain, ours)]
    assert np.isfinite(images[0]).all() and images[0].std() > 0.05
    np.testing.assert_allclose(images[0], images[1], atol=1e-5)


def test_assemble_saves_a_folder_that_loads_in_one_dtype(tmp_path):
    from diffusers import StableDiffusionPipeline

    from rlft.models.pipeline import load_pipeline
    from rlft.toy.pretrain import assemble

    toy = load_pipeline("toy", device="cpu")
    assemble(toy.unet, toy.vae, toy.text_encoder, tmp_path / "p")
    plain = StableDiffusionPipeline.from_pretrained(tmp_path / "p")
    assert {plain.text_encoder.dtype, plain.unet.dtype, plain.vae.dtype} == {torch.float32}
