"""`rlft prefs`: export, import and summarise judgements. Never imports torch."""

from __future__ import annotations

import json

import click


@click.group()
def prefs() -> None:
    """Judgements: export, import, stats."""


@prefs.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default=None, help="Default: from the file suffix.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="File to write.")
def export(fmt: str | None, output: str) -> None:
    """Write every judgement to a file (JSONL: all, undone included; parquet: Pick-a-Pic columns)."""
    from prefs import open_store
    from prefs.export import export as run_export

    with open_store() as store:
        n = run_export(store, output, fmt)
    click.echo(f"wrote {n} judgements to {output}")


@prefs.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "imagereward"]), default=None, help="Default: detected.")
@click.option("--rater", default=None, help="Rater name (ImageReward default: imagereward; JSONL: overrides each row's).")
@click.option("--images", "images_root", type=click.Path(file_okay=False), default=None, help="Folder relative image paths resolve against (default: the file's folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as a JSON object.")
def import_(file: str, fmt: str | None, rater: str | None, images_root: str | None, as_json: bool) -> None:
    """Read judgements from our JSONL or an ImageReward-style ranked list (test.json)."""
    from prefs import open_store
    from prefs.imports import import_file

    with open_store() as store:
        report = import_file(store, file, fmt, rater=rater, images_root=images_root, progress=not as_json)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(f"{report.format}: added {report.added}, duplicate {report.duplicate}, skipped {report.skipped} "
               f"(images added {report.images_added}, missing {len(report.missing)})")
    if report.missing:
        shown = ", ".join(report.missing[:5]) + (" ..." if len(report.missing) > 5 else "")
        click.echo(f"missing images (not in the pool, no readable file): {shown}", err=True)


@prefs.command()
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as a JSON object.")
@click.option("--rater", default=None, help="Only this rater's judgements.")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True, help="Images to list in the ranking.")
def stats(as_json: bool, rater: str | None, top: int) -> None:
    """Images, judgements by outcome and rater, tie rate, self-consistency, Bradley-Terry ranking."""
    from prefs import open_store

    with open_store() as store:
        s = store.stats(top=top, rater=rater)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    click.echo(f"images: {s['images']} ({s['broken_images']} broken)")
    click.echo(f"judgements: {s['judgements']} (undone: {s['undone']})")
    click.echo("by outcome: " + ", ".join(f"{k} {v}" for k, v in s["by_outcome"].items()))
    click.echo("raters: " + (", ".join(f"{k} {v}" for k, v in s["raters"].items()) or "none"))
    tie = s["tie_rate"]
    click.echo(f"tie rate: {'n/a' if tie is None else f'{tie:.1%}'}")
    sc = s["self_consistency"]
    agreement = "n/a" if sc["agreement"] is None else f"{sc['agreement']:.1%}"
    click.echo(f"self-consistency: {agreement} over {sc['count']} repeats")
    if s["ranking"]:
        click.echo(f"Bradley-Terry top {len(s['ranking'])} of {s['ranked_images']}:")
        for k, r in enumerate(s["ranking"], 1):
            click.echo(f"{k:3d}. {r['score']:+.3f}  {r['sha256'][:12]}  {r['wins']}W {r['losses']}L {r['ties']}T  {r['prompt'][:60]}")
