"""`rlft train` (steer the model toward the reward with LoRA) and `rlft export-lora`."""

from __future__ import annotations

from pathlib import Path

import click

from rlft.cli.params import FINITE_FLOAT

# CLI flag -> dotted config field; only flags the user typed (all default to None) override the config file's
# values and the model's defaults, or a resumed run's config.
FLAG_FIELDS = {
    "algo": "algo", "epochs": "epochs", "samples_per_epoch": "sample.samples_per_epoch", "lora_rank": "lora.rank",
    "kl_weight": "kl_weight", "seed": "seed", "steps": "sample.steps", "guidance": "sample.guidance",
    "lr": "optim.learning_rate", "mixed_precision": "optim.mixed_precision",
    "gradient_checkpointing": "optim.gradient_checkpointing", "mix_top_rated": "rwr.mix_top_rated",
}


@click.command("train")
@click.option("--reward", "reward_spec", default="latest", show_default=True,
              help="Reward: a version (latest, r0003, a folder), a built-in (pickscore, hpsv2, laion-aesthetic, clipscore, "
                   "jpeg-compressibility, ...; NAME=PATH for local weights) or a weighted sum ('latest + 0.3 * pickscore', "
                   "each term normalised per prompt); ignored by dpo.")
@click.option("--judge", "judges", multiple=True, metavar="REWARD",
              help="A reward not trained on (any --reward form) that scores each epoch's sample grid: judge/NAME in "
                   "metrics.jsonl, the trackers and samples/grid.json; repeatable.")
@click.option("--model", "-m", "model", default=None, help="Model spec (default: toy).")
@click.option("--algo", type=click.Choice(["ddpo", "rwr", "dpo", "grpo"]), default=None, help="Algorithm: ddpo, rwr, dpo (SD 1.x, SDXL), grpo (SD3, FLUX) [default: ddpo; SD3, FLUX: grpo].")
@click.option("--prompts", "prompts_source", default=None, help="Training prompts: a text file or a named set (ddpo, rwr).")
@click.option("--epochs", type=int, default=None, help="Sample-then-train rounds.")
@click.option("--samples-per-epoch", type=int, default=None, help="Images sampled per epoch.")
@click.option("--lora-rank", type=int, default=None, help="LoRA rank.")
@click.option("--kl-weight", type=FINITE_FLOAT, default=None, help="Regulariser weight: ||eps - eps_base||^2 (guided for rwr; KL per DDIM step for ddpo).")
@click.option("--seed", type=int, default=None, help="Seed of the whole run.")
@click.option("--steps", type=int, default=None, help="DDIM steps when sampling.")
@click.option("--guidance", type=FINITE_FLOAT, default=None, help="CFG scale when sampling and training.")
@click.option("--lr", type=FINITE_FLOAT, default=None, help="Learning rate.")
@click.option("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), default=None, help="GPU mixed precision.")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None, help="UNet gradient checkpointing.")
@click.option("--mix-top-rated", type=int, default=None, help="rwr: mix in this many top-rated pool images per epoch.")
@click.option("--rater", default=None, help="dpo: only this rater's judgements.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Run folder [default: <home>/runs/tNNNN].")
@click.option("--resume", default=None, help="Continue a run: latest, a run id or folder.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="A JSON or TOML config (nested sections; flags override it).")
@click.option("--device", default=None, help="cuda, cpu, ... (default: the best available).")
@click.option("--log-with", "log_with", multiple=True, metavar="TRACKER",
              help="Also log each epoch's metrics and sample grid to an experiment tracker through accelerate: "
                   "tensorboard (under the run's logs/), wandb, mlflow, ...; repeatable.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def train(ctx, reward_spec, model, algo, prompts_source, epochs, samples_per_epoch, lora_rank, kl_weight, seed, steps,
          guidance, lr, mixed_precision, gradient_checkpointing, mix_top_rated, rater, out_dir, resume, config_file,
          device, log_with, quiet, judges):
    """Fine-tune the model toward your reward model (ddpo, rwr) or judgements (dpo) with LoRA.

    Writes a run folder (config.json, metrics.jsonl, samples/epoch_NNNN.png, checkpoint.pt, lora/,
    lora_kohya.safetensors) and points runs/latest at it; use it with `rlft generate --lora latest`.
    """
    from prefs.errors import UserError
    from rlft.train import session, tracking
    from rlft.train.configure import build_config, read_config_file

    log_with = tracking.check_trackers(log_with)  # before anything is written: a missing package is a one-line error
    flags = {FLAG_FIELDS[k]: v for k, v in ctx.params.items() if k in FLAG_FIELDS and v is not None}
    file_values = read_config_file(config_file) if config_file else {}
    reward = reward_spec if _given(ctx, "reward_spec") else None
    common = {"reward": reward, "rater": rater, "device": device, "log_with": log_with, "progress": not quiet,
              "judges": judges,
              "report": lambda line: click.echo(line, err=True),
              "notice": lambda message: click.echo(f"notice: {message}", err=True)}
    if resume:
        if out_dir or config_file or model or prompts_source:
            raise UserError("--resume continues a run with its own model, prompts and config; "
                            "drop --model/--prompts/--config/--out")
        done = session.resume_run(resume, overrides=flags, **common)
    else:
        model = model or "toy"
        config = build_config(model, file_values, flags)
        done = session.start_run(config, model=model, prompts_source=prompts_source, out_dir=out_dir, **common)
    if done.main_process:
        click.echo(session.done_message(done.run_dir))


def _given(ctx, name: str) -> bool:
    """Whether the user typed option `name` (not its default)."""
    return ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT


@click.command("export-lora")
@click.argument("run", default="latest")
@click.option("--format", "fmt", type=click.Choice(["diffusers", "kohya"]), default="diffusers", show_default=True)
@click.option("--out", "out", type=click.Path(), default=None, help="Where to write (default: print the run's own export).")
def export_lora(run, fmt, out):
    """Export a run's LoRA: a diffusers folder or one kohya/A1111 .safetensors."""
    import torch

    from prefs.errors import UserError
    from rlft.train import lora as lora_io
    from rlft.train import runs
    from rlft.train.config import from_saved

    run_dir = runs.resolve_run(run)
    if out is None:
        click.echo(str(runs.lora_file(run_dir, fmt)))
        return
    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.is_file():
        raise UserError(f"run {run_dir.name} has no checkpoint yet; nothing to export")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    config = from_saved(state["config"])
    # the model family the LoRA fits (SDXL's layouts differ): the checkpoint's, else the run's record; a run from
    # before either was recorded is SD 1.x, which `lora_family` tells from the adapters themselves
    family = state.get("family") or runs.read_config(run_dir).get("provenance", {}).get("family")
    if fmt == "diffusers":
        path = lora_io.save_diffusers(state["lora"], config.lora, out, family=family)
    else:
        path = Path(out)
        if path.suffix != ".safetensors":
            path = path / f"{run_dir.name}.safetensors" if path.is_dir() else path.with_suffix(".safetensors")
        lora_io.save_kohya(state["lora"], config.lora, path, {"rlft_run": run_dir.name, "rlft_epoch": str(state["epoch"])},
                           family=family)
    click.echo(f"wrote {path}")
