"""Helpers for the reward tests: a small toy-world pool judged by a simulated rater."""

from __future__ import annotations


def judged_store(n_images: int = 40, n_judgements: int = 120, oracle: str = "warm", noise: float = 0.3, seed: int = 0):
    """An open store with `n_images` toy-world images and `n_judgements` simulated judgements."""
    import prefs
    from rlft.oracles import resolve_oracle
    from rlft.simulated_rater import SimulationConfig, simulate
    from prefs_util import add_toy_images

    store = prefs.open_store(seed=seed)
    add_toy_images(store, n_images, seed=seed)
    simulate(store, resolve_oracle(oracle), SimulationConfig(n=n_judgements, noise=noise, strategy="random", seed=seed))
    return store
