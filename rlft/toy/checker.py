"""A pixel-level checker for toy-world images, written from the world's definition alone.

background = the dominant colour of the image border; foreground = every pixel clearly unlike it. From the
foreground: its mean colour (nearest palette entry), the side of its bounding box (nearest size class, in
log space) and the centre of its bounding box (nearest position anchor). The shape itself is judged by the
toy CLIP's zero-shot classifier elsewhere (pixels alone can't tell a blurry star from a circle fairly).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from rlft.toy.world import IMAGE_SIZE, PALETTE, POSITIONS, SIZES, Scene

_NAMES = list(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], dtype=np.float32)
FOREGROUND_DISTANCE = 60.0  # RGB distance from the background colour above which a pixel is foreground
MIN_FOREGROUND = 6  # pixels; fewer means "no shape"


def nearest_color(rgb) -> str:
    d = ((_RGB - np.asarray(rgb, dtype=np.float32)) ** 2).sum(-1)
    return _NAMES[int(d.argmin())]


@dataclasses.dataclass
class Reading:
    """What the checker sees in one image."""

    background: str
    color: str | None  # None when no foreground was found
    size: str | None
    position: str | None
    area: float  # foreground pixels / all pixels
    extent: float  # bounding-box side / image side
    center: tuple[float, float]  # bounding-box centre, fractions of the side

    def matches(self, scene: Scene) -> dict[str, bool]:
        return {
            "background": self.background == scene.background,
            "color": self.color == scene.color,
            "size": self.size == scene.size,
            "position": self.position == scene.position,
        }


def read(img: Image.Image | np.ndarray) -> Reading:
    """Read background, foreground colour, size class and position class off an image's pixels."""
    a = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, dtype=np.float32)
    h, w, _ = a.shape
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    # Dominant border colour: vote by nearest palette entry, then average the pixels of the winner.
    votes = [nearest_color(p) for p in border]
    bg_name = max(set(votes), key=votes.count)
    bg_rgb = border[np.array([v == bg_name for v in votes])].mean(0)
    dist = np.sqrt(((a - bg_rgb) ** 2).sum(-1))
    mask = dist > FOREGROUND_DISTANCE
    n = int(mask.sum())
    if n < MIN_FOREGROUND:
        return Reading(bg_name, None, None, None, n / (h * w), 0.0, (0.5, 0.5))
    ys, xs = np.nonzero(mask)
    # Robust bounding box: ignore a stray 1% of outlying pixels.
    x0, x1 = np.percentile(xs, [1, 99])
    y0, y1 = np.percentile(ys, [1, 99])
    extent = max(x1 - x0 + 1, y1 - y0 + 1) / IMAGE_SIZE
    cx, cy = (x0 + x1 + 1) / 2 / w, (y0 + y1 + 1) / 2 / h
    # Foreground colour: the mean of the pixels far from the background (edges blend into it).
    core = mask & (dist >= np.percentile(dist[mask], 50))
    color = nearest_color(a[core].mean(0))
    size = min(SIZES, key=lambda s: abs(np.log(extent) - np.log(SIZES[s])))
    position = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)
    return Reading(bg_name, color, size, position, n / (h * w), float(extent), (float(cx), float(cy)))
