"""Apply a LoRA to a loaded pipeline: a diffusers-format or kohya/A1111 LoRA folder or file, or a training run (`latest`, `t0003`).

A LoRA fits one model family: before loading, its file's header (metadata, tensor names and shapes; no
weights are read) is checked against the pipeline, so an SDXL LoRA on an SD 1.x model (or the reverse) is a
one-line error instead of a shape mismatch deep inside diffusers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prefs.errors import NotFoundError, UserError


def resolve_lora(spec: str | os.PathLike) -> Path:
    """A LoRA spec -> a folder or file: a training run (`latest`, `t0003`, a run folder) or a LoRA path."""
    from rlft.train.runs import CONFIG_NAME, RUN_ID, lora_file, resolve_run

    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir() and (path / CONFIG_NAME).is_file():  # a run folder: its diffusers export
        return lora_file(path)
    if path.exists():
        return path
    if text == "latest" or RUN_ID.match(text):
        return lora_file(resolve_run(text))
    raise NotFoundError(
        f"no LoRA {text!r}; give a training run (latest, or an id like t0001), a diffusers LoRA folder, "
        "or a .safetensors file"
    )


def lora_name(spec: str | os.PathLike) -> str:
    """What an image records as its LoRA: the run id for `latest`/`t0003` (so provenance names the run
    that made it, not a moving alias), else the path as given."""
    from rlft.train.runs import RUN_ID, resolve_run

    text = os.fspath(spec)
    if text == "latest" or RUN_ID.match(text):
        return resolve_run(text).name
    return text


# Which family a LoRA says it is for: kohya's `ss_base_model_version`, the SAI model spec's architecture.
_VERSION_PREFIXES = (("sdxl", "sdxl"), ("sd_v1", "sd1"), ("sd_v2", "sd1"), ("sd_1", "sd1"), ("sd_2", "sd1"),
                     ("sd3", "sd3"), ("flux", "flux"))
_ARCHITECTURES = (("stable-diffusion-xl", "sdxl"), ("stable-diffusion-v1", "sd1"), ("stable-diffusion-v2", "sd1"),
                  ("stable-diffusion-3", "sd3"), ("flux-1", "flux"))
# Denoiser key prefixes: a UNet's (diffusers, kohya SD 1.x and SDXL names) or a flow transformer's.
_UNET_KEYS = ("unet.", "lora_unet_down_blocks", "lora_unet_up_blocks", "lora_unet_mid_block", "lora_unet_input_blocks",
              "lora_unet_output_blocks", "lora_unet_middle_block")
_FLUX_KEYS = ("lora_unet_double_blocks_", "lora_unet_single_blocks_", "transformer.single_transformer_blocks.")
_TRANSFORMER_KEYS = ("transformer.", "lora_unet_joint_blocks_", *_FLUX_KEYS)
# Text-encoder key prefixes only one family has (kohya's and diffusers' names).
_SDXL_TEXT_KEYS = ("lora_te1_", "lora_te2_", "text_encoder_2.", "te2.")
_SD1_TEXT_KEYS = ("lora_te_",)
_WIDTH_NAMES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


@dataclass(frozen=True)
class LoRAHeader:
    """What a LoRA file says about the model it was made for (from its safetensors header)."""

    family: str | None  # "sd1" / "sdxl" / "sd3" / "flux" when its metadata or names say so
    cross_attention_dim: int | None  # the width of the text states its UNet cross-attention reads
    denoiser: str | None = None  # "unet" or "transformer", when its names say which it adapts


def weights_file(path: Path) -> Path | None:
    """The weights file of a LoRA path: the file itself, or a folder's `pytorch_lora_weights.safetensors` (or
    its only `.safetensors`)."""
    if path.is_file():
        return path
    preferred = path / "pytorch_lora_weights.safetensors"
    if preferred.is_file():
        return preferred
    files = sorted(path.glob("*.safetensors"))
    return files[0] if len(files) == 1 else None


def read_header(path: Path) -> LoRAHeader | None:
    """The family and cross-attention width a `.safetensors` LoRA was made for; None for other formats."""
    if path.suffix.lower() != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            family = _family_from(meta, keys)
            width = None
            for key in keys:
                # the down (A) projection of a cross-attention key/value reads the text states: [rank, width]
                if "attn2" in key and ("to_k" in key or "to_v" in key) and any(d in key for d in _DOWN):
                    width = int(f.get_slice(key).get_shape()[-1])
                    break
    except Exception as e:  # not a safetensors file after all: the loader says so
        raise UserError(f"could not read the LoRA {path}: {e}") from e
    denoiser = ("unet" if any(k.startswith(_UNET_KEYS) for k in keys)
                else "transformer" if any(k.startswith(_TRANSFORMER_KEYS) for k in keys) else None)
    return LoRAHeader(family, width, denoiser)


_DOWN = ("lora_down", "lora_A", "lora.down", "lora_linear_layer.down")


def _family_from(meta: dict, keys: list[str]) -> str | None:
    version = meta.get("ss_base_model_version", "")
    for prefix, family in _VERSION_PREFIXES:
        if version.startswith(prefix):
            return family
    architecture = meta.get("modelspec.architecture", "")
    for prefix, family in _ARCHITECTURES:
        if architecture.startswith(prefix):
            return family
    if any(k.startswith(_FLUX_KEYS) for k in keys):
        return "flux"
    if any(k.startswith(_SDXL_TEXT_KEYS) for k in keys) and not any(k.startswith(_TRANSFORMER_KEYS) for k in keys):
        return "sdxl"
    if any(k.startswith(_SD1_TEXT_KEYS) for k in keys):
        return "sd1"
    return None


def check_lora_fits(pipe, path: Path) -> None:
    """UserError (one line) when the LoRA at `path` was made for another model family than `pipe`'s."""
    from rlft.models.families import FAMILIES, family_of_pipeline

    file = weights_file(path)
    header = read_header(file) if file is not None else None
    if header is None:
        return
    model = family_of_pipeline(pipe)
    source = getattr(pipe, "model_source", None)
    model_name = f"the model {source.spec}" if source else "the model"
    if header.family is not None and header.family != model.name:
        made_for = FAMILIES[header.family].title
        raise UserError(f"the LoRA {path} was made for {made_for} models, but {model_name} is {model.title}; "
                        f"use a LoRA trained on {model.title}")
    if header.denoiser is not None and (header.denoiser == "transformer") != model.flow:
        made_for = "SD3 or FLUX (a transformer)" if header.denoiser == "transformer" else "SD 1.x or SDXL (a UNet)"
        raise UserError(f"the LoRA {path} was made for {made_for} models, but {model_name} is {model.title}; "
                        f"use a LoRA trained on {model.title}")
    if model.flow:
        return
    width = pipe.unet.config.cross_attention_dim
    if header.cross_attention_dim is not None and header.cross_attention_dim != width:
        made_for = _WIDTH_NAMES.get(header.cross_attention_dim, "another model family")
        raise UserError(f"the LoRA {path} was made for {made_for} (its UNet reads {header.cross_attention_dim}-wide "
                        f"text states), but {model_name} is {model.title} ({width}-wide); use a LoRA trained on "
                        f"{model.title}")


def apply_lora(pipe, spec: str | os.PathLike, scale: float = 1.0):
    """Load the LoRA `spec` (a run: `latest`, `t0003`; a diffusers or kohya LoRA folder or `.safetensors`) into `pipe`.

    UserError when it was made for another model family, or cannot be loaded.
    """
    path = resolve_lora(spec)
    check_lora_fits(pipe, path)
    try:
        if path.is_file():
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="rlft")
        else:
            pipe.load_lora_weights(str(path), adapter_name="rlft")
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        # RuntimeError: a shape mismatch (a LoRA of another model the header did not give away)
        raise UserError(f"could not load the LoRA {path}: {_first_line(e)}") from e
    if scale != 1.0:
        pipe.set_adapters(["rlft"], adapter_weights=[scale])
    return pipe


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
