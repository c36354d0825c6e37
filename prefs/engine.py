"""Database engines: SQLite tuned for one machine with several writers, PostgreSQL through psycopg.

SQLite gets WAL (readers never block the writer), foreign keys (off by default in SQLite), a busy timeout
(a writer waits instead of failing), and `BEGIN IMMEDIATE` for write transactions: a deferred transaction
that reads and then writes can fail with "database is locked" without waiting when another writer got in
first, which would lose votes under concurrency.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from prefs.errors import StorageError, UserError

BUSY_TIMEOUT_MS = 30_000  # long enough for a burst of 8 concurrent raters; short enough to notice a hang
WAL_AUTOCHECKPOINT_PAGES = 10_000
WRITE = {"prefs_write": True}  # execution option: start this transaction with BEGIN IMMEDIATE (SQLite)


def make_engine(url: str) -> Engine:
    """An engine for `url` (`sqlite:///path` or `postgresql+psycopg://...`); bad URLs raise UserError."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise UserError(f"invalid database URL {url!r}: expected sqlite:///PATH or postgresql+psycopg://...") from e
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise UserError(f"unsupported database {backend!r} in {url!r}; supported: sqlite, postgresql")
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, the driver rlft tests against
    try:
        if backend == "sqlite":
            engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
            _tune_sqlite(engine)
        else:
            engine = create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except (NoSuchModuleError, ImportError) as e:
        raise UserError(f"cannot use {url!r}: {e}. For PostgreSQL install the extra: pip install 'rlft[postgres]'") from e
    return engine


def describe(engine: Engine) -> str:
    """The engine's URL with any password hidden, for messages."""
    return engine.url.render_as_string(hide_password=True)


def prepare_folder(engine: Engine) -> None:
    """Create the folder a SQLite database file lives in; StorageError when that cannot be (a path under a
    regular file, a read-only place)."""
    if engine.url.get_backend_name() != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return
    folder = Path(engine.url.database).expanduser().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
        reason = (f"{blocker} is a file, not a folder" if blocker is not None and not blocker.is_dir()
                  else f"cannot create the folder {folder} ({e.strerror or e})")
        raise StorageError(f"cannot use the database {describe(engine)}: {reason}") from e


def open_error(engine: Engine, e: DBAPIError) -> StorageError:
    """A database that cannot be opened or read (not a database, damaged, unreachable, read-only, full) as a
    one-line StorageError."""
    reason = " ".join(str(e.orig if e.orig is not None else e).split())
    hint = ""
    if "not a database" in reason or "malformed" in reason:
        hint = "; give --db (or RLFT_DB) a database file rlft made, or a new path"
    return StorageError(f"cannot open the database {describe(engine)}: {reason}{hint}")


def write_error(engine: Engine, e: DBAPIError) -> StorageError:
    """A write the database refused (full disk, read-only, damaged, unreachable) as a one-line StorageError;
    the transaction was rolled back, so nothing of it is stored."""
    reason = " ".join(str(e.orig if e.orig is not None else e).split())
    return StorageError(f"cannot write to the database {describe(engine)}: {reason} (nothing of this change was stored)")


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event below emit BEGIN itself
        cur = dbapi_conn.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: durable across app crashes, fast commits
        # Checkpoint (copy WAL into the database, with an fsync) every ~40 MB instead of ~4 MB: the commit
        # that triggers it pays for it, and at the default one vote in ~150 did, which set the p99 latency.
        cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("prefs_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
