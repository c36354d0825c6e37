"""Model families: which diffusers pipeline a model needs, told from its files, its checkpoint keys or a loaded pipeline.

A family is what code must know about a model beyond its weights: the pipeline class that runs it, how its
prompts become conditioning (`rlft.models.adapters`), its LoRA layout, and the image sizes it was trained on.
Detection needs no flag: a diffusers folder names its pipeline in `model_index.json`; a single-file checkpoint
is recognised by its keys (SDXL's carry a second text encoder under `conditioner.embedders.1` and the UNet's
added embedding under `label_emb`; SD3's MMDiT has `joint_blocks`, FLUX's `double_blocks`, with or without the
`model.diffusion_model.` prefix).

The flow-matching families (`sd3`, `flux`) predict a velocity with a transformer instead of noise with a UNet;
`Family.flow` says which kind a family is.
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
    flow: bool = False  # a rectified-flow transformer (velocity prediction, FlowMatchEulerDiscreteScheduler)


FAMILIES: dict[str, Family] = {
    # SD 2.x runs in the same pipeline with the same conditioning, so it is this family too.
    "sd1": Family("sd1", "SD 1.x", "StableDiffusionPipeline", None, "stable-diffusion-v1/lora", 8, 512),
    # SDXL was trained on sizes that are multiples of 64 (its aspect buckets); others work but are off its grid.
    "sdxl": Family("sdxl", "SDXL", "StableDiffusionXLPipeline", "sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora", 64,
                   1024),
    # SD3 and FLUX sides: multiples of the VAE's 8 times the transformer's 2x2 patches (FLUX packs 2x2 latents).
    # Model-spec architectures as kohya's sd-scripts writes them; `flux1` is the `ss_base_model_version` webui LoRA
    # tools write for FLUX.1 (SD3 has none that A1111-style loaders read).
    "sd3": Family("sd3", "SD3", "StableDiffusion3Pipeline", None, "stable-diffusion-3/lora", 16, 1024, flow=True),
    "flux": Family("flux", "FLUX", "FluxPipeline", "flux1", "flux-1-dev/lora", 16, 1024, flow=True),
}

# Checkpoint keys only an SDXL (base-layout) single file has: the second text encoder, the UNet's added embedding.
SDXL_KEY_PREFIXES = ("conditioner.embedders.1.", "model.diffusion_model.label_emb.")
SD1_KEY_PREFIXES = ("cond_stage_model.",)
# Checkpoint keys of the flow transformers (diffusers' single-file loader tells them by the same blocks): SD3's
# MMDiT (`joint_blocks`, its text encoders under `text_encoders.`), FLUX's double-stream blocks; both bare (a
# transformer-only file, as FLUX ships) or under `model.diffusion_model.` (ComfyUI's all-in-one files).
SD3_KEYS = ("joint_blocks.0.context_block.adaLN_modulation.1.bias",)
FLUX_KEYS = ("double_blocks.0.img_attn.norm.key_norm.scale",)
_LDM = "model.diffusion_model."
# Pipelines of the supported families that do something other than text-to-image.
_NOT_TEXT_TO_IMAGE = ("Img2Img", "Inpaint", "InstructPix2Pix", "Fill", "Kontext", "Control", "Redux", "Prior",
                      "PAG", "Depth", "Canny")
# Other diffusers pipelines, so that the message can say what the model is instead of failing inside diffusers.
_UNSUPPORTED = ("StableCascade", "Kandinsky", "PixArt", "Sana", "AuraFlow", "Kolors",
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
    for prefix, name in (("StableDiffusionXL", "sdxl"), ("StableDiffusion3", "sd3"), ("Flux", "flux")):
        if class_name.startswith(prefix):
            if any(word in class_name for word in _NOT_TEXT_TO_IMAGE):
                # a refiner, inpainting or control model: another model input than text-to-image's
                raise UnsupportedModelError(f"{where} is a {class_name} model; rlft runs text-to-image models: {supported()}")
            return FAMILIES[name]
    if class_name.startswith(_UNSUPPORTED):
        raise UnsupportedModelError(f"{where} is a {class_name} model, which rlft does not run; it runs {supported()}")
    # StableDiffusionPipeline and the SD 1.x/2.x variants saved under other names load as text-to-image
    return FAMILIES["sd1"]


def family_of_index(index: dict, where: str = "the model") -> Family:
    """The family of a diffusers folder from its parsed `model_index.json`."""
    name = str(index.get("_class_name") or "")
    if not name and "transformer" in index:  # a hand-written index without a class name
        return FAMILIES["sd3" if "text_encoder_3" in index else "flux"]
    if not name and "text_encoder_2" in index:
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
        bare = key.removeprefix(_LDM)
        if bare in SD3_KEYS:
            return FAMILIES["sd3"]
        if bare in FLUX_KEYS:
            return FAMILIES["flux"]
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
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    if isinstance(pipe, StableDiffusion3Pipeline):
        return FAMILIES["sd3"]
    if isinstance(pipe, FluxPipeline):
        return FAMILIES["flux"]
    unet_config = getattr(getattr(pipe, "unet", None), "config", None)
    if getattr(pipe, "text_encoder_2", None) is not None and getattr(unet_config, "addition_embed_type", None) == "text_time":
        return FAMILIES["sdxl"]
    return family_of_class(type(pipe).__name__, "the pipeline")
