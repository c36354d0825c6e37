"""Shared bits for the training tests: a tiny config, a stub reward, a stub judgement set."""

from __future__ import annotations

from PIL import Image

from rlft.train.config import TrainConfig

PROMPTS = ["a red circle", "a blue square"]


def tiny_config(algo: str = "ddpo", **overrides) -> TrainConfig:
    base = {"algo": algo, "epochs": 2, "sample": {"steps": 2, "samples_per_epoch": 4, "batch_size": 4, "grid_prompts": 2, "grid_seeds": 2},
            "optim": {"train_batch_size": 4, "learning_rate": 1e-2}, "dpo": {"pairs_per_epoch": 4}}
    for k, v in overrides.items():
        if isinstance(v, dict):
            base[k] = {**base.get(k, {}), **v}
        else:
            base[k] = v
    return TrainConfig.toy(**base)


def redness(images, prompts, metadata):
    """A stub reward (TRL-style): red minus blue, per image."""
    return images[:, 0].mean(dim=(1, 2)) - images[:, 2].mean(dim=(1, 2)), {}


def judgements(n: int = 3):
    red = Image.new("RGB", (64, 64), (230, 30, 30))
    blue = Image.new("RGB", (64, 64), (30, 30, 230))
    return [(red, blue, PROMPTS[i % 2]) for i in range(n)]


def invoke(*args):
    """`rlft ARGS` in-process (every argument as a string); exceptions propagate."""
    from click.testing import CliRunner

    from rlft.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

