"""Apply a LoRA to a loaded pipeline. For now a diffusers-format LoRA folder or file; training runs come later."""

from __future__ import annotations

import os
from pathlib import Path

from prefs.errors import NotFoundError, UserError


def apply_lora(pipe, spec: str | os.PathLike, scale: float = 1.0):
    """Load the LoRA at `spec` (a diffusers LoRA folder or `.safetensors`) into `pipe`; returns the pipeline."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise NotFoundError(
            f"no LoRA at {os.fspath(spec)!r}; give a diffusers LoRA folder or .safetensors file "
            "(training-run names come with `rlft train`)"
        )
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
