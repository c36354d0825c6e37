"""The LAION improved-aesthetic-predictor heads (christophschuhmann/improved-aesthetic-predictor).

Their checkpoints are state_dicts of an `nn.Sequential` called `layers`: Linear 768-1024-128-64-16-1. The
`linearMSE` files have Dropout between the Linears and no activation (keys `layers.{0,2,4,6,7}`); the
`reluMSE` file has ReLU + Dropout (keys `layers.{0,3,6,9,11}`, ReLU alone before the last Linear). We rebuild
the exact Sequential from the key indices, so a loaded head gives the original's outputs. They score
L2-normalised CLIP ViT-L/14 image embeddings on a 1-10 scale.
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from prefs.errors import UserError


def build_sequential(state_dict: dict[str, torch.Tensor]) -> nn.Sequential:
    """The `layers` Sequential whose Linear positions match the state_dict's `layers.N.weight` keys."""
    idx = sorted({int(m.group(1)) for k in state_dict if (m := re.fullmatch(r"layers\.(\d+)\.weight", k))})
    if not idx or idx[0] != 0:
        raise UserError("not a LAION aesthetic head: expected keys layers.N.weight/bias starting at layers.0")
    relu = any(b - a == 3 for a, b in zip(idx, idx[1:], strict=False))  # a gap of two layers means ReLU + Dropout
    modules: list[nn.Module] = []
    for _pos, (a, b) in enumerate(zip(idx, idx[1:] + [None], strict=False)):
        w = state_dict[f"layers.{a}.weight"]
        modules.append(nn.Linear(w.shape[1], w.shape[0]))
        if b is None:
            break
        gap = b - a - 1
        if relu:
            modules += [nn.ReLU(), nn.Dropout(0.2)][:gap]
        else:
            modules += [nn.Dropout(0.2)] * gap
    seq = nn.Sequential(*modules)
    seq.load_state_dict({k.removeprefix("layers."): v.float() for k, v in state_dict.items()})
    return seq.eval()


class LaionHead(nn.Module):
    """A LAION head as a module with the original's `layers` attribute (state_dict keys `layers.N.*`)."""

    def __init__(self, layers: nn.Sequential):
        super().__init__()
        self.layers = layers

    @property
    def in_dim(self) -> int:
        return self.layers[0].in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


def load_laion(path: str | os.PathLike) -> LaionHead:
    """Load a LAION aesthetic predictor checkpoint (.pth) as a `LaionHead` in eval mode."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"no LAION aesthetic head at {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors come in many types
        raise UserError(f"could not read {path} as a torch state_dict: {e}") from e
    if not isinstance(sd, dict):
        raise UserError(f"{path} is not a state_dict")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return LaionHead(build_sequential(sd)).eval()


def parse_prior(spec: str | None) -> str | None:
    """`laion:PATH` -> PATH; None passes through; anything else is a UserError naming the valid form."""
    if spec is None:
        return None
    kind, sep, path = spec.partition(":")
    if kind != "laion" or not sep or not path:
        raise UserError(f"unknown prior {spec!r}; valid: laion:PATH (a LAION improved-aesthetic-predictor .pth)")
    return path
