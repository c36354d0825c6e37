"""Schema migrations: from empty, from a populated older database, and the messages for old/new ones."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner

import prefs
from prefs import migrate
from prefs.engine import make_engine
from prefs.models import Base
from rlft.cli import main


def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'p.sqlite'}"


def populate_0001(engine):
    """Rows as the first schema revision stored them."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO images (id, sha256, width, height, format, prompt, prompt_hash, negative_prompt, origin, "
            "n_judgements, created_at) VALUES "
            "(1, '" + "a" * 64 + "', 8, 8, 'png', 'p', 'h', '', 'generated', 1, '2024-01-01 00:00:00'),"
            "(2, '" + "b" * 64 + "', 8, 8, 'png', 'p', 'h', '', 'imported', 1, '2024-01-01 00:00:00')"
        )
        conn.exec_driver_sql("INSERT INTO raters (id, name, created_at) VALUES (1, 'old', '2024-01-01 00:00:00')")
        conn.exec_driver_sql(
            "INSERT INTO comparisons (id, client_vote_id, image_a_id, image_b_id, shown_left, outcome, rater_id, "
            "created_at, decision_ms) VALUES (1, 'v-old', 1, 2, 'a', 'b', 1, '2024-01-01 00:00:01', 900)"
        )


def test_fresh_database_is_created_at_head(tmp_path):
    url = sqlite_url(tmp_path)
    prefs.open_store(url).close()
    assert migrate.current_revision(make_engine(url)) == migrate.head_revision() == "0002"


def models_match_migrations(url):
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    engine.dispose()
    return diff


def test_migrations_create_exactly_the_models(tmp_path):
    url = sqlite_url(tmp_path)
    migrate.upgrade(make_engine(url))
    assert models_match_migrations(url) == []


def check_upgrade_from_populated_0001(url):
    engine = make_engine(url)
    migrate.upgrade(engine, "0001")
    populate_0001(engine)
    with pytest.raises(migrate.SchemaError, match=r"revision 0001, this rlft needs 0002: run `rlft db upgrade`"):
        prefs.open_store(url)
    before, after = migrate.upgrade(engine)
    assert (before, after) == ("0001", "0002")
    with prefs.open_store(url) as store:
        [j] = list(store.judgements())
        assert (j.client_vote_id, j.rater, j.outcome, j.image_a, j.decision_ms) == ("v-old", "old", "b", "a" * 64, 900)
        assert j.created_at.year == 2024 and j.created_at.tzinfo is not None
        assert store.get_image("a" * 64).broken_at is None
        store.record_judgement("a" * 64, "b" * 64, "a", rater="old", round="r1")  # new columns work
        assert store.stats()["judgements"] == 2
    engine.dispose()


def test_upgrade_from_a_populated_older_sqlite_database(tmp_path):
    check_upgrade_from_populated_0001(sqlite_url(tmp_path))


def test_open_store_can_upgrade_when_asked(tmp_path):
    url = sqlite_url(tmp_path)
    engine = make_engine(url)
    migrate.upgrade(engine, "0001")
    populate_0001(engine)
    with prefs.open_store(url, upgrade=True) as store:
        assert len(list(store.judgements())) == 1


def test_database_from_a_newer_rlft_is_refused(tmp_path):
    url = sqlite_url(tmp_path)
    prefs.open_store(url).close()
    with make_engine(url).begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(migrate.SchemaError, match="newer than this rlft knows"):
        prefs.open_store(url)


def test_foreign_tables_without_revision_are_refused(tmp_path):
    url = sqlite_url(tmp_path)
    with make_engine(url).begin() as conn:
        conn.exec_driver_sql("CREATE TABLE images (x INTEGER)")
    with pytest.raises(migrate.SchemaError, match="not made by rlft"):
        prefs.open_store(url)


def test_cli_db_upgrade_and_current(tmp_path):
    url = sqlite_url(tmp_path)
    migrate.upgrade(make_engine(url), "0001")
    runner = CliRunner()
    result = runner.invoke(main, ["--db", url, "db", "current"])
    assert result.exit_code == 0 and "current: 0001  head: 0002" in result.output
    result = runner.invoke(main, ["--db", url, "prefs", "stats"])
    assert result.exit_code == 2 and "run `rlft db upgrade`" in result.output
    result = runner.invoke(main, ["--db", url, "db", "upgrade"])
    assert result.exit_code == 0 and "upgraded database from revision 0001 to 0002" in result.output
    result = runner.invoke(main, ["--db", url, "db", "upgrade"])
    assert "up to date (revision 0002)" in result.output


def test_sqlite_pragmas(tmp_path):
    with prefs.open_store(sqlite_url(tmp_path)) as store:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        with pytest.raises(sa.exc.IntegrityError):  # foreign keys enforced
            with store.engine.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO comparisons (client_vote_id, image_a_id, image_b_id, outcome, rater_id, created_at) "
                    "VALUES ('x', 98, 99, 'a', 97, '2024-01-01')")


@pytest.mark.postgres
def test_postgres_migrations(pg_url):  # noqa: F811
    check_upgrade_from_populated_0001(pg_url)
    assert models_match_migrations(pg_url) == []


def test_fast_head_reading_agrees_with_alembic():
    # open_store settles an up-to-date database from the migration files alone (no alembic import).
    assert migrate.head_revision_fast() == migrate.head_revision()
