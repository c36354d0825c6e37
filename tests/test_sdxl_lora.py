"""SDXL LoRA export (diffusers format and kohya's SDXL layout) and `rlft generate --lora`, and LoRAs of the wrong family.

A LoRA added with peft to the tiny SDXL pipeline's UNet and both text encoders is exported in both formats; each
loads in a fresh plain `StableDiffusionXLPipeline` and gives the pixels of the model it was exported from and
of `rlft generate --lora`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors import safe_open

from rlft.cli import main
from rlft.models.generate import generate
from rlft.models.tiny import tiny_pipeline, tiny_sdxl_pipeline
from rlft.train.config import LoRAConfig
from rlft.train.lora import TEXT_ENCODER_TARGETS, kohya_state, lora_family, save_diffusers, save_kohya, sgm_unet_names

SDXL_SHAPE = {"layers_per_block": 2, "transformer_layers": 2}  # SDXL's block layout, so the kohya names are its own
CFG = LoRAConfig(rank=4, alpha=8.0)  # alpha != rank: the exports must fold the scale
SEED, STEPS = 3, 2


def with_lora(pipe, parts=("unet", "text_encoder", "text_encoder_2")):
    """`pipe` with a random (non-identity) peft LoRA on `parts`, and its adapter state in peft_state's layout."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    for part in parts:
        targets = CFG.target_modules if part == "unet" else TEXT_ENCODER_TARGETS
        getattr(pipe, part).add_adapter(LoraConfig(r=CFG.rank, lora_alpha=CFG.alpha, init_lora_weights="gaussian",
                                                   target_modules=list(targets)))
    torch.manual_seed(0)
    with torch.no_grad():
        for part in parts:
            for name, weight in getattr(pipe, part).named_parameters():
                if "lora_B" in name:
                    weight.normal_(std=0.2)
    return pipe, {part: {k: v.detach().clone() for k, v in get_peft_model_state_dict(getattr(pipe, part)).items()}
                  for part in parts}


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    """The tiny SDXL folder, a LoRA on it (peft state and the adapted pipeline), both exports."""
    root = tmp_path_factory.mktemp("sdxl-lora")
    tiny_sdxl_pipeline(seed=0, **SDXL_SHAPE).save_pretrained(root / "model")
    adapted, state = with_lora(tiny_sdxl_pipeline(seed=0, **SDXL_SHAPE))
    save_diffusers(state, CFG, root / "lora", family="sdxl")
    save_kohya(state, CFG, root / "kohya.safetensors", {"rlft_run": "t0001"}, family="sdxl")
    return {"root": root, "model": root / "model", "adapted": adapted, "state": state,
            "diffusers": root / "lora", "kohya": root / "kohya.safetensors"}


@pytest.fixture(scope="module")
def sd1_lora(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd1-lora")
    tiny_pipeline(seed=0).save_pretrained(root / "model")
    _, state = with_lora(tiny_pipeline(seed=0), parts=("unet", "text_encoder"))
    save_diffusers(state, CFG, root / "lora")
    save_kohya(state, CFG, root / "kohya.safetensors")
    return {"model": root / "model", "diffusers": root / "lora", "kohya": root / "kohya.safetensors", "state": state}


def invoke(*args):
    return CliRunner().invoke(main, ["generate", *map(str, args)])


def png(path):
    return np.asarray(Image.open(path), dtype=int)


def rlft_images(pipe, out):
    [record] = generate(pipe, ["a red circle"], seed=SEED, steps=STEPS, guidance=4.0, out_dir=out, progress=False)
    return png(record.path)


def assert_same_pixels(a, b):
    # the same weights by another route (LoRA folded into the file vs peft's scale) can differ by float rounding,
    # which flips the uint8 rounding of a rare pixel by one level
    diff = np.abs(a - b)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_kohya_sdxl_layout_and_metadata(sdxl):
    with safe_open(str(sdxl["kohya"]), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    # Stability's SDXL module names, as kohya's sd-scripts writes them and A1111, Forge and ComfyUI map them
    name = "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k"
    assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= keys
    blocks = {k.split("_transformer_blocks")[0] for k in keys if k.startswith("lora_unet_")}
    assert blocks == {"lora_unet_input_blocks_4_1", "lora_unet_input_blocks_5_1", "lora_unet_middle_block_1",
                      "lora_unet_output_blocks_0_1", "lora_unet_output_blocks_1_1", "lora_unet_output_blocks_2_1"}
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
    assert "lora_te2_text_model_encoder_layers_1_self_attn_out_proj.lora_up.weight" in keys
    assert all(k.startswith(("lora_unet_", "lora_te1_", "lora_te2_")) for k in keys)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"], meta["ss_network_module"]) == ("4", "4", "networks.lora")
    assert meta["rlft_run"] == "t0001"
    with safe_open(str(sdxl["kohya"]), "pt") as f:
        assert float(f.get_tensor(f"{name}.alpha")) == 4.0  # alpha = rank: the scale is folded into lora_up


def test_diffusers_export_layout(sdxl):
    with safe_open(str(sdxl["diffusers"] / "pytorch_lora_weights.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert any(k.startswith("unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k") for k in keys)
    # `text_model.` kept, as every diffusers version and ComfyUI expect, whatever transformers' module tree
    assert any(k.startswith("text_encoder.text_model.encoder.layers.0.self_attn.q_proj") for k in keys)
    assert any(k.startswith("text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj") for k in keys)


@pytest.fixture(scope="module")
def trained_pixels(sdxl, tmp_path_factory):
    """rlft's images from the model the LoRA was exported from (peft's adapters in memory)."""
    from diffusers import StableDiffusionXLPipeline

    out = tmp_path_factory.mktemp("trained")
    trained = rlft_images(sdxl["adapted"], out / "trained")
    base = rlft_images(StableDiffusionXLPipeline.from_pretrained(sdxl["model"], local_files_only=True), out / "base")
    assert np.abs(trained - base).max() > 10  # the LoRA does something
    return trained


@pytest.mark.parametrize("fmt", ["diffusers", "kohya"])
def test_export_loads_in_plain_diffusers_and_matches_rlft_generate(fmt, sdxl, trained_pixels, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    plain = StableDiffusionXLPipeline.from_pretrained(sdxl["model"], local_files_only=True)
    path = sdxl[fmt]
    if fmt == "diffusers":
        plain.load_lora_weights(str(path))
    else:
        plain.load_lora_weights(str(path.parent), weight_name=path.name)
    loaded = rlft_images(plain, tmp_path / "plain")
    result = invoke("--model", sdxl["model"], "-p", "a red circle", "--seed", SEED, "--steps", STEPS,
                    "--guidance", 4.0, "--lora", path, "--json", "--no-pool", "--out", tmp_path / "cli")
    assert result.exit_code == 0, result.output
    cli = json.loads(result.stdout)
    assert cli["lora"] == str(path)
    assert (png(cli["path"]) == loaded).all()  # rlft generate --lora is plain diffusers' application
    assert_same_pixels(loaded, trained_pixels)  # and both are the trained model's


def test_unet_only_sdxl_lora_and_family_inference(sdxl):
    unet_only = {"unet": sdxl["state"]["unet"]}
    keys = kohya_state(unet_only, CFG, family="sdxl")
    assert all(k.startswith("lora_unet_input_blocks_") or k.startswith(("lora_unet_middle_block_", "lora_unet_output_blocks_"))
               for k in keys)
    assert lora_family(sdxl["state"]) == "sdxl"  # a second text encoder says SDXL
    assert lora_family(unet_only) == "sd1"  # the tiny UNet alone cannot say (real SDXL's 2048-wide one can)
    wide = {"unet": {"down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": torch.zeros(4, 2048)}}
    assert lora_family(wide) == "sdxl"
    names = sgm_unet_names(["down_blocks.2.attentions.1.transformer_blocks.9.attn1.to_q", "mid_block.attentions.0.proj_in",
                            "up_blocks.0.attentions.2.transformer_blocks.0.ff.net.2"])
    # real SDXL (layers_per_block 2, attention in levels 1 and 2): the names kohya's SDXL LoRAs carry
    assert names == {"down_blocks.2.attentions.1.transformer_blocks.9.attn1.to_q": "input_blocks.8.1.transformer_blocks.9.attn1.to_q",
                     "mid_block.attentions.0.proj_in": "middle_block.1.proj_in",
                     "up_blocks.0.attentions.2.transformer_blocks.0.ff.net.2": "output_blocks.2.1.transformer_blocks.0.ff.net.2"}


def test_sd1_kohya_text_encoder_keys_keep_text_model(sd1_lora, tmp_path):
    from diffusers import StableDiffusionPipeline

    with safe_open(str(sd1_lora["kohya"]), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys  # A1111's SD 1.x names
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight" in keys
    assert "ss_base_model_version" not in meta  # SD 1.x and 2.x share a family; the file does not guess which
    images = []
    for fmt in ("diffusers", "kohya"):
        pipe = StableDiffusionPipeline.from_pretrained(sd1_lora["model"], local_files_only=True)
        path = sd1_lora[fmt]
        pipe.load_lora_weights(str(path) if fmt == "diffusers" else str(path.parent), weight_name=None if fmt == "diffusers" else path.name)
        images.append(rlft_images(pipe, tmp_path / fmt))
    assert_same_pixels(*images)


def _mismatch_cases(sdxl, sd1_lora):
    return {
        "SDXL diffusers LoRA on SD 1.x": (sd1_lora["model"], sdxl["diffusers"]),
        "SDXL kohya LoRA on SD 1.x": (sd1_lora["model"], sdxl["kohya"]),
        "SDXL UNet-only LoRA on SD 1.x": (sd1_lora["model"], "unet-only"),
        "SD 1.x diffusers LoRA on SDXL": (sdxl["model"], sd1_lora["diffusers"]),
        "SD 1.x kohya LoRA on SDXL": (sdxl["model"], sd1_lora["kohya"]),
    }


@pytest.mark.parametrize("case", ["SDXL diffusers LoRA on SD 1.x", "SDXL kohya LoRA on SD 1.x", "SDXL UNet-only LoRA on SD 1.x",
                                  "SD 1.x diffusers LoRA on SDXL", "SD 1.x kohya LoRA on SDXL"])
def test_a_lora_of_the_other_family_is_one_line_exit_2_and_writes_nothing(case, sdxl, sd1_lora, rlft_home, tmp_path):
    model, lora = _mismatch_cases(sdxl, sd1_lora)[case]
    if lora == "unet-only":  # no metadata, no text encoder: only its UNet's width gives it away
        lora = save_diffusers({"unet": sdxl["state"]["unet"]}, CFG, tmp_path / "unet-only")
    out = tmp_path / "out"
    result = invoke("--model", model, "-p", "a cat", "--steps", 1, "--lora", lora, "--out", out)
    assert result.exit_code == 2, (case, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the LoRA "), lines
    model_family = "SDXL" if model == sdxl["model"] else "SD 1.x"
    assert f"is {model_family}" in lines[0] and f"use a LoRA trained on {model_family}" in lines[0]
    # what the LoRA is for: its metadata or text-encoder names say the family; a LoRA without either (diffusers'
    # format, or UNet only) is told by its UNet's width, which only real models' map to a family name
    assert ("SDXL" if model_family == "SD 1.x" else "SD 1.x") in lines[0] or "another model family" in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists() and not (rlft_home / "pool").exists()
