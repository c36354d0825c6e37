"""Single-file checkpoints: export a pipeline in the original (LDM / A1111) key layout, and find its config.

Model sites share SD 1.x/2.x models as one `.safetensors` whose keys follow the original CompVis code
(`model.diffusion_model.input_blocks.1.0.in_layers.0.weight`, `first_stage_model.…`,
`cond_stage_model.transformer.…`). diffusers' `from_single_file` reads that layout but needs the
diffusers configs to build the modules; offline we keep them in a folder beside the file,
`<name>.config/`, written by `save_single_file` (or named explicitly with `config=`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

# Names inside a ResNet block: diffusers -> LDM UNet (the VAE's ResNets keep diffusers' inner names).
_UNET_RESNET = {
    "norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
}
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
}
_VAE_FIXED = {"conv_norm_out": "norm_out"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def config_dir_for(path: str | os.PathLike) -> Path:
    """Where `save_single_file` puts the diffusers configs for the checkpoint at `path`."""
    path = Path(path)
    return path.with_name(path.stem + ".config")


def _resnet(rest: str) -> str:
    name, _, tail = rest.partition(".")
    return f"{_UNET_RESNET.get(name, name)}.{tail}"


def unet_to_ldm(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers `UNet2DConditionModel` state dict to the LDM layout (any depth and width)."""
    step = layers_per_block + 1  # LDM numbers each level's ResNets and its down/upsampler consecutively
    up_has_attention = {int(m.group(1)) for k in state if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if module in _UNET_FIXED:
            new = f"{_UNET_FIXED[module]}.{param}"
        elif m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = 1 + b * step + j
            new = f"input_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"input_blocks.{1 + int(m[1]) * step + layers_per_block}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = b * step + j
            new = f"output_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            b = int(m[1])
            slot = 2 if b in up_has_attention else 1  # the upsampler follows the ResNet (and attention, if any)
            new = f"output_blocks.{b * step + layers_per_block}.{slot}.conv.{m[2]}"
        else:
            raise ValueError(f"no LDM name for UNet parameter {key!r} (not an SD 1.x/2.x-style UNet?)")
        out[new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers `AutoencoderKL` state dict to the LDM layout; attention projections become 1x1 convs."""
    out = {}
    for key, value in state.items():
        new = key
        if m := re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)", key):
            part, direction, b, kind, j, rest = m.groups()
            b = int(b) if direction == "down" else num_blocks - 1 - int(b)  # LDM numbers decoder levels bottom-up
            rest = rest.replace("conv_shortcut", "nin_shortcut")
            if kind == "resnets":
                new = f"{part}.{direction}.{b}.block.{j}.{rest}"
            else:
                new = f"{part}.{direction}.{b}.{'downsample' if direction == 'down' else 'upsample'}.{rest}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
            new = f"{m[1]}.mid.attn_1.{_VAE_ATTENTION[m[2]]}.{m[3]}"
            if m[3] == "weight" and value.ndim == 2:
                value = value[:, :, None, None]
        elif m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.+)", key):
            new = f"{m[1]}.norm_out.{m[2]}"
        out[new] = value
    return out


def ldm_state_dict(pipe) -> dict[str, torch.Tensor]:
    """The pipeline's UNet, VAE and CLIP text encoder as one state dict in the original SD 1.x layout."""
    state = {}
    unet = unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config.layers_per_block)
    state.update({UNET_PREFIX + k: v for k, v in unet.items()})
    vae = vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels))
    state.update({VAE_PREFIX + k: v for k, v in vae.items()})
    for key, value in pipe.text_encoder.state_dict().items():
        if not key.endswith("position_ids"):
            # SD 1.x files keep transformers 4's `text_model.` level, which transformers 5 no longer has.
            key = key if key.startswith("text_model.") else "text_model." + key
            state[TEXT_PREFIX + key] = value
    return state


def save_config_folder(pipe, folder: str | os.PathLike) -> Path:
    """Write only the configs (model_index, component configs, tokenizer, scheduler) of a pipeline."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_config(folder)
    pipe.unet.save_config(folder / "unet")
    pipe.vae.save_config(folder / "vae")
    pipe.scheduler.save_config(folder / "scheduler")
    pipe.text_encoder.config.save_pretrained(folder / "text_encoder")
    pipe.tokenizer.save_pretrained(folder / "tokenizer")
    return folder


def save_single_file(pipe, path: str | os.PathLike, *, with_config: bool = True) -> Path:
    """Export `pipe` as one `.safetensors` in the original key layout, plus `<name>.config/` beside it.

    The config folder lets `rlft.load_pipeline(path)` (diffusers' `from_single_file`) rebuild the model
    offline; model sites do not ship it, so for downloaded files pass `config=` instead.
    """
    from safetensors.torch import save_file

    from prefs.atomic import atomic_path

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"single-file export writes .safetensors, not {path.suffix or 'no suffix'}: {path}")
    state = {k: v.detach().to("cpu").contiguous() for k, v in ldm_state_dict(pipe).items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    if with_config:
        save_config_folder(pipe, config_dir_for(path))
    return path
