"""`rlft toy ...`: pretrain and measure the embedded toy world."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import click

from prefs.errors import UserError
from rlft.cli.params import FINITE_FLOAT

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "toy"


@click.group()
def toy() -> None:
    """The embedded toy world: a tiny SD pipeline and CLIP trained on drawn shapes."""


@toy.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Working folder (checkpoints, logs, results); rerun to resume.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--preset", default=None, type=click.Choice(["gpu", "cpu"]),
              help="Step schedule: cpu = the shipped weights' recipe, under 3 hours on a 2-core CPU; gpu = the first "
                   "weights' recipe, minutes on a GPU (default: cpu when the device is the CPU, else gpu).")
@click.option("--scale", default=1.0, show_default=True, type=FINITE_FLOAT, help="Multiply every step count (0.01 for a smoke run).")
@click.option("--deadline-min", default=None, type=FINITE_FLOAT, help="Stop training after this many minutes of wall time (each stage gets its share).")
@click.option("--install", is_flag=True, help="Copy the result into the package (what load_pipeline('toy') loads).")
def pretrain(out: str, device: str | None, seed: int, preset: str | None, scale: float, deadline_min: float | None, install: bool) -> None:
    """Train CLIP, VAE and UNet from seed, with checkpoints that resume across interruptions."""
    from rlft.toy.pretrain import PretrainConfig, pretrain_device
    from rlft.toy.pretrain import pretrain as run

    if scale <= 0:
        raise UserError("--scale must be positive")
    if preset is None:
        preset = "cpu" if pretrain_device(device).type == "cpu" else "gpu"
    cfg = PretrainConfig.from_preset(preset, seed=seed, scale=scale)
    deadline = time.time() + 60 * deadline_min if deadline_min else None
    folder = run(out, cfg, device=device, deadline=deadline)
    click.echo(f"toy world written to {folder}/pipeline and {folder}/clip", err=True)
    if install:
        install_assets(folder)
        click.echo(f"installed into {ASSETS}", err=True)


def install_assets(folder: Path) -> None:
    """Copy `clip/`, `pipeline/` and the run's provenance into the package's asset folder."""
    ASSETS.mkdir(parents=True, exist_ok=True)
    for name in ("clip", "pipeline"):
        src = Path(folder) / name
        if not src.exists():
            raise UserError(f"{src} is missing: run `rlft toy pretrain --out {folder}` to finish training first")
        tmp = ASSETS / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(ASSETS / name, ignore_errors=True)
        tmp.rename(ASSETS / name)
    for name in ("pretrain_config.json", "timings.json"):
        if (Path(folder) / name).exists():
            shutil.copy(Path(folder) / name, ASSETS / name)
    logs = sorted(Path(folder).glob("*.log.jsonl"))
    if logs:  # each stage's loss log, the run's own record
        shutil.rmtree(ASSETS / "logs", ignore_errors=True)
        (ASSETS / "logs").mkdir()
        for log in logs:
            shutil.copy(log, ASSETS / "logs" / log.name)


@toy.command("eval")
@click.option("--model", default="toy", show_default=True, help="Pipeline spec to judge.")
@click.option("--clip", "clip_spec", default="toy", show_default=True, help="CLIP spec for zero-shot shape judgement.")
@click.option("-n", "n", default=200, show_default=True, type=int, help="Held-out captions to generate.")
@click.option("--guidance", default=3.0, show_default=True, type=FINITE_FLOAT)
@click.option("--json", "as_json", is_flag=True)
def evaluate_cmd(model: str, clip_spec: str, n: int, guidance: float, as_json: bool) -> None:
    """Prompt adherence of generated images and CLIP zero-shot accuracy on world images."""
    from rlft.models.clip import load_clip
    from rlft.models.pipeline import load_pipeline
    from rlft.toy import evaluate

    pipe = load_pipeline(model)
    clip, _, tokenizer = load_clip(clip_spec)
    zs = evaluate.ZeroShot(clip, tokenizer)
    result = {"clip_zero_shot": evaluate.clip_zero_shot(zs), "generation": evaluate.generation_adherence(pipe, zs, n=n, guidance=guidance)[0]}
    click.echo(json.dumps(result, indent=None if as_json else 2))
