"""Schema versions: apply the Alembic migrations shipped inside the package, check a database's revision.

No alembic.ini is needed: the configuration is built here and points at `prefs/migrations`. A fresh (empty)
database is created at the newest revision on first open; an older one is upgraded only on request
(`rlft db upgrade`, or `open_store(upgrade=True)`), because an upgrade rewrites tables that hold a person's
judgements and they may want a backup first.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from prefs.errors import UserError

MIGRATIONS = Path(__file__).with_name("migrations")
UPGRADE_COMMAND = "rlft db upgrade"


class SchemaError(UserError):
    """The database's schema revision does not match this version of rlft."""


def _config(connection=None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision this rlft knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def known_revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    return [s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()]


def current_revision(engine: Engine) -> str | None:
    """The database's revision, or None for a database that has never been migrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade the database to `revision` (default: newest); returns (before, after)."""
    from alembic import command

    before = current_revision(engine)
    with engine.begin() as conn:
        command.upgrade(_config(conn), revision)
    return before, current_revision(engine)


_ASSIGN = r"^{}\s*(?::[^=\n]*)?=\s*(?:[\"']([^\"'\n]+)[\"']|None)\s*$"


def head_revision_fast() -> str | None:
    """The newest revision, read from the migration files' `revision = "..."` lines without alembic.

    Importing alembic costs a few hundred milliseconds of every `rlft` command that opens the store.
    Returns None for anything this simple reading cannot settle (a merge, a branch, an unusual file); the
    caller then asks alembic.
    """
    revisions, parents = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        rev = re.search(_ASSIGN.format("revision"), source, re.M)
        down = re.search(_ASSIGN.format("down_revision"), source, re.M)
        if rev is None or rev.group(1) is None or down is None:
            if path.name == "__init__.py":
                continue
            return None
        revisions.add(rev.group(1))
        if down.group(1) is not None:
            parents.add(down.group(1))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def _is_at(engine: Engine, revision: str) -> bool:
    """Whether alembic's version table names exactly `revision` (False when there is no such table)."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except SQLAlchemyError:
        return False
    return rows == [revision]


def ensure_current(engine: Engine, upgrade_old: bool = False) -> None:
    """Create a fresh database, upgrade an old one if asked, else say exactly what to run.

    Raises SchemaError for an old database (unless `upgrade_old`), one from a newer rlft, or a database
    that has tables but no revision (not made by rlft).
    """
    head = head_revision_fast()
    if head is not None and _is_at(engine, head):
        return  # the common case, settled without importing alembic
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    url = engine.url.render_as_string(hide_password=True)
    if current is None:
        tables = set(inspect(engine).get_table_names())
        if tables & {"images", "comparisons", "raters"}:
            raise SchemaError(f"database {url} has preference tables but no schema revision; it was not made by rlft")
        upgrade(engine)
        return
    if current not in known_revisions():
        raise SchemaError(
            f"database {url} is at schema revision {current}, newer than this rlft knows (newest {head}); upgrade rlft"
        )
    if upgrade_old:
        upgrade(engine)
        return
    raise SchemaError(
        f"database {url} is at schema revision {current}, this rlft needs {head}: run `{UPGRADE_COMMAND}` "
        "(back up the database file first if you like; upgrades keep every row)"
    )
