"""Helpers for the prefs tests: tiny images, toy-world pools, and a throwaway PostgreSQL database."""

from __future__ import annotations

import io
import os
import uuid

import pytest
from PIL import Image

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:55432/postgres"


def png_bytes(i: int, size: int = 8, pnginfo=None) -> bytes:
    """A distinct small PNG for each i."""
    img = Image.new("RGB", (size, size), (i % 256, (i // 256) % 256, 7))
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=pnginfo)
    return buf.getvalue()


def add_images(store, n: int, prompts: int | None = None) -> list[str]:
    """Add n distinct images (prompt "p{i % prompts}" when `prompts`, else one prompt each); returns shas."""
    shas = []
    for i in range(n):
        prompt = f"p{i % prompts}" if prompts else f"prompt {i}"
        shas.append(store.add_image(png_bytes(i), prompt=prompt, seed=i).sha256)
    return shas


def add_toy_images(store, n: int, seed: int = 0) -> list[str]:
    from rlft.toy.world import samples

    shas = []
    for s, _ in zip(samples(seed), range(n)):
        shas.append(store.add_image(s.image, prompt=s.caption, seed=s.seed, model="toy").sha256)
    return shas


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
