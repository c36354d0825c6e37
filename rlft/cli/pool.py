"""`rlft import DIR`: add a folder of existing images to the pool."""

from __future__ import annotations

import json

import click

from prefs.pool import DEFAULT_MAX_BYTES, DEFAULT_MAX_SIDE


@click.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--prompt", default=None, help="Prompt for images without an A1111 'parameters' chunk or a sidecar .txt.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as a JSON object.")
@click.option("--max-side", type=click.IntRange(min=1), default=DEFAULT_MAX_SIDE, show_default=True, help="Refuse images with a longer side (px).")
@click.option("--max-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_BYTES, show_default=True, help="Refuse larger files (bytes).")
def import_images(directory: str, prompt: str | None, as_json: bool, max_side: int, max_bytes: int) -> None:
    """Import PNG/JPEG/WebP images from DIRECTORY (recursively) into the pool; duplicates are stored once."""
    from prefs import open_store
    from prefs.folder import import_folder
    from prefs.pool import Limits

    with open_store() as store:
        report = import_folder(store, directory, prompt=prompt, limits=Limits(max_side, max_bytes), progress=not as_json)
    for line in report.skipped_files:
        click.echo(f"skipped {line}", err=True)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(f"added {report.added}, duplicate {report.duplicate}, skipped {report.skipped}")
