"""A run's config from what it is told: the model's world's defaults, a config file, then flags; a resumed run's.

    config = build_config("toy", read_config_file("tiny.toml"), {"algo": "rwr", "sample.steps": 4})
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefs.errors import UserError
from rlft.train.config import TrainConfig, diff, from_dict, from_saved, without_removed
from rlft.train.rewards import TOY_IMAGE_SIZE

# Fields a resume may change without changing the result of the epochs already run.
RESUMABLE = ("epochs", "checkpoint_every")


def read_config_file(path: str | os.PathLike) -> dict:
    """The fields of a JSON or TOML config file (nested sections or dotted keys), for `build_config`. A run's
    `config.json` works too (its `config` part; fields rlft no longer has, left unset by that run, are dropped).
    UserError when it is missing, unreadable or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no config file {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (ValueError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read config {path}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must hold a mapping of fields")
    if isinstance(data.get("config"), dict):  # a run's config.json
        return without_removed(data["config"], unset_only=True)
    return data


def build_config(model: str, file_values: dict | None = None, flags: dict | None = None) -> TrainConfig:
    """A new run's config: the defaults of the model's world (`TrainConfig.sdxl()` for an SDXL model,
    `TrainConfig.flow()` for an SD3 or FLUX model, whose algorithm is grpo, `TrainConfig.toy(algo=...)` for a model of
    the toy world's size, `TrainConfig.sd()` otherwise), then `file_values` (a config file's), then `flags` (dotted
    keys) on top. UserError naming the exact key for an unknown field or a bad value."""
    file_values, flags = file_values or {}, flags or {}
    default = "grpo" if is_flow(family_of(model)) else TrainConfig.algo
    algo = flags.get("algo") or file_values.get("algo") or default
    return from_dict(flags, base=from_dict(file_values, base=preset(model, algo)))


def preset(model: str, algo: str = TrainConfig.algo) -> TrainConfig:
    """The defaults of the model's world: `TrainConfig.sdxl()` for an SDXL model (of any size), `TrainConfig.toy`
    for an SD 1.x model of the toy world's size, `TrainConfig.sd()` for the others."""
    family = family_of(model)
    if family == "sdxl":
        return TrainConfig.sdxl()
    toy_size = image_size_of(model) == TOY_IMAGE_SIZE
    if is_flow(family):  # the tiny test models are the toy world's size: its small runs, with grpo
        return TrainConfig.toy(algo=algo) if toy_size else TrainConfig.flow(algo=algo)
    return TrainConfig.toy(algo=algo) if toy_size else TrainConfig.sd()


def is_flow(family: str | None) -> bool:
    """Whether `family` (a name, or None when unknown) is a flow-matching one (SD3, FLUX)."""
    from rlft.models.families import FAMILIES

    return family is not None and FAMILIES[family].flow


def config_for_resume(saved: dict, flags: dict | None = None) -> TrainConfig:
    """A resumed run's config: the one it saved (`config.json`), with `flags` laid over it. Only `RESUMABLE`
    fields may change; UserError naming the others."""
    old = from_saved(saved["config"])
    new = from_dict(flags or {}, base=old)
    changed = diff(old, new, ignore=RESUMABLE)
    if changed:
        raise UserError(f"cannot resume with a different config ({'; '.join(changed)}); resume without those flags, "
                        "or start a new run")
    return new


def image_size_of(model: str) -> int:
    """The model's image size (its longer side) from its configs, no weights loaded
    (`rlft.models.pipeline.native_image_size`: a folder's, a single file's config folder's), else its family's
    (SD 1.x 512, SDXL 1024). NotFoundError for an unknown model."""
    from rlft.models.pipeline import native_image_size, resolve_model

    return max(native_image_size(resolve_model(model)))


def family_of(model: str) -> str | None:
    """The model's family (`sd1`, `sdxl`) from its files alone; None when that needs a download (a hub id not in
    the local cache). NotFoundError for an unknown model, UnsupportedModelError for a family rlft does not run."""
    from rlft.models.pipeline import model_family, resolve_model

    family = model_family(resolve_model(model))
    return family.name if family is not None else None


def check_trainable(family: str | None, model: str, algo: str) -> None:
    """UserError unless `algo` trains models of `family` (None: not known before loading): grpo the flow-matching
    ones (SD3, FLUX), the others the UNet ones (SD 1.x, SDXL)."""
    from rlft.models.families import FAMILIES

    if family is None or is_flow(family) == (algo == "grpo"):
        return
    title = FAMILIES[family].title
    if is_flow(family):
        raise UserError(f"{model} is {title}, which trains with --algo grpo (Flow-GRPO), not {algo}")
    raise UserError(f"--algo grpo trains SD3 and FLUX models; {model} is {title}: use ddpo, rwr or dpo")
