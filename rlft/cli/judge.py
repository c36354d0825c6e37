"""`rlft judge RUN`: the tuned model against its base under independent judges (library: `rlft.train.judge`)."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("run", default="latest")
@click.option("--judge", "judges", multiple=True, metavar="REWARD",
              help="A judge: any --reward form (pickscore, hpsv2, laion-aesthetic, clipscore, jpeg-compressibility, a "
                   "reward version, NAME=PATH, a weighted sum); repeatable. [default: the judges the run was trained with]")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Bootstrap resamples of the prompt+seed pairs for the interval.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--device", default=None, help="cuda, cpu, ... (default: the best available).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def judge(run, judges, n_boot, seed, device, as_json):
    """Compare RUN's tuned model with its base on the run's sample-grid prompts and seeds (both drawn from the same
    noise), under each judge: mean base, mean tuned, tuned - base with a 95% bootstrap interval over the pairs,
    and the win rate (ties half)."""
    from rlft.train.judge import judge_run, table

    report = judge_run(run, judges, device=device, n_boot=n_boot, seed=seed)
    click.echo(json.dumps(report) if as_json else table(report))
