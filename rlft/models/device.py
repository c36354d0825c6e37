"""Device and dtype defaults shared by every model loader."""

from __future__ import annotations

from prefs.errors import UserError

DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}


def default_device() -> str:
    """CUDA when present, then Apple's MPS, else CPU."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def default_dtype(device: str):
    """bf16 on CUDA cards that support it, else fp16 on accelerators; fp32 on CPU (fp16 is slow there)."""
    import torch

    kind = str(device).split(":")[0]
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return torch.float32


def parse_dtype(dtype):
    """A torch dtype from a torch dtype or a name (`fp32`, `fp16`, `bf16`, ...); None stays None."""
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise UserError(f"unknown dtype {dtype!r}; choose one of: fp32, fp16, bf16")
    return getattr(torch, name)
