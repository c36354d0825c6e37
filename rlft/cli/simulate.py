"""`rlft simulate`: a simulated rater judges pairs from the pool through the same path as a person."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from rlft.cli.params import FINITE_FLOAT, STRATEGY

if TYPE_CHECKING:
    from prefs.samplers import ImageSet, StrategyMix


@click.command()
@click.option("--oracle", required=True, help="Built-in utility (warm, cool, big, small, centered, dark, bright) or module:function.")
@click.option("--n", "n", type=int, required=True, help="Pairs to judge.")
@click.option("--noise", type=FINITE_FLOAT, default=None, help="Bradley-Terry temperature T (0: noiseless)  [default: 1.0]")
@click.option("--consistency", type=FINITE_FLOAT, default=None,
              help="Calibrate T instead: the rater agrees with the noiseless oracle on this share of random pool pairs (e.g. 0.9).")
@click.option("--tie-prob", type=FINITE_FLOAT, default=0.0, show_default=True, help="Chance of answering tie.")
@click.option("--rater", default=None, help="Rater name (default: sim-ORACLE).")
@click.option("--strategy", type=STRATEGY, default=None, help="Pair strategy or mix, e.g. 'balanced' or 'uncertain:0.7,balanced:0.25,repeat:0.05'.")
@click.option("--scorer", default="online", show_default=True,
              help="What 'uncertain' asks: online (a reward ensemble fitted at 20 votes, refitted every 50), bt (item scores), a reward version (latest, r0003, path) or a built-in reward (pickscore, clipscore=toy, ...).")
@click.option("--clip", "clip_spec", default="toy", show_default=True, help="CLIP spec for the online ensemble.")
@click.option("--among", "among_spec", default=None, metavar="LORA",
              help="Judge pairs among the images generated with this LoRA only: latest (the latest run's; the base "
                   "model's when there is none), base (no LoRA), a run id (t0003) or a LoRA as images record it. "
                   "When they run out, the rest come from the whole pool, with a notice.  [default: the whole pool]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as a JSON object.")
def simulate(oracle: str, n: int, noise: float | None, consistency: float | None, tie_prob: float, rater: str | None, strategy: StrategyMix | None, scorer: str, clip_spec: str,
             among_spec: str | None, seed: int, as_json: bool) -> None:
    """Judge N pairs with an oracle utility, P(a wins) = sigmoid((u_a - u_b) / T)."""
    from prefs import open_store
    from prefs.errors import UserError
    from rlft.sim.oracles import resolve_oracle
    from rlft.sim.rater import SimulationConfig
    from rlft.sim.rater import simulate as run

    if noise is not None and consistency is not None:
        raise UserError("give --noise or --consistency, not both")
    fn = resolve_oracle(oracle)
    config = SimulationConfig(n=n, noise=1.0 if noise is None else noise, consistency=consistency, tie_prob=tie_prob, rater=rater or f"sim-{oracle}", strategy=strategy, seed=seed,
                              scorer=scorer, clip=clip_spec, among=resolve_among(among_spec))
    with open_store() as store:
        summary = run(store, fn, config, progress=not as_json, notice=lambda m: click.echo(f"notice: {m}", err=True))
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(summary_line(summary, config.rater, calibrated=consistency is not None))
    if summary["stopped"]:
        click.echo(f"stopped early: {summary['stopped']}", err=True)


def summary_line(summary: dict, rater: str, calibrated: bool = False) -> str:
    """One line for a simulated rater's summary (`rlft.sim.rater.simulate`'s)."""
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(summary["by_outcome"].items())) or "none"
    agreement = "n/a" if summary["agreement"] is None else f"{summary['agreement']:.1%}"
    noise = f" at calibrated noise T={summary['noise']:.4g}" if calibrated else ""
    among = f" among {summary['among']}" if summary.get("among") and not summary.get("among_fallback") else ""
    return f"judged {summary['judged']} pairs{among} as {rater}{noise}: {outcomes}; agreement with the oracle {agreement}"


def resolve_among(spec: str | None) -> ImageSet | None:
    """`--among`: None for the whole pool; `base` for images made without a LoRA; `latest` for the latest run's
    images (the base model's before any run); a run id as images record it (an unknown run id is a UserError)."""
    from prefs.samplers import ImageSet

    if spec is None:
        return None
    text = spec.strip()
    if text == "base":
        return ImageSet(lora=None)
    if text == "latest":
        from rlft.train.runs import latest_run

        run = latest_run()
        return ImageSet(lora=None if run is None else run.name)
    from rlft.models.lora import lora_name

    return ImageSet(lora=lora_name(text))
