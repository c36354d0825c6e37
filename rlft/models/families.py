"""Model families: which diffusers pipeline a model needs, told from its files, its checkpoint keys or a loaded pipeline.

A family is what code must know about a model beyond its weights: the pipeline class that runs it, how its
prompts become conditioning (`rlft.models.adapters`), its LoRA layout, and the image sizes it was trained on.
Detection needs no flag: a diffusers folder names its pipeline in `model_index.json`; a single-file checkpoint
is recognised by its keys (SDXL's carry a second text encoder under `conditioner.embedders.1` and the UNet's
added embedding under `label_emb`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prefs.errors import UserError


class UnsupportedModelError(UserError):
    """A model of a family rlft does not run (yet)."""


@dataclass(frozen=True)
class Family:
    """One model family."""

    name: str  # rlft's short name: recorded with runs and LoRAs, the key of the adapter registry
    title: str  # what people call it, for messages
    pipeline: str  # the diffusers pipeline class
    kohya_version: str | None  # kohya's `ss_base_model_version` for LoRAs made on it (A1111 sorts LoRAs by it)
    modelspec: str  # the SAI model spec's `modelspec.architecture` of a LoRA for it
    size_multiple: int  # image sides must be multiples of this (pixels)
    native_size: int  # the side its base models were trained at, when a model's own configs cannot be read


FAMILIES: dict[str, Family] = {
    # SD 2.x runs in the same pipeline with the same conditioning, so it is this family too.
    "sd1": Family("sd1", "SD 1.x", "StableDiffusionPipeline", None, "stable-diffusion-v1/lora", 8, 512),
    # SDXL was trained on sizes that are multiples of 64 (its aspect buckets); others work but are off its grid.
    "sdxl": Family("sdxl", "SDXL", "StableDiffusionXLPipeline", "sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora", 64,
                   1024),
}

# Checkpoint keys only an SDXL (base-layout) single file has: the second text encoder, the UNet's added embedding.
SDXL_KEY_PREFIXES = ("conditioner.embedders.1.", "model.diffusion_model.label_emb.")
SD1_KEY_PREFIXES = ("cond_stage_model.",)
# Other diffusers pipelines, so that the message can say what the model is instead of failing inside diffusers.
_UNSUPPORTED = ("StableDiffusion3", "Flux", "StableCascade", "Kandinsky", "PixArt", "Sana", "AuraFlow", "Kolors",
                "HunyuanDiT", "Lumina", "Wan", "QwenImage", "Chroma", "CogView", "StableDiffusionUpscale")


def get_family(name: str) -> Family:
    """The family called `name`; NotFoundError lists the valid names."""
    from prefs.errors import NotFoundError

    if name not in FAMILIES:
        raise NotFoundError(f"unknown model family {name!r}; choose one of: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def supported() -> str:
    """The families rlft runs, for messages: `SD 1.x (StableDiffusionPipeline), SDXL (...)`."""
    return ", ".join(f"{f.title} ({f.pipeline})" for f in FAMILIES.values())


def family_of_class(class_name: str, where: str = "the model") -> Family:
    """The family of a diffusers pipeline class name (as `model_index.json` records it)."""
    if class_name.startswith("StableDiffusionXL"):
        if "Img2Img" in class_name or "Inpaint" in class_name or "InstructPix2Pix" in class_name:
            # a refiner or an inpainting model: another UNet input than text-to-image's
            raise UnsupportedModelError(f"{where} is a {class_name} model; rlft runs text-to-image models: {supported()}")
        return FAMILIES["sdxl"]
    if class_name.startswith(_UNSUPPORTED):
        raise UnsupportedModelError(f"{where} is a {class_name} model, which rlft does not run; it runs {supported()}")
    # StableDiffusionPipeline and the SD 1.x/2.x variants saved under other names load as text-to-image
    return FAMILIES["sd1"]


def family_of_index(index: dict, where: str = "the model") -> Family:
    """The family of a diffusers folder from its parsed `model_index.json`."""
    name = str(index.get("_class_name") or "")
    if not name and "text_encoder_2" in index:  # a hand-written index without a class name
        return FAMILIES["sdxl"]
    return family_of_class(name, where)


def family_of_folder(folder: str | os.PathLike) -> Family:
    """The family of a diffusers folder (reads only its `model_index.json`)."""
    path = Path(folder) / "model_index.json"
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"could not read {path}: {e}") from e
    return family_of_index(index, str(folder))


def family_of_keys(keys: Iterable[str]) -> Family | None:
    """The family of a single-file checkpoint from its tensor names; None when they say neither."""
    sd1 = False
    for key in keys:
        if key.startswith(SDXL_KEY_PREFIXES):
            return FAMILIES["sdxl"]
        sd1 = sd1 or key.startswith(SD1_KEY_PREFIXES)
    return FAMILIES["sd1"] if sd1 else None


def checkpoint_keys(path: str | os.PathLike) -> list[str] | None:
    """The tensor names of a single-file checkpoint without reading its tensors (None if unreadable that way).

    `.safetensors` keeps them in its header; a pickled `.ckpt` is memory-mapped, so its tensors stay on disk.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                return list(f.keys())
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        return list(state) if isinstance(state, dict) else None
    except Exception:  # a damaged or old-format file: the loader reports it properly
        return None


def family_of_pipeline(pipe) -> Family:
    """The family of a loaded pipeline (its class, or an SDXL-style UNet with a second text encoder)."""
    unet_config = getattr(getattr(pipe, "unet", None), "config", None)
    if getattr(pipe, "text_encoder_2", None) is not None and getattr(unet_config, "addition_embed_type", None) == "text_time":
        return FAMILIES["sdxl"]
    return family_of_class(type(pipe).__name__, "the pipeline")
