"""`rlft loop`: rounds of generate -> rate -> reward train -> train, each step what the ordinary command does
(the train step through the same library call, `rlft.train.session.start_run`).

The same as running, per round (the same generation seed each round, so the Gallery compares the rounds' models
on the same noise):
    rlft generate --model M --prompts P -n N --seed SEED [--lora latest]  # new images into the pool
    rlft simulate --oracle O --n J [--strategy S] --among latest  (or `rlft ui`) # judgements of the new images
    rlft reward train --clip C                                    # reward version rNNNN (latest), on every judgement
    rlft train --reward latest --model M --prompts P --algo A     # LoRA run tNNNN (latest)

So each round generates with the latest LoRA, the simulated rater judges pairs among the images the model makes
now (`--among round`, the default: those of model M with this round's LoRA; the whole pool once they run out, with
a notice), the reward is refitted on every judgement so far, and the new run trains on it. A rater calibrated with
`--consistency` keeps round 1's noise T in every later round, so all rounds are judged by the same rater.
"""

from __future__ import annotations

import os

import click

from rlft.cli.params import FINITE_FLOAT, STRATEGY


@click.command("loop")
@click.option("--model", "-m", default="toy", show_default=True, help="Model spec.")
@click.option("--prompts", "prompts_source", required=True, help="Prompt file or named set (generation and training).")
@click.option("--rounds", type=int, default=1, show_default=True, help="Rounds to run.")
@click.option("-n", "n", type=int, default=4, show_default=True, help="Images per prompt generated each round.")
@click.option("--oracle", default=None, help="Rate with a simulated rater (warm, big, ...); default: you rate in `rlft ui`.")
@click.option("--judgements", type=int, default=300, show_default=True, help="Pairs the simulated rater judges per round.")
@click.option("--consistency", type=FINITE_FLOAT, default=None,
              help="The simulated rater agrees with the oracle on this share of pairs (its noise calibrated; default: T = 1).")
@click.option("--strategy", type=STRATEGY, default=None,
              help="Pair strategy of the simulated rater, e.g. 'uncertain' (active learning: the pairs a reward ensemble "
                   "finds closest to even odds) or 'uncertain:0.7,balanced:0.25,repeat:0.05'; default: the pool's.")
@click.option("--clip", default="toy", show_default=True, help="CLIP for the reward model.")
@click.option("--algo", type=click.Choice(["ddpo", "rwr", "dpo"]), default=None,
              help="Training algorithm (default: the --config file's, else ddpo).")
@click.option("--epochs", type=int, default=None, help="Training epochs per round (default: the config's).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="A JSON or TOML training config for every round's `rlft train --config`.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Generation seed of every round (the same noise each round, so the Gallery's compare view shows "
                   "each round's model beside the others' on it); round r trains with seed + r.")
@click.option("--log-with", "log_with", multiple=True, metavar="TRACKER",
              help="Each round's `rlft train --log-with` (tensorboard, wandb, ...); repeatable.")
@click.option("--among", type=click.Choice(["round", "pool"]), default="round", show_default=True,
              help="The simulated rater judges pairs among the images this round's model made (round: what the model "
                   "makes now) or among the whole pool.")
def loop(model, prompts_source, rounds, n, oracle, judgements, consistency, strategy, clip, algo, epochs, config_file, seed,
         log_with, among):
    """Close the loop: generate, rate, fit the reward, steer the model; repeat."""
    from prefs.errors import UserError
    from rlft.cli import main

    if rounds < 1:
        raise UserError(f"--rounds must be >= 1, got {rounds}")
    if consistency is not None and not oracle:
        raise UserError("--consistency sets the simulated rater's noise; it needs --oracle")
    if strategy and not oracle:
        raise UserError("--strategy picks the simulated rater's pairs; it needs --oracle (in `rlft ui`, pass --strategy there)")
    from rlft.sim.rater import SimulationConfig
    from rlft.train.configure import build_config, family_of, image_size_of, read_config_file
    from rlft.train.tracking import check_trackers

    log_with = check_trackers(log_with)

    SimulationConfig(n=0, consistency=consistency)  # checks --consistency up front, as simulate would
    if oracle:
        from rlft.sim.oracles import resolve_oracle

        resolve_oracle(oracle)  # an unknown oracle fails now, not after the first round's images

    # Resolve (and so check) the training config before the first round: a bad file fails now, not an hour in.
    file_values = read_config_file(config_file) if config_file else {}
    algo = build_config(model, file_values, {"algo": algo} if algo else {}).algo
    if algo != "dpo":  # the reward's CLIP must see the model's images: a toy CLIP cannot judge SD's, nor the reverse
        from rlft.train.rewards import check_compatible

        check_compatible(clip, image_size_of(model), model, family_of(model))

    def run(*args):
        click.echo(f"$ rlft {' '.join(map(str, args))}", err=True)
        main.main([str(a) for a in args], prog_name="rlft", standalone_mode=False)

    noise = None  # the noise T round 1 calibrated: later rounds keep the same rater
    for r in range(rounds):
        click.echo(f"round {r + 1}/{rounds}", err=True)
        current = _latest_run_name()  # the LoRA this round generates with; None: the base model
        lora = ["--lora", "latest"] if current else []
        before = _pool_size()
        run("generate", "--model", model, "--prompts", prompts_source, "-n", n, "--seed", seed, *lora)
        if _pool_size() == before:
            click.echo(f"notice: round {r + 1} added no new images (the pool already holds this model's images on "
                       "these seeds); its judgements fall on the images already there", err=True)
        if oracle:
            from prefs.samplers import ImageSet

            images = ImageSet(lora=current, model=os.fspath(model)) if among == "round" else None
            summary = _simulate(oracle, judgements, seed + r, consistency, noise, strategy, images)
            if consistency is not None and noise is None:
                noise = summary["noise"]
        else:
            click.echo("rate the new images in `rlft ui` (another terminal), then press Enter here", err=True)
            click.pause(info="")
        if algo != "dpo":
            run("reward", "train", "--clip", clip)
        flags = {"algo": algo, "seed": seed + r, **({"epochs": epochs} if epochs else {})}
        _train(model, prompts_source, config_file, file_values, flags, log_with)


def _train(model, prompts_source, config_file, file_values: dict, flags: dict, log_with) -> None:
    """A round's `rlft train --reward latest`: the same library call the command makes, shown as the command."""
    from rlft.train.configure import build_config
    from rlft.train.session import done_message, start_run

    shown = ["train", "--model", model, "--prompts", prompts_source, "--algo", flags["algo"], "--seed", flags["seed"]]
    shown += ["--epochs", flags["epochs"]] if "epochs" in flags else []
    shown += ["--config", config_file] if config_file else []
    for name in log_with:
        shown += ["--log-with", name]
    click.echo(f"$ rlft {' '.join(map(str, shown))}", err=True)
    done = start_run(build_config(model, file_values, flags), model=model, prompts_source=prompts_source,
                     log_with=log_with, progress=True, report=lambda line: click.echo(line, err=True),
                     notice=lambda message: click.echo(f"notice: {message}", err=True))
    if done.main_process:
        click.echo(done_message(done.run_dir))


def _simulate(oracle: str, judgements: int, seed: int, consistency: float | None, noise: float | None, strategy,
              images) -> dict:
    """A round's `rlft simulate`: the library call, shown as the command. With `noise` (an earlier round's
    calibration) the rater keeps it; `images`: the ImageSet its pairs come from (None: the whole pool)."""
    from prefs import open_store
    from rlft.cli.simulate import summary_line
    from rlft.sim.oracles import resolve_oracle
    from rlft.sim.rater import SimulationConfig, simulate

    shown = ["simulate", "--oracle", oracle, "--n", judgements, "--seed", seed]
    shown += ["--noise", f"{noise:.6g}"] if noise is not None else ["--consistency", consistency] if consistency is not None else []
    shown += ["--strategy", strategy] if strategy else []
    shown += ["--among", images.lora or "base"] if images is not None else []
    click.echo(f"$ rlft {' '.join(map(str, shown))}", err=True)
    if noise is not None:
        click.echo(f"the rater keeps round 1's calibrated noise T={noise:.4g}", err=True)
    config = SimulationConfig(n=judgements, noise=1.0 if noise is None else noise,
                              consistency=consistency if noise is None else None, rater=f"sim-{oracle}",
                              strategy=strategy, seed=seed, among=images)
    with open_store() as store:
        summary = simulate(store, resolve_oracle(oracle), config, progress=True,
                           notice=lambda m: click.echo(f"notice: {m}", err=True))
    click.echo(summary_line(summary, config.rater, calibrated=consistency is not None and noise is None))
    if summary["stopped"]:
        click.echo(f"stopped early: {summary['stopped']}", err=True)
    return summary


def _latest_run_name() -> str | None:
    from rlft.train.runs import latest_run

    run = latest_run()
    return None if run is None else run.name


def _pool_size() -> int:
    from prefs import open_store

    with open_store() as store:
        return store.count_images()
