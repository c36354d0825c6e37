"""Helpers for the prefs tests: tiny images and toy-world pools."""

from __future__ import annotations

import io

from PIL import Image


def png_bytes(i: int, size: int = 8, pnginfo=None) -> bytes:
    """A distinct small PNG for each i."""
    img = Image.new("RGB", (size, size), (i % 256, (i // 256) % 256, 7))
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=pnginfo)
    return buf.getvalue()


def add_images(store, n: int, prompts: int | None = None) -> list[str]:
    """Add n distinct images (prompt "p{i % prompts}" when `prompts`, else one prompt each); returns shas."""
    shas = []
    for i in range(n):
        prompt = f"p{i % prompts}" if prompts else f"prompt {i}"
        shas.append(store.add_image(png_bytes(i), prompt=prompt, seed=i).sha256)
    return shas


def add_toy_images(store, n: int, seed: int = 0) -> list[str]:
    from rlft.toy.world import samples

    shas = []
    for s, _ in zip(samples(seed), range(n), strict=False):
        shas.append(store.add_image(s.image, prompt=s.caption, seed=s.seed, model="toy").sha256)
    return shas


def count_strategy_parses(monkeypatch) -> list[dict]:
    """Record every `StrategyMix` built (each parse of a --strategy text or dict builds one) while a test runs."""
    from prefs.samplers import StrategyMix

    built: list[dict] = []
    init = StrategyMix.__init__

    def counting(self, weights):
        built.append(dict(weights))
        init(self, weights)

    monkeypatch.setattr(StrategyMix, "__init__", counting)
    return built
