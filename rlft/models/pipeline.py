"""Resolve a diffusion model spec to a diffusers pipeline: the one place model names live.

A spec is one of (tried in this order):
  - a built-in name (`toy`): a diffusers folder shipped inside the package;
  - a local diffusers folder (holds `model_index.json`), e.g. a saved SD 1.5 or SDXL;
  - a single-file checkpoint (`.safetensors`, `.ckpt`) as model sites share them;
  - a Hugging Face repo id (`org/name`), fetched only because the user named it.

The family (SD 1.x -> `StableDiffusionPipeline`, SDXL -> `StableDiffusionXLPipeline`, SD3 ->
`StableDiffusion3Pipeline`, FLUX -> `FluxPipeline`; see `rlft.models.families`) is told from the files, never from a flag: a folder's `model_index.json`, a single
file's tensor names (checked against its `--config` folder), a hub repo's `model_index.json`.
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
from rlft.models.families import FAMILIES, Family, checkpoint_keys, family_of_folder, family_of_index, family_of_keys
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


def model_family(source: ModelSource, config: str | os.PathLike | None = None) -> Family | None:
    """The family of the model `source` points to, from its files alone (nothing is loaded); None when that
    needs a download (a hub id not in the local cache).

    A single file's tensor names decide; a `.ckpt` that cannot be read that way takes its config folder's.
    UserError when a single file and its config folder are of different families.
    """
    if source.kind in ("builtin", "folder"):
        return family_of_folder(source.location)
    if source.kind == "hub":
        try:
            return family_of_index(_hub_index(source.location, offline=True), source.spec)
        except (OSError, ValueError):
            return None
    config_dir = Path(config) if config else config_dir_for(source.location)
    keys = checkpoint_keys(source.location)
    family = family_of_keys(keys) if keys is not None else None
    if (config_dir / "model_index.json").is_file():
        config_family = family_of_folder(config_dir)
        if family is not None and family is not config_family:
            raise UserError(
                f"{source.location} is an {family.title} checkpoint, but its config folder {config_dir} is an "
                f"{config_family.title} model; pass the folder of an {family.title} diffusers model as config (`--config DIR`)"
            )
        return family or config_family
    return family


def native_image_size(source: ModelSource, config: str | os.PathLike | None = None) -> tuple[int, int]:
    """(height, width) the model makes by default, from its configs alone (UNet's or SD3 transformer's sample size
    times the VAE's downsampling; FLUX's transformer has none, so its VAE's sample size; a single file's from its
    config folder); else its family's (SD 1.x 512, SDXL, SD3, FLUX 1024)."""
    folder = None
    if source.kind in ("builtin", "folder"):
        folder = Path(source.location)
    elif source.kind == "file":
        folder = Path(config) if config else config_dir_for(source.location)
    if folder is not None and (folder / "vae" / "config.json").is_file():
        vae = json.loads((folder / "vae" / "config.json").read_text())
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
        for part in ("unet", "transformer"):
            path = folder / part / "config.json"
            size = json.loads(path.read_text()).get("sample_size") if path.is_file() else None
            if size is not None:
                h, w = (size, size) if isinstance(size, int) else size
                return h * factor, w * factor
        if (folder / "transformer" / "config.json").is_file() and isinstance(vae.get("sample_size"), int):
            return vae["sample_size"], vae["sample_size"]
    family = model_family(source, config) or FAMILIES["sd1"]
    return family.native_size, family.native_size


def load_pipeline(
    spec: str | os.PathLike,
    *,
    device: str | None = None,
    dtype=None,
    scheduler: str | None = None,
    config: str | os.PathLike | None = None,
    offline: bool | None = None,
):
    """Load a `StableDiffusionPipeline`, `StableDiffusionXLPipeline`, `StableDiffusion3Pipeline` or `FluxPipeline`
    from a model spec (see the module docstring).

    Args:
        spec: built-in name, diffusers folder, single-file checkpoint or hub repo id.
        device: `cuda`, `cpu`, `mps`, ...; default: the best available.
        dtype: torch dtype or `fp32`/`fp16`/`bf16`; default: bf16/fp16 on accelerators, fp32 on CPU.
        scheduler: a sampler name from `rlft.models.schedulers.SAMPLERS`; default: the model's own.
        config: for a single file, the diffusers folder holding its configs (default: `<name>.config/`
            beside the file); it must be of the checkpoint's family.
        offline: forbid downloads; default from HF_HUB_OFFLINE. Only a hub repo id ever downloads.

    The safety checker and SDXL's invisible watermark are never loaded. The tokenizers get CLIP's ftfy text
    cleaning. `pipe.model_source` says what the spec resolved to.
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
    use_ftfy_tokenizers(pipe)
    set_scheduler(pipe, scheduler)
    pipe.set_progress_bar_config(disable=True)  # callers show their own progress
    pipe.model_source = source  # what the spec resolved to, for provenance (PNG `Model:`, JSON records)
    return pipe.to(device)


def use_ftfy_tokenizers(pipe):
    """`rlft.models.tokenizer.use_ftfy_tokenizer` for every CLIP tokenizer of the pipeline (SDXL has two)."""
    from transformers import CLIPTokenizer

    from rlft.models.tokenizer import as_ftfy_tokenizer, use_ftfy_tokenizer

    use_ftfy_tokenizer(pipe)
    tokenizer_2 = getattr(pipe, "tokenizer_2", None)
    if isinstance(tokenizer_2, CLIPTokenizer):
        as_ftfy_tokenizer(tokenizer_2)
        pipe.register_to_config(tokenizer_2=("transformers", "CLIPTokenizer"))  # saved folders load without rlft
    return pipe


_NO_SAFETY = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
_EXTRA_KWARGS = {"sd1": _NO_SAFETY, "sdxl": {"add_watermarker": False}, "sd3": {}, "flux": {}}


def _absent_parts(family: Family, index: dict) -> dict:
    """SD3 saved without T5 (`text_encoder_3: [null, null]`) loads with it None; diffusers wants that said."""
    if family.name != "sd3":
        return {}
    return {name: None for name in ("text_encoder_3", "tokenizer_3") if not any(index.get(name) or ())}


def _hub_index(repo_id: str, offline: bool) -> dict:
    """A hub repo's `model_index.json` (from the local cache when offline; OSError when it is not there)."""
    from diffusers import DiffusionPipeline

    with warnings.catch_warnings():  # diffusers passes huggingface_hub an argument it has deprecated
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks", category=UserWarning)
        return DiffusionPipeline.load_config(repo_id, local_files_only=offline)


def _pipeline_class(family: Family):
    import diffusers

    return getattr(diffusers, family.pipeline)


def _from_pretrained(source: ModelSource, dtype, offline: bool):
    local = source.kind != "hub"
    try:
        if local:
            family = family_of_folder(source.location)
            index = json.loads((Path(source.location) / "model_index.json").read_text(encoding="utf-8"))
        else:
            # only the index is fetched first: it names the pipeline class to download the rest for
            index = _hub_index(source.location, offline)
            family = family_of_index(index, source.spec)
        return _pipeline_class(family).from_pretrained(
            source.location, torch_dtype=dtype, local_files_only=local or offline, **_EXTRA_KWARGS[family.name],
            **_absent_parts(family, index),
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
    config_dir = Path(config) if config else config_dir_for(source.location)
    family = model_family(source, config)
    if not (config_dir / "model_index.json").is_file():
        kind = f"an {family.title} model" if family else "a model with the same architecture"
        examples = {"sdxl": "a saved SDXL base", "sd3": "a saved SD3 medium", "flux": "a saved FLUX.1-dev"}
        example = examples.get(family.name if family else "", "a saved SD 1.5")
        raise NotFoundError(
            f"no diffusers config for the single file {source.location}: looked for {config_dir}/model_index.json. "
            f"Pass the folder of {kind} (e.g. {example}) as config (`--config DIR`); it supplies the configs and "
            "tokenizers offline"
        )
    family = family or FAMILIES["sd1"]
    # from_single_file casts each part with `.to(dtype)`, which diffusers answers with a warning per part
    # that it has no fp32-only modules; the cast is what we want, so that logger is hushed for the call.
    logger = logging.getLogger("diffusers.models.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _pipeline_class(family).from_single_file(
            source.location, config=str(config_dir), local_files_only=True, torch_dtype=dtype, **_EXTRA_KWARGS[family.name]
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
