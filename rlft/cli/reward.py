"""`rlft reward train|list|show|score`: fit, inspect and apply the reward model (the library is `reward`)."""

from __future__ import annotations

import json

import click

from rlft.cli.params import FINITE_FLOAT


@click.group()
def reward() -> None:
    """Learn your taste from your judgements: a CLIP-based Bradley-Terry reward model, versioned r0001, r0002, ..."""


@reward.command("train")
@click.option("--clip", "clip", default="toy", show_default=True, help="CLIP for embeddings: toy, a folder, ARCH/TAG (ViT-L-14/openai for SD 1.x), hf-hub:...")
@click.option("--head", type=click.Choice(["mlp", "linear", "patch"]), default=None,
              help="Reward head: mlp or linear on the pooled CLIP embedding, or patch (attention pooling over the patch "
                   "tokens with their grid positions: where and how big). Default: mlp; with --prior VERSION or a "
                   "built-in, linear (the personal part).")
@click.option("--ensemble", type=int, default=5, show_default=True, help="Heads on bootstrap resamples (uncertainty for active learning).")
@click.option("--val-frac", type=FINITE_FLOAT, default=0.2, show_default=True, help="Share of judgements held out for the metrics.")
@click.option("--split", type=click.Choice(["random", "time", "image"]), default="random", show_default=True,
              help="Hold out a seeded random share of judgements, the newest, or every judgement of a random share of images (accuracy on unseen images).")
@click.option("--prior", default=None,
              help="Start from a prior and learn the difference: a reward version (latest, r0003, a folder: another "
                   "person's or a team's), pickscore, hpsv2 or laion-aesthetic (reward = w * prior + personal); or "
                   "laion:PATH to fine-tune a LAION aesthetic head file (ViT-L/14 embeddings).")
@click.option("--prior-weight", type=FINITE_FLOAT, default=None,
              help="Fix the prior's weight w (default: learnt from the judgements).")
@click.option("--prompt-conditioned", is_flag=True, help="Condition the reward on the prompt's text embedding.")
@click.option("--ties", type=click.Choice(["half", "rao-kupper"]), default="half", show_default=True, help="Ties as half wins, or a Rao-Kupper tie parameter.")
@click.option("--l2", type=FINITE_FLOAT, default=None,
              help="Prior precision on head weights (more: smoother reward). Default: 1; with --prior VERSION or a "
                   "built-in, 10 (the personal part stays nearer 0).")
@click.option("--steps", type=int, default=200, show_default=True, help="Full-batch optimiser steps.")
@click.option("--rater", default=None, help="Only this rater's judgements (default: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tune", type=click.Choice(["none", "heads", "lora", "blocks"]), default="none", show_default=True,
              help="none: frozen CLIP tower, heads fitted full-batch on cached embeddings (seconds); heads: frozen tower, "
                   "heads trained in mini-batches with early stopping on the held-out judgements; lora, blocks: the tower "
                   "tuned with them (LoRA adapters, or its last --blocks blocks; minutes). Use --split image with these.")
@click.option("--lora-rank", type=int, default=8, show_default=True, help="LoRA rank (--tune lora).")
@click.option("--blocks", type=int, default=2, show_default=True, help="Last residual blocks tuned (--tune blocks).")
@click.option("--epochs", type=int, default=30, show_default=True, help="Tuning passes over the judgements, at most.")
@click.option("--patience", type=int, default=4, show_default=True,
              help="Stop tuning after this many epochs without a lower validation loss (0: never early).")
@click.option("--weight-decay", type=FINITE_FLOAT, default=0.1, show_default=True,
              help="Decay of the tuned tower weights toward the frozen ones, per unit step size.")
@click.option("--tower-lr", type=FINITE_FLOAT, default=1e-4, show_default=True, help="Step size of the tuned tower weights.")
@click.option("--json", "as_json", is_flag=True, help="Print the new version's metadata as JSON.")
def train_cmd(clip, head, ensemble, val_frac, split, prior, prior_weight, prompt_conditioned, ties, l2, steps, rater, seed, tune,
              lora_rank, blocks, epochs, patience, weight_decay, tower_lr, as_json):
    """Fit a reward on the stored judgements and save it as the next version (then `latest`)."""
    from prefs import open_store
    from reward.fit import FitConfig
    from reward.training import RewardTrainConfig, fit_defaults, metrics_table, train
    from reward.tune import TuneConfig
    from reward.versions import resolve

    given = {k: v for k, v in (("head", head), ("l2", l2)) if v is not None}
    config = RewardTrainConfig(clip=clip, fit=FitConfig(**{**fit_defaults(prior), **given}, ensemble=ensemble,
                                                        prompt=prompt_conditioned, ties=ties, steps=steps),
                               val_frac=val_frac, split=split, prior=prior, prior_weight=prior_weight, rater=rater,
                               seed=seed,
                               tune=TuneConfig(mode=tune, lora_rank=lora_rank, blocks=blocks, epochs=epochs,
                                               patience=patience, weight_decay=weight_decay, tower_lr=tower_lr))
    with open_store() as store:
        result = train(store, config, progress=not as_json, notice=lambda m: click.echo(f"notice: {m}", err=True))
    if as_json:
        click.echo(json.dumps(_meta(resolve(result.path)), default=str))
        return
    click.echo(f"{result.version}: {result.n_judgements} judgements ({result.metrics['n_train']} train, "
               f"{result.metrics['n_val']} held out), saved to {result.path}")
    prior = (result.model.metadata or {}).get("prior")
    if prior:
        click.echo(_prior_line(prior))
    if result.metrics["n_val"]:
        click.echo(metrics_table(result.metrics))


def _prior_line(prior: dict) -> str:
    w = prior["weight"]
    what = f"{prior['id']} ({prior['created_at']})" if prior["kind"] == "version" else prior["spec"]
    return f"prior {what}, weight {w['mean']:.3f} ({w['mode']}" + (f" from {w['start']:.3g})" if w["mode"] == "learnt" else ")")


def _meta(folder) -> dict:
    meta = json.loads((folder / "reward.json").read_text())
    meta["path"] = str(folder)
    return meta


@reward.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON list, newest last.")
def list_cmd(as_json):
    """The saved reward versions, newest last."""
    from reward.versions import list_versions

    versions = list_versions()
    if as_json:
        click.echo(json.dumps(versions, default=str))
        return
    if not versions:
        click.echo("no reward versions yet: run `rlft reward train`")
        return
    for v in versions:
        acc = (v.get("metrics") or {}).get("val_accuracy")
        acc_text = "n/a" if acc is None else f"{acc:.3f}"
        mode = (v.get("tower") or {}).get("mode", "none")
        tower = "" if mode == "none" else f" tuned {mode}"
        prior = f"  prior {v['prior'].get('id') or v['prior']['spec']}" if v.get("prior") else ""
        click.echo(f"{v['id']}  {v['created_at']}  {v['n_judgements']:>6} judgements  val accuracy {acc_text}  "
                   f"{v['config']['head']} x{len(v['heads'])}  clip {v['clip_spec']}{tower}{prior}")


@reward.command("show")
@click.argument("version", default="latest")
@click.option("--json", "as_json", is_flag=True)
def show_cmd(version, as_json):
    """One version's provenance, settings and held-out metrics (VERSION: latest, r0003, or a folder)."""
    from reward.training import metrics_table
    from reward.versions import resolve

    meta = _meta(resolve(version))
    if as_json:
        click.echo(json.dumps(meta, indent=2, default=str))
        return
    cfg = meta["config"]
    click.echo(f"{meta['id']}  created {meta['created_at']}  at {meta['path']}")
    click.echo(f"clip {meta['clip_spec']} ({meta['embed_dim']}-d), head {cfg['head']} x{len(meta['heads'])}, "
               f"ties {meta['tie_model']}, prompt-conditioned {cfg['fit']['prompt']}, prior {cfg['prior']}")
    click.echo(f"{meta['n_judgements']} judgements over {meta['n_images']} images; split {cfg['split']} "
               f"{cfg['val_frac']:.0%} held out, seed {cfg['seed']}")
    if meta.get("prior"):
        click.echo(_prior_line(meta["prior"]))
    tower = meta.get("tower") or {}
    if tower.get("mode", "none") != "none":
        what = f"LoRA rank {tower['lora_rank']}" if tower["mode"] == "lora" else f"last {tower['blocks']} block(s)"
        fit = tower.get("fit") or {}
        stop = (f", best epoch {fit['best_epoch']} of {fit['epochs_run']}" + (" (stopped early)" if fit.get("stopped_early") else "")
                if fit.get("best_epoch") else f", {fit.get('epochs_run')} epochs")
        click.echo(f"tower tuned: {what}, {tower['trainable_params']:,} weights in {tower['file']}{stop}")
    if meta["metrics"].get("n_val"):
        click.echo(metrics_table(meta["metrics"]))
    else:
        click.echo(f"no held-out metrics (0 judgements held out at --val-frac {cfg['val_frac']:g})")


@reward.command("score")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--reward", "spec", default="latest", show_default=True,
              help="latest, a version id, a folder, or a built-in (pickscore, hpsv2, laion-aesthetic, clipscore, "
                   "jpeg-compressibility, ...; NAME=PATH for local weights).")
@click.option("--prompt", default=None, help="The prompt (for prompt-conditioned rewards and pickscore, hpsv2, clipscore).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image: path, score, std.")
def score_cmd(images, spec, prompt, as_json):
    """Score image files with a reward version or a built-in reward (higher: better by it)."""
    import os

    from PIL import Image, UnidentifiedImageError

    from prefs.errors import UserError
    from reward.builtins import is_builtin, load_builtin
    from reward.model import load

    builtin = load_builtin(spec) if is_builtin(spec) else None
    model = load(spec) if builtin is None else None
    pil = []
    for path in images:
        if not os.path.isfile(path):
            raise UserError(f"no image file {path}")
        try:
            with Image.open(path) as im:
                pil.append(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"cannot read {path} as an image: {e}") from None
    import torch

    if builtin is not None:
        with torch.no_grad():  # one image at a time: files may differ in size
            scores = [float(builtin.score([im], [prompt or ""])[0]) for im in pil]
        for path, s in zip(images, scores, strict=True):
            click.echo(json.dumps({"path": path, "score": s, "std": None, "reward": builtin.name}) if as_json
                       else f"{s:+.4g}  {path}")
        return
    with torch.no_grad():
        member = model.members_of(pil, prompt)
    mean = member.mean(0)
    std = member.std(0, unbiased=False) if len(member) > 1 else torch.zeros_like(mean)
    for path, s, sd in zip(images, mean.tolist(), std.tolist(), strict=False):
        if as_json:
            click.echo(json.dumps({"path": path, "score": s, "std": sd, "reward": model.version}))
        else:
            click.echo(f"{s:+.3f} ± {sd:.3f}  {path}")
