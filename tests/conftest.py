"""Shared fixtures: every test runs in a fresh temporary home, offline."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
