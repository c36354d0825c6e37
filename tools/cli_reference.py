"""Write docs/cli.md: every `rlft` command's `--help`, rendered from the click commands themselves.

    python tools/cli_reference.py            # rewrite docs/cli.md
    python tools/cli_reference.py --check    # exit 1 if docs/cli.md is out of date (the tests compare the same way)

The README's CLI table lists the main flags; this page lists all of them, so the two never have to agree
by hand. Help is rendered at a fixed width so the page does not depend on the terminal.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "cli.md"
WIDTH = 100


def _walk(command: click.Command, ctx: click.Context):
    """(context, command) for the command and every subcommand below it, depth first, names sorted."""
    yield ctx, command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx))  # width from the parent


def render() -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from rlft.cli import main

    root = click.Context(main, info_name="rlft", terminal_width=WIDTH, max_content_width=WIDTH, **main.context_settings)
    parts = ["# `rlft` command reference", "",
             "Generated from the commands' own `--help` by `python tools/cli_reference.py`; a test fails when it",
             "is out of date. Bad input exits with code 2 and one line starting `Error:`. The README has the",
             "walk-through; docs/train.md the training config and run folder.", ""]
    for ctx, command in _walk(main, root):
        parts += [f"## `{ctx.command_path}`", "", "```text", command.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(parts)


def _main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python tools/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
