"""Training runs under the home: `runs/t0001`, `runs/t0002`, ... and a `latest` alias; names resolve here.

A run folder holds `config.json` (resolved config + provenance), `metrics.jsonl`, `samples/epoch_NNNN.png`,
`checkpoint.pt` (the last checkpoint), and once finished `lora/` (diffusers) and `lora_kohya.safetensors`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from prefs.errors import NotFoundError

RUN_ID = re.compile(r"^t(\d{4,})$")
CONFIG_NAME = "config.json"
LATEST = "latest"


def runs_dir(home=None, create: bool = True) -> Path:
    """`<home>/runs`; with create=False it is not made (looking up a run writes nothing)."""
    from prefs.home import home_dir

    path = home_dir(home, create=create) / "runs"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def list_runs(home=None) -> list[Path]:
    """Run folders (those with a config.json), oldest first."""
    root = runs_dir(home, create=False)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if RUN_ID.match(p.name) and (p / CONFIG_NAME).is_file() and not p.is_symlink()]
    return sorted(found, key=lambda p: int(RUN_ID.match(p.name).group(1)))


def new_run_dir(home=None) -> Path:
    """Create the next free `tNNNN` folder (exclusive create, so two trainers never share one)."""
    root = runs_dir(home)
    numbers = [int(m.group(1)) for p in root.iterdir() if (m := RUN_ID.match(p.name))]
    n = max(numbers, default=0) + 1
    while True:
        path = root / f"t{n:04d}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def set_latest(run: Path, home=None) -> None:
    """Point `runs/latest` at `run` (an atomic symlink swap; a text file where symlinks are unavailable)."""
    root = runs_dir(home)
    link = root / LATEST
    tmp = root / f".{LATEST}.{os.getpid()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(run.name if run.parent.resolve() == root.resolve() else str(run.resolve()), tmp)
        os.replace(tmp, link)
    except OSError:
        from prefs.atomic import write_bytes

        write_bytes(root / f"{LATEST}.txt", str(run.resolve()).encode())


def discard(run: Path, previous: Path | None, home=None) -> None:
    """Remove a run that never completed an epoch and point `latest` back where it was."""
    shutil.rmtree(run, ignore_errors=True)
    root = runs_dir(home, create=False)
    if previous is not None and (previous / CONFIG_NAME).is_file():
        set_latest(previous, home)
        return
    for stale in (root / LATEST, root / f"{LATEST}.txt"):
        if stale.is_symlink() or stale.is_file():
            stale.unlink()


def latest_run(home=None) -> Path | None:
    """The run `latest` means now, or None."""
    root = runs_dir(home, create=False)
    link = root / LATEST
    if link.is_symlink() and (link.resolve() / CONFIG_NAME).is_file():
        return link.resolve()
    text = root / f"{LATEST}.txt"
    if text.is_file():
        path = Path(text.read_text().strip())
        if (path / CONFIG_NAME).is_file():
            return path
    runs = list_runs(home)
    return runs[-1] if runs else None


def resolve_run(spec: str | os.PathLike, home=None) -> Path:
    """`latest`, a run id (`t0003`) or a run folder path -> the run folder; NotFoundError lists the runs."""
    text = os.fspath(spec)
    if text == LATEST:
        found = latest_run(home)
        if found is None:
            raise NotFoundError("no training runs yet; start one with `rlft train --reward latest`")
        return found
    if RUN_ID.match(text):
        path = runs_dir(home, create=False) / text
        if (path / CONFIG_NAME).is_file():
            return path
    path = Path(text).expanduser()
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return path.resolve()
    names = ", ".join(p.name for p in list_runs(home)) or "none yet"
    raise NotFoundError(f"no training run {text!r}; give latest, a run id ({names}) or a run folder")


def read_config(run: Path) -> dict:
    return json.loads((run / CONFIG_NAME).read_text(encoding="utf-8"))


def lora_file(run: Path, fmt: str = "diffusers") -> Path:
    """The run's exported LoRA (a folder for diffusers, one file for kohya); NotFoundError before it exists."""
    path = run / ("lora" if fmt == "diffusers" else "lora_kohya.safetensors")
    if not path.exists():
        raise NotFoundError(f"run {run.name} has no {fmt} LoRA yet (it writes one at each checkpoint); "
                            f"resume it with `rlft train --resume {run.name}`")
    return path
