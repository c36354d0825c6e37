"""LoRA adapters through peft on the UNet's attention projections (optionally the text encoder), and export.

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


def add_lora(pipe, cfg: LoRAConfig) -> list[torch.nn.Parameter]:
    """Freeze the pipeline and add LoRA adapters; returns the trainable parameters (the base stays untouched)."""
    from peft import LoraConfig

    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False)
    init = "gaussian" if cfg.init_std else True
    pipe.unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=init,
                                     target_modules=list(cfg.target_modules)))
    if cfg.train_text_encoder:
        pipe.text_encoder.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=init,
                                                 target_modules=list(TEXT_ENCODER_TARGETS)))
    params = [p for m in trainable_modules(pipe, cfg) for p in m.parameters() if p.requires_grad]
    if cfg.init_std:
        with torch.no_grad():
            for m in trainable_modules(pipe, cfg):
                for name, p in m.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0.0, cfg.init_std)
    return params


def trainable_modules(pipe, cfg: LoRAConfig) -> list[torch.nn.Module]:
    return [pipe.unet, pipe.text_encoder] if cfg.train_text_encoder else [pipe.unet]


def peft_state(pipe, cfg: LoRAConfig) -> dict[str, dict[str, torch.Tensor]]:
    """The adapters' weights in peft layout: {"unet": {...}, "text_encoder": {...}} (CPU copies)."""
    from peft.utils import get_peft_model_state_dict

    out = {"unet": {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(pipe.unet).items()}}
    if cfg.train_text_encoder:
        out["text_encoder"] = {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(pipe.text_encoder).items()}
    return out


def load_peft_state(pipe, state: dict[str, dict[str, torch.Tensor]]) -> None:
    """Put saved adapter weights back (resume)."""
    from peft.utils import set_peft_model_state_dict

    for part, sd in state.items():
        result = set_peft_model_state_dict(getattr(pipe, part), sd)
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise ValueError(f"checkpoint does not fit the {part} adapter: unexpected {unexpected[:3]}")


def _folded(sd: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    return {k: (v * scale if "lora_B" in k else v).contiguous() for k, v in sd.items()}


def save_diffusers(state: dict, cfg: LoRAConfig, folder: str | os.PathLike) -> Path:
    """Write `pytorch_lora_weights.safetensors` in diffusers' layout into `folder` (atomically replaced)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    scale = cfg.alpha / cfg.rank
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        te = state.get("text_encoder")
        StableDiffusionPipeline.save_lora_weights(
            str(tmp),
            unet_lora_layers=convert_state_dict_to_diffusers(_folded(state["unet"], scale)),
            text_encoder_lora_layers=convert_state_dict_to_diffusers(_folded(te, scale)) if te else None,
            weight_name=DIFFUSERS_WEIGHT_NAME,
            safe_serialization=True,
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


def kohya_state(state: dict, cfg: LoRAConfig) -> dict[str, torch.Tensor]:
    """The adapters in the kohya / AUTOMATIC1111 key layout (SD 1.x: `lora_unet_...`, `lora_te_...`)."""
    scale = cfg.alpha / cfg.rank
    out: dict[str, torch.Tensor] = {}
    prefixes = {"unet": "lora_unet", "text_encoder": "lora_te"}
    for part, sd in state.items():
        for key, value in sd.items():
            module, _, kind = key.rpartition(".lora_")  # "down_blocks.1....to_q", "A.weight"
            module = module.removeprefix("base_model.model.")
            name = f"{prefixes[part]}_{module.replace('.', '_')}"
            if kind == "A.weight":
                out[f"{name}.lora_down.weight"] = value.contiguous()
                out[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))
            elif kind == "B.weight":
                out[f"{name}.lora_up.weight"] = (value * scale).contiguous()
            else:
                raise ValueError(f"unexpected LoRA key {key}")
    return out


def save_kohya(state: dict, cfg: LoRAConfig, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write one `.safetensors` in kohya's layout (atomically), with kohya's `ss_*` metadata."""
    from safetensors.torch import save_file

    from prefs.atomic import atomic_path

    path = Path(path)
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(cfg.rank), "ss_network_alpha": str(cfg.rank),
            **(metadata or {})}
    with atomic_path(path) as tmp:
        save_file(kohya_state(state, cfg), str(tmp), metadata=meta)
    return path
