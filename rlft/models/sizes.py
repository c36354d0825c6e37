"""Image sizes: each family's native size, the sides it accepts, and SDXL's aspect-ratio buckets.

SDXL was trained on about one megapixel in buckets of different aspect ratios, every side a multiple of 64
(Podell et al. 2023, appendix; the list kohya's trainers and the A1111/ComfyUI presets use). Non-square
canvases are what the buckets are for: portraits, landscapes, banners. Other sizes that are multiples of 64
work too, but the model saw them less; a side that is not a multiple of 64 is refused for SDXL (the UNet
would pad and crop its latents), while SD 1.x keeps the plain multiple-of-8 rule.
"""

from __future__ import annotations

from prefs.errors import UserError
from rlft.models.families import Family

# (width, height), about 1024 x 1024 pixels each, from square to the widest and tallest SDXL was trained on.
SDXL_BUCKETS: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (1152, 896), (896, 1152),
    (1216, 832), (832, 1216),
    (1344, 768), (768, 1344),
    (1536, 640), (640, 1536),
)


def bucket_list() -> str:
    """The SDXL buckets as `1024x1024, 1152x896, ...`, for help texts and messages."""
    return ", ".join(f"{w}x{h}" for w, h in SDXL_BUCKETS)


def nearest_bucket(width: int, height: int) -> tuple[int, int]:
    """The SDXL bucket whose aspect ratio is closest to width:height (compared on a log scale)."""
    import math

    ratio = math.log(width / height)
    return min(SDXL_BUCKETS, key=lambda b: abs(math.log(b[0] / b[1]) - ratio))


def check_size(family: Family, width: int | None, height: int | None) -> None:
    """UserError unless each given side is a positive multiple of the family's step (SDXL: 64, with the buckets)."""
    step = family.size_multiple
    for name, value in (("width", width), ("height", height)):
        if value is None:
            continue
        if not isinstance(value, int) or value < step or value % step:
            hint = f"; its trained sizes (width x height): {bucket_list()}" if family.name == "sdxl" else ""
            raise UserError(f"{name} must be a positive multiple of {step} for {family.title} models, got {value!r}{hint}")
