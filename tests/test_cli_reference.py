"""docs/cli.md is the `--help` of every command; it must be regenerated when a command or flag changes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "tools" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date():
    tool = _tool()
    text = tool.render()
    assert tool.PAGE.read_text(encoding="utf-8") == text, "docs/cli.md is stale: run python tools/cli_reference.py"


def test_cli_reference_covers_every_command_and_flag():
    import click

    from rlft.cli import COMMANDS, main

    text = _tool().render()
    ctx = click.Context(main, info_name="rlft")
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert f"## `rlft {name}`" in text
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in text, (name, opt)
    assert "## `rlft train`" in text and "--log-with TRACKER" in text
