"""dpo's judged pairs as VAE latents, each pair at the size the model should see it at.

A model without micro-conditioning (SD 1.x) sees every judged image at its own training size, as it always
has. A size-conditioned model (SDXL) was trained on many canvases and is told each image's geometry: there a
pair is encoded at the winner's own size (on the family's grid, 64 px for SDXL; a very large image, an imported
photo say, first scaled down to twice the model's native pixel count), the loser resized to cover it and
centre-cropped, and each image's (original size, crop top-left, target size) becomes its `time_ids`, as SDXL's
own training computes them. A pair generated at one SDXL bucket is thus trained at that bucket, conditioned
exactly as it was sampled.

Pairs of different sizes cannot share a UNet call: `JudgedLatents.size_groups` splits a micro-batch by size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# (original size, crop top-left, target size), each (height, width): an image's SDXL micro-conditioning
Geometry = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
MAX_PIXELS_FACTOR = 2  # images above this many times the model's native pixel count are scaled down first


@dataclass
class JudgedLatents:
    """Winners' and losers' latents by judgement; `geometry` only for a size-conditioned model."""

    win: torch.Tensor | list[torch.Tensor]  # [N, C, h, w] when all share one size, else N tensors [C, h, w]
    lose: torch.Tensor | list[torch.Tensor]
    geometry: list[tuple[Geometry, Geometry]] | None = None  # (winner's, loser's) per judgement

    def __len__(self) -> int:
        return len(self.win)

    def _shape(self, i: int) -> tuple[int, ...]:
        return tuple(self.win[i].shape[-2:])

    def size_groups(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """`idx` split into runs of judgements with one latent size (in order of first appearance); `[idx]` itself
        when they all share one."""
        if isinstance(self.win, torch.Tensor):
            return [idx]
        groups: dict[tuple, list[int]] = {}
        for i in idx.tolist():
            groups.setdefault(self._shape(i), []).append(i)
        if len(groups) == 1:
            return [idx]
        return [torch.tensor(g) for g in groups.values()]

    def batch(self, idx: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor, list[Geometry] | None]:
        """(winners, losers, geometries of the winners then the losers, or None) of the judgements `idx` (one size)."""
        if isinstance(self.win, torch.Tensor):
            xw, xl = self.win[idx], self.lose[idx]
        else:
            ids = idx.tolist()
            xw, xl = torch.stack([self.win[i] for i in ids]), torch.stack([self.lose[i] for i in ids])
        geometry = None
        if self.geometry is not None:
            pairs = [self.geometry[i] for i in idx.tolist()]
            geometry = [w for w, _ in pairs] + [l for _, l in pairs]
        return xw.to(device), xl.to(device), geometry


def own_size(width: int, height: int, step: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) an image of `width` x `height` is trained at: its own, scaled down to `max_pixels` when
    larger, each side rounded down to a multiple of `step` (at least `step`)."""
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    return (max(step, int(height * scale) // step * step), max(step, int(width * scale) // step * step))


def fit(image, size: tuple[int, int]):
    """`image` (PIL) resized to cover `size` (height, width) and centre-cropped to it; returns it and its geometry."""
    from PIL import Image

    th, tw = size
    w, h = image.size
    scale = max(tw / w, th / h)
    rw, rh = max(tw, round(w * scale)), max(th, round(h * scale))
    if (rw, rh) != (w, h):
        image = image.resize((rw, rh), Image.Resampling.BICUBIC)
    top, left = (rh - th) // 2, (rw - tw) // 2
    if (rw, rh) != (tw, th):
        image = image.crop((left, top, left + tw, top + th))
    return image, ((h, w), (top, left), (th, tw))


@torch.no_grad()
def vae_encode(trainer, images) -> torch.Tensor:
    """PIL images of one size -> VAE latents (posterior mean, scaled as the model's `decode` unscales), on CPU."""
    pipe = trainer.pipe
    vae = pipe.vae
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    out = []
    for i in range(0, len(x), 16):
        z = vae.encode(x[i : i + 16].to(trainer.device, vae.dtype)).latent_dist.mean
        if mean is not None and std is not None:  # the inverse of ModelAdapter.decode's per-channel statistics
            shape = (1, len(mean), 1, 1)
            z = (z - torch.tensor(mean, device=z.device, dtype=z.dtype).view(shape)) / torch.tensor(
                std, device=z.device, dtype=z.dtype).view(shape)
        out.append((z * vae.config.scaling_factor).float().cpu())
    return torch.cat(out)


def encode_pairs_at_own_size(trainer, pairs) -> JudgedLatents:
    """(winner, loser) PIL pairs -> `JudgedLatents` at each pair's own size, with each image's geometry (see the
    module docstring)."""
    adapter = trainer.adapter
    step = adapter.info.size_multiple
    native_h, native_w = adapter.image_size
    max_pixels = MAX_PIXELS_FACTOR * native_h * native_w
    fitted = []
    for win, lose in pairs:
        size = own_size(*win.size, step, max_pixels)
        (w_img, w_geo), (l_img, l_geo) = fit(win, size), fit(lose, size)
        fitted.append((size, w_img, l_img, (w_geo, l_geo)))
    win: list = [None] * len(pairs)
    lose: list = [None] * len(pairs)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, (size, *_) in enumerate(fitted):
        by_size.setdefault(size, []).append(i)
    for ids in by_size.values():  # one VAE batch per size
        zw = vae_encode(trainer, [fitted[i][1] for i in ids])
        zl = vae_encode(trainer, [fitted[i][2] for i in ids])
        for k, i in enumerate(ids):
            win[i], lose[i] = zw[k], zl[k]
    geometry = [f[3] for f in fitted]
    if len(by_size) == 1:
        return JudgedLatents(torch.stack(win), torch.stack(lose), geometry)
    return JudgedLatents(win, lose, geometry)
