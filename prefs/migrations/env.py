"""Alembic environment for the preference store; run programmatically by `prefs.migrate`.

`prefs.migrate` passes an open connection in `config.attributes["connection"]`, so no alembic.ini is needed
in the user's working directory.
"""

from alembic import context

from prefs.engine import make_engine
from prefs.models import Base

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # plain `alembic` command line with -x or a sqlalchemy.url in an ini
        engine = make_engine(config.get_main_option("sqlalchemy.url"))
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    else:
        _run(connection)


def _run(connection) -> None:
    # render_as_batch: SQLite can't ALTER most things in place; batch mode copies the table.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
