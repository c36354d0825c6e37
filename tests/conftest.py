"""Shared fixtures: every test runs in a fresh temporary home, offline."""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:55432/postgres"


@pytest.fixture(autouse=True)
def rlft_home(tmp_path, monkeypatch):
    """Point RLFT_HOME at a temp dir and clear RLFT_DB, so no test touches a real home.

    The CLI's `--home`/`--db` write os.environ (right for a process, a leak under CliRunner): both
    variables are put back exactly as they were after every test, set or not.
    """
    saved = {k: os.environ.get(k) for k in ("RLFT_HOME", "RLFT_DB")}
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("RLFT_HOME", str(home))
    monkeypatch.delenv("RLFT_DB", raising=False)
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for one test; skipped without a server, a failure in CI (RLFT_CI=1)."""
    import sqlalchemy as sa

    base = os.environ.get("RLFT_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    try:
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as e:  # no server, no driver
        if os.environ.get("RLFT_CI") == "1":
            pytest.fail(f"PostgreSQL at {base} is required in CI but unreachable: {e}")
        pytest.skip(f"no PostgreSQL server at {base}")
    name = f"rlft_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """The tiny SD 1.x pipeline saved as a diffusers folder, once per test module (a module may define its own)."""
    from rlft.models.tiny import tiny_pipeline

    path = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipeline(0).save_pretrained(path)
    return path
