"""Model adapters: SD 1.x's equals rlft.train.ddim's prompt encoding and guided noise prediction; SDXL's equals
what `StableDiffusionXLPipeline.__call__` computes (its sampling loop driven through the adapter ends on the
pipeline's latents, bit for bit)."""

from __future__ import annotations

import pytest
import torch

from rlft.models.adapters import ADAPTERS, Conditioning, SD1Adapter, SDXLAdapter, adapter_for
from rlft.models.schedulers import set_scheduler
from rlft.models.tiny import tiny_pipeline, tiny_sdxl_pipeline
from rlft.train import ddim

PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def sd1():
    return tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def sdxl():
    return tiny_sdxl_pipeline(seed=0)


def generators():
    return [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]


def test_adapter_for_each_family(sd1, sdxl):
    assert type(adapter_for(sd1)) is SD1Adapter and adapter_for(sd1).family == "sd1"
    assert type(adapter_for(sdxl)) is SDXLAdapter and adapter_for(sdxl).info.title == "SDXL"
    assert set(ADAPTERS) == {"sd1", "sdxl", "sd3", "flux"}
    assert adapter_for(sd1).image_size == adapter_for(sdxl).image_size == (64, 64)  # sample_size * VAE factor
    assert set(adapter_for(sdxl).text_encoders) == {"text_encoder", "text_encoder_2"}
    assert set(adapter_for(sd1).text_encoders) == {"text_encoder"}


@pytest.mark.parametrize("guidance,negative", [(4.0, None), (3.0, "blurry"), (1.0, None)])
def test_sd1_adapter_equals_train_ddim(sd1, guidance, negative):
    adapter = adapter_for(sd1)
    pos, neg = ddim.encode_prompts(sd1, PROMPTS, guidance, negative)
    cond = adapter.encode_prompt(PROMPTS, guidance, negative)
    assert torch.equal(cond.embeds, pos) and cond.added == {}
    assert (neg is None and not cond.guided) or torch.equal(cond.negative_embeds, neg)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for t in (torch.tensor(500), torch.tensor([900, 100])):  # one timestep, or one per latent
        expected = ddim.predict_noise(sd1.unet, latents, t, pos, neg, guidance)
        assert torch.equal(adapter.predict_noise(sd1.unet, latents, t, cond, guidance), expected)


def test_sd1_adapter_loop_equals_the_pipeline(sd1):
    set_scheduler(sd1, "ddim")
    ref = sd1(PROMPTS, num_inference_steps=3, guidance_scale=5.0, generator=generators(), output_type="latent").images
    mine = adapter_for(sd1).sample(PROMPTS, steps=3, guidance=5.0, generator=generators())
    assert torch.equal(ref, mine)


@pytest.mark.parametrize("sampler,guidance,negative,size", [
    ("euler", 5.0, None, (64, 64)),  # SDXL's own sampler
    ("ddim", 5.0, None, (64, 64)),  # DDIM with eta = 0, rlft's training sampler
    ("ddim", 3.0, "blurry", (64, 128)),  # a negative prompt, a landscape canvas
    ("euler_a", 1.0, None, (128, 64)),  # no CFG, a portrait; ancestral noise from the same generators
])
def test_sdxl_adapter_loop_equals_the_pipeline(sdxl, sampler, guidance, negative, size):
    set_scheduler(sdxl, sampler)
    height, width = size
    ref = sdxl(PROMPTS, negative_prompt=[negative] * 2 if negative else None, num_inference_steps=3,
               guidance_scale=guidance, height=height, width=width, generator=generators(), output_type="latent").images
    mine = adapter_for(sdxl).sample(PROMPTS, steps=3, guidance=guidance, negative=negative, generator=generators(),
                                    size=size)
    assert ref.shape == (2, 4, height // 8, width // 8)
    assert torch.equal(ref, mine)


def test_sdxl_conditioning_is_the_pipelines(sdxl):
    adapter = adapter_for(sdxl)
    cond = adapter.encode_prompt(PROMPTS, 5.0, None, size=(64, 128))
    embeds, negative, pooled, negative_pooled = sdxl.encode_prompt(PROMPTS, device="cpu", do_classifier_free_guidance=True)
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.added["text_embeds"], pooled)
    assert cond.embeds.shape[-1] == sdxl.unet.config.cross_attention_dim  # both encoders' states side by side
    assert not negative.any() and torch.equal(cond.negative_embeds, negative)  # SDXL's empty negative is zeros
    assert torch.equal(cond.negative_added["text_embeds"], negative_pooled)
    ids = sdxl._get_add_time_ids((64, 128), (0, 0), (64, 128), embeds.dtype, sdxl.text_encoder_2.config.projection_dim)
    assert torch.equal(cond.added["time_ids"], ids.repeat(2, 1))
    assert cond.added["time_ids"].tolist()[0] == [64, 128, 0, 0, 64, 128]
    with_negative = adapter.encode_prompt(PROMPTS, 5.0, "blurry")
    assert with_negative.negative_embeds.any()
    unguided = adapter.encode_prompt(PROMPTS, 1.0)
    assert not unguided.guided and unguided.negative_added == {}


def test_micro_conditioning_reaches_the_unet(sdxl):
    adapter = adapter_for(sdxl)
    cond = adapter.encode_prompt(PROMPTS, 1.0)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    other = Conditioning(cond.embeds, None, {**cond.added, "time_ids": adapter.time_ids(2, (1024, 1024))})
    with torch.no_grad():
        assert not torch.equal(adapter.predict_noise(sdxl.unet, x, t, cond, 1.0), adapter.predict_noise(sdxl.unet, x, t, other, 1.0))


def test_gradient_reaches_the_unet_through_the_sdxl_path(sdxl):
    # what training needs: a loss on the guided prediction has gradients on the UNet's attention and added embedding
    adapter = adapter_for(sdxl)
    cond = adapter.encode_prompt(PROMPTS, 5.0, "blurry")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sdxl.unet.zero_grad(set_to_none=True)
    adapter.predict_noise(sdxl.unet, x, torch.tensor([700, 300]), cond, 5.0).square().mean().backward()
    grads = {n: p.grad for n, p in sdxl.unet.named_parameters()}
    sdxl.unet.zero_grad(set_to_none=True)
    assert grads["add_embedding.linear_1.weight"].abs().sum() > 0
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "attn2.to_k" in n)


def test_decode_equals_the_pipelines(sdxl):
    set_scheduler(sdxl, "euler")
    latents = adapter_for(sdxl).sample(PROMPTS[:1], steps=2, guidance=3.0, generator=[torch.Generator().manual_seed(4)])
    images = sdxl(PROMPTS[:1], num_inference_steps=2, guidance_scale=3.0, generator=[torch.Generator().manual_seed(4)],
                  output_type="pt").images
    with torch.no_grad():
        torch.testing.assert_close(adapter_for(sdxl).decode(latents), images, atol=1e-6, rtol=0)


def test_conditioning_index_cat_repeat_to(sdxl):
    cond = adapter_for(sdxl).encode_prompt(PROMPTS, 5.0)
    one = cond.index([1])
    assert len(one) == 1 and torch.equal(one.added["time_ids"], cond.added["time_ids"][1:])
    both = Conditioning.cat([cond.index([0]), one])
    assert torch.equal(both.embeds, cond.embeds) and torch.equal(both.negative_added["text_embeds"], cond.negative_added["text_embeds"])
    rep = cond.repeat(3)
    assert len(rep) == 6 and torch.equal(rep.index(slice(3, 6)).embeds, cond.index([1]).embeds.repeat(3, 1, 1))
    half = cond.to(dtype=torch.float16)
    assert half.embeds.dtype == torch.float16 and half.added["time_ids"].dtype == torch.float16
