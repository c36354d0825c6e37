"""Reward versions: `<home>/rewards/r0001/`, `r0002/`, ... and the `latest` alias.

Each version folder holds `reward.json` (id, created_at, clip spec, config, metrics, judgements used, head
configs, the tower, the prior: the provenance) and `weights.safetensors`, for a tuned CLIP tower
`tower.safetensors`, and for a reward-version prior that version's copy in `prior/`.
A version is built in a hidden temp folder and renamed into place, so a half-written version is never visible;
`latest` is the highest id (no alias file to go stale).

A consumer resolves a spec once with `ref(spec)`: a `RewardRef` (folder, id, clip spec, created_at and the
metadata, read once) that it checks and loads from, so `latest` moving meanwhile cannot change what it uses.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from prefs.errors import NotFoundError
from prefs.home import home_dir, subdir

VERSION_RE = re.compile(r"^r(\d{4,})$")
BUILDING = ".building-"  # prefix of a version being written: `.building-<host>-<pid>-<random>`
STALE_BUILD_S = 600  # a build takes seconds (the weights are small): one this old was killed, whoever made it
META_NAME = "reward.json"
WEIGHTS_NAME = "weights.safetensors"
TOWER_NAME = "tower.safetensors"  # a tuned CLIP tower's tensors (LoRA or blocks), beside the heads' weights


def rewards_dir(home=None, create: bool = True) -> Path:
    """`<home>/rewards`; created unless `create` is False (looking a version up creates nothing)."""
    return subdir("rewards", home) if create else home_dir(home, create=False) / "rewards"


def list_versions(home=None) -> list[dict]:
    """Every version's metadata (`reward.json` plus `path`), oldest first."""
    out = []
    root = rewards_dir(home, create=False)
    if not root.is_dir():
        return out
    for p in sorted(root.iterdir(), key=lambda p: _number(p.name)):
        if VERSION_RE.match(p.name) and (p / META_NAME).is_file():
            meta = read_meta(p)
            meta["path"] = str(p)
            out.append(meta)
    return out


def _number(name: str) -> int:
    m = VERSION_RE.match(name)
    return int(m.group(1)) if m else -1


def read_meta(folder: Path) -> dict:
    """A version folder's `reward.json`."""
    return json.loads((Path(folder) / META_NAME).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class RewardRef:
    """One reward version, resolved: what a consumer checks and loads, however `latest` moves meanwhile.

    `folder` is the version folder, `version` its id (`r0003`), `clip_spec` the CLIP it scores with, `created_at`
    when it was written (with the id, what tells two homes' `r0003` apart) and `metadata` its `reward.json`, read
    once (read-only)."""

    folder: Path
    version: str
    clip_spec: str
    created_at: str | None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_meta(cls, folder: Path, meta: dict) -> RewardRef:
        meta = {k: v for k, v in meta.items() if k != "path"}  # `list_versions` adds the folder as `path`
        return cls(Path(folder), meta.get("id") or Path(folder).name, meta.get("clip_spec", ""), meta.get("created_at"),
                   MappingProxyType(meta))


def latest(home=None) -> Path:
    """The newest version's folder; NotFoundError telling the user to train one when there is none."""
    return _locate("latest", home)[0]


def resolve(spec: str | os.PathLike = "latest", home=None) -> Path:
    """`latest`, a version id (`r0003`, or `3`), or a version folder path -> the folder."""
    return _locate(spec, home)[0]


def ref(spec: str | os.PathLike = "latest", home=None) -> RewardRef:
    """`spec` (as `resolve` takes it) -> a `RewardRef`: the folder found and its metadata read, once each."""
    folder, meta = _locate(spec, home)
    return RewardRef.from_meta(folder, meta if meta is not None else read_meta(folder))


def _locate(spec: str | os.PathLike, home=None) -> tuple[Path, dict | None]:
    """(folder, its metadata when finding it already read it, else None); NotFoundError listing the versions."""
    text = os.fspath(spec)
    if text == "latest":
        versions = list_versions(home)
        if not versions:
            raise NotFoundError("no reward model yet: rate some pairs, then run `rlft reward train`")
        return Path(versions[-1]["path"]), versions[-1]
    path = Path(text).expanduser()
    if path.is_dir() and (path / META_NAME).is_file():
        return path.resolve(), None
    if text.isdigit():
        text = f"r{int(text):04d}"
    folder = rewards_dir(home, create=False) / text
    if VERSION_RE.match(text) and (folder / META_NAME).is_file():
        return folder, None
    names = [v["id"] for v in list_versions(home)]
    listing = ", ".join(names) if names else "none yet (run `rlft reward train`)"
    raise NotFoundError(f"unknown reward {os.fspath(spec)!r}; valid: latest, a version id ({listing}), or a version folder")


def write_version(meta: dict, write_weights, home=None) -> Path:
    """Create the next version from `meta` and `write_weights(path)`; returns its folder.

    Built in a temp folder and renamed into place (retrying with the next id if another process won it).
    The temp folders of killed builds are removed first (`remove_stale_builds`).
    """
    root = rewards_dir(home)
    remove_stale_builds(root)
    tmp = Path(tempfile.mkdtemp(prefix=f"{BUILDING}{socket.gethostname()}-{os.getpid()}-", dir=root))
    try:
        write_weights(tmp / WEIGHTS_NAME)
        for _ in range(100):
            n = max([_number(p.name) for p in root.iterdir()] + [0]) + 1
            vid = f"r{n:04d}"
            meta = {**meta, "id": vid, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            (tmp / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
            for f in tmp.rglob("*"):  # a version prior's copy is a folder (`prior/`)
                if not f.is_file():
                    continue
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


def remove_stale_builds(root: Path) -> list[Path]:
    """Remove the temp folders of version builds that were killed: made by a process of this machine that is
    gone, or older than STALE_BUILD_S (another machine's, or from before builds were named by process).
    Returns the folders removed."""
    removed = []
    host = socket.gethostname()
    for p in root.glob(f"{BUILDING}*"):
        try:
            age = time.time() - p.stat().st_mtime
        except OSError:
            continue
        parts = p.name[len(BUILDING):].rsplit("-", 2)
        dead = len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _alive(int(parts[1]))
        if dead or age > STALE_BUILD_S:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
