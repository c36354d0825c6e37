"""The rlft home directory: one place for all state (database, image pool, caches, rewards, runs).

Resolution order: an explicit argument, then `RLFT_HOME`, then the per-user data dir
(`$XDG_DATA_HOME/rlft`, default `~/.local/share/rlft`). The database URL likewise comes from
`RLFT_DB` or defaults to the SQLite file `prefs.sqlite` inside the home.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "RLFT_HOME"
DB_ENV = "RLFT_DB"


def home_dir(home: str | os.PathLike | None = None, create: bool = True) -> Path:
    """Return the home directory, creating it unless `create` is False."""
    if home is None:
        home = os.environ.get(HOME_ENV)
    if home is None:
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        home = os.path.join(base, "rlft")
    path = Path(home).expanduser().resolve()
    if create:
        _mkdir(path, "the rlft home")
    return path


def _mkdir(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # read-only, a regular file in the way, a full disk
        from prefs.errors import StorageError

        raise StorageError(f"cannot create {what} {path}: {e.strerror or e}") from e


def db_url(url: str | None = None, home: str | os.PathLike | None = None) -> str:
    """Return the database URL: explicit, else `RLFT_DB`, else the SQLite file in the home.

    An explicit `home` names its own database: `RLFT_DB` applies only when neither is given.
    """
    url = url or (None if home is not None else os.environ.get(DB_ENV))
    if url:
        return url
    return f"sqlite:///{home_dir(home) / 'prefs.sqlite'}"


def subdir(name: str, home: str | os.PathLike | None = None) -> Path:
    """A named folder inside the home (`pool`, `cache`, `rewards`, `runs`, ...), created on demand."""
    path = home_dir(home) / name
    _mkdir(path, "the folder")
    return path
