"""Model adapters: one small class per model family, so that sampling and every training algorithm are written once.

A diffusers pipeline's `__call__` does everything at once; an adapter splits out the parts an algorithm needs
and no more (as Flow-Factory's `BaseAdapter` does):

    adapter = adapter_for(pipe)                   # SD1Adapter or SDXLAdapter, from the pipeline
    cond = adapter.encode_prompt(prompts, guidance, negative)            # a `Conditioning`
    x = adapter.prepare_latents(len(prompts), generator)                 # the pipeline's initial noise
    eps = adapter.predict_noise(unet, scheduler.scale_model_input(x, t), t, cond, guidance)   # CFG included
    images = adapter.decode(x)                    # [0, 1], differentiable

`Conditioning` carries what the UNet is conditioned on, whatever the family: the text states
(`encoder_hidden_states`) and the UNet's `added_cond_kwargs` (SDXL: the pooled text of the second encoder and
the six micro-conditioning numbers), each with its classifier-free-guidance negative. Each adapter computes
exactly what its pipeline's `__call__` computes (tested against it), so an algorithm written against the
adapter samples what `rlft generate` samples.
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


ADAPTERS: dict[str, type[ModelAdapter]] = {"sd1": SD1Adapter, "sdxl": SDXLAdapter}


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Add an adapter class for its `family` (usable as a decorator); the family must be in FAMILIES."""
    if cls.family not in FAMILIES:
        raise ValueError(f"register the family {cls.family!r} in rlft.models.families.FAMILIES first")
    ADAPTERS[cls.family] = cls
    return cls


def adapter_for(pipe) -> ModelAdapter:
    """The adapter of the pipeline's family (UnsupportedModelError for a pipeline rlft does not run)."""
    return ADAPTERS[family_of_pipeline(pipe).name](pipe)
