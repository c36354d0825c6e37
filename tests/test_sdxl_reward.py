"""SDXL-sized images (1024 px, non-square buckets) in the pool are embedded and scored like any other: the CLIP's
preprocessing resizes them (shorter side, antialiased) and centre-crops, in one batch with small images."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from rlft.models.sizes import SDXL_BUCKETS
from rlft.models.tiny import TINY_CLIP_CONFIG, tiny_clip_folder


def test_sdxl_sized_pool_images_are_embedded(tmp_path):
    from prefs import open_store
    from reward.embeddings import EmbeddingCache

    clip = tiny_clip_folder(tmp_path / "clip")
    rng = np.random.default_rng(0)
    sizes = [(1024, 1024), (1216, 832), (640, 1536), (64, 64)]  # SDXL buckets beside a tiny SD image
    with open_store() as store:
        for i, (w, h) in enumerate(sizes):
            path = tmp_path / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            store.add_image(path, prompt=f"image {i}", origin="generated")
        images = list(store.images())
        emb = EmbeddingCache(str(clip)).embed_store_images(store, images, progress=False)
    assert emb.shape == (len(sizes), TINY_CLIP_CONFIG["model_cfg"]["embed_dim"])
    assert np.isfinite(emb).all() and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert {(im.width, im.height) for im in images} == set(sizes)


def test_clip_preprocessing_takes_every_bucket(tmp_path):
    from reward.clip import load_clip

    clip = load_clip(str(tiny_clip_folder(tmp_path / "clip")), "cpu")
    size = TINY_CLIP_CONFIG["model_cfg"]["vision_cfg"]["image_size"]
    for w, h in SDXL_BUCKETS:
        x = clip.preprocess(torch.rand(1, 3, h, w))
        assert x.shape == (1, 3, size, size)
    # differentiable, as a reward used directly in training needs
    img = torch.rand(1, 3, 832, 1216, requires_grad=True)
    clip.encode_pixels(img).sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
