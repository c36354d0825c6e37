"""SDXL loading: the tiny SDXL pipeline, family detection (folder, single file, hub cache), sizes and buckets."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from prefs.errors import NotFoundError, UserError
from rlft import load_pipeline
from rlft.models.families import (
    FAMILIES,
    UnsupportedModelError,
    family_of_class,
    family_of_keys,
    family_of_pipeline,
)
from rlft.models.pipeline import model_family, native_image_size, resolve_model
from rlft.models.single_file import config_dir_for, save_single_file
from rlft.models.sizes import SDXL_BUCKETS, check_size, nearest_bucket
from rlft.models.tiny import TINY_SDXL_TEXT_WIDTHS, tiny_pipeline, tiny_sdxl_pipeline
from rlft.models.tokenizer import FtfyCLIPTokenizer

PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def tiny():
    return tiny_sdxl_pipeline(seed=0)


@pytest.fixture(scope="module")
def folder(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("sdxl") / "tiny-sdxl"
    tiny.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def single(tiny, tmp_path_factory):
    return save_single_file(tiny, tmp_path_factory.mktemp("sdxl-file") / "tiny-sdxl.safetensors")


def assert_same_weights(a, b):
    for name in PARTS:
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{name}.{key}"


def pixels(pipe, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return pipe("a red circle", num_inference_steps=2, generator=g, output_type="np", **kw).images


def test_tiny_sdxl_is_small_deterministic_and_sdxl_shaped(tiny):
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    assert isinstance(tiny, StableDiffusionXLPipeline)
    assert type(tiny.text_encoder) is CLIPTextModel and type(tiny.text_encoder_2) is CLIPTextModelWithProjection
    config = tiny.unet.config
    assert config.addition_embed_type == "text_time" and config.cross_attention_dim == sum(TINY_SDXL_TEXT_WIDTHS)
    assert config.projection_class_embeddings_input_dim == tiny.text_encoder_2.config.projection_dim + 6 * config.addition_time_embed_dim
    params = sum(p.numel() for name in PARTS for p in getattr(tiny, name).parameters())
    assert params < 6e6  # a few MB
    assert len(tiny.tokenizer) == len(tiny.tokenizer_2) == 49408 and tiny.tokenizer_2.pad_token == "!"
    assert family_of_pipeline(tiny) is FAMILIES["sdxl"]
    first = pixels(tiny)
    assert first.shape == (1, 64, 64, 3)
    assert (pixels(tiny_sdxl_pipeline(seed=0)) == first).all()  # same seed, same weights, same pixels
    assert not (pixels(tiny_sdxl_pipeline(seed=1)) == first).all()


def test_folder_is_detected_and_round_trips(tiny, folder):
    source = resolve_model(folder)
    assert model_family(source) is FAMILIES["sdxl"]
    pipe = load_pipeline(folder)
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert isinstance(pipe.tokenizer, FtfyCLIPTokenizer) and isinstance(pipe.tokenizer_2, FtfyCLIPTokenizer)
    assert pipe.model_source.kind == "folder" and pipe.model_source.name == "tiny-sdxl"
    assert_same_weights(tiny, pipe)
    assert (pixels(pipe) == pixels(tiny)).all()


def test_saved_folder_loads_in_plain_diffusers(folder, tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    index = json.loads((folder / "model_index.json").read_text())
    assert index["tokenizer"] == index["tokenizer_2"] == ["transformers", "CLIPTokenizer"]
    plain = StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True)
    assert type(plain.tokenizer_2) is CLIPTokenizer and plain.tokenizer_2.pad_token == "!"
    load_pipeline(folder).save_pretrained(tmp_path / "again")  # a loaded pipeline saves stock classes too
    again = json.loads((tmp_path / "again" / "model_index.json").read_text())
    assert again["tokenizer_2"] == ["transformers", "CLIPTokenizer"]


def test_single_file_layout_detection_and_round_trip(tiny, single):
    from safetensors import safe_open

    with safe_open(str(single), "pt") as f:
        keys = set(f.keys())
    # Stability's SDXL layout, as model sites share it: OpenAI CLIP under embedders.0, OpenCLIP (fused q/k/v) under 1
    assert "model.diffusion_model.label_emb.0.0.weight" in keys
    assert "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight" in keys
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "conditioner.embedders.1.model.text_projection" in keys
    assert family_of_keys(keys) is FAMILIES["sdxl"]
    pipe = load_pipeline(single)
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and pipe.model_source.kind == "file"
    assert_same_weights(tiny, pipe)
    assert (pixels(pipe) == pixels(tiny)).all()


def test_single_file_with_sdxl_blocks_and_depth(tmp_path):
    # SDXL's own two ResNets per level and stacked transformer blocks, through the single-file layout
    tiny = tiny_sdxl_pipeline(seed=2, layers_per_block=2, transformer_layers=2)
    pipe = load_pipeline(save_single_file(tiny, tmp_path / "deep.safetensors"))
    assert_same_weights(tiny, pipe)


def test_single_file_config_argument_and_family_mismatch(tiny, single, tmp_path):
    moved = tmp_path / "model.safetensors"
    shutil.copy(single, moved)
    with pytest.raises(NotFoundError, match="SDXL.*--config"):
        load_pipeline(moved)
    assert_same_weights(tiny, load_pipeline(moved, config=config_dir_for(single)))
    sd1 = tmp_path / "sd1"
    tiny_pipeline(0).save_pretrained(sd1)
    with pytest.raises(UserError, match="SDXL checkpoint.*SD 1.x model"):
        load_pipeline(moved, config=sd1)


def test_hub_id_resolves_from_the_local_cache(folder, tmp_path, monkeypatch):
    # A hub repo id (offline, already downloaded): the family comes from its model_index.json, no flag
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    repo = cache / "models--rlft-tests--tiny-sdxl"
    commit = "0" * 40
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read on every call
    source = resolve_model("rlft-tests/tiny-sdxl")
    assert source.kind == "hub"
    assert model_family(source) is FAMILIES["sdxl"]
    assert type(load_pipeline("rlft-tests/tiny-sdxl")).__name__ == "StableDiffusionXLPipeline"


def test_native_image_size_from_the_files(folder, single, tmp_path):
    assert native_image_size(resolve_model(folder)) == (64, 64)  # the tiny model's own: 8 latents x 8
    assert native_image_size(resolve_model(single)) == (64, 64)  # from the config folder beside it
    moved = tmp_path / "model.safetensors"
    shutil.copy(single, moved)
    assert native_image_size(resolve_model(moved)) == (1024, 1024)  # no configs: SDXL's, told by its keys


@pytest.mark.parametrize("name,family", [
    ("StableDiffusionPipeline", "sd1"), ("StableDiffusionXLPipeline", "sdxl"), ("", "sd1"),
])
def test_family_of_class(name, family):
    assert family_of_class(name).name == family


@pytest.mark.parametrize("name", ["StableDiffusionXLImg2ImgPipeline", "FluxFillPipeline", "StableDiffusion3InpaintPipeline"])
def test_unsupported_pipelines_are_named(name, tmp_path):
    with pytest.raises(UnsupportedModelError, match=name):
        family_of_class(name)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": name}))
    with pytest.raises(UnsupportedModelError, match="SDXL"):
        load_pipeline(folder)


def test_family_of_keys():
    assert family_of_keys(["cond_stage_model.transformer.text_model.x", "model.diffusion_model.y"]) is FAMILIES["sd1"]
    assert family_of_keys(["model.diffusion_model.label_emb.0.0.weight"]) is FAMILIES["sdxl"]
    assert family_of_keys(["model.diffusion_model.input_blocks.0.0.weight"]) is None


def test_sizes_and_buckets():
    sdxl, sd1 = FAMILIES["sdxl"], FAMILIES["sd1"]
    for w, h in SDXL_BUCKETS:
        check_size(sdxl, w, h)
        assert abs(w * h - 1024 * 1024) / (1024 * 1024) < 0.1  # about one megapixel each
    assert {(h, w) for w, h in SDXL_BUCKETS} == set(SDXL_BUCKETS)  # portrait for every landscape
    check_size(sd1, 520, 200)
    with pytest.raises(UserError, match="multiple of 64.*1216x832"):
        check_size(sdxl, 1000, 1024)
    with pytest.raises(UserError, match="height"):
        check_size(sdxl, None, 0)
    assert nearest_bucket(1920, 1080) == (1344, 768) and nearest_bucket(512, 512) == (1024, 1024)
    assert nearest_bucket(600, 1400) == (640, 1536)
