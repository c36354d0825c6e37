"""Reward versions: `<home>/rewards/r0001/`, `r0002/`, ... and the `latest` alias.

Each version folder holds `reward.json` (id, created_at, clip spec, config, metrics, judgements used, head
configs: the provenance) and `weights.safetensors`. A version is built in a hidden temp folder and renamed
into place, so a half-written version is never visible; `latest` is the highest id (no alias file to go stale).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from prefs.errors import NotFoundError
from prefs.home import subdir

VERSION_RE = re.compile(r"^r(\d{4,})$")
META_NAME = "reward.json"
WEIGHTS_NAME = "weights.safetensors"


def rewards_dir(home=None) -> Path:
    return subdir("rewards", home)


def list_versions(home=None) -> list[dict]:
    """Every version's metadata (`reward.json` plus `path`), oldest first."""
    out = []
    for p in sorted(rewards_dir(home).iterdir(), key=lambda p: _number(p.name)):
        if VERSION_RE.match(p.name) and (p / META_NAME).is_file():
            meta = json.loads((p / META_NAME).read_text())
            meta["path"] = str(p)
            out.append(meta)
    return out


def _number(name: str) -> int:
    m = VERSION_RE.match(name)
    return int(m.group(1)) if m else -1


def latest(home=None) -> Path:
    """The newest version's folder; NotFoundError telling the user to train one when there is none."""
    versions = list_versions(home)
    if not versions:
        raise NotFoundError("no reward model yet: rate some pairs, then run `rlft reward train`")
    return Path(versions[-1]["path"])


def resolve(spec: str | os.PathLike = "latest", home=None) -> Path:
    """`latest`, a version id (`r0003`, or `3`), or a version folder path -> the folder."""
    text = os.fspath(spec)
    if text == "latest":
        return latest(home)
    path = Path(text).expanduser()
    if path.is_dir() and (path / META_NAME).is_file():
        return path.resolve()
    if text.isdigit():
        text = f"r{int(text):04d}"
    folder = rewards_dir(home) / text
    if VERSION_RE.match(text) and (folder / META_NAME).is_file():
        return folder
    names = [v["id"] for v in list_versions(home)]
    listing = ", ".join(names) if names else "none yet (run `rlft reward train`)"
    raise NotFoundError(f"unknown reward {os.fspath(spec)!r}; valid: latest, a version id ({listing}), or a version folder")


def write_version(meta: dict, write_weights, home=None) -> Path:
    """Create the next version from `meta` and `write_weights(path)`; returns its folder.

    Built in a temp folder and renamed into place (retrying with the next id if another process won it).
    """
    root = rewards_dir(home)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        write_weights(tmp / WEIGHTS_NAME)
        for _ in range(100):
            n = max([_number(p.name) for p in root.iterdir()] + [0]) + 1
            vid = f"r{n:04d}"
            meta = {**meta, "id": vid, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            (tmp / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            try:
                os.rename(tmp, root / vid)  # atomic; fails if the id was taken meanwhile
                return root / vid
            except OSError:
                continue
        raise RuntimeError("could not allocate a reward version id")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
