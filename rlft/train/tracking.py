"""Experiment trackers for `rlft train --log-with`: TensorBoard, Weights & Biases, MLflow, ... through accelerate.

ddpo-pytorch and TRL log through `Accelerator(log_with=...)`; so does the trainer. Every epoch's numeric
metrics (the `metrics.jsonl` line) go to each tracker at step = epoch, the fixed-seed sample grid goes to
TensorBoard and W&B as an image (epoch 0 = the base model) captioned with its reward and judges' scores (the
base model's at step 0 too), and the resolved config as hyperparameters.
TensorBoard (and Aim) write under the run folder (`<run>/logs/`), so `tensorboard --logdir <home>/runs` shows
every run side by side; W&B and MLflow runs are named after the run folder; MLflow writes where
`MLFLOW_TRACKING_URI` points (default `./mlruns`). The metrics file stays the record; trackers are a view of it,
kept equal on resume: TensorBoard drops the events of epochs after the checkpoint (they are redone) and W&B
continues the same run (its id is kept in `<run>/logs/wandb_id`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from prefs.errors import UserError

# accelerate's tracker names and the package each needs (accelerate drops an unavailable one without a word)
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet-ml",
                    "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "trackio": "trackio", "swanlab": "swanlab"}
PROJECT = "rlft"
LOG_DIR = "logs"  # under the run folder


def check_trackers(names: Iterable[str]) -> list[str]:
    """The tracker names, deduplicated; UserError for an unknown one or one whose package is not installed."""
    names = list(dict.fromkeys(str(n) for n in names))
    if not names:
        return names
    from accelerate.tracking import get_available_trackers

    available = {getattr(t, "value", str(t)) for t in get_available_trackers()}
    for name in names:
        if name not in TRACKER_PACKAGES:
            raise UserError(f"unknown tracker {name!r} for --log-with; choose from {', '.join(TRACKER_PACKAGES)}")
        if name not in available:
            package = TRACKER_PACKAGES[name]
            raise UserError(f"--log-with {name} needs the {package} package, which is not installed (pip install {package})")
    return names


def flat_config(config: dict, prefix: str = "") -> dict:
    """A nested config as one level of dotted keys with scalar values (what TensorBoard's hparams accept)."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:  # None, tuples, lists
            out[name] = str(value)
    return out


def init_kwargs(names: Iterable[str], run_dir: Path, resume_epoch: int | None) -> dict:
    """Per-tracker start-up arguments: the run's name, and on resume where its history continues."""
    kwargs = {"mlflow": {"run_name": run_dir.name}}
    if "wandb" in names:
        kwargs["wandb"] = {"name": run_dir.name, "id": _wandb_id(run_dir), "resume": "allow"}
    if resume_epoch is not None:  # events at or after purge_step are dropped: epochs after the checkpoint are redone
        kwargs["tensorboard"] = {"purge_step": resume_epoch + 1}
    return kwargs


def _wandb_id(run_dir: Path) -> str:
    """A W&B run id kept with the run, so a resumed run continues the same W&B run."""
    path = run_dir / LOG_DIR / "wandb_id"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    from prefs.atomic import write_bytes

    run_id = f"{run_dir.name}-{uuid.uuid4().hex[:8]}"
    write_bytes(path, run_id.encode())
    return run_id


def start(accelerator, config: dict, run_dir: Path, resume_epoch: int | None = None) -> None:
    """Open the accelerator's trackers (names given to its `log_with`) with the run's config as hyperparameters.
    A tracker that fails to start (not logged in, server unreachable) is a UserError naming it."""
    names = [str(getattr(t, "value", t)) for t in accelerator.log_with]
    try:
        accelerator.init_trackers(PROJECT, config=flat_config(config),
                                  init_kwargs=init_kwargs(names, run_dir, resume_epoch))
    except Exception as e:  # noqa: BLE001 - a tracker's own failure, reported in one line
        finish(accelerator)
        names = ", ".join(names)
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"--log-with {names}: the tracker did not start ({detail})") from e


def finish(accelerator) -> None:
    """Close the trackers (and only them: accelerate's end_training also tears down the process group)."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()


def log_metrics(accelerator, metrics: dict, step: int) -> None:
    """The numeric entries of one epoch's metrics, at step = epoch."""
    values = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}
    if values:
        accelerator.log(values, step=step)


def log_grid(accelerator, image: np.ndarray, step: int, name: str = "samples", caption: str | None = None) -> None:
    """The sample grid (H x W x 3 uint8) to the trackers that take images (TensorBoard, W&B), with `caption` (the
    grid's reward and judges' scores): W&B's image caption, TensorBoard's text at the same step."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({name: image[None]}, step=step, dataformats="NHWC")
            if caption:
                tracker.writer.add_text(name, caption, global_step=step)
        elif tracker.name == "wandb":
            if caption:
                import wandb

                tracker.run.log({name: [wandb.Image(image, caption=caption)]}, step=step)
            else:
                tracker.log_images({name: [image]}, step=step)

