"""SD3 and FLUX loading and adapters: tiny pipelines, family detection (folder, single-file keys, hub cache),
the adapters' conditioning, velocity, latents and decoding against the pipelines' own."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from prefs.errors import NotFoundError, UserError
from rlft import load_pipeline
from rlft.models.adapters import FluxAdapter, SD3Adapter, adapter_for
from rlft.models.families import FAMILIES, UnsupportedModelError, family_of_class, family_of_keys, family_of_pipeline
from rlft.models.pipeline import model_family, native_image_size, resolve_model
from rlft.models.sizes import check_size
from rlft.models.tiny import (
    TINY_FLUX_WIDTHS,
    TINY_SD3_T5_WIDTH,
    TINY_SD3_TEXT_WIDTHS,
    t5_tokenizer,
    tiny_flux_pipeline,
    tiny_sd3_pipeline,
)
from rlft.models.tokenizer import FtfyCLIPTokenizer

PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def sd3():
    return tiny_sd3_pipeline(seed=0)


@pytest.fixture(scope="module")
def flux():
    return tiny_flux_pipeline(seed=0)


@pytest.fixture(scope="module")
def folders(sd3, flux, tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    sd3.save_pretrained(root / "tiny-sd3")
    tiny_sd3_pipeline(seed=0, t5=False).save_pretrained(root / "tiny-sd3-no-t5")
    flux.save_pretrained(root / "tiny-flux")
    return root


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def parts(pipe):
    return {name: getattr(pipe, name) for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
            if getattr(pipe, name, None) is not None}


def assert_same_weights(a, b):
    pa, pb = parts(a), parts(b)
    assert pa.keys() == pb.keys()
    for name in pa:
        sa, sb = pa[name].state_dict(), pb[name].state_dict()
        assert sa.keys() == sb.keys(), name
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{name}.{key}"


def latents(pipe, seed=0, **kw):
    kw.setdefault("height", 64)
    kw.setdefault("width", 64)
    return pipe(PROMPTS[0], num_inference_steps=2, generator=gens(seed)[0], output_type="latent", **kw).images


def test_tiny_pipelines_are_the_real_classes_with_their_families_shapes(sd3, flux):
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    assert isinstance(sd3, StableDiffusion3Pipeline) and isinstance(sd3.transformer, SD3Transformer2DModel)
    assert type(sd3.text_encoder) is type(sd3.text_encoder_2) is CLIPTextModelWithProjection
    assert isinstance(sd3.text_encoder_3, T5EncoderModel)
    config = sd3.transformer.config
    assert config.pooled_projection_dim == sum(TINY_SD3_TEXT_WIDTHS)  # both CLIPs' projections side by side
    assert config.joint_attention_dim == sd3.text_encoder_3.config.d_model == TINY_SD3_T5_WIDTH > sum(TINY_SD3_TEXT_WIDTHS)
    assert isinstance(flux, FluxPipeline) and isinstance(flux.transformer, FluxTransformer2DModel)
    assert type(flux.text_encoder) is CLIPTextModel and isinstance(flux.text_encoder_2, T5EncoderModel)
    assert flux.transformer.config.guidance_embeds
    assert (flux.transformer.config.pooled_projection_dim, flux.transformer.config.joint_attention_dim) == TINY_FLUX_WIDTHS
    for pipe, family, adapter in ((sd3, "sd3", SD3Adapter), (flux, "flux", FluxAdapter)):
        assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
        assert pipe.vae.config.latent_channels == 16 and pipe.vae.config.shift_factor
        assert family_of_pipeline(pipe) is FAMILIES[family] and FAMILIES[family].flow
        assert type(adapter_for(pipe)) is adapter
        assert adapter_for(pipe).image_size == (64, 64)
        assert sum(p.numel() for m in parts(pipe).values() for p in m.parameters()) < 5e6
    assert flux.scheduler.config.use_dynamic_shifting and not sd3.scheduler.config.use_dynamic_shifting
    # same seed, same weights; another seed, other weights
    assert torch.equal(latents(tiny_sd3_pipeline(seed=0)), latents(sd3))
    assert not torch.equal(latents(tiny_sd3_pipeline(seed=1)), latents(sd3))
    assert torch.equal(latents(tiny_flux_pipeline(seed=0)), latents(flux))
    assert not torch.equal(latents(tiny_flux_pipeline(seed=1)), latents(flux))


def test_t5_tokenizer_is_built_offline_with_t5s_special_ids(tmp_path):
    from transformers import T5Tokenizer

    tok = t5_tokenizer()
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok("A cat, on a mat!")["input_ids"]
    assert ids[-1] == 1 and 2 not in ids  # ends with </s>; every ASCII character is a piece
    assert tok.convert_ids_to_tokens(ids[:3]) == ["▁A", "▁c", "a"]
    assert tok.decode(ids, skip_special_tokens=True) == "A cat, on a mat!"
    assert 2 in tok("café")["input_ids"]  # outside ASCII: <unk>
    padded = tok(["a", "a much longer prompt"], padding="max_length", max_length=12, truncation=True)["input_ids"]
    assert [len(p) for p in padded] == [12, 12] and padded[0][2:] == [0] * 10 and padded[1][-1] == 1  # as the pipelines pad
    tok.save_pretrained(tmp_path)
    again = T5Tokenizer.from_pretrained(tmp_path)
    assert again("A cat, on a mat!")["input_ids"] == ids


@pytest.mark.parametrize("name,family", [("tiny-sd3", "sd3"), ("tiny-sd3-no-t5", "sd3"), ("tiny-flux", "flux")])
def test_folder_is_detected_and_round_trips(folders, name, family, sd3, flux):
    folder = folders / name
    assert model_family(resolve_model(folder)) is FAMILIES[family]
    assert native_image_size(resolve_model(folder)) == (64, 64)  # SD3: transformer sample size x 8; FLUX: the VAE's
    pipe = load_pipeline(folder)
    assert type(pipe).__name__ == FAMILIES[family].pipeline and pipe.model_source.name == name
    assert isinstance(pipe.tokenizer, FtfyCLIPTokenizer)
    if name == "tiny-sd3-no-t5":
        assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None
        assert_same_weights(tiny_sd3_pipeline(seed=0, t5=False), pipe)
        # without T5 its states are zeros, so the images differ from the same weights with T5
        assert not torch.equal(latents(pipe), latents(sd3))
        return
    reference = sd3 if family == "sd3" else flux
    assert_same_weights(reference, pipe)
    # equal weights; safetensors leaves some at unaligned addresses, where a matmul kernel may round in the last bit
    torch.testing.assert_close(latents(pipe), latents(reference), rtol=0, atol=1e-5)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]  # loads in plain diffusers


def test_sd3_index_without_t5_names_no_encoder(folders):
    index = json.loads((folders / "tiny-sd3-no-t5" / "model_index.json").read_text())
    assert index["text_encoder_3"] == [None, None] and index["_class_name"] == "StableDiffusion3Pipeline"
    assert not (folders / "tiny-sd3-no-t5" / "text_encoder_3").exists()


@pytest.mark.parametrize("name,family", [
    ("StableDiffusion3Pipeline", "sd3"), ("FluxPipeline", "flux"), ("StableDiffusionXLPipeline", "sdxl"),
])
def test_family_of_class(name, family):
    assert family_of_class(name) is FAMILIES[family]


@pytest.mark.parametrize("name", ["StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline",
                                  "FluxFillPipeline", "FluxKontextPipeline", "FluxControlNetPipeline",
                                  "FluxImg2ImgPipeline", "StableCascadeCombinedPipeline", "SanaPipeline"])
def test_other_pipelines_are_refused_in_one_line(name):
    with pytest.raises(UnsupportedModelError) as e:
        family_of_class(name)
    assert name in str(e.value) and "\n" not in str(e.value)


def write_keys(path, keys):
    from safetensors.torch import save_file

    save_file({k: torch.zeros(1) for k in keys}, str(path))
    return path


@pytest.mark.parametrize("keys,family", [
    (["model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias",
      "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight"], "sd3"),  # ComfyUI's all-in-one SD3
    (["joint_blocks.0.context_block.adaLN_modulation.1.bias", "x_embedder.proj.weight"], "sd3"),  # transformer only
    (["double_blocks.0.img_attn.norm.key_norm.scale", "single_blocks.0.linear1.weight"], "flux"),  # flux1-dev's
    (["model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale"], "flux"),
    (["model.diffusion_model.label_emb.0.0.weight"], "sdxl"),
    (["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.transformer.x"], "sd1"),
    (["double_blocks.1.img_attn.norm.key_norm.scale", "something"], None),
])
def test_single_file_family_from_its_keys(keys, family, tmp_path):
    assert family_of_keys(keys) is (FAMILIES[family] if family else None)
    path = write_keys(tmp_path / "model.safetensors", keys)
    if family in ("sd3", "flux"):
        assert model_family(resolve_model(path)) is FAMILIES[family]  # no config folder needed to tell it
        assert native_image_size(resolve_model(path)) == (1024, 1024)
        with pytest.raises(NotFoundError, match="--config DIR") as e:  # loading it offline needs the configs
            load_pipeline(path)
        assert {"sd3": "SD3 medium", "flux": "FLUX.1-dev"}[family] in str(e.value)


def test_single_file_of_another_family_than_its_config_folder(folders, tmp_path):
    flux_file = write_keys(tmp_path / "flux1.safetensors", ["double_blocks.0.img_attn.norm.key_norm.scale"])
    with pytest.raises(UserError, match="FLUX checkpoint, but its config folder") as e:
        model_family(resolve_model(flux_file), folders / "tiny-sd3")
    assert "\n" not in str(e.value)
    assert model_family(resolve_model(flux_file), folders / "tiny-flux") is FAMILIES["flux"]


def test_hub_id_resolves_from_the_local_cache(folders, tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    for name in ("tiny-sd3", "tiny-flux"):
        repo = cache / f"models--rlft-tests--{name}"
        commit = "0" * 40
        shutil.copytree(folders / name, repo / "snapshots" / commit)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert model_family(resolve_model("rlft-tests/tiny-sd3")) is FAMILIES["sd3"]
    assert model_family(resolve_model("rlft-tests/tiny-flux")) is FAMILIES["flux"]
    assert type(load_pipeline("rlft-tests/tiny-flux")).__name__ == "FluxPipeline"


def test_sizes_are_multiples_of_16():
    for family in ("sd3", "flux"):
        check_size(FAMILIES[family], 1024, 768)
        with pytest.raises(UserError, match="multiple of 16"):
            check_size(FAMILIES[family], 1000, 1024)


# -- adapters ---------------------------------------------------------------------------------------------------

def test_sd3_adapter_samples_the_pipelines_latents_and_pixels_with_cfg(sd3):
    adapter = adapter_for(sd3)
    cond = adapter.encode_prompt(PROMPTS, 4.0, "blurry")
    embeds, negative, pooled, negative_pooled = sd3.encode_prompt(
        PROMPTS, None, None, do_classifier_free_guidance=True, negative_prompt=["blurry"] * 2)
    assert cond.guided and torch.equal(cond.embeds, embeds) and torch.equal(cond.negative_embeds, negative)
    assert torch.equal(cond.added["pooled_projections"], pooled)
    assert torch.equal(cond.negative_added["pooled_projections"], negative_pooled)
    # 77 CLIP tokens then 256 T5 tokens, all T5-wide; pooled: both projections
    assert cond.embeds.shape == (2, 77 + 256, TINY_SD3_T5_WIDTH) and pooled.shape == (2, sum(TINY_SD3_TEXT_WIDTHS))
    assert not adapter.encode_prompt(PROMPTS, 1.0).guided  # guidance <= 1: no negative half
    ref = sd3(PROMPTS, negative_prompt=["blurry"] * 2, num_inference_steps=3, guidance_scale=4.0, generator=gens(0, 1),
              output_type="latent").images
    mine = adapter.sample(PROMPTS, steps=3, guidance=4.0, negative="blurry", generator=gens(0, 1))
    assert torch.equal(mine, ref)
    unguided = adapter.sample(PROMPTS, steps=3, guidance=1.0, generator=gens(0, 1))
    assert not torch.equal(unguided, ref)
    images = sd3(PROMPTS, negative_prompt=["blurry"] * 2, num_inference_steps=3, guidance_scale=4.0,
                 generator=gens(0, 1), output_type="pt").images
    with torch.no_grad():
        assert torch.equal(adapter.decode(mine), images)
    assert torch.equal(adapter.noise(gens(0, 1), (64, 64)), adapter.prepare_latents(2, gens(0, 1)))
    with pytest.raises(TypeError, match="velocity"):
        adapter.predict_noise(sd3.transformer, mine, 1, cond, 4.0)


def test_sd3_schedule_is_shifted_as_sd3_ships(sd3):
    timesteps = adapter_for(sd3).set_timesteps(4)

    def shift(sigma):  # SD3's shift 3: sigma' = s sigma / (1 + (s - 1) sigma)
        return 3 * sigma / (1 + 2 * sigma)

    # evenly spaced between the shifted schedule's ends (1 and the shifted 1/1000), then shifted again
    t = torch.linspace(1, shift(torch.tensor(0.001)).item(), 4, dtype=torch.float64)
    assert torch.allclose(timesteps.double() / 1000, shift(t), atol=1e-6)
    assert timesteps[1] / 1000 > t[1]  # more time at high noise than the unshifted schedule
    assert sd3.scheduler.sigmas[-1] == 0


def test_flux_adapter_packs_latents_embeds_guidance_and_samples_the_pipelines_latents(flux):
    adapter = adapter_for(flux)
    for size in ((64, 64), (32, 96)):
        cond = adapter.encode_prompt(PROMPTS, 3.5, size=size)
        assert not cond.guided
        seq = (size[0] // 16) * (size[1] // 16)
        assert cond.added["img_ids"].shape == (2, seq, 3) and cond.added["txt_ids"].shape == (2, 512, 3)
        assert cond.added["pooled_projections"].shape == (2, TINY_FLUX_WIDTHS[0])
        ref = flux(PROMPTS, num_inference_steps=3, guidance_scale=3.5, height=size[0], width=size[1],
                   generator=gens(0, 1), output_type="latent").images
        mine = adapter.sample(PROMPTS, steps=3, guidance=3.5, generator=gens(0, 1), size=size)
        assert mine.shape == (2, seq, 64) and torch.equal(mine, ref)
        images = flux(PROMPTS, num_inference_steps=3, guidance_scale=3.5, height=size[0], width=size[1],
                      generator=gens(0, 1), output_type="pt").images
        with torch.no_grad():
            assert torch.equal(adapter.decode(mine, size), images)
        assert torch.equal(adapter.noise(gens(0, 1), size), adapter.prepare_latents(2, gens(0, 1), size=size))
    # the guidance scale is an input of the model: another scale, other latents
    other = adapter.sample(PROMPTS, steps=3, guidance=1.5, generator=gens(0, 1))
    assert not torch.equal(other, adapter.sample(PROMPTS, steps=3, guidance=3.5, generator=gens(0, 1)))
    with pytest.raises(UserError, match="no negative prompt"):
        adapter.encode_prompt(PROMPTS, 3.5, "blurry")


def test_flux_schedule_shifts_with_the_image_size(flux):
    adapter = adapter_for(flux)
    small = adapter.set_timesteps(4, (64, 64)).clone()
    large = adapter.set_timesteps(4, (1024, 1024)).clone()
    assert small[0] == large[0] == 1000 and (large[1:] > small[1:]).all()  # more tokens, more time at high noise


def test_schnell_style_flux_ignores_guidance():
    pipe = tiny_flux_pipeline(seed=0, guidance_embeds=False)
    adapter = adapter_for(pipe)
    a = adapter.sample(PROMPTS[:1], steps=2, guidance=3.5, generator=gens(0))
    assert torch.equal(a, adapter.sample(PROMPTS[:1], steps=2, guidance=1.0, generator=gens(0)))
