"""Model loaders: built-in names, diffusers folders, single files, hub ids, CLIP specs; samplers; dtypes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from prefs.errors import NotFoundError, UserError
from rlft import load_clip, load_pipeline
from rlft.models import clip as clip_module
from rlft.models import pipeline as pipeline_module
from rlft.models.device import default_dtype, parse_dtype
from rlft.models.pipeline import Builtin, OfflineError, resolve_model
from rlft.models.schedulers import SAMPLERS, a1111_name, make_scheduler
from rlft.models.single_file import config_dir_for, ldm_state_dict, save_single_file, unet_to_ldm, vae_to_ldm
from rlft.models.tiny import tiny_clip_folder, tiny_pipeline
from rlft.models.tokenizer import FtfyCLIPTokenizer


@pytest.fixture(scope="module")
def tiny():
    return tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def tiny_folder(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny"
    tiny.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_file(tiny, tmp_path_factory):
    return save_single_file(tiny, tmp_path_factory.mktemp("single") / "tiny.safetensors")


def assert_same_weights(a, b):
    for name in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{name}.{key}"


def pixels(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    return pipe("a red circle", num_inference_steps=2, generator=g, output_type="np").images


def test_tiny_pipeline_is_small_and_sd_shaped(tiny):
    unet_params = sum(p.numel() for p in tiny.unet.parameters())
    assert 0.5e6 < unet_params < 1.5e6
    assert tiny.text_encoder.config.vocab_size == 49408 and len(tiny.tokenizer) == 49408
    assert tiny.vae_scale_factor == 8 and tiny.safety_checker is None
    assert pixels(tiny).shape == (1, 64, 64, 3)


def test_folder_round_trip(tiny, tiny_folder):
    pipe = load_pipeline(tiny_folder)
    assert_same_weights(tiny, pipe)
    assert isinstance(pipe.tokenizer, FtfyCLIPTokenizer)
    assert pipe.safety_checker is None and pipe.device.type == "cpu" and pipe.unet.dtype == torch.float32
    assert pipe.model_source.kind == "folder" and pipe.model_source.name == "tiny"
    assert (pixels(pipe) == pixels(tiny)).all()


def test_saved_folder_loads_in_plain_diffusers(tiny_folder, tmp_path):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    index = json.loads((tiny_folder / "model_index.json").read_text())
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    plain = StableDiffusionPipeline.from_pretrained(tiny_folder, local_files_only=True)
    assert type(plain.tokenizer) is CLIPTokenizer
    # A folder saved from a loaded pipeline still names the stock class.
    load_pipeline(tiny_folder).save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "model_index.json").read_text())["tokenizer"] == ["transformers", "CLIPTokenizer"]


def test_single_file_round_trip(tiny, tiny_file):
    from safetensors import safe_open

    with safe_open(str(tiny_file), "pt") as f:
        keys = set(f.keys())
    # The original SD layout, as model sites share it.
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert "first_stage_model.decoder.up.0.block.0.conv1.weight" in keys
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in keys
    pipe = load_pipeline(tiny_file)
    assert_same_weights(tiny, pipe)
    assert pipe.model_source.kind == "file" and pipe.model_source.name == "tiny"
    assert (pixels(pipe) == pixels(tiny)).all()


def test_single_file_config_argument(tiny, tiny_file, tmp_path):
    moved = tmp_path / "model.safetensors"
    shutil.copy(tiny_file, moved)
    with pytest.raises(NotFoundError, match="--config"):
        load_pipeline(moved)
    pipe = load_pipeline(moved, config=config_dir_for(tiny_file))
    assert_same_weights(tiny, pipe)


def test_ckpt_single_file(tiny, tiny_file, tmp_path):
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": ldm_state_dict(tiny)}, ckpt)  # the old pickled layout, as SD 1.x shipped
    pipe = load_pipeline(ckpt, config=config_dir_for(tiny_file))
    assert_same_weights(tiny, pipe)


@pytest.mark.parametrize("layers_per_block", [1, 2])
def test_ldm_export_inverts_diffusers_conversion_for_sd_layout(layers_per_block):
    # SD 1.x's own block layout (attention in the first three levels), only narrow.
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    unet = UNet2DConditionModel(
        block_out_channels=(8, 8, 16, 16), layers_per_block=layers_per_block, norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=8, attention_head_dim=4,
    )
    state = unet.state_dict()
    ldm = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(state, layers_per_block).items()}
    back = convert_ldm_unet_checkpoint(ldm, unet.config)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)

    vae = AutoencoderKL(block_out_channels=(4, 8, 8, 8), norm_num_groups=4, layers_per_block=layers_per_block,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    vstate = vae.state_dict()
    vldm = {"first_stage_model." + k: v for k, v in vae_to_ldm(vstate, 4).items()}
    vback = convert_ldm_vae_checkpoint(vldm, vae.config)
    assert vback.keys() == vstate.keys() and all(torch.equal(vback[k], vstate[k]) for k in vstate)


def test_unknown_spec_lists_valid_forms(tmp_path):
    with pytest.raises(NotFoundError) as e:
        load_pipeline("no-such-model")
    assert "toy" in str(e.value) and "diffusers folder" in str(e.value) and "repo id" in str(e.value)
    with pytest.raises(NotFoundError, match="model_index.json"):
        resolve_model(tmp_path)
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(NotFoundError, match="checkpoint"):
        resolve_model(tmp_path / "weights.txt")
    with pytest.raises(NotFoundError):
        resolve_model(tmp_path / "missing.safetensors")


def test_missing_builtin_names_the_build_command(monkeypatch, tmp_path):
    monkeypatch.setitem(pipeline_module.BUILTIN_MODELS, "toy", Builtin(tmp_path / "absent", "rlft toy pretrain"))
    with pytest.raises(NotFoundError, match="rlft toy pretrain"):
        load_pipeline("toy")


def test_builtin_resolves_to_its_folder(monkeypatch, tiny_folder):
    monkeypatch.setitem(pipeline_module.BUILTIN_MODELS, "toy", Builtin(tiny_folder, "rlft toy pretrain"))
    pipe = load_pipeline("toy")
    assert pipe.model_source.kind == "builtin" and pipe.model_source.name == "toy"


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        load_pipeline("rlft-tests/definitely-not-cached")
    assert resolve_model("org/name").kind == "hub"


def test_scheduler_override_and_bad_name(tiny_folder):
    pipe = load_pipeline(tiny_folder, scheduler="euler_a")
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"  # the model's noise schedule is kept
    with pytest.raises(NotFoundError, match="ddim"):
        load_pipeline(tiny_folder, scheduler="warp-drive")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_builds_and_names_itself(tiny, name):
    scheduler = make_scheduler(name, tiny.scheduler.config)
    assert a1111_name(scheduler) == SAMPLERS[name].a1111


def test_dtypes():
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("fp16") is torch.float16
    assert parse_dtype(None) is None and parse_dtype(torch.float32) is torch.float32
    assert default_dtype("cpu") is torch.float32
    with pytest.raises(UserError, match="fp32"):
        parse_dtype("int3")


def test_load_pipeline_dtype_override(tiny_folder):
    pipe = load_pipeline(tiny_folder, dtype="bf16")
    assert pipe.unet.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16


# -- CLIP ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return tiny_clip_folder(tmp_path_factory.mktemp("clip") / "tiny-clip")


def test_clip_folder(clip_folder):
    from PIL import Image

    model, preprocess, tokenizer = load_clip(clip_folder, device="cpu")
    assert not model.training
    image = preprocess(Image.new("RGB", (80, 50), "red")).unsqueeze(0)
    assert image.shape == (1, 3, 32, 32)
    ids = tokenizer(["a photo of a cat"])
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    with torch.no_grad():
        assert model.encode_image(image).shape == (1, 16) and model.encode_text(ids).shape == (1, 16)


def test_clip_folder_loads_the_saved_weights(clip_folder):
    from safetensors.torch import load_file

    model, _, _ = load_clip(clip_folder, device="cpu")
    saved = load_file(str(clip_folder / "open_clip_model.safetensors"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())


def test_clip_bad_specs(tmp_path, monkeypatch):
    with pytest.raises(NotFoundError, match="open_clip_config.json"):
        load_clip(tmp_path)
    with pytest.raises(NotFoundError) as e:
        load_clip("Not-A-Model/openai")
    assert "ViT-L-14" in str(e.value) and "toy" in str(e.value)
    with pytest.raises(NotFoundError, match="openai"):
        load_clip("ViT-L-14")  # the tag is missing: the valid ones are listed
    monkeypatch.setitem(clip_module.BUILTIN_CLIPS, "toy", clip_module.BuiltinClip(tmp_path / "absent", "rlft toy pretrain"))
    with pytest.raises(NotFoundError, match="rlft toy pretrain"):
        load_clip("toy")


def test_clip_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="offline"):
        load_clip("hf-hub:rlft-tests/definitely-not-cached")
    with pytest.raises(OfflineError, match="offline"):
        load_clip("ViT-B-32/commonpool_m_text_s128m_b4k")  # a real tag no one here has cached
