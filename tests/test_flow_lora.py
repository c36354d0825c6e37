"""LoRA on SD3's and FLUX's transformer attention: the adapted modules, diffusers export that plain diffusers loads
to `rlft generate --lora`'s pixels, FLUX's kohya layout (fused qkv / linear1, block-diagonal), family checks."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from prefs.errors import UserError
from rlft.cli import main
from rlft.models.lora import apply_lora, read_header
from rlft.models.tiny import tiny_flux_pipeline, tiny_pipeline, tiny_sd3_pipeline
from rlft.train import lora as lora_io
from rlft.train.config import LoRAConfig

# init_std: a LoRA that is not the identity, so the images must change
CFG = LoRAConfig(rank=2, alpha=4.0, init_std=0.05, train_text_encoder=True)


def build(family, seed=0):
    return tiny_sd3_pipeline(seed=seed) if family == "sd3" else tiny_flux_pipeline(seed=seed)


@pytest.fixture(scope="module", params=["sd3", "flux"])
def trained(request, tmp_path_factory):
    """A model folder, and a LoRA (transformer and CLIP encoders) exported from a copy of it."""
    family = request.param
    root = tmp_path_factory.mktemp(f"lora-{family}")
    build(family).save_pretrained(root / "model")
    pipe = build(family)
    torch.manual_seed(0)
    lora_io.add_lora(pipe, CFG)
    state = lora_io.peft_state(pipe, CFG)
    lora_io.save_diffusers(state, CFG, root / "lora", family=family)
    if family == "flux":
        lora_io.save_kohya(state, CFG, root / "lora_kohya.safetensors", family=family)
    return family, root, pipe, state


def adapted_modules(module):
    return sorted({name.rsplit(".lora_A", 1)[0] for name, _ in module.named_parameters() if ".lora_A" in name})


def test_adapters_sit_on_the_transformers_attention_and_the_clip_encoders(trained):
    family, _, pipe, state = trained
    names = adapted_modules(pipe.transformer)
    projections = ["add_k_proj", "add_q_proj", "add_v_proj", "to_add_out", "to_k", "to_out.0", "to_q", "to_v"]
    blocks = range(pipe.transformer.config.num_layers)
    expected = [f"transformer_blocks.{i}.attn.{p}" for i in blocks for p in projections]
    if family == "sd3":  # SD3's last block only reads the text (context_pre_only): it has no text output projection
        expected.remove(f"transformer_blocks.{blocks[-1]}.attn.to_add_out")
    if family == "flux":  # single-stream blocks: q, k, v (their output is the fused proj_out)
        expected += [f"single_transformer_blocks.{i}.attn.{p}" for i in range(pipe.transformer.config.num_single_layers)
                     for p in ("to_k", "to_q", "to_v")]
    assert names == sorted(expected)
    trainable = {n for n, p in pipe.transformer.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    assert not any(p.requires_grad for p in pipe.vae.parameters())
    encoders = ["text_encoder", "text_encoder_2"] if family == "sd3" else ["text_encoder"]  # never T5
    assert lora_io.text_encoder_names(pipe) == encoders and list(state) == ["transformer", *encoders]
    t5 = pipe.text_encoder_3 if family == "sd3" else pipe.text_encoder_2
    assert not any(p.requires_grad for p in t5.parameters()) and not adapted_modules(t5)


def generate(*args):
    result = CliRunner().invoke(main, ["generate", *map(str, args)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def plain_pixels(family, folder, lora, weight_name=None, seed=3):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"weight_name": weight_name} if weight_name else {}
    pipe.load_lora_weights(str(lora), **kwargs)
    image = pipe("a red circle", num_inference_steps=2, guidance_scale=4.0, height=64, width=64,
                 generator=torch.Generator().manual_seed(seed), output_type="np").images[0]
    return (image * 255).round().astype(int)


def pixels(path):
    return np.asarray(Image.open(path), dtype=int)


def test_diffusers_export_loads_in_plain_diffusers_to_generates_pixels(trained, tmp_path):
    family, root, pipe, _ = trained
    args = ["--model", root / "model", "-p", "a red circle", "--seed", 3, "--steps", 2, "--guidance", 4.0,
            "--json", "--no-pool", "--batch-size", 1]
    [with_lora] = generate(*args, "--lora", root / "lora", "--out", tmp_path / "lora")
    [without] = generate(*args, "--out", tmp_path / "base")
    assert with_lora["lora"] == str(root / "lora")
    assert np.abs(pixels(with_lora["path"]) - pixels(without["path"])).max() > 10  # the LoRA changes the image
    assert (plain_pixels(family, root / "model", root / "lora") == pixels(with_lora["path"])).all()
    # and what plain diffusers loads is the adapted model itself: every adapter, at its scale
    from diffusers import DiffusionPipeline

    plain = DiffusionPipeline.from_pretrained(root / "model", local_files_only=True)
    plain.load_lora_weights(str(root / "lora"))
    assert sorted(adapted_modules(plain.transformer)) == adapted_modules(pipe.transformer)
    for name in lora_io.text_encoder_names(pipe):
        assert len(adapted_modules(getattr(plain, name))) == len(adapted_modules(getattr(pipe, name))) > 0
    with torch.no_grad():
        for model in (pipe, plain):
            model.set_progress_bar_config(disable=True)
        latents = [model("a red circle", num_inference_steps=2, guidance_scale=4.0, height=64, width=64,
                         generator=torch.Generator().manual_seed(3), output_type="latent").images for model in (pipe, plain)]
    torch.testing.assert_close(latents[0], latents[1], rtol=0, atol=1e-4)
    header = read_header(root / "lora" / lora_io.DIFFUSERS_WEIGHT_NAME)
    assert (header.family, header.denoiser) == (family, "transformer")  # the model spec says its family


@pytest.mark.parametrize("trained", ["flux"], indirect=True)  # SD3 has no kohya layout
def test_flux_kohya_layout_is_sd_scripts_with_the_same_weight_update(trained):
    family, root, pipe, state = trained
    from safetensors import safe_open

    with safe_open(str(root / "lora_kohya.safetensors"), "pt") as f:
        kohya = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    assert (meta["ss_base_model_version"], meta["modelspec.architecture"]) == ("flux1", "flux-1-dev/lora")
    modules = {k.split(".")[0] for k in kohya}
    assert {m for m in modules if m.startswith("lora_unet")} == {
        "lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_double_blocks_0_txt_attn_qkv",
        "lora_unet_double_blocks_0_img_attn_proj", "lora_unet_double_blocks_0_txt_attn_proj",
        "lora_unet_single_blocks_0_linear1"}
    assert all(re.match(r"lora_te1_text_model_encoder_layers_\d_self_attn_(q|k|v|out)_proj$", m)
               for m in modules if not m.startswith("lora_unet"))
    scale = CFG.alpha / CFG.rank
    peft = state["transformer"]

    def delta(module):  # a diffusers module's weight update, B A alpha / rank
        return peft[f"{module}.lora_B.weight"] @ peft[f"{module}.lora_A.weight"] * scale

    def fused(name):
        down, up, alpha = (kohya[f"{name}.{s}"] for s in ("lora_down.weight", "lora_up.weight", "alpha"))
        assert alpha.item() == down.shape[0]  # alpha = rank: the scale is folded into up
        return up @ down

    inner = pipe.transformer.inner_dim
    qkv = torch.cat([delta(f"transformer_blocks.0.attn.{p}") for p in ("to_q", "to_k", "to_v")])
    torch.testing.assert_close(fused("lora_unet_double_blocks_0_img_attn_qkv"), qkv)
    txt = torch.cat([delta(f"transformer_blocks.0.attn.{p}") for p in ("add_q_proj", "add_k_proj", "add_v_proj")])
    torch.testing.assert_close(fused("lora_unet_double_blocks_0_txt_attn_qkv"), txt)
    torch.testing.assert_close(fused("lora_unet_double_blocks_0_txt_attn_proj"), delta("transformer_blocks.0.attn.to_add_out"))
    # linear1 = q, k, v and the MLP's input (4x wide, not adapted: zero rows)
    single = torch.cat([delta(f"single_transformer_blocks.0.attn.{p}") for p in ("to_q", "to_k", "to_v")]
                       + [torch.zeros(4 * inner, inner)])
    assert kohya["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape == (7 * inner, 3 * CFG.rank)
    torch.testing.assert_close(fused("lora_unet_single_blocks_0_linear1"), single)
    # the real model's linear1 is 3 x 3072 + 12288 wide: the same rule
    assert lora_io._flux_fused_widths({"single_transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(3072, 2)}) == {
        "lora_unet_single_blocks_0_linear1": [3072, 3072, 3072, 12288]}


def test_flux_kohya_file_loads_in_plain_diffusers_to_generates_pixels(tmp_path):
    # diffusers' kohya FLUX reader takes the single blocks' linear1 at FLUX.1's real widths (3 x 3072 + 12288),
    # so this check adapts the double-stream blocks, whose fused widths it reads from the file
    root = tmp_path
    tiny_flux_pipeline(seed=0).save_pretrained(root / "model")
    pipe = tiny_flux_pipeline(seed=0)
    cfg = LoRAConfig(rank=2, alpha=4.0, init_std=0.05, target_modules=tuple(
        f"transformer_blocks.0.attn.{p}" for p in lora_io.FLOW_TARGETS))
    torch.manual_seed(1)
    lora_io.add_lora(pipe, cfg)
    assert not any("single" in m for m in adapted_modules(pipe.transformer))
    state = lora_io.peft_state(pipe, cfg)
    lora_io.save_diffusers(state, cfg, root / "lora", family="flux")
    lora_io.save_kohya(state, cfg, root / "kohya.safetensors", family="flux")
    args = ["--model", root / "model", "-p", "a red circle", "--seed", 3, "--steps", 2, "--guidance", 4.0,
            "--json", "--no-pool", "--batch-size", 1]
    [via_kohya] = generate(*args, "--lora", root / "kohya.safetensors", "--out", root / "a")
    [via_diffusers] = generate(*args, "--lora", root / "lora", "--out", root / "b")
    [base] = generate(*args, "--out", root / "c")
    assert np.abs(pixels(via_kohya["path"]) - pixels(base["path"])).max() > 10
    assert np.abs(pixels(via_kohya["path"]) - pixels(via_diffusers["path"])).max() <= 1  # the same update, refactored
    assert (plain_pixels("flux", root / "model", root, "kohya.safetensors") == pixels(via_kohya["path"])).all()


def test_loras_of_other_families_are_one_line_errors(trained, tmp_path):
    family, root, _, state = trained
    other = "flux" if family == "sd3" else "sd3"
    pipe = build(other)
    with pytest.raises(UserError, match=f"was made for {'SD3' if family == 'sd3' else 'FLUX'} models") as e:
        apply_lora(pipe, root / "lora")
    assert "\n" not in str(e.value)
    # a UNet LoRA on a transformer model, and the reverse
    sd1 = tiny_pipeline()
    sd1_cfg = LoRAConfig(rank=2, init_std=0.05)
    lora_io.add_lora(sd1, sd1_cfg)
    lora_io.save_diffusers(lora_io.peft_state(sd1, sd1_cfg), sd1_cfg, tmp_path / "sd1", family="sd1")
    with pytest.raises(UserError, match=r"made for SD 1.x or SDXL \(a UNet\) models"):
        apply_lora(build(family), tmp_path / "sd1")
    with pytest.raises(UserError, match="made for"):
        apply_lora(tiny_pipeline(), root / "lora")
    if family == "sd3":
        with pytest.raises(UserError, match="SD3 LoRAs are written in diffusers' format only"):
            lora_io.save_kohya(state, CFG, tmp_path / "k.safetensors", family="sd3")
        assert not (tmp_path / "k.safetensors").exists()
    with pytest.raises(ValueError, match="family"):
        lora_io.lora_family({"transformer": {"transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(1)}})
