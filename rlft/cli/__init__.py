"""The `rlft` command line: a click group whose subcommands live in one small module each.

Subcommands are imported lazily, so `rlft prefs stats` never pays for importing torch, and a broken
optional dependency only breaks the command that needs it. Library code raises `prefs.errors.UserError`;
this module is the only place that turns it into a one-line message and exit code 2.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

import click

# Set before anything imports gradio or huggingface_hub: rlft never phones home unless the user names a
# hub model. setdefault keeps a user's explicit choice.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")

# name -> "module:attribute"; one module per command or command group.
COMMANDS: dict[str, str] = {
    "generate": "rlft.cli.generate:generate",
    "db": "rlft.cli.db:db",
    "import": "rlft.cli.pool:import_images",
    "prefs": "rlft.cli.prefs:prefs",
    "simulate": "rlft.cli.simulate:simulate",
    "toy": "rlft.cli.toy:toy",
    "ui": "rlft.cli.ui:ui",
    "reward": "rlft.cli.reward:reward",
    "embed": "rlft.cli.embed:embed",
    "train": "rlft.cli.train:train",
    "export-lora": "rlft.cli.train:export_lora",
    "judge": "rlft.cli.judge:judge",
    "loop": "rlft.cli.loop:loop",
}


class CLIError(click.ClickException):
    """A one-line error for the terminal, exit code 2 (the code click uses for usage errors)."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("rlft.cli."):
                return None  # command not built yet
            raise
        return getattr(module, attr)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            raise usage_error(e) from None

    def invoke(self, ctx):
        from prefs.errors import UserError

        try:
            return super().invoke(ctx)
        except UserError as e:
            raise CLIError(one_line(str(e))) from None
        except click.UsageError as e:  # any subcommand's: an unknown option, a bad choice, a missing argument
            raise usage_error(e) from None
        except OSError as e:  # the machine refused (full disk, read-only or forbidden place): not a bug
            if e.errno not in ENVIRONMENT_ERRNOS:
                raise
            raise CLIError(one_line(os_error_message(e))) from None


# A full disk or quota, a read-only file system, a forbidden or misnamed path: say so in one line, no traceback.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                      errno.EISDIR, errno.ENAMETOOLONG}


def os_error_message(e: OSError) -> str:
    """`PATH: reason`, with what to do about a full disk."""
    where = f"{e.filename}: " if e.filename else ""
    hint = "; free some space and run it again" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return f"{where}{e.strerror or e}{hint}"


def one_line(message: str) -> str:
    """Collapse a message to one line, as the CLI promises."""
    return " ".join(message.split()) or "error"


def usage_error(e: click.UsageError) -> click.ClickException:
    """click's usage error as one line naming the command (`rlft prefs stats: No such option: --x`).

    A group run with no subcommand keeps click's help text: that is a request for help, not an error.
    """
    if isinstance(e, click.exceptions.NoArgsIsHelpError):
        return e
    where = f"{e.ctx.command_path}: " if e.ctx is not None else ""
    return CLIError(one_line(where + e.format_message()))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(file_okay=False), envvar="RLFT_HOME", help="Home directory for all state [env RLFT_HOME].")
@click.option("--db", "db", envvar="RLFT_DB", help="Database URL (default: SQLite in the home) [env RLFT_DB].")
@click.version_option(package_name="rlft")
def main(home: str | None, db: str | None) -> None:
    """rlft: rate images, learn your taste, steer a diffusion model toward it."""
    if home:
        os.environ["RLFT_HOME"] = os.path.abspath(home)
    if db:
        os.environ["RLFT_DB"] = db


def run() -> None:  # console-script entry point
    main(prog_name="rlft")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
