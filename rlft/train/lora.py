"""LoRA adapters through peft on the UNet's attention projections (SD3, FLUX: the transformer's; optionally the
CLIP text encoders: SDXL's and SD3's two), and export.

Exports fold peft's `alpha / rank` scale into the up-projection, so the files mean the same in every
loader: diffusers format (`pipe.load_lora_weights(folder)`) and the kohya / AUTOMATIC1111 single-file
layout (`lora_unet_<module path with _>.lora_down.weight`, `.lora_up.weight`, `.alpha` = rank); FLUX's kohya
layout is sd-scripts' (`lora_unet_double_blocks_*`, `lora_unet_single_blocks_*`, fused projections), SD3 has
only the diffusers format (no kohya layout is read by the common tools).
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


# The flow transformers' attention: the image stream's projections and the text stream's (SD3's joint blocks,
# FLUX's double-stream blocks); FLUX's single-stream blocks have only to_q/to_k/to_v (their output is the fused
# proj_out, shared with the MLP, so it stays frozen). diffusers' SD3 and FLUX LoRA scripts adapt the same.
FLOW_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


def text_encoder_names(pipe) -> list[str]:
    """The pipeline's CLIP text encoders by component name: `text_encoder`, and SDXL's and SD3's `text_encoder_2`
    (T5, FLUX's `text_encoder_2` and SD3's `text_encoder_3`, is never adapted)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    return [name for name in ("text_encoder", "text_encoder_2")
            if isinstance(getattr(pipe, name, None), (CLIPTextModel, CLIPTextModelWithProjection))]


def denoiser_name(pipe) -> str:
    """The component that denoises: `unet`, or `transformer` (SD3, FLUX)."""
    return "transformer" if getattr(pipe, "transformer", None) is not None else "unet"


def target_modules(pipe, cfg: LoRAConfig) -> list[str]:
    """The denoiser's modules that get adapters: `cfg.target_modules`, or FLOW_TARGETS for a transformer when they
    are the UNet default."""
    if denoiser_name(pipe) == "transformer" and tuple(cfg.target_modules) == LoRAConfig.target_modules:
        return list(FLOW_TARGETS)
    return list(cfg.target_modules)


def add_lora(pipe, cfg: LoRAConfig) -> list[torch.nn.Parameter]:
    """Freeze the pipeline and add LoRA adapters; returns the trainable parameters (the base stays untouched).
    With `cfg.train_text_encoder`, every text encoder gets one (SDXL: both)."""
    from peft import LoraConfig

    names = (denoiser_name(pipe), "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
    for part in (getattr(pipe, name, None) for name in names):
        if part is not None:
            part.requires_grad_(False)
    init = "gaussian" if cfg.init_std else True
    getattr(pipe, denoiser_name(pipe)).add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=init,
                                                              target_modules=target_modules(pipe, cfg)))
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
    """The component names that carry trained adapters: `unet` (or `transformer`), and the text encoders when they
    train."""
    denoiser = denoiser_name(pipe)
    return [denoiser, *text_encoder_names(pipe)] if cfg.train_text_encoder else [denoiser]


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
    "flux": {"transformer": "lora_unet", "text_encoder": "lora_te1"},  # sd-scripts' FLUX names (CLIP-L: te1)
}
SDXL_CROSS_ATTENTION_DIM = 2048  # SDXL's text states (768 + 1280); SD 1.x: 768, SD 2.x: 1024


def lora_family(state: dict, family: str | None = None) -> str:
    """The model family (`sd1`, `sdxl`, `sd3`, `flux`) the adapters in `state` were made on: `family` when given
    (the model adapter's; always pass it for SDXL, SD3 and FLUX), else told from the state: FLUX's single-stream
    blocks, a second text encoder, or SDXL's 2048-wide cross-attention. A UNet-only LoRA of a narrower
    SDXL-shaped model (the tiny test one) reads as `sd1`."""
    if family is not None:
        from rlft.models.families import get_family

        return get_family(family).name
    if "transformer" in state:
        if any("single_transformer_blocks." in k for k in state["transformer"]):
            return "flux"
        raise ValueError("a transformer LoRA's family (sd3 or flux) must be given")
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
    if part in ("unet", "transformer"):
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
    from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    family = lora_family(state, family)
    scale = cfg.alpha / cfg.rank

    def layers(part):
        sd = state.get(part)
        if not sd:
            return None
        if part == "transformer":  # diffusers' transformer LoRAs keep peft's names (lora_A / lora_B)
            return _folded(sd, scale)
        return convert_state_dict_to_diffusers(_folded(_portable(part, sd), scale))

    if family in ("sd3", "flux") and "unet" in state or family in ("sd1", "sdxl") and "transformer" in state:
        raise ValueError(f"adapters on {', '.join(state)} are not a {family} LoRA")

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        if family == "sd3":
            StableDiffusion3Pipeline.save_lora_weights(
                str(tmp), transformer_lora_layers=layers("transformer"), text_encoder_lora_layers=layers("text_encoder"),
                text_encoder_2_lora_layers=layers("text_encoder_2"), weight_name=DIFFUSERS_WEIGHT_NAME,
                safe_serialization=True,
            )
        elif family == "flux":
            FluxPipeline.save_lora_weights(
                str(tmp), transformer_lora_layers=layers("transformer"), text_encoder_lora_layers=layers("text_encoder"),
                weight_name=DIFFUSERS_WEIGHT_NAME, safe_serialization=True,
            )
        elif family == "sdxl":
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
        if family in ("sd3", "flux"):
            _add_model_spec(tmp / DIFFUSERS_WEIGHT_NAME, family)
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


def _add_model_spec(path: Path, family: str) -> None:
    """Add the SAI model spec's architecture to a diffusers LoRA file, so that loaders (and `rlft generate`) can
    tell its family: SD3's and FLUX's transformer LoRAs have the same key names."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from rlft.models.families import get_family

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update({"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": get_family(family).modelspec})
    save_file(tensors, str(path), metadata=meta)


def kohya_state(state: dict, cfg: LoRAConfig, *, family: str | None = None,
                layers_per_block: int | None = None) -> dict[str, torch.Tensor]:
    """The adapters in the kohya / AUTOMATIC1111 key layout: SD 1.x `lora_unet_down_blocks_...`, `lora_te_...`;
    SDXL `lora_unet_input_blocks_...`, `lora_te1_...`, `lora_te2_...` (see above). `.alpha` is the rank, the
    `alpha / rank` scale being folded into `lora_up`."""
    family = lora_family(state, family)
    if family == "sd3":
        from prefs.errors import UserError

        raise UserError("SD3 LoRAs are written in diffusers' format only (no kohya layout for SD3 is read by "
                        "A1111, Forge or ComfyUI's loaders alike)")
    if family == "flux":
        return flux_kohya_state(state, cfg)
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


# FLUX in sd-scripts' (and BFL's) module names. A double-stream block fuses each stream's q, k and v into one
# `qkv` linear; a single-stream block fuses q, k, v and the MLP's input into `linear1` and the attention output
# with the MLP's output into `linear2`. Adapters on the separate diffusers projections become one adapter on the
# fused module: the downs stacked, the ups block-diagonal (rank = the sum of ranks), the same weight update.
_FLUX_FUSED = {  # diffusers module in a block -> (kohya module, its position among the fused outputs)
    "double": {"attn.to_q": ("img_attn_qkv", 0), "attn.to_k": ("img_attn_qkv", 1), "attn.to_v": ("img_attn_qkv", 2),
               "attn.add_q_proj": ("txt_attn_qkv", 0), "attn.add_k_proj": ("txt_attn_qkv", 1),
               "attn.add_v_proj": ("txt_attn_qkv", 2), "attn.to_out.0": ("img_attn_proj", 0),
               "attn.to_add_out": ("txt_attn_proj", 0), "ff.net.0.proj": ("img_mlp_0", 0), "ff.net.2": ("img_mlp_2", 0),
               "ff_context.net.0.proj": ("txt_mlp_0", 0), "ff_context.net.2": ("txt_mlp_2", 0),
               "norm1.linear": ("img_mod_lin", 0), "norm1_context.linear": ("txt_mod_lin", 0)},
    "single": {"attn.to_q": ("linear1", 0), "attn.to_k": ("linear1", 1), "attn.to_v": ("linear1", 2),
               "proj_mlp": ("linear1", 3), "proj_out": ("linear2", 0), "norm.linear": ("modulation_lin", 0)},
}


def flux_kohya_state(state: dict, cfg: LoRAConfig) -> dict[str, torch.Tensor]:
    """FLUX adapters in kohya sd-scripts' layout (`lora_unet_double_blocks_0_img_attn_qkv`, `..._txt_attn_proj`,
    `lora_unet_single_blocks_0_linear1`, `lora_te1_...` for CLIP), each fused module one LoRA whose update
    equals the sum of its parts' (`alpha` = its rank, the scale folded into `lora_up`)."""
    import re

    scale = cfg.alpha / cfg.rank
    widths = _flux_fused_widths(state.get("transformer", {}))
    fused: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.get("transformer", {}).items():
        module, kind = _split(key)
        m = re.fullmatch(r"(single_transformer_blocks|transformer_blocks)\.(\d+)\.(.+)", module)
        kind_of_block = "single" if m and m[1] == "single_transformer_blocks" else "double"
        if m is None or m[3] not in _FLUX_FUSED[kind_of_block]:
            raise ValueError(f"a FLUX LoRA has no kohya name for adapters on {module!r}")
        target, position = _FLUX_FUSED[kind_of_block][m[3]]
        name = f"lora_unet_{kind_of_block}_blocks_{m[2]}_{target}"
        fused.setdefault(name, {}).setdefault(position, {})[kind] = value
    for name, parts in fused.items():
        down = torch.cat([parts[i]["A.weight"] for i in sorted(parts)])
        outs = widths[name]
        up = torch.zeros(sum(outs), down.shape[0], dtype=down.dtype)
        row, col = 0, 0
        for i, width in enumerate(outs):  # block-diagonal: each part's up reads only its own rank's rows of down
            if i in parts:
                b = parts[i]["B.weight"]
                up[row:row + width, col:col + b.shape[1]] = b * scale
                col += b.shape[1]
            row += width
        out[f"{name}.lora_down.weight"] = down.contiguous()
        out[f"{name}.lora_up.weight"] = up.contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(down.shape[0]))
    for part, sd in state.items():
        if part == "transformer":
            continue
        if part not in KOHYA_PREFIXES["flux"]:
            raise ValueError(f"a FLUX LoRA has no kohya name for adapters on {part!r}")
        for key, value in sd.items():
            module, kind = _split(key)
            name = f"lora_te1_{_text_module(module).replace('.', '_')}"
            if kind == "A.weight":
                out[f"{name}.lora_down.weight"] = value.contiguous()
                out[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))
            else:
                out[f"{name}.lora_up.weight"] = (value * scale).contiguous()
    return out


def _flux_fused_widths(sd: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """The output widths of each fused kohya module's parts, from the adapters' up-projections: q, k, v are one
    width (the attention's), the single blocks' MLP input four times it (FLUX's mlp_ratio)."""
    import re

    widths: dict[str, list[int]] = {}
    for key, value in sd.items():
        module, kind = _split(key)
        m = re.fullmatch(r"(single_transformer_blocks|transformer_blocks)\.(\d+)\.(.+)", module)
        if kind != "B.weight" or m is None:
            continue
        block = "single" if m[1] == "single_transformer_blocks" else "double"
        target, _ = _FLUX_FUSED[block].get(m[3], (None, 0))
        if target in ("img_attn_qkv", "txt_attn_qkv", "linear1"):
            inner = value.shape[0] if m[3] != "proj_mlp" else value.shape[0] // 4
            name = f"lora_unet_{block}_blocks_{m[2]}_{target}"
            widths[name] = [inner] * 3 + ([4 * inner] if target == "linear1" else [])
        elif target is not None:
            widths[f"lora_unet_{block}_blocks_{m[2]}_{target}"] = [value.shape[0]]
    return widths


def kohya_metadata(cfg: LoRAConfig, family: str) -> dict[str, str]:
    """kohya's `ss_*` metadata (and, for SDXL and FLUX, the SAI model spec A1111, Forge and ComfyUI read) for a
    LoRA file."""
    from rlft.models.families import get_family

    info = get_family(family)
    meta = {"ss_network_module": "networks.lora_flux" if family == "flux" else "networks.lora",
            "ss_network_dim": str(cfg.rank), "ss_network_alpha": str(cfg.rank)}
    if info.kohya_version:
        implementation = ("https://github.com/black-forest-labs/flux" if family == "flux"
                          else "https://github.com/Stability-AI/generative-models")
        meta["ss_base_model_version"] = info.kohya_version
        meta.update({"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": info.modelspec,
                     "modelspec.implementation": implementation})
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
