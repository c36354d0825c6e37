"""`rlft db`: database schema commands (upgrade, current)."""

from __future__ import annotations

import click


@click.group()
def db() -> None:
    """Manage the preference database's schema."""


@db.command()
def upgrade() -> None:
    """Apply pending schema migrations (creates the database if it does not exist)."""
    from sqlalchemy.exc import DBAPIError

    from prefs.engine import make_engine, open_error, prepare_folder
    from prefs.home import db_url
    from prefs.migrate import ensure_current
    from prefs.migrate import upgrade as run_upgrade

    engine = make_engine(db_url())
    try:
        prepare_folder(engine)
        before, after = run_upgrade(engine)
        ensure_current(engine)  # raises if the database is newer than this rlft
    except DBAPIError as e:
        raise open_error(engine, e) from e
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"database is up to date (revision {after})")
    else:
        click.echo(f"upgraded database from revision {before or 'empty'} to {after}")


@db.command()
def current() -> None:
    """Print the database's schema revision and the newest this rlft knows."""
    from sqlalchemy.exc import DBAPIError

    from prefs.engine import make_engine, open_error
    from prefs.home import db_url
    from prefs.migrate import current_revision, head_revision

    engine = make_engine(db_url())
    try:
        rev = current_revision(engine)
    except DBAPIError as e:
        raise open_error(engine, e) from e
    finally:
        engine.dispose()
    click.echo(f"current: {rev or 'empty'}  head: {head_revision()}")
