"""Resolve a diffusion model spec to a diffusers `StableDiffusionPipeline`: the one place model names live.

A spec is one of (tried in this order):
  - a built-in name (`toy`): a diffusers folder shipped inside the package;
  - a local diffusers folder (holds `model_index.json`), e.g. a saved SD 1.5;
  - a single-file checkpoint (`.safetensors`, `.ckpt`) as model sites share them;
  - a Hugging Face repo id (`org/name`), fetched only because the user named it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from prefs.errors import NotFoundError, UserError
from rlft.models.device import default_device, default_dtype, parse_dtype
from rlft.models.single_file import SINGLE_FILE_SUFFIXES, config_dir_for

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@dataclass(frozen=True)
class Builtin:
    """A model that ships inside the package (or is built into it by an rlft command)."""

    folder: Path  # a diffusers folder
    build: str  # the command that writes `folder` when it is missing


BUILTIN_MODELS: dict[str, Builtin] = {
    "toy": Builtin(ASSETS / "toy" / "pipeline", "rlft toy pretrain"),
}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class OfflineError(UserError):
    """A hub model was named, but rlft is offline and the model is not in the local cache."""


@dataclass(frozen=True)
class ModelSource:
    """Where a spec points: `kind` is builtin, folder, file or hub; `location` a path or repo id."""

    spec: str
    kind: str
    location: str

    @property
    def name(self) -> str:
        """A short human name for the model (A1111's `Model:` field): built-in name, file stem or repo id."""
        if self.kind in ("builtin", "hub"):
            return self.spec
        path = Path(self.location)
        return path.stem if self.kind == "file" else path.name


def valid_forms() -> str:
    return (
        f"a built-in name ({', '.join(sorted(BUILTIN_MODELS))}), a diffusers folder (with model_index.json), "
        f"a single-file checkpoint ({', '.join(SINGLE_FILE_SUFFIXES[:2])}), or a Hugging Face repo id (org/name)"
    )


RECOMMENDED_FILE = "rlft_defaults.json"  # optional, beside model_index.json: e.g. {"guidance": 3.0}


def recommended_settings(source: "ModelSource") -> dict:
    """Generation settings a model folder recommends (the toy pipeline was measured best at CFG 3)."""
    path = Path(source.location) / RECOMMENDED_FILE
    if source.kind in ("builtin", "folder") and path.is_file():
        return json.loads(path.read_text())
    return {}


def resolve_model(spec: str | os.PathLike) -> ModelSource:
    """Say what `spec` names, without loading anything; raises NotFoundError (listing valid forms)."""
    text = os.fspath(spec)
    if text in BUILTIN_MODELS:
        builtin = BUILTIN_MODELS[text]
        if not (builtin.folder / "model_index.json").is_file():
            raise NotFoundError(
                f"the built-in model {text!r} has no weights yet ({builtin.folder} is missing); "
                f"build them with `{builtin.build}`"
            )
        return ModelSource(text, "builtin", str(builtin.folder))
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return ModelSource(text, "folder", str(path.resolve()))
        raise NotFoundError(f"{text} is a folder but not a diffusers model (no model_index.json); a model is {valid_forms()}")
    if path.is_file():
        if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
            return ModelSource(text, "file", str(path.resolve()))
        raise NotFoundError(f"{text} is not a checkpoint file (expected {', '.join(SINGLE_FILE_SUFFIXES)}); a model is {valid_forms()}")
    if _REPO_ID.match(text) and not text.startswith((".", "~")) and path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        return ModelSource(text, "hub", text)
    raise NotFoundError(f"unknown model {text!r}: no such built-in, file or folder; a model is {valid_forms()}")


def is_offline(offline: bool | None = None) -> bool:
    """Offline unless told otherwise: explicit argument, else HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE."""
    if offline is not None:
        return offline
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def load_pipeline(
    spec: str | os.PathLike,
    *,
    device: str | None = None,
    dtype=None,
    scheduler: str | None = None,
    config: str | os.PathLike | None = None,
    offline: bool | None = None,
):
    """Load a `StableDiffusionPipeline` from a model spec (see the module docstring).

    Args:
        spec: built-in name, diffusers folder, single-file checkpoint or hub repo id.
        device: `cuda`, `cpu`, `mps`, ...; default: the best available.
        dtype: torch dtype or `fp32`/`fp16`/`bf16`; default: bf16/fp16 on accelerators, fp32 on CPU.
        scheduler: a sampler name from `rlft.models.schedulers.SAMPLERS`; default: the model's own.
        config: for a single file, the diffusers folder holding its configs (default: `<name>.config/`
            beside the file).
        offline: forbid downloads; default from HF_HUB_OFFLINE. Only a hub repo id ever downloads.

    The safety checker is never loaded. The tokenizer gets CLIP's ftfy text cleaning.
    """
    from rlft.models.schedulers import resolve as resolve_sampler
    from rlft.models.schedulers import set_scheduler

    source = resolve_model(spec)
    if scheduler:
        resolve_sampler(scheduler)  # fail on a bad name before the (slow) load
    device = device or default_device()
    dtype = parse_dtype(dtype) or default_dtype(device)
    with warnings.catch_warnings():
        # diffusers >= 0.36 renamed torch_dtype to dtype; we keep the old name, which every supported version reads.
        warnings.filterwarnings("ignore", message=".*`dtype` instead", category=FutureWarning)
        if source.kind == "file":
            pipe = _from_single_file(source, config, dtype)
        else:
            pipe = _from_pretrained(source, dtype, is_offline(offline))
    from rlft.models.tokenizer import use_ftfy_tokenizer

    use_ftfy_tokenizer(pipe)
    set_scheduler(pipe, scheduler)
    pipe.set_progress_bar_config(disable=True)  # callers show their own progress
    pipe.model_source = source  # what the spec resolved to, for provenance (PNG `Model:`, JSON records)
    return pipe.to(device)


_NO_SAFETY = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


def _from_pretrained(source: ModelSource, dtype, offline: bool):
    from diffusers import StableDiffusionPipeline

    local = source.kind != "hub"
    try:
        return StableDiffusionPipeline.from_pretrained(
            source.location, torch_dtype=dtype, local_files_only=local or offline, **_NO_SAFETY
        )
    except OSError as e:
        if local:
            raise UserError(f"could not load the diffusers folder {source.location}: {e}") from e
        if offline:
            raise OfflineError(
                f"{source.spec!r} is a Hugging Face repo id, but it is not in the local cache and rlft is offline "
                f"(HF_HUB_OFFLINE=1). Download it once with network access (unset HF_HUB_OFFLINE), "
                f"or pass a local folder or file. A model is {valid_forms()}"
            ) from e
        raise NotFoundError(f"could not fetch {source.spec!r} from the Hugging Face hub: {e}") from e


def _from_single_file(source: ModelSource, config, dtype):
    from diffusers import StableDiffusionPipeline

    config_dir = Path(config) if config else config_dir_for(source.location)
    if not (config_dir / "model_index.json").is_file():
        raise NotFoundError(
            f"no diffusers config for the single file {source.location}: looked for {config_dir}/model_index.json. "
            "Pass the folder of a diffusers model with the same architecture (e.g. a saved SD 1.5) as config "
            "(`--config DIR`); it supplies the configs and tokenizer offline"
        )
    # from_single_file casts each part with `.to(dtype)`, which diffusers answers with a warning per part
    # that it has no fp32-only modules; the cast is what we want, so that logger is hushed for the call.
    logger = logging.getLogger("diffusers.models.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return StableDiffusionPipeline.from_single_file(
            source.location, config=str(config_dir), local_files_only=True, torch_dtype=dtype, **_NO_SAFETY
        )
    finally:
        logger.setLevel(level)


def quiet_libraries() -> None:
    """Hush diffusers' and transformers' loading chatter (per-part progress bars, info notices) for a CLI run."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
