"""Generate images from a pipeline, write them as A1111-style PNGs, and (optionally) add them to the pool.

Used by `rlft generate`, and later by the rating UI and training. Determinism: image `k` of a run (prompt
`j`, copy `i`, k = j * n + i) gets seed `seed + k` and its own `torch.Generator`, so the same settings give
the same pixels whatever the batch size, and any single image can be re-made from its recorded seed.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefs.errors import UserError

MAX_SEED = 2**32 - 1  # A1111's seed range; per-image seeds may run past it, torch takes 64 bits


@dataclass
class GenerateSettings:
    """How to generate; validated on construction (UserError on a bad value)."""

    n: int = 1  # images per prompt
    seed: int | None = None  # base seed; None or -1 picks a random one (recorded in every image)
    steps: int = 20  # denoising steps (A1111's default)
    guidance: float = 7.5  # classifier-free guidance scale; <= 1 turns CFG off
    negative_prompt: str = ""
    width: int | None = None  # pixels, a multiple of 8 (SDXL: of 64); None: the model's native size (SDXL: 1024)
    height: int | None = None
    batch_size: int = 4  # images per forward pass: speed and memory only, never the pixels

    def __post_init__(self):
        for name in ("n", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 8 or value % 8):
                raise UserError(f"{name} must be a positive multiple of 8, got {value!r}")
        if self.guidance < 0:
            raise UserError(f"guidance must be >= 0, got {self.guidance}")
        if self.seed is not None and self.seed != -1 and not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"seed must be between 0 and {MAX_SEED} (or -1 for random), got {self.seed}")
        if self.seed is None or self.seed == -1:
            self.seed = random.randint(0, MAX_SEED)


@dataclass
class GeneratedImage:
    """One written image and everything needed to make it again."""

    path: Path
    prompt: str
    negative_prompt: str
    seed: int
    model: str | None
    lora: str | None
    params: dict = field(default_factory=dict)  # steps, sampler, cfg_scale, width, height
    sha256: str | None = None  # the image's id in the preference pool, when it was added
    model_hash: str | None = None  # A1111's `Model hash` (rlft.models.hashing), when the model's files are local

    def to_json(self) -> dict:
        record = asdict(self)
        record["path"] = str(self.path)
        return record


def validate_prompts(prompts: Sequence[str]) -> list[str]:
    """The prompts as a list; UserError when there are none or one is not text."""
    prompts = list(prompts)
    if not prompts:
        raise UserError("no prompts given; pass --prompt TEXT or --prompts FILE|SET")
    for p in prompts:
        if not isinstance(p, str):
            raise UserError(f"a prompt must be text, got {type(p).__name__}")
    return prompts


def default_out_dir(home: str | os.PathLike | None = None) -> Path:
    """`<home>/outputs/YYYY-MM-DD/` (not created here)."""
    from prefs.home import home_dir

    return home_dir(home) / "outputs" / dt.date.today().isoformat()


_NUMBERED = re.compile(r"^(\d{5,})-")


def _next_number(folder: Path) -> int:
    # A1111 numbers images per folder (00012-1234.png); we continue after the highest number there.
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))] if folder.is_dir() else []
    return max(numbers, default=-1) + 1


def generate(
    pipe,
    prompts: Sequence[str],
    settings: GenerateSettings | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    model: str | None = None,
    lora: str | None = None,
    store=None,
    progress: bool = True,
    on_image: Callable[[GeneratedImage], None] | None = None,
    conditioner: Callable[[list[str]], "object"] | None = None,
    **overrides,
) -> list[GeneratedImage]:
    """Generate `settings.n` images per prompt with `pipe`; write PNGs into `out_dir`; return their records.

    Args:
        pipe: a diffusers text-to-image pipeline (from `rlft.load_pipeline`).
        prompts: the prompts, in order.
        settings: a `GenerateSettings`; keyword `overrides` (n=, seed=, steps=, ...) build or amend one.
        out_dir: where PNGs go (default `<home>/outputs/YYYY-MM-DD/`).
        model: the model name recorded with each image (default: the spec `load_pipeline` was given).
        lora: the LoRA applied, recorded with each image.
        store: a `prefs` store to add every image to (origin "generated"); None adds nothing.
        progress: show a tqdm bar on stderr.
        on_image: called with each record as soon as its file is written (e.g. to stream JSON lines).
        conditioner: `fn(prompts)` replacing the text encoders' output: a `prompt_embeds` tensor (SD 1.x, e.g. the
            aesthetic-gradients `reward.aesthetic.AestheticConditioner`) or a dict of the pipeline's embedding
            arguments (SDXL: `prompt_embeds` and `pooled_prompt_embeds`); its `parameters` dict is recorded with
            each image.

    Sizes are checked against the model's family (SDXL: multiples of 64, see `rlft.models.sizes`) before anything
    is written.
    """
    import torch
    from tqdm.auto import tqdm

    from prefs.atomic import atomic_path
    from prefs.pngmeta import format_parameters, pnginfo
    from rlft import __version__
    from rlft.models.adapters import adapter_for
    from rlft.models.hashing import model_hash
    from rlft.models.schedulers import a1111_name
    from rlft.models.sizes import check_size

    settings = GenerateSettings(**{**(asdict(settings) if settings else {}), **overrides})
    prompts = validate_prompts(prompts)
    source = getattr(pipe, "model_source", None)
    model = model or (source.spec if source else None)
    model_name = source.name if source else model
    adapter = adapter_for(pipe)
    check_size(adapter.info, settings.width, settings.height)
    check_negative(adapter.info, settings.negative_prompt)
    height, width = settings.height or adapter.image_size[0], settings.width or adapter.image_size[1]
    # FLUX.1-dev's guidance is an input of the model, not CFG: Forge records it as `Distilled CFG Scale`, CFG 1.
    distilled = adapter.info.name == "flux"
    cfg_scale = 1.0 if distilled else settings.guidance
    params = {
        "steps": settings.steps, "sampler": a1111_name(pipe.scheduler), "cfg_scale": cfg_scale,
        "width": width, "height": height,
    }
    if distilled:
        params["distilled_cfg_scale"] = settings.guidance
    extra_params = dict(getattr(conditioner, "parameters", None) or {})
    if extra_params:
        params["conditioning"] = extra_params
    hash_ = model_hash(source, progress) if source is not None else None
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    number = _next_number(out_dir)

    jobs = [(p, settings.seed + j * settings.n + i) for j, p in enumerate(prompts) for i in range(settings.n)]
    device = getattr(pipe, "_execution_device", None) or pipe.device
    records: list[GeneratedImage] = []
    bar = tqdm(total=len(jobs), desc="generate", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, len(jobs), settings.batch_size):
            batch = jobs[start : start + settings.batch_size]
            # Latent noise is drawn on the CPU, so a seed gives the same image on any device (as A1111 does).
            generators = [torch.Generator("cpu").manual_seed(seed) for _, seed in batch]
            latents = adapter.noise(generators, (height, width), device)
            texts = [p for p, _ in batch]
            # A conditioner may need gradients (aesthetic gradients), so it runs outside inference mode.
            text_kwargs = {"prompt": texts} if conditioner is None else _embedding_kwargs(conditioner(texts))
            with torch.inference_mode():
                images = pipe(
                    **text_kwargs,
                    negative_prompt=[settings.negative_prompt] * len(batch) if settings.negative_prompt else None,
                    num_inference_steps=settings.steps,
                    guidance_scale=settings.guidance,
                    width=width,
                    height=height,
                    generator=generators,
                    latents=latents,
                    output_type="pil",
                ).images
            for (prompt, seed), image in zip(batch, images, strict=False):
                text = format_parameters(
                    prompt, settings.negative_prompt, steps=settings.steps, sampler=params["sampler"],
                    cfg_scale=cfg_scale, seed=seed, width=width, height=height, model=model_name,
                    extra={"Distilled CFG Scale": params.get("distilled_cfg_scale"), "Model hash": hash_, "Lora": lora,
                           **extra_params, "Version": f"rlft {__version__}"},
                )
                path = out_dir / f"{number:05d}-{seed}.png"
                number += 1
                with atomic_path(path) as tmp:
                    image.save(tmp, format="PNG", pnginfo=pnginfo(text))
                record = GeneratedImage(path, prompt, settings.negative_prompt, seed, model, lora, dict(params),
                                        model_hash=hash_)
                if store is not None:
                    record.sha256 = store.add_image(
                        path, prompt=prompt, negative_prompt=settings.negative_prompt, seed=seed, model=model,
                        lora=lora, params=params, origin="generated", caption_source="generate",
                    ).sha256
                records.append(record)
                if on_image is not None:
                    on_image(record)
                bar.update(1)
    finally:
        bar.close()
    return records


def check_negative(family, negative_prompt: str) -> None:
    """UserError for a negative prompt on a FLUX model (its guidance is distilled: nothing reads a negative)."""
    if negative_prompt and family.name == "flux":
        raise UserError(f"{family.title} models take no negative prompt (their guidance is distilled into the "
                        "model); leave out --negative-prompt")


def _embedding_kwargs(conditioning) -> dict:
    """A conditioner's output as pipeline keyword arguments (a bare tensor is `prompt_embeds`)."""
    return dict(conditioning) if isinstance(conditioning, dict) else {"prompt_embeds": conditioning}
