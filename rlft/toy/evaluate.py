"""Measure the toy world's models: CLIP zero-shot accuracy, and prompt adherence of generated images.

Used by `bench/bench_toy.py` (the numbers the toy-world issue sets) and by the pretraining run's final
report. Prompt adherence is judged by the pixel checker (background, colour, size, position) and, for
the shape, by the toy CLIP's zero-shot classifier.
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from rlft.toy import checker, world


# Zero-shot prompts per attribute, ensembled over the attributes not being asked about (as CLIP's paper
# ensembles templates): the class embedding is the mean of the normalised text features.
def _class_prompts(attribute: str, value: str) -> list[str]:
    if attribute == "shape":
        return [f"a {c} {value}" for c in world.COLORS] + [f"a {value}"]
    if attribute == "color":
        return [f"a {value} {s}" for s in world.SHAPES]
    if attribute == "background":
        return [f"a {s} on a {value} background" for s in world.SHAPES]
    if attribute == "size":
        return [f"a {value} {s}" for s in world.SHAPES]
    if attribute == "position":
        return [f"a {s} {p}" for s in world.SHAPES for p in world.POSITION_PHRASES[value][:2]]
    raise ValueError(attribute)


CLASSES = {"shape": world.SHAPES, "color": world.COLORS, "background": world.COLORS, "size": tuple(world.SIZES), "position": tuple(world.POSITIONS)}


class ZeroShot:
    """A zero-shot attribute classifier from an open_clip model and its tokenizer."""

    def __init__(self, model, tokenizer, device="cpu"):
        self.model, self.device = model.to(device).eval(), device
        self.heads = {}
        with torch.no_grad():
            for attr, values in CLASSES.items():
                embs = []
                for v in values:
                    t = F.normalize(model.encode_text(tokenizer(_class_prompts(attr, v)).to(device)).float(), dim=-1)
                    embs.append(F.normalize(t.mean(0), dim=-1))
                self.heads[attr] = torch.stack(embs)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images: float N,3,64,64 in [-1, 1] (the toy CLIP's normalisation)."""
        out = [self.model.encode_image(images[i : i + 256].to(self.device)).float() for i in range(0, len(images), 256)]
        return F.normalize(torch.cat(out), dim=-1)

    def predict(self, images: torch.Tensor, attribute: str) -> list[str]:
        logits = self.image_features(images) @ self.heads[attribute].T
        return [CLASSES[attribute][i] for i in logits.argmax(1).tolist()]


def to_tensor(imgs) -> torch.Tensor:
    arr = np.stack([world.to_array(i) if not isinstance(i, np.ndarray) else i for i in imgs])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1


def clip_zero_shot(zs: ZeroShot, n: int = 1000, seed: int = 1234) -> dict[str, float]:
    """Zero-shot accuracy per attribute on drawn (real, not generated) world images of all combinations."""
    rng = random.Random(seed)
    scenes = [world.random_scene(rng, heldout=rng.random() < 0.5) for _ in range(n)]
    imgs = to_tensor([world.draw(s, rng.randrange(1 << 31)) for s in scenes])
    out = {}
    for attr in CLASSES:
        pred = zs.predict(imgs, attr)
        out[attr] = float(np.mean([p == getattr(s, attr) for p, s in zip(pred, scenes, strict=False)]))
    return out


def heldout_prompts(n: int = 200, seed: int = 0) -> list[tuple[world.Scene, str]]:
    """`n` held-out combinations with captions naming every attribute (varied templates)."""
    rng = random.Random(seed)
    scenes = world.heldout_scenes()
    rng.shuffle(scenes)
    return [(s, world.caption(s, world.full_plan(template=i % world.N_TEMPLATES))) for i, s in enumerate(scenes[:n])]


@torch.no_grad()
def generation_adherence(pipe, zs: ZeroShot, n: int = 200, seed: int = 0, steps: int = 20, guidance: float = 3.0, batch: int = 50) -> dict:
    """Generate one image per held-out caption (seed = `seed` + index) and score it against its scene."""
    items = heldout_prompts(n, seed)
    images = []
    for i in range(0, n, batch):
        chunk = items[i : i + batch]
        gens = [torch.Generator("cpu").manual_seed(seed + i + j) for j in range(len(chunk))]
        out = pipe([c for _, c in chunk], num_inference_steps=steps, guidance_scale=guidance, generator=gens, output_type="np")
        images.extend((out.images * 255).round().astype(np.uint8))
    hits = {k: [] for k in ("background", "color", "size", "position", "shape")}
    shapes = zs.predict(to_tensor(images), "shape")
    for (scene, _), img, shape in zip(items, images, shapes, strict=False):
        for k, v in checker.read(img).matches(scene).items():
            hits[k].append(v)
        hits["shape"].append(shape == scene.shape)
    return {k: float(np.mean(v)) for k, v in hits.items()}, images


def time_generation(pipe, n_images: int = 8, steps: int = 20, guidance: float = 3.0, repeats: int = 3) -> float:
    """Best-of-`repeats` wall time to generate `n_images` at `steps` DDIM steps with CFG (seconds)."""
    prompt = "a large red circle on a blue background"
    pipe([prompt] * n_images, num_inference_steps=2, guidance_scale=guidance, output_type="np")  # warm-up
    best = float("inf")
    for r in range(repeats):
        g = torch.Generator("cpu").manual_seed(r)
        t = time.perf_counter()
        pipe([prompt] * n_images, num_inference_steps=steps, guidance_scale=guidance, generator=g, output_type="pil")
        best = min(best, time.perf_counter() - t)
    return best
