"""Single-file checkpoints: export a pipeline in the original (LDM / A1111) key layout, and find its config.

Model sites share SD 1.x/2.x and SDXL models as one `.safetensors` whose keys follow the original CompVis and
Stability code (`model.diffusion_model.input_blocks.1.0.in_layers.0.weight`, `first_stage_model.…`; SD 1.x's
text encoder under `cond_stage_model.transformer.…`, SDXL's two under `conditioner.embedders.0.transformer.…`
(OpenAI CLIP, transformers layout) and `conditioner.embedders.1.model.…` (OpenCLIP layout, fused q/k/v)).
diffusers' `from_single_file` reads that layout but needs the diffusers configs to build the modules;
offline we keep them in a folder beside the file, `<name>.config/`, written by `save_single_file` (or named
explicitly with `config=`).
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
SDXL_TEXT_PREFIX = "conditioner.embedders.0.transformer."  # OpenAI CLIP ViT-L/14, transformers' names
SDXL_TEXT_2_PREFIX = "conditioner.embedders.1.model."  # OpenCLIP ViT-bigG/14, open_clip's names
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

# Names inside a ResNet block: diffusers -> LDM UNet (the VAE's ResNets keep diffusers' inner names).
_UNET_RESNET = {
    "norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
}
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
    # SDXL's added embedding of the pooled text and the size/crop numbers
    "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
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
            raise ValueError(f"no LDM name for UNet parameter {key!r} (not an SD 1.x/2.x/XL-style UNet?)")
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


def _clip_text_state(text_encoder) -> dict[str, torch.Tensor]:
    # The checkpoints keep transformers 4's `text_model.` level, which transformers 5's CLIPTextModel no longer has.
    out = {}
    for key, value in text_encoder.state_dict().items():
        if not key.endswith("position_ids"):
            out[key if key.startswith(("text_model.", "text_projection.")) else "text_model." + key] = value
    return out


_OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                    "self_attn.out_proj": "attn.out_proj"}


def open_clip_text_state(text_encoder) -> dict[str, torch.Tensor]:
    """A `CLIPTextModelWithProjection` in open_clip's layout (SDXL's second encoder in single files)."""
    import torch

    state = {k.removeprefix("text_model."): v for k, v in _clip_text_state(text_encoder).items()}
    out = {
        "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("final_layer_norm.weight"),
        "ln_final.bias": state.pop("final_layer_norm.bias"),
        "text_projection": state.pop("text_projection.weight").T.contiguous(),  # open_clip multiplies x @ P
    }
    for i in range(text_encoder.config.num_hidden_layers):
        layer, block = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [state.pop(f"{layer}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{block}attn.in_proj_{kind}"] = torch.cat(qkv)  # open_clip's nn.MultiheadAttention fuses q, k, v
            for ours, theirs in _OPEN_CLIP_LAYER.items():
                out[f"{block}{theirs}.{kind}"] = state.pop(f"{layer}{ours}.{kind}")
    if state:
        raise ValueError(f"no open_clip name for text encoder parameters {sorted(state)[:3]}")
    return out


def ldm_state_dict(pipe) -> dict[str, torch.Tensor]:
    """The pipeline's UNet, VAE and text encoder(s) as one state dict in the original SD 1.x or SDXL layout."""
    state = {}
    unet = unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config.layers_per_block)
    state.update({UNET_PREFIX + k: v for k, v in unet.items()})
    vae = vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels))
    state.update({VAE_PREFIX + k: v for k, v in vae.items()})
    text_encoder_2 = getattr(pipe, "text_encoder_2", None)
    if text_encoder_2 is None:
        state.update({TEXT_PREFIX + k: v for k, v in _clip_text_state(pipe.text_encoder).items()})
    else:
        state.update({SDXL_TEXT_PREFIX + k: v for k, v in _clip_text_state(pipe.text_encoder).items()})
        state.update({SDXL_TEXT_2_PREFIX + k: v for k, v in open_clip_text_state(text_encoder_2).items()})
    return state


def save_config_folder(pipe, folder: str | os.PathLike) -> Path:
    """Write only the configs (model_index, component configs, tokenizer, scheduler) of a pipeline."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_config(folder)
    pipe.unet.save_config(folder / "unet")
    pipe.vae.save_config(folder / "vae")
    pipe.scheduler.save_config(folder / "scheduler")
    for name in ("text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).config.save_pretrained(folder / name)
    for name in ("tokenizer", "tokenizer_2"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).save_pretrained(folder / name)
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
