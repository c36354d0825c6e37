"""LoRA adapters through peft on the UNet's attention projections (optionally the text encoders: SDXL's two), and export.

Exports fold peft's `alpha / rank` scale into the up-projection, so the files mean the same in every
loader: diffusers format (`pipe.load_lora_weights(folder)`) and the kohya / AUTOMATIC1111 single-file
layout (`lora_unet_<module path with _>.lora_down.weight`, `.lora_up.weight`, `.alpha` = rank).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from rlft.train.config import LoRAConfig

TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def text_encoder_names(pipe) -> list[str]:
    """The pipeline's text encoders by component name: `text_encoder`, and SDXL's `text_encoder_2`."""
    return [name for name in ("text_encoder", "text_encoder_2") if getattr(pipe, name, None) is not None]


def add_lora(pipe, cfg: LoRAConfig) -> list[torch.nn.Parameter]:
    """Freeze the pipeline and add LoRA adapters; returns the trainable parameters (the base stays untouched).
    With `cfg.train_text_encoder`, every text encoder gets one (SDXL: both)."""
    from peft import LoraConfig

    for part in (pipe.unet, pipe.vae, *(getattr(pipe, name) for name in text_encoder_names(pipe))):
        part.requires_grad_(False)
    init = "gaussian" if cfg.init_std else True
    pipe.unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=init,
                                     target_modules=list(cfg.target_modules)))
    if cfg.train_text_encoder:
        for name in text_encoder_names(pipe):
            getattr(pipe, name).add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=init,
                                                       target_modules=list(TEXT_ENCODER_TARGETS)))
    params = [p for m in trainable_modules(pipe, cfg) for p in m.parameters() if p.requires_grad]
    if cfg.init_std:
        with torch.no_grad():
            for m in trainable_modules(pipe, cfg):
                for name, p in m.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0.0, cfg.init_std)
    return params


def trainable_parts(pipe, cfg: LoRAConfig) -> list[str]:
    """The component names that carry trained adapters: `unet`, and the text encoders when they train."""
    return ["unet", *text_encoder_names(pipe)] if cfg.train_text_encoder else ["unet"]


def trainable_modules(pipe, cfg: LoRAConfig) -> list[torch.nn.Module]:
    return [getattr(pipe, name) for name in trainable_parts(pipe, cfg)]


def peft_state(pipe, cfg: LoRAConfig) -> dict[str, dict[str, torch.Tensor]]:
    """The adapters' weights in peft layout: {"unet": {...}, "text_encoder": {...}, "text_encoder_2": {...}} (CPU
    copies; the encoders only when they train)."""
    from peft.utils import get_peft_model_state_dict

    return {part: {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(getattr(pipe, part)).items()}
            for part in trainable_parts(pipe, cfg)}


def load_peft_state(pipe, state: dict[str, dict[str, torch.Tensor]]) -> None:
    """Put saved adapter weights back (resume)."""
    from peft.utils import set_peft_model_state_dict

    for part, sd in state.items():
        if getattr(pipe, part, None) is None:
            raise ValueError(f"checkpoint holds adapters for {part}, which this model does not have")
        result = set_peft_model_state_dict(getattr(pipe, part), sd)
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise ValueError(f"checkpoint does not fit the {part} adapter: unexpected {unexpected[:3]}")


def _folded(sd: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    return {k: (v * scale if "lora_B" in k else v).contiguous() for k, v in sd.items()}


# -- export: the files other tools load ---------------------------------------------------------------------------
# Both formats depend on the model family. SDXL's diffusers files carry a second text encoder
# (`text_encoder_2.`); its kohya files name the UNet's modules as Stability's SDXL code does
# (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`: what kohya's sd-scripts writes and AUTOMATIC1111,
# Forge and ComfyUI map), its encoders `lora_te1_` / `lora_te2_`, and say `ss_base_model_version = sdxl_base_v1-0`
# (A1111 lists a LoRA only for models of its version). Text-encoder modules keep `text_model.` in both formats,
# as every loader expects, although transformers 5's CLIPTextModel no longer has that level.

KOHYA_PREFIXES = {
    "sd1": {"unet": "lora_unet", "text_encoder": "lora_te"},
    "sdxl": {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
}
SDXL_CROSS_ATTENTION_DIM = 2048  # SDXL's text states (768 + 1280); SD 1.x: 768, SD 2.x: 1024


def lora_family(state: dict, family: str | None = None) -> str:
    """The model family (`sd1`, `sdxl`) the adapters in `state` were made on: `family` when given (the model
    adapter's; always pass it for SDXL), else told from the state: a second text encoder, or SDXL's 2048-wide
    cross-attention. A UNet-only LoRA of a narrower SDXL-shaped model (the tiny test one) reads as `sd1`."""
    if family is not None:
        from rlft.models.families import get_family

        return get_family(family).name
    if "text_encoder_2" in state:
        return "sdxl"
    for key, value in state.get("unet", {}).items():
        if "attn2.to_k" in key and "lora_A" in key and value.shape[-1] == SDXL_CROSS_ATTENTION_DIM:
            return "sdxl"
    return "sd1"


def _split(key: str) -> tuple[str, str]:
    """A peft key -> (module path, `A.weight` | `B.weight`)."""
    module, _, kind = key.rpartition(".lora_")
    return module.removeprefix("base_model.model."), kind


def _text_module(module: str) -> str:
    return module if module.startswith(("text_model.", "text_projection")) else "text_model." + module


def _portable(part: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if part == "unet":
        return sd
    return {f"{_text_module(m)}.lora_{kind}": v for m, kind, v in ((*_split(k), v) for k, v in sd.items())}


def _layers_per_block(modules) -> int:
    # Every level has `layers_per_block` ResNets (and attentions) going down, one more going up.
    import re

    down = [int(m[1]) for k in modules if (m := re.match(r"down_blocks\.\d+\.(?:attentions|resnets)\.(\d+)\.", k))]
    if down:
        return max(down) + 1
    up = [int(m[1]) for k in modules if (m := re.match(r"up_blocks\.\d+\.(?:attentions|resnets)\.(\d+)\.", k))]
    return max(up) if up else 2


def sgm_unet_names(modules, layers_per_block: int | None = None) -> dict[str, str]:
    """diffusers UNet module paths -> the same modules' paths in Stability's SDXL code (`input_blocks.4.1...`).

    `layers_per_block` (SDXL: 2) is read from the module paths when not given.
    """
    from rlft.models.single_file import unet_to_ldm

    modules = list(modules)
    renamed = unet_to_ldm({f"{m}.weight": m for m in modules}, layers_per_block or _layers_per_block(modules))
    return {old: new.removesuffix(".weight") for new, old in renamed.items()}


def save_diffusers(state: dict, cfg: LoRAConfig, folder: str | os.PathLike, *, family: str | None = None) -> Path:
    """Write `pytorch_lora_weights.safetensors` in diffusers' layout into `folder` (atomically replaced).

    `state` is `peft_state`'s: {"unet": ..., "text_encoder": ..., "text_encoder_2": ...} (the encoders
    optional); `family` as in `lora_family`. The file loads with `pipe.load_lora_weights(folder)`.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    family = lora_family(state, family)
    scale = cfg.alpha / cfg.rank

    def layers(part):
        sd = state.get(part)
        return convert_state_dict_to_diffusers(_folded(_portable(part, sd), scale)) if sd else None

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        if family == "sdxl":
            StableDiffusionXLPipeline.save_lora_weights(
                str(tmp), unet_lora_layers=layers("unet"), text_encoder_lora_layers=layers("text_encoder"),
                text_encoder_2_lora_layers=layers("text_encoder_2"), weight_name=DIFFUSERS_WEIGHT_NAME,
                safe_serialization=True,
            )
        else:
            StableDiffusionPipeline.save_lora_weights(
                str(tmp), unet_lora_layers=layers("unet"), text_encoder_lora_layers=layers("text_encoder"),
                weight_name=DIFFUSERS_WEIGHT_NAME, safe_serialization=True,
            )
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def kohya_state(state: dict, cfg: LoRAConfig, *, family: str | None = None,
                layers_per_block: int | None = None) -> dict[str, torch.Tensor]:
    """The adapters in the kohya / AUTOMATIC1111 key layout: SD 1.x `lora_unet_down_blocks_...`, `lora_te_...`;
    SDXL `lora_unet_input_blocks_...`, `lora_te1_...`, `lora_te2_...` (see above). `.alpha` is the rank, the
    `alpha / rank` scale being folded into `lora_up`."""
    family = lora_family(state, family)
    prefixes = KOHYA_PREFIXES[family]
    unet_names = {}
    if family == "sdxl" and state.get("unet"):
        unet_names = sgm_unet_names({_split(k)[0] for k in state["unet"]}, layers_per_block)
    scale = cfg.alpha / cfg.rank
    out: dict[str, torch.Tensor] = {}
    for part, sd in state.items():
        if part not in prefixes:
            raise ValueError(f"a {family} LoRA has no kohya name for adapters on {part!r}")
        for key, value in sd.items():
            module, kind = _split(key)  # "down_blocks.1....to_q", "A.weight"
            module = unet_names.get(module, module) if part == "unet" else _text_module(module)
            name = f"{prefixes[part]}_{module.replace('.', '_')}"
            if kind == "A.weight":
                out[f"{name}.lora_down.weight"] = value.contiguous()
                out[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))
            elif kind == "B.weight":
                out[f"{name}.lora_up.weight"] = (value * scale).contiguous()
            else:
                raise ValueError(f"unexpected LoRA key {key}")
    return out


def kohya_metadata(cfg: LoRAConfig, family: str) -> dict[str, str]:
    """kohya's `ss_*` metadata (and, for SDXL, the SAI model spec A1111 and ComfyUI read) for a LoRA file."""
    from rlft.models.families import get_family

    info = get_family(family)
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(cfg.rank), "ss_network_alpha": str(cfg.rank)}
    if info.kohya_version:
        meta["ss_base_model_version"] = info.kohya_version
        meta.update({"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": info.modelspec,
                     "modelspec.implementation": "https://github.com/Stability-AI/generative-models"})
    return meta


def save_kohya(state: dict, cfg: LoRAConfig, path: str | os.PathLike, metadata: dict[str, str] | None = None, *,
               family: str | None = None) -> Path:
    """Write one `.safetensors` in kohya's layout (atomically), with kohya's `ss_*` metadata (`metadata` added)."""
    from safetensors.torch import save_file

    from prefs.atomic import atomic_path

    family = lora_family(state, family)
    path = Path(path)
    meta = {**kohya_metadata(cfg, family), **(metadata or {})}
    with atomic_path(path) as tmp:
        save_file(kohya_state(state, cfg, family=family), str(tmp), metadata=meta)
    return path
