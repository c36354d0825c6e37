"""Apply a LoRA to a loaded pipeline: a diffusers-format LoRA folder or file, or a training run (`latest`, `t0003`)."""

from __future__ import annotations

import os
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


def apply_lora(pipe, spec: str | os.PathLike, scale: float = 1.0):
    """Load the LoRA `spec` (a run: `latest`, `t0003`; a diffusers LoRA folder or `.safetensors`) into `pipe`."""
    path = resolve_lora(spec)
    try:
        if path.is_file():
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="rlft")
        else:
            pipe.load_lora_weights(str(path), adapter_name="rlft")
    except (ValueError, OSError, KeyError) as e:
        raise UserError(f"could not load the LoRA {path}: {e}") from e
    if scale != 1.0:
        pipe.set_adapters(["rlft"], adapter_weights=[scale])
    return pipe
