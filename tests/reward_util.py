"""Helpers for the reward tests: a small toy-world pool judged by a simulated rater."""

from __future__ import annotations


def judged_store(n_images: int = 40, n_judgements: int = 120, oracle: str = "warm", noise: float = 0.3, seed: int = 0):
    """An open store with `n_images` toy-world images and `n_judgements` simulated judgements."""
    from prefs_util import add_toy_images

    import prefs
    from rlft.sim.oracles import resolve_oracle
    from rlft.sim.rater import SimulationConfig, simulate

    store = prefs.open_store(seed=seed)
    add_toy_images(store, n_images, seed=seed)
    simulate(store, resolve_oracle(oracle), SimulationConfig(n=n_judgements, noise=noise, strategy="random", seed=seed))
    return store


def train_small_reward(n_images: int = 20, n_judgements: int = 40, ensemble: int = 2, steps: int = 40, **config):
    """Train the next reward version (r0001 in a fresh home) on a judged toy store left in the home; returns the
    TrainResult. `config`: more RewardTrainConfig fields (default val_frac 0)."""
    import reward
    from reward.fit import FitConfig
    from reward.training import RewardTrainConfig

    config.setdefault("val_frac", 0)
    with judged_store(n_images=n_images, n_judgements=n_judgements) as store:
        return reward.train(store, RewardTrainConfig(fit=FitConfig(ensemble=ensemble, steps=steps), **config), progress=False)


def own_member_scores(model, store, images):
    """K x N utilities of pool images (rows or sha256s) computed by `model` itself from the decoded files, not
    through the embedding cache: the reference the scorers built on that cache must match."""
    import torch
    from PIL import Image

    pil = [Image.open(store.image_path(im)).convert("RGB") for im in images]
    with torch.no_grad():
        return model.member_scores(model.embed(pil)).numpy()


def tiny_clip_folder(folder, embed_dim: int):
    """An open_clip folder (config + random float16 weights) with an `embed_dim`-d joint space and towers one
    layer, 32 wide: a stand-in for a real CLIP of that width (e.g. 768 for ViT-L/14)."""
    from pathlib import Path

    import open_clip
    import torch

    from rlft.toy.pretrain import ClipConfig, clip_model_cfg, save_clip_folder

    cfg = ClipConfig(embed_dim=embed_dim, image_width=32, image_layers=1, text_width=32, text_layers=1, text_heads=2)
    torch.manual_seed(0)
    save_clip_folder(open_clip.model.CLIP(**clip_model_cfg(cfg, 77)), cfg, Path(folder))
    return Path(folder)
