"""Model adapters: one small class per model family, so that sampling and every training algorithm are written once.

A diffusers pipeline's `__call__` does everything at once; an adapter splits out the parts an algorithm needs
and no more (as Flow-Factory's `BaseAdapter` does):

    adapter = adapter_for(pipe)                   # SD1Adapter, SDXLAdapter, SD3Adapter, FluxAdapter
    cond = adapter.encode_prompt(prompts, guidance, negative)            # a `Conditioning`
    x = adapter.prepare_latents(len(prompts), generator)                 # the pipeline's initial noise
    eps = adapter.predict_noise(unet, scheduler.scale_model_input(x, t), t, cond, guidance)   # CFG included
    images = adapter.decode(x)                    # [0, 1], differentiable

`Conditioning` carries what the UNet is conditioned on, whatever the family: the text states
(`encoder_hidden_states`) and the UNet's `added_cond_kwargs` (SDXL: the pooled text of the second encoder and
the six micro-conditioning numbers), each with its classifier-free-guidance negative. Each adapter computes
exactly what its pipeline's `__call__` computes (tested against it), so an algorithm written against the
adapter samples what `rlft generate` samples.

The flow-matching families (SD3, FLUX: `FlowAdapter`) run a transformer that predicts a velocity
(`predict_velocity`), on a `FlowMatchEulerDiscreteScheduler` schedule set as their pipeline sets it
(`set_timesteps`); `Conditioning.added` then holds the transformer's extra inputs (`pooled_projections`, and
FLUX's rotary position ids, one row per sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rlft.models.families import FAMILIES, Family, family_of_pipeline


@dataclass
class Conditioning:
    """What the UNet is conditioned on for a batch of N prompts (positive half, and CFG's negative half)."""

    embeds: torch.Tensor  # [N, L, D]: the UNet's encoder_hidden_states (SDXL: both encoders' states side by side)
    negative_embeds: torch.Tensor | None = None  # [N, L, D]; None: no classifier-free guidance
    added: dict[str, torch.Tensor] = field(default_factory=dict)  # the UNet's added_cond_kwargs, each [N, ...]
    negative_added: dict[str, torch.Tensor] = field(default_factory=dict)  # the same for the negative half

    @property
    def guided(self) -> bool:
        """Whether this conditioning carries a negative half (classifier-free guidance)."""
        return self.negative_embeds is not None

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    def __iter__(self):
        """`embeds, negative_embeds = cond`: the pair SD 1.x code passes around (`rlft.train.ddim.encode_prompts`).
        It leaves out the added conditioning, so SDXL code passes the `Conditioning` itself."""
        return iter((self.embeds, self.negative_embeds))

    def _map(self, fn) -> Conditioning:
        return Conditioning(
            fn(self.embeds), None if self.negative_embeds is None else fn(self.negative_embeds),
            {k: fn(v) for k, v in self.added.items()}, {k: fn(v) for k, v in self.negative_added.items()},
        )

    def index(self, idx) -> Conditioning:
        """The conditioning of the samples at `idx` (a slice, an index tensor or a list)."""
        return self._map(lambda t: t[idx])

    def to(self, device=None, dtype=None) -> Conditioning:
        """Moved to `device`; floating tensors cast to `dtype` when given."""
        return self._map(lambda t: t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else None))

    def detach(self) -> Conditioning:
        """The same tensors, cut from the autograd graph (to keep in a trajectory)."""
        return self._map(lambda t: t.detach())

    def repeat(self, n: int) -> Conditioning:
        """Each sample repeated n times in a row (as `num_images_per_prompt` does)."""
        return self._map(lambda t: t.repeat_interleave(n, dim=0))

    @staticmethod
    def cat(parts: Sequence[Conditioning]) -> Conditioning:
        """The batches of `parts`, one after the other (all guided or none)."""
        first = parts[0]
        return Conditioning(
            torch.cat([p.embeds for p in parts]),
            None if first.negative_embeds is None else torch.cat([p.negative_embeds for p in parts]),
            {k: torch.cat([p.added[k] for p in parts]) for k in first.added},
            {k: torch.cat([p.negative_added[k] for p in parts]) for k in first.negative_added},
        )


class ModelAdapter:
    """What sampling and training need from a pipeline of one family. Subclasses set `family` and `encode_prompt`."""

    family: str = ""  # a key of rlft.models.families.FAMILIES
    size_conditioned: bool = False  # whether the UNet is told each image's size and crop (SDXL's micro-conditioning)

    def __init__(self, pipe):
        self.pipe = pipe

    @property
    def info(self) -> Family:
        """The family's facts (title, LoRA layout version, size rule)."""
        return FAMILIES[self.family]

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels the model makes by default: its UNet's sample size times the VAE factor
        (SD 1.5: 512; SDXL: 1024; the tiny ones: 64)."""
        size = self.pipe.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        factor = self.pipe.vae_scale_factor
        return h * factor, w * factor

    @property
    def text_encoders(self) -> dict[str, torch.nn.Module]:
        """The pipeline's text encoders by component name (what a text-encoder LoRA adapts)."""
        return {name: getattr(self.pipe, name) for name in ("text_encoder", "text_encoder_2")
                if getattr(self.pipe, name, None) is not None}

    def encode_prompt(self, prompts: Sequence[str], guidance: float, negative: str | None = None, *,
                      size: tuple[int, int] | None = None, device=None) -> Conditioning:
        """The conditioning of `prompts`, exactly as the pipeline encodes them.

        CFG (a negative half) when `guidance` > 1; `negative` is the negative prompt for every prompt (None or
        "": the pipeline's empty negative). `size` is the (height, width) being generated (default
        `image_size`): SDXL conditions on it; SD 1.x ignores it.
        """
        raise NotImplementedError

    def with_sizes(self, cond: Conditioning, sizes: Sequence[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]
                   ) -> Conditioning:
        """`cond` conditioned on each sample's own image geometry: `sizes[i]` is (original size, crop top-left,
        target size) of sample i, each (height, width). Families without micro-conditioning return `cond` as it is."""
        return cond

    def predict_noise(self, unet, latents: torch.Tensor, t, cond: Conditioning, guidance: float) -> torch.Tensor:
        """The UNet's noise prediction for `latents` at timestep `t` (one, or one per latent), guided as the
        pipeline guides it (one batched call: negative half first, then uncond + guidance * (text - uncond)).

        `unet` is passed in, not taken from the pipeline, so training can pass a wrapped (DDP, compiled) UNet.
        """
        if not cond.guided:
            return unet(latents, t, encoder_hidden_states=cond.embeds, added_cond_kwargs=cond.added or None).sample
        both_t = torch.cat([t, t]) if torch.is_tensor(t) and t.ndim else t
        added = {k: torch.cat([cond.negative_added[k], v]) for k, v in cond.added.items()}
        both = unet(torch.cat([latents, latents]), both_t, encoder_hidden_states=torch.cat([cond.negative_embeds, cond.embeds]),
                    added_cond_kwargs=added or None).sample
        uncond, text = both.chunk(2)
        return uncond + guidance * (text - uncond)

    def prepare_latents(self, n: int, generator=None, *, size: tuple[int, int] | None = None, latents=None,
                        dtype=None, device=None) -> torch.Tensor:
        """The pipeline's initial latents for n images of `size` (height, width): its own noise draw from
        `generator` (one, or a list of n), scaled by the scheduler's initial sigma."""
        h, w = size or self.image_size
        device = device or self.pipe._execution_device
        dtype = dtype or self.pipe.unet.dtype
        return self.pipe.prepare_latents(n, self.pipe.unet.config.in_channels, h, w, dtype, device, generator, latents)

    @property
    def denoiser(self) -> torch.nn.Module:
        """The network that denoises: the UNet (the flow families: the transformer)."""
        return self.pipe.unet

    def noise(self, generators, size: tuple[int, int], device=None, dtype=None) -> torch.Tensor:
        """Initial latents as the pipeline's `latents=` takes them, one CPU draw per generator (so a seed gives the
        same image on any device and in any batch)."""
        h, w = size
        channels, factor = self.denoiser.config.in_channels, self.pipe.vae_scale_factor
        noise = [torch.randn((channels, h // factor, w // factor), generator=g, dtype=torch.float32) for g in generators]
        return torch.stack(noise).to(device=device, dtype=dtype or self.denoiser.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images, float N x 3 x H x W in [0, 1] (differentiable)."""
        vae = self.pipe.vae
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:  # VAEs with per-channel latent statistics (Playground v2.5)
            shape = (1, len(mean), 1, 1)
            mean = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(shape)
            std = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(shape)
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        images = vae.decode(latents).sample
        return (images / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], *, steps: int, guidance: float, negative: str | None = None,
               generator=None, latents=None, size: tuple[int, int] | None = None, eta: float = 0.0,
               unet=None) -> torch.Tensor:
        """Final latents of the pipeline's own sampling loop, driven through this adapter (whatever the scheduler).

        With the same generator it ends where `pipe(..., output_type="latent")` ends; training samplers that
        record log-probabilities replace only the scheduler step of this loop.
        """
        import inspect

        pipe, unet = self.pipe, unet or self.pipe.unet
        device = pipe._execution_device
        size = size or self.image_size
        cond = self.encode_prompt(prompts, guidance, negative, size=size, device=device)
        scheduler = pipe.scheduler
        scheduler.set_timesteps(steps, device=device)
        x = self.prepare_latents(len(prompts), generator, size=size, latents=latents, dtype=cond.embeds.dtype, device=device)
        accepts = inspect.signature(scheduler.step).parameters
        extra = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in accepts}
        for t in scheduler.timesteps:
            eps = self.predict_noise(unet, scheduler.scale_model_input(x, t), t, cond, guidance)
            x = scheduler.step(eps, t, x, **extra, return_dict=False)[0]
        return x


class SD1Adapter(ModelAdapter):
    """SD 1.x/2.x (`StableDiffusionPipeline`): one CLIP text encoder's last hidden states; no added conditioning."""

    family = "sd1"

    def encode_prompt(self, prompts, guidance, negative=None, *, size=None, device=None) -> Conditioning:
        device = device or self.pipe._execution_device
        cfg = guidance > 1.0
        neg = [negative] * len(prompts) if negative else None
        pos, negative_embeds = self.pipe.encode_prompt(list(prompts), device, 1, cfg, neg)
        return Conditioning(pos, negative_embeds if cfg else None)


class SDXLAdapter(ModelAdapter):
    """SDXL (`StableDiffusionXLPipeline`): two text encoders and micro-conditioning.

    The text states are both encoders' penultimate hidden states side by side (768 + 1280 = 2048 wide); the
    added conditioning is `text_embeds` (the second encoder's pooled, projected output) and `time_ids`
    (original height and width, crop top and left, target height and width: SDXL's micro-conditioning, here
    as the pipeline sets it: the generated size, no crop). An empty negative prompt is zeros, as SDXL's
    `force_zeros_for_empty_prompt` says.
    """

    family = "sdxl"
    size_conditioned = True

    def time_ids(self, n: int, size: tuple[int, int] | None = None, *, original_size: tuple[int, int] | None = None,
                 crop: tuple[int, int] = (0, 0), dtype=None, device=None) -> torch.Tensor:
        """[n, 6] micro-conditioning: original size, crop top-left, target size (each height, width)."""
        size = tuple(size or self.image_size)
        ids = list(tuple(original_size or size) + tuple(crop) + size)
        unet = self.pipe.unet
        pooled_dim = self.pipe.text_encoder_2.config.projection_dim
        expected = unet.add_embedding.linear_1.in_features
        if unet.config.addition_time_embed_dim * len(ids) + pooled_dim != expected:
            raise ValueError(f"the UNet's added embedding takes {expected} numbers, but {len(ids)} size ids of "
                             f"{unet.config.addition_time_embed_dim} and a {pooled_dim}-d pooled text make another count")
        return torch.tensor([ids], dtype=dtype, device=device).repeat(n, 1)

    def with_sizes(self, cond, sizes):
        if len(sizes) != len(cond):
            raise ValueError(f"{len(sizes)} image sizes for {len(cond)} conditionings")
        ref = cond.added["time_ids"]
        ids = torch.cat([self.time_ids(1, target, original_size=original, crop=crop, dtype=ref.dtype, device=ref.device)
                         for original, crop, target in sizes])
        negative_added = {**cond.negative_added, "time_ids": ids} if cond.guided else {}
        return Conditioning(cond.embeds, cond.negative_embeds, {**cond.added, "time_ids": ids}, negative_added)

    def encode_prompt(self, prompts, guidance, negative=None, *, size=None, device=None) -> Conditioning:
        device = device or self.pipe._execution_device
        cfg = guidance > 1.0
        neg = [negative] * len(prompts) if negative else None
        embeds, negative_embeds, pooled, negative_pooled = self.pipe.encode_prompt(
            list(prompts), device=device, num_images_per_prompt=1, do_classifier_free_guidance=cfg, negative_prompt=neg)
        ids = self.time_ids(len(prompts), size, dtype=embeds.dtype, device=device)
        if not cfg:
            return Conditioning(embeds, None, {"text_embeds": pooled, "time_ids": ids})
        return Conditioning(embeds, negative_embeds, {"text_embeds": pooled, "time_ids": ids},
                            {"text_embeds": negative_pooled, "time_ids": ids})


class FlowAdapter(ModelAdapter):
    """The flow-matching families: a transformer predicts the velocity v = noise - data of the rectified flow
    x_t = (1 - t) x_0 + t noise, sampled with `FlowMatchEulerDiscreteScheduler` (x <- x + (sigma_next - sigma) v)."""

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.pipe.transformer.config.get("sample_size")
        if size is None:  # FLUX's transformer takes any size; its VAE's config keeps the trained one
            size = self.pipe.vae.config.sample_size
            return (size, size) if isinstance(size, int) else tuple(size)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return h * self.pipe.vae_scale_factor, w * self.pipe.vae_scale_factor

    @property
    def text_encoders(self) -> dict[str, torch.nn.Module]:
        """The CLIP text encoders (what a text-encoder LoRA adapts; T5 is left alone)."""
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        return {name: module for name in ("text_encoder", "text_encoder_2")
                if isinstance(module := getattr(self.pipe, name, None), (CLIPTextModel, CLIPTextModelWithProjection))}

    def predict_noise(self, unet, latents, t, cond, guidance):
        raise TypeError(f"{self.info.title} models predict a velocity, not noise; use predict_velocity")

    def predict_velocity(self, transformer, latents: torch.Tensor, t, cond: Conditioning, guidance: float) -> torch.Tensor:
        """The transformer's velocity for `latents` at scheduler timestep `t` (sigma * 1000; one, or one per
        latent), guided as the pipeline guides it. `transformer` is passed in, as `unet` is to `predict_noise`."""
        raise NotImplementedError

    def _mu(self, image_seq_len: int) -> float | None:
        """The schedule's resolution-dependent shift (FLUX: `use_dynamic_shifting`), as the pipelines compute it."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config = self.pipe.scheduler.config
        if not config.get("use_dynamic_shifting"):
            return None
        return calculate_shift(image_seq_len, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                               config.get("base_shift", 0.5), config.get("max_shift", 1.15))

    def set_timesteps(self, steps: int, size: tuple[int, int] | None = None, device=None) -> torch.Tensor:
        """Set the scheduler's `steps` timesteps for images of `size` exactly as the pipeline's `__call__` does;
        returns them (`scheduler.sigmas` holds the steps' sigmas and a final 0)."""
        raise NotImplementedError

    def _latent_grid(self, size: tuple[int, int] | None) -> tuple[int, int]:
        h, w = size or self.image_size
        factor = self.pipe.vae_scale_factor
        return h // factor, w // factor

    def _vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        images = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor).sample
        return (images / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def sample(self, prompts, *, steps, guidance, negative=None, generator=None, latents=None, size=None, eta=0.0,
               unet=None) -> torch.Tensor:
        """Final latents of the pipeline's own loop (Euler on the flow's ODE), driven through this adapter: with
        the same generator, `pipe(..., output_type="latent")`'s. `eta` is unused (the ODE has no noise)."""
        transformer = unet or self.pipe.transformer
        device = self.pipe._execution_device
        size = size or self.image_size
        cond = self.encode_prompt(prompts, guidance, negative, size=size, device=device)
        x = self.prepare_latents(len(prompts), generator, size=size, latents=latents, dtype=cond.embeds.dtype, device=device)
        scheduler = self.pipe.scheduler
        for t in self.set_timesteps(steps, size, device):
            v = self.predict_velocity(transformer, x, t, cond, guidance)
            x = scheduler.step(v, t, x, return_dict=False)[0]
        return x


class SD3Adapter(FlowAdapter):
    """SD3 (`StableDiffusion3Pipeline`): the MMDiT reads the text states (both CLIPs' penultimate states side by
    side, zero-padded to T5's width, then T5's states, or zeros without T5) and `pooled_projections` (both CLIPs'
    projected pooled outputs); classifier-free guidance with a negative half as SD 1.x's."""

    family = "sd3"

    def encode_prompt(self, prompts, guidance, negative=None, *, size=None, device=None) -> Conditioning:
        device = device or self.pipe._execution_device
        cfg = guidance > 1.0
        neg = [negative] * len(prompts) if negative else None
        embeds, negative_embeds, pooled, negative_pooled = self.pipe.encode_prompt(
            list(prompts), None, None, device=device, num_images_per_prompt=1, do_classifier_free_guidance=cfg,
            negative_prompt=neg)
        if not cfg:
            return Conditioning(embeds, None, {"pooled_projections": pooled})
        return Conditioning(embeds, negative_embeds, {"pooled_projections": pooled},
                            {"pooled_projections": negative_pooled})

    def predict_velocity(self, transformer, latents, t, cond, guidance):
        n = latents.shape[0]
        if not cond.guided:
            timestep = t.expand(n) if torch.is_tensor(t) and t.ndim == 0 else t
            return transformer(hidden_states=latents, timestep=timestep, encoder_hidden_states=cond.embeds,
                               pooled_projections=cond.added["pooled_projections"], return_dict=False)[0]
        timestep = t.expand(2 * n) if torch.is_tensor(t) and t.ndim == 0 else torch.cat([t, t])
        both = transformer(
            hidden_states=torch.cat([latents, latents]), timestep=timestep,
            encoder_hidden_states=torch.cat([cond.negative_embeds, cond.embeds]),
            pooled_projections=torch.cat([cond.negative_added["pooled_projections"], cond.added["pooled_projections"]]),
            return_dict=False)[0]
        uncond, text = both.chunk(2)
        return uncond + guidance * (text - uncond)

    def prepare_latents(self, n, generator=None, *, size=None, latents=None, dtype=None, device=None):
        h, w = size or self.image_size
        transformer = self.pipe.transformer
        return self.pipe.prepare_latents(n, transformer.config.in_channels, h, w, dtype or transformer.dtype,
                                         device or self.pipe._execution_device, generator, latents)

    def set_timesteps(self, steps, size=None, device=None):
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import retrieve_timesteps

        h, w = self._latent_grid(size)
        patch = self.pipe.transformer.config.patch_size
        mu = self._mu((h // patch) * (w // patch))
        kwargs = {} if mu is None else {"mu": mu}
        timesteps, _ = retrieve_timesteps(self.pipe.scheduler, steps, device or self.pipe._execution_device, **kwargs)
        return timesteps

    def decode(self, latents, size=None):
        return self._vae_decode(latents)


class FluxAdapter(FlowAdapter):
    """FLUX (`FluxPipeline`): the transformer reads T5's states, CLIP's pooled output (`pooled_projections`) and
    the rotary position ids of the text (`txt_ids`, zeros) and of the image's 2x2-packed latents (`img_ids`:
    row, column); FLUX.1-dev embeds the guidance scale (guidance distillation: one call per step, no negative
    half); FLUX.1-schnell's transformer has no guidance embedding and ignores it. Latents are packed:
    [N, (H/16)(W/16), 64] for an H x W image."""

    family = "flux"

    def encode_prompt(self, prompts, guidance, negative=None, *, size=None, device=None) -> Conditioning:
        from prefs.errors import UserError

        if negative:
            raise UserError("FLUX models take no negative prompt: their guidance is distilled into the model")
        device = device or self.pipe._execution_device
        embeds, pooled, text_ids = self.pipe.encode_prompt(list(prompts), None, device=device, num_images_per_prompt=1)
        n = len(prompts)
        h, w = self._latent_grid(size)
        image_ids = self.pipe._prepare_latent_image_ids(n, h // 2, w // 2, device, embeds.dtype)
        added = {"pooled_projections": pooled, "txt_ids": text_ids.expand(n, -1, -1),
                 "img_ids": image_ids.expand(n, -1, -1)}
        return Conditioning(embeds, None, added)

    def predict_velocity(self, transformer, latents, t, cond, guidance):
        n = latents.shape[0]
        timestep = (t.expand(n) if torch.is_tensor(t) and t.ndim == 0 else t).to(latents.dtype)
        embedded = None
        if transformer.config.guidance_embeds:
            embedded = torch.full([1], guidance, device=latents.device, dtype=torch.float32).expand(n)
        return transformer(hidden_states=latents, timestep=timestep / 1000, guidance=embedded,
                           pooled_projections=cond.added["pooled_projections"], encoder_hidden_states=cond.embeds,
                           txt_ids=cond.added["txt_ids"][0], img_ids=cond.added["img_ids"][0], return_dict=False)[0]

    def prepare_latents(self, n, generator=None, *, size=None, latents=None, dtype=None, device=None):
        h, w = size or self.image_size
        transformer = self.pipe.transformer
        x, _ = self.pipe.prepare_latents(n, transformer.config.in_channels // 4, h, w, dtype or transformer.dtype,
                                         device or self.pipe._execution_device, generator, latents)
        return x

    def noise(self, generators, size, device=None, dtype=None):
        h, w = self._latent_grid(size)
        h, w = 2 * (h // 2), 2 * (w // 2)
        channels = self.pipe.transformer.config.in_channels // 4
        noise = torch.stack([torch.randn((channels, h, w), generator=g, dtype=torch.float32) for g in generators])
        packed = self.pipe._pack_latents(noise, len(generators), channels, h, w)
        return packed.to(device=device, dtype=dtype or self.pipe.transformer.dtype)

    def set_timesteps(self, steps, size=None, device=None):
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import retrieve_timesteps

        h, w = self._latent_grid(size)
        sigmas = np.linspace(1.0, 1 / steps, steps)
        timesteps, _ = retrieve_timesteps(self.pipe.scheduler, steps, device or self.pipe._execution_device,
                                          sigmas=sigmas, mu=self._mu((h // 2) * (w // 2)))
        self.pipe.scheduler.set_begin_index(0)
        return timesteps

    def decode(self, latents, size=None):
        """Packed latents of images of `size` (default: the model's) to images in [0, 1]."""
        h, w = size or self.image_size
        return self._vae_decode(self.pipe._unpack_latents(latents, h, w, self.pipe.vae_scale_factor))


ADAPTERS: dict[str, type[ModelAdapter]] = {"sd1": SD1Adapter, "sdxl": SDXLAdapter, "sd3": SD3Adapter, "flux": FluxAdapter}


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Add an adapter class for its `family` (usable as a decorator); the family must be in FAMILIES."""
    if cls.family not in FAMILIES:
        raise ValueError(f"register the family {cls.family!r} in rlft.models.families.FAMILIES first")
    ADAPTERS[cls.family] = cls
    return cls


def adapter_for(pipe) -> ModelAdapter:
    """The adapter of the pipeline's family (UnsupportedModelError for a pipeline rlft does not run)."""
    return ADAPTERS[family_of_pipeline(pipe).name](pipe)
