"""Oracle utilities for simulated raters: `f(image: PIL.Image, prompt: str) -> float`, higher is better.

Built on the toy world's pixel checker (`rlft.toy.checker.read`) and plain pixel statistics, so they
work on any image, and are exact on toy-world images. Utilities are scaled so that, at Bradley-Terry
noise T = 1, a clear difference (a warm vs a cold shape, a large vs a small one) wins ~95% of the time.
`resolve_oracle` accepts a built-in name or `module:function` naming any importable function of the
same signature.
"""

from __future__ import annotations

import importlib
from typing import Callable

import numpy as np
from PIL import Image

from prefs.errors import UserError
from rlft.toy.checker import read
from rlft.toy.world import WARM_COLORS

Oracle = Callable[[Image.Image, str], float]
ORACLES: dict[str, Oracle] = {}


def register_oracle(name: str):
    """Decorator: make `fn(image, prompt) -> float` available as `--oracle name`."""

    def deco(fn: Oracle) -> Oracle:
        ORACLES[name] = fn
        return fn

    return deco


def _luminance(image: Image.Image) -> float:
    return float(np.asarray(image.convert("L"), dtype=np.float32).mean() / 255.0)


@register_oracle("warm")
def warm(image: Image.Image, prompt: str = "") -> float:
    """Prefers red, orange and yellow shapes (3 for a warm shape, 0 otherwise)."""
    return 3.0 if read(image).color in WARM_COLORS else 0.0


@register_oracle("cool")
def cool(image: Image.Image, prompt: str = "") -> float:
    """The opposite of `warm`: prefers green, blue, purple, white and black shapes."""
    return 3.0 - warm(image, prompt)


@register_oracle("big")
def big(image: Image.Image, prompt: str = "") -> float:
    """Prefers larger shapes: 10 x the shape's bounding-box side as a fraction of the image side."""
    return 10.0 * read(image).extent


@register_oracle("small")
def small(image: Image.Image, prompt: str = "") -> float:
    """Prefers smaller shapes (the negative of `big`)."""
    return -big(image, prompt)


@register_oracle("centered")
def centered(image: Image.Image, prompt: str = "") -> float:
    """Prefers shapes near the centre: -10 x the distance of the shape's centre from the image centre."""
    cx, cy = read(image).center
    return -10.0 * float(np.hypot(cx - 0.5, cy - 0.5))


@register_oracle("dark")
def dark(image: Image.Image, prompt: str = "") -> float:
    """Prefers darker images: -5 x mean luminance (0..1)."""
    return -5.0 * _luminance(image)


@register_oracle("bright")
def bright(image: Image.Image, prompt: str = "") -> float:
    """Prefers brighter images: 5 x mean luminance (0..1)."""
    return 5.0 * _luminance(image)


def composite(*names: str) -> Oracle:
    """A taste for several attributes at once: the sum of built-in oracles' utilities. Each keeps its own scale, so a
    clear difference in any one attribute still wins ~95% of the time at T = 1, and two together more often."""
    parts = [ORACLES[n] for n in names]

    def utility(image: Image.Image, prompt: str = "") -> float:
        return float(sum(fn(image, prompt) for fn in parts))

    utility.__name__ = "+".join(names)
    utility.__doc__ = "Prefers " + " and ".join(names) + f": the sum of the {len(names)} oracles' utilities."
    return utility


COMPOSITES = ("warm+big", "cool+centered")  # two-attribute tastes, built in and benchmarked beside the single ones
for _name in COMPOSITES:
    register_oracle(_name)(composite(*_name.split("+")))


def resolve_oracle(spec: str) -> Oracle:
    """A built-in oracle by name, a sum of built-ins (`warm+small`), or `module:function`; unknown names raise
    UserError listing the valid ones."""
    if spec in ORACLES:
        return ORACLES[spec]
    if "+" in spec and ":" not in spec:
        names = [n.strip() for n in spec.split("+")]
        unknown = [n for n in names if n not in ORACLES or "+" in n]
        if unknown or len(set(names)) != len(names):
            raise UserError(f"cannot combine {spec!r}: give distinct built-in oracles joined by '+' "
                            f"({', '.join(n for n in sorted(ORACLES) if '+' not in n)})")
        return composite(*names)
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise UserError(f"cannot import oracle module {module_name!r}: {e}") from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise UserError(f"{module_name!r} has no function {attr!r} for --oracle {spec}")
        return fn
    raise UserError(f"unknown oracle {spec!r}; valid: {', '.join(sorted(ORACLES))}, or module:function")
