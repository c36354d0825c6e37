"""The toy world: one coloured shape on a uniform background, 64x64, drawn procedurally from a seed.

Everything other parts of rlft judge images by (simulated raters, benchmarks, the pixel checker) is
defined here as named constants: the palette, the shapes, the size and position classes, and the
caption vocabulary. The module needs only numpy and Pillow (no torch), so oracles can run anywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # draw at 4x and downsample: smooth edges, exact colours inside the shape and background

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 130, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 60),
    "blue": (30, 80, 220),
    "purple": (140, 50, 180),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")
# Size class -> side of the shape's bounding box as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.15, "medium": 0.30, "large": 0.50}
# Position class -> centre of the shape's bounding box, as fractions of the image side (x, y).
POSITIONS: dict[str, tuple[float, float]] = {
    "center": (0.50, 0.50),
    "left": (0.27, 0.50),
    "right": (0.73, 0.50),
    "top": (0.50, 0.27),
    "bottom": (0.50, 0.73),
}
SIZE_JITTER = 0.08  # relative: a "medium" shape spans 0.30 * (1 +- 0.08) of the side
POSITION_JITTER = 0.03  # absolute, in fractions of the side
RING_HOLE = 0.55  # inner radius of a ring relative to its outer radius
WARM_COLORS = ("red", "orange", "yellow")

# Phrases for each attribute value in captions. Several per value, so the text encoder learns the word,
# not a template slot.
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "center": ("in the center", "centered", "center", "in the middle"),
    "left": ("on the left", "left", "at the left side"),
    "right": ("on the right", "right", "at the right side"),
    "top": ("at the top", "top", "near the top"),
    "bottom": ("at the bottom", "bottom", "near the bottom"),
}
ATTRIBUTES = ("shape", "color", "background", "size", "position")


@dataclasses.dataclass(frozen=True)
class Scene:
    """One world image's attributes (the ground truth a caption and the pixel checker refer to)."""

    shape: str
    color: str
    background: str
    size: str
    position: str

    def __post_init__(self):
        for name, value, valid in (
            ("shape", self.shape, SHAPES),
            ("color", self.color, COLORS),
            ("background", self.background, COLORS),
            ("size", self.size, tuple(SIZES)),
            ("position", self.position, tuple(POSITIONS)),
        ):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
        if self.color == self.background:
            raise ValueError("shape colour and background colour must differ")

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.shape, self.color, self.background, self.size, self.position)


def all_scenes() -> list[Scene]:
    """Every attribute combination of the world (5 shapes x 8 x 7 colours x 3 sizes x 5 positions = 4,200)."""
    return [
        Scene(s, c, b, z, p)
        for s in SHAPES
        for c in COLORS
        for b in COLORS
        if b != c
        for z in SIZES
        for p in POSITIONS
    ]


def is_heldout(scene: Scene, fraction: float = 0.1) -> bool:
    """Whether a combination is held out of training (stable hash, ~`fraction` of all combinations).

    Held-out combinations never appear as training images or captions, so the benchmark measures
    composition, not memorisation.
    """
    digest = hashlib.sha256("|".join(scene.key).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def heldout_scenes() -> list[Scene]:
    return [s for s in all_scenes() if is_heldout(s)]


def train_scenes() -> list[Scene]:
    return [s for s in all_scenes() if not is_heldout(s)]


# ----------------------------------------------------------------------------------------------------------
# Drawing


def _shape_polygon(shape: str, cx: float, cy: float, side: float) -> list[tuple[float, float]]:
    r = side / 2
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":  # isosceles, pointing up, filling its bounding box
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "star":  # five points; inner radius 0.45 of outer; centred in its bounding box
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            ang = -np.pi / 2 + i * np.pi / 5
            pts.append((cx + rad * np.cos(ang), cy + r * 0.1 + rad * np.sin(ang)))
        return pts
    raise ValueError(shape)


def draw(scene: Scene, seed: int = 0) -> Image.Image:
    """Draw a scene as a 64x64 RGB image; the seed sets the size and position jitter."""
    rng = random.Random(seed)
    big = IMAGE_SIZE * SUPERSAMPLE
    side = SIZES[scene.size] * (1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER)) * big
    px, py = POSITIONS[scene.position]
    cx = (px + rng.uniform(-POSITION_JITTER, POSITION_JITTER)) * big
    cy = (py + rng.uniform(-POSITION_JITTER, POSITION_JITTER)) * big
    margin = SUPERSAMPLE  # keep the whole shape inside the frame, one pixel from the edge
    cx = min(max(cx, side / 2 + margin), big - side / 2 - margin)
    cy = min(max(cy, side / 2 + margin), big - side / 2 - margin)
    fg, bg = PALETTE[scene.color], PALETTE[scene.background]
    img = Image.new("RGB", (big, big), bg)
    d = ImageDraw.Draw(img)
    r = side / 2
    if scene.shape in ("circle", "ring"):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
        if scene.shape == "ring":
            h = r * RING_HOLE
            d.ellipse([cx - h, cy - h, cx + h, cy + h], fill=bg)
    else:
        d.polygon(_shape_polygon(scene.shape, cx, cy, side), fill=fg)
    return img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


# ----------------------------------------------------------------------------------------------------------
# Captions


@dataclasses.dataclass(frozen=True)
class CaptionPlan:
    """How a caption is written: which attributes it mentions, the template and phrase choices.

    Rendering the same plan with different scenes gives captions that differ only in the changed
    attribute words: that is how the CLIP's hard negatives are built.
    """

    mention: frozenset  # subset of ATTRIBUTES; "shape" is always mentioned
    template: int
    phrase: int  # index into the per-value phrase lists
    order_seed: int  # for the tag-style template's shuffled order


N_TEMPLATES = 6


def full_plan(template: int = 0) -> CaptionPlan:
    return CaptionPlan(frozenset(ATTRIBUTES), template, 0, 0)


def random_plan(rng: random.Random, p_mention: float = 0.8) -> CaptionPlan:
    mention = {"shape"} | {a for a in ATTRIBUTES[1:] if rng.random() < p_mention}
    return CaptionPlan(frozenset(mention), rng.randrange(N_TEMPLATES), rng.randrange(12), rng.randrange(1 << 30))


def caption(scene: Scene, plan: CaptionPlan) -> str:
    """Write a caption for `scene` following `plan` (a deterministic function of both)."""
    return _an(_caption(scene, plan))


def _an(text: str) -> str:
    # "a orange" -> "an orange"
    return re.sub(r"\b(a) (?=[aeiou])", "an ", text)


def _caption(scene: Scene, plan: CaptionPlan) -> str:
    m = plan.mention
    size = scene.size if "size" in m else None
    color = scene.color if "color" in m else None
    bg = scene.background if "background" in m else None
    pos = None
    if "position" in m:
        phrases = POSITION_PHRASES[scene.position]
        pos = phrases[plan.phrase % len(phrases)]
    t = plan.template
    noun = " ".join(w for w in (size, color, scene.shape) if w)
    if t == 0:  # "a large red circle on a blue background at the top"
        parts = [f"a {noun}"]
        if bg:
            parts.append(f"on a {bg} background")
        if pos:
            parts.append(pos)
        return " ".join(parts)
    if t == 1:  # "red circle, blue background, top"
        tags = [" ".join(w for w in (color, scene.shape) if w)]
        if bg:
            tags.append(f"{bg} background")
        if size:
            tags.append(size)
        if pos:
            tags.append(pos)
        head, rest = tags[0], tags[1:]
        random.Random(plan.order_seed).shuffle(rest)
        return ", ".join([head, *rest])
    if t == 2:  # "a small star in yellow against black"
        s = f"a {size + ' ' if size else ''}{scene.shape}"
        if color:
            s += f" in {color}"
        if bg:
            s += f" against {bg}"
        if pos:
            s += f", {pos}"
        return s
    if t == 3:  # "a blue background with a large red circle on the left"
        s = f"a {bg} background with a {noun}" if bg else f"a {noun}"
        if pos:
            s += f" {pos}"
        return s
    if t == 4:  # "top: a red circle, large, over blue"
        s = f"a {' '.join(w for w in (color, scene.shape) if w)}"
        if size:
            s += f", {size}"
        if bg:
            s += f", over {bg}"
        return f"{pos}: {s}" if pos else s
    # t == 5: "the shape is a circle; colour red; background blue; size large; position top"
    fields = [f"a {scene.shape}"]
    if color:
        fields.append(f"colored {color}")
    if bg:
        fields.append(f"background {bg}")
    if size:
        fields.append(f"size {size}")
    if pos:
        fields.append(f"position {pos}")
    return "; ".join(fields)


def perturb(scene: Scene, attribute: str, rng: random.Random) -> Scene:
    """The same scene with one attribute changed (or, for 'swap', the two colours swapped)."""
    if attribute == "swap":
        return dataclasses.replace(scene, color=scene.background, background=scene.color)
    if attribute == "shape":
        return dataclasses.replace(scene, shape=rng.choice([s for s in SHAPES if s != scene.shape]))
    if attribute == "color":
        return dataclasses.replace(scene, color=rng.choice([c for c in COLORS if c not in (scene.color, scene.background)]))
    if attribute == "background":
        return dataclasses.replace(scene, background=rng.choice([c for c in COLORS if c not in (scene.color, scene.background)]))
    if attribute == "size":
        return dataclasses.replace(scene, size=rng.choice([s for s in SIZES if s != scene.size]))
    if attribute == "position":
        return dataclasses.replace(scene, position=rng.choice([p for p in POSITIONS if p != scene.position]))
    raise ValueError(attribute)


def random_scene(rng: random.Random, heldout: bool = False) -> Scene:
    """A uniformly random scene from the training (default) or the held-out combinations."""
    while True:
        c = rng.choice(COLORS)
        s = Scene(rng.choice(SHAPES), c, rng.choice([b for b in COLORS if b != c]), rng.choice(tuple(SIZES)), rng.choice(tuple(POSITIONS)))
        if is_heldout(s) == heldout:
            return s


@dataclasses.dataclass
class Sample:
    scene: Scene
    image: Image.Image
    caption: str
    plan: CaptionPlan
    seed: int


def samples(seed: int, heldout: bool = False) -> Iterator[Sample]:
    """An endless deterministic stream of (scene, image, caption) from the world."""
    rng = random.Random(seed)
    while True:
        scene = random_scene(rng, heldout)
        plan = random_plan(rng)
        img_seed = rng.randrange(1 << 31)
        yield Sample(scene, draw(scene, img_seed), caption(scene, plan), plan, img_seed)


def to_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def open_prompts() -> list[str]:
    """The `toy` prompt set: a shape and a background named, colour, size and position left open.

    What a prompt leaves open is what a person's taste (or a simulated rater) can steer: warm or cool
    colours, big or small, centred or not.
    """
    return [_an(f"a {shape} on a {bg} background") for shape in SHAPES for bg in COLORS]
