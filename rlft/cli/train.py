"""`rlft train` (steer the model toward the reward with LoRA) and `rlft export-lora`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

# CLI flag -> dotted config field; only flags the user actually typed override the defaults (or a resumed run).
FLAG_FIELDS = {
    "algo": "algo", "epochs": "epochs", "samples_per_epoch": "sample.samples_per_epoch", "lora_rank": "lora.rank",
    "kl_weight": "kl_weight", "seed": "seed", "steps": "sample.steps", "guidance": "sample.guidance",
    "lr": "optim.learning_rate", "mixed_precision": "optim.mixed_precision",
    "gradient_checkpointing": "optim.gradient_checkpointing", "mix_top_rated": "rwr.mix_top_rated",
}
# Fields a resume may change without changing the result of the epochs already run.
RESUMABLE = ("epochs", "checkpoint_every")


@click.command("train")
@click.option("--reward", "reward_spec", default="latest", show_default=True, help="Reward version: latest, r0003, or a folder (ignored by dpo).")
@click.option("--model", "-m", "model", default=None, help="Model spec (default: toy).")
@click.option("--algo", type=click.Choice(["ddpo", "rwr", "dpo"]), default=None, help="Algorithm [default: ddpo].")
@click.option("--prompts", "prompts_source", default=None, help="Training prompts: a text file or a named set (ddpo, rwr).")
@click.option("--epochs", type=int, default=None, help="Sample-then-train rounds.")
@click.option("--samples-per-epoch", type=int, default=None, help="Images sampled per epoch.")
@click.option("--lora-rank", type=int, default=None, help="LoRA rank.")
@click.option("--kl-weight", type=float, default=None, help="Regulariser weight: ||eps - eps_base||^2 (guided for rwr; KL per DDIM step for ddpo).")
@click.option("--seed", type=int, default=None, help="Seed of the whole run.")
@click.option("--steps", type=int, default=None, help="DDIM steps when sampling.")
@click.option("--guidance", type=float, default=None, help="CFG scale when sampling and training.")
@click.option("--lr", type=float, default=None, help="Learning rate.")
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
          device, log_with, quiet):
    """Fine-tune the model toward your reward model (ddpo, rwr) or judgements (dpo) with LoRA.

    Writes a run folder (config.json, metrics.jsonl, samples/epoch_NNNN.png, checkpoint.pt, lora/,
    lora_kohya.safetensors) and points runs/latest at it; use it with `rlft generate --lora latest`.
    """
    from prefs.errors import UserError
    from rlft.train import runs, tracking

    log_with = tracking.check_trackers(log_with)  # before anything is written: a missing package is a one-line error
    # Under `accelerate launch` every process runs this command. The process state comes first, so that with several
    # processes each loads the pipeline and reward onto its own device (GPU k for process k) and notices print once;
    # the run folder, its config.json and the `latest` alias are the main process's to write, the others learn the
    # folder from it.
    state = _process_state(device)
    if device is None and state.num_processes > 1:
        device = str(state.device)

    def notice(message: str) -> None:
        if state.is_main_process:
            click.echo(f"notice: {message}", err=True)

    flags = {FLAG_FIELDS[k]: v for k, v in ctx.params.items() if k in FLAG_FIELDS and _given(ctx, k) and v is not None}
    file_values = _read_config_file(config_file) if config_file else {}

    if resume:
        if out_dir or config_file or model or prompts_source:
            raise UserError("--resume continues a run with its own model, prompts and config; drop --model/--prompts/--config/--out")
        run_dir = runs.resolve_run(resume)
        saved = runs.read_config(run_dir)
        config = _config_for_resume(saved, flags)
        provenance = saved["provenance"]
        model, prompts_source = provenance["model"], provenance.get("prompts_source")
        prompts = provenance.get("prompts", [])
        if config.algo != "dpo":  # the reward version the run trained on, not what `latest` means now
            reward_spec = _resumed_reward(provenance, reward_spec if _given(ctx, "reward_spec") else None, notice)
        if _given(ctx, "rater") and rater != provenance.get("rater"):
            raise UserError(f"cannot resume with a different --rater ({rater}; the run trains on "
                            f"{provenance.get('rater') or 'every rater'}'s judgements); start a new run")
        rater = provenance.get("rater")
        log_with = log_with or tracking.check_trackers(provenance.get("log_with", []))  # the run's trackers, unless told
        provenance["log_with"] = list(log_with)
    else:
        run_dir = None
        model = model or "toy"
        config = _build_config(model, file_values, flags)
        prompts = _load_prompts(prompts_source) if config.algo != "dpo" or prompts_source else []
        if config.algo != "dpo" and not prompts:
            raise UserError("no prompts given; pass --prompts FILE (one prompt a line) or a named set")

    from rlft.models.pipeline import resolve_model

    resolve_model(model)
    reward_info = {}
    if config.algo == "dpo":
        if _given(ctx, "reward_spec"):
            notice("dpo trains on the stored judgements directly; --reward is ignored")
    else:
        from rlft.train.rewards import check_compatible, reward_clip_spec

        version, clip_spec = reward_clip_spec(reward_spec)
        check_compatible(clip_spec, _image_size_of(model), model)
        reward_info = {"reward": version}

    # The training data from the store. A resumed run takes exactly what the run started from (judgements up to the
    # last one it saw, the same mixed-in images), so judging more in between does not change its result.
    judgements, extra, data_info = [], [], {}
    if config.algo == "dpo" or (config.algo == "rwr" and config.rwr.mix_top_rated):
        from prefs import open_store

        with open_store() as store:
            if config.algo == "dpo":
                through = provenance.get("judgements_through") if resume else None
                limit = None
                if resume and through is None:  # a run made before the last judgement's id was recorded
                    limit = provenance.get("judgements")
                    notice(f"this run did not record its last judgement; the resume takes the first {limit} decisive ones")
                judgements, last_id = load_judgements(store, rater, through=through, limit=limit)
                if resume and len(judgements) != provenance.get("judgements"):
                    raise UserError(f"cannot resume: the store holds {len(judgements)} of the {provenance.get('judgements')} "
                                    "judgements this run started from (some were undone or deleted); start a new run")
                data_info = {"judgements": len(judgements), "judgements_through": last_id}
            else:
                shas = provenance.get("mixed_image_sha256") if resume else None
                n_mix = config.rwr.mix_top_rated
                if resume and shas is None:  # a run made before the images were recorded: as many as it mixed in then
                    n_mix = min(n_mix, provenance.get("mixed_images", n_mix))
                    notice("this run did not record which rated images it mixed in; the resume takes the top-rated "
                           "ones as they stand now")
                extra, shas = (images_by_sha(store, shas), shas) if shas is not None else top_rated(store, n_mix)
                data_info = {"mixed_images": len(extra), "mixed_image_sha256": shas}
            if resume:
                provenance.update(data_info)  # a run from before these keys existed has them from now on

    from rlft.models.pipeline import load_pipeline, quiet_libraries

    quiet_libraries()
    pipe = load_pipeline(model, device=device, dtype="fp32" if device in (None, "cpu") and not _cuda() else None,
                         scheduler="ddim")
    reward_fn = heldout_fn = None
    if config.algo != "dpo":
        from rlft.train.rewards import load_rewards, model_image_size

        reward_fn, heldout_fn, reward_info = load_rewards(reward_spec, model_image_size(pipe), model,
                                                          config.heldout_member, device=pipe.device)
        if resume:  # where the version is now (a moved home), and its creation time if the run predates recording it
            provenance["reward_path"] = reward_info["reward_path"]
            provenance.setdefault("reward_created_at", reward_info["reward_created_at"])

    previous_latest = runs.latest_run() if run_dir is None else None  # before the new folder: where `latest` goes back
    if resume:
        if provenance.get("processes", state.num_processes) != state.num_processes:
            notice(f"this run started on {provenance['processes']} process(es) and resumes on {state.num_processes}: "
                   "each process samples its share, so the epochs from here differ from an uninterrupted run's")
        provenance["processes"] = state.num_processes
    if run_dir is None:
        provenance = {"model": model, "model_source": pipe.model_source.location, "prompts_source": prompts_source,
                      "prompts": prompts, "reward_spec": reward_spec, **reward_info, "rater": rater,
                      "judgements": len(judgements), "mixed_images": len(extra), **data_info, "log_with": list(log_with),
                      "processes": state.num_processes, "rlft_version": _version(), "created": _now()}

        def create():
            from prefs.atomic import write_json

            folder = _make_run_dir(out_dir)
            write_json(folder / runs.CONFIG_NAME, {"config": config.to_dict(), "provenance": provenance})
            runs.set_latest(folder)
            return str(folder)

        run_dir = Path(_main_process_only(state, create))
    else:
        resumed = run_dir

        def rewrite():
            _rewrite_config(resumed, config, provenance)
            runs.set_latest(resumed)

        _main_process_only(state, rewrite)

    from rlft.train.trainer import CHECKPOINT, Trainer

    def summary(m):
        parts = [f"epoch {m['epoch']}/{config.epochs}"]
        for key, label in (("reward_mean", "reward"), ("heldout_reward_mean", "held-out"), ("loss", "loss"),
                           ("implicit_acc", "acc"), ("clipfrac", "clip"), ("kl", "kl"), ("wall_s", "s")):
            if m.get(key) is not None:
                parts.append(f"{label} {m[key]:.4g}")
        click.echo("  ".join(parts), err=True)

    try:
        trainer = Trainer(pipe, config, prompts=prompts, reward_fn=reward_fn, heldout_fn=heldout_fn, judgements=judgements,
                          extra_images=extra, run_dir=run_dir, progress=not quiet, on_epoch=summary,
                          provenance=provenance, log_with=log_with)
        trainer.train(resume=bool(resume))
    except UserError:
        if not resume and not (run_dir / CHECKPOINT).exists() and state.is_main_process:
            runs.discard(run_dir, previous_latest)  # a new run refused before its first epoch: leave no trace
        raise
    if state.is_main_process:
        click.echo(f"run {run_dir.name} done: LoRA in {run_dir / 'lora'} (kohya: {run_dir / 'lora_kohya.safetensors'}); "
                   f"try `rlft generate --lora {run_dir.name} --prompts ...`")


def _main_process_only(state, fn):
    """`fn()` on the main process; every process returns its result or raises its UserError (so no process is
    left waiting for a folder that was refused)."""
    from prefs.errors import UserError

    result, error, failure = None, None, None
    if state.is_main_process:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - passed on to the other processes, then raised here as it was
            error, failure = (str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"), e
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        result, error = broadcast_object_list([result, error], from_process=0)
    if failure is not None:
        raise failure
    if error is not None:
        raise UserError(error)
    return result


def _given(ctx, name: str) -> bool:
    """Whether the user typed option `name` (not its default)."""
    return ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT


def _resumed_reward(provenance: dict, asked: str | None, notice) -> str:
    """The folder of the reward version a resumed run trained on (not what `latest` means now): its recorded folder,
    else a `--reward` typed on resume (a moved folder named again), else this home's version of the recorded id (a
    moved home); each only when its creation time is the recorded one. UserError when none is, or when `asked` names
    another version."""
    from prefs.errors import NotFoundError, UserError
    from reward import versions

    recorded = provenance.get("reward") or provenance.get("reward_spec", "latest")
    path, created = provenance.get("reward_path"), provenance.get("reward_created_at")

    def version(spec):
        try:
            folder = Path(versions.resolve(spec)).resolve()
        except NotFoundError:
            return None, None
        return folder, json.loads((folder / versions.META_NAME).read_text(encoding="utf-8")).get("created_at")

    asked_folder, asked_created = version(asked) if asked is not None else (None, None)
    # (folder, its creation time, trusted when the run recorded no time: its own folder or id, never a typed one)
    candidates = [(*version(path), True) if path and Path(path).is_dir() else (None, None, True),
                  (asked_folder, asked_created, False), (*version(recorded), True)]
    folder = next((f for f, c, own in candidates if f is not None and (c == created if created else own)), None)
    if folder is None:
        raise UserError(f"cannot resume: the reward version {recorded} this run trains on ({path or 'this home'}, "
                        f"created {created or 'at an unrecorded time'}) is not here; start a new run")
    if not created and path and folder != Path(path).resolve():
        notice(f"this run did not record its reward's creation time; it resumes on this home's {recorded}")
    if asked is not None and asked_folder != folder:
        raise UserError(f"cannot resume with a different --reward ({asked}; the run trains on {recorded}); "
                        "resume without --reward, or start a new run")
    return str(folder)


def _process_state(device: str | None):
    """accelerate's process state (one process, or one of `accelerate launch`'s); `--device cuda:N` on one process
    makes GPU N the current one (accelerate places models on the current GPU)."""
    from accelerate import PartialState

    from prefs.errors import UserError
    from rlft.models.device import default_device

    several = any(int(os.environ.get(k, "1")) > 1 for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
    if device and ":" in device:
        if several:
            raise UserError(f"--device {device} names one GPU, but under accelerate launch each process takes its own; "
                            "drop --device")
        import torch

        if device.startswith("cuda"):
            torch.cuda.set_device(device)
    return PartialState(cpu=(device or default_device()) == "cpu")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _version() -> str:
    from rlft import __version__

    return __version__


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _read_config_file(path) -> dict:
    from prefs.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no config file {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (ValueError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read config {path}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must hold a mapping of fields")
    return data.get("config", data)  # a run's config.json works as a config file too


def _is_toy_world(model: str) -> bool:
    return _image_size_of(model) == 64


def _image_size_of(model: str) -> int:
    """The model's image size from its UNet and VAE configs (no weights loaded); 512 when they cannot be read."""
    from rlft.models.pipeline import resolve_model

    source = resolve_model(model)
    unet, vae = (Path(source.location) / part / "config.json" for part in ("unet", "vae"))
    if source.kind in ("builtin", "folder") and unet.is_file() and vae.is_file():
        levels = len(json.loads(vae.read_text())["block_out_channels"])
        return int(json.loads(unet.read_text())["sample_size"]) * 2 ** (levels - 1)
    return 512


def _build_config(model: str, file_values: dict, flags: dict):
    from rlft.train.config import TrainConfig, from_dict

    algo = flags.get("algo") or file_values.get("algo") or TrainConfig.algo
    base = TrainConfig.toy(algo=algo) if _is_toy_world(model) else TrainConfig.sd()
    return from_dict(flags, base=from_dict(file_values, base=base))


def _config_for_resume(saved: dict, flags: dict):
    from prefs.errors import UserError
    from rlft.train.config import diff, from_dict, from_saved

    old = from_saved(saved["config"])
    new = from_dict(flags, base=old)
    changed = diff(old, new, ignore=RESUMABLE)
    if changed:
        raise UserError(f"cannot resume with a different config ({'; '.join(changed)}); resume without those flags, "
                        "or start a new run")
    return new


def _rewrite_config(run_dir: Path, config, provenance: dict) -> None:
    from prefs.atomic import write_json
    from rlft.train import runs

    data = runs.read_config(run_dir)
    data["config"], data["provenance"] = config.to_dict(), provenance
    write_json(run_dir / runs.CONFIG_NAME, data)


def _load_prompts(source):
    from prefs.errors import UserError

    if not source:
        return []
    from rlft.prompts import load_prompts

    prompts = [p.strip() for p in load_prompts(source)]
    if not any(prompts):
        raise UserError(f"the prompt set {source} is empty")
    return [p for p in prompts if p]


def _make_run_dir(out_dir) -> Path:
    from prefs.errors import UserError
    from rlft.train import runs

    if out_dir is None:
        return runs.new_run_dir()
    path = Path(out_dir)
    if path.is_dir() and any(path.iterdir()):
        raise UserError(f"--out {path} is not empty; give a new folder (or --resume it)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {path}: cannot make the run folder ({e.strerror or e})") from None
    return path


def load_judgements(store, rater: str | None = None, through: int | None = None,
                    limit: int | None = None) -> tuple[list, int]:
    """(winner PIL, loser PIL, winner's prompt, loser's prompt) for every decisive judgement (ties, skips and
    both-bad are left out), with the id of the last one; a resumed run's stop at judgement id `through`, or after
    the first `limit`."""
    from PIL import Image

    from prefs.errors import UserError

    out = []
    cache = {}

    def img(sha):
        if sha not in cache:
            row = store.get_image(sha)
            with Image.open(store.image_path(row)) as im:
                cache[sha] = (im.convert("RGB"), row.prompt or "")
        return cache[sha]

    last = 0
    for j in store.judgements(rater=rater):
        if (through is not None and j.id > through) or (limit is not None and len(out) >= limit):
            break
        if j.outcome not in ("a", "b"):
            continue
        win, lose = (j.image_a, j.image_b) if j.outcome == "a" else (j.image_b, j.image_a)
        (wi, wp), (li, lp) = img(win), img(lose)
        out.append((wi, li, wp, lp))
        last = j.id
    if not out:
        who = f" by {rater}" if rater else ""
        raise UserError(f"no decisive judgements{who} to train dpo on; rate some pairs first (`rlft ui` or `rlft simulate`)")
    return out, last


def top_rated(store, n: int) -> tuple[list, list[str]]:
    """The `n` pool images with the highest Bradley-Terry scores, as (PIL, caption), and their sha256s."""
    scores = store.fit_scores()
    best = sorted(scores, key=scores.get, reverse=True)[:n]
    return images_by_sha(store, best), best


def images_by_sha(store, shas: list[str]) -> list:
    """(PIL, caption) of pool images by sha256; UserError when one is gone."""
    from PIL import Image

    from prefs.errors import NotFoundError, UserError

    out = []
    for sha in shas:
        try:
            row = store.get_image(sha)
            with Image.open(store.image_path(row)) as im:
                out.append((im.convert("RGB"), row.prompt or ""))
        except (NotFoundError, OSError):
            raise UserError(f"pool image {sha[:12]}, to be mixed in (--mix-top-rated), is gone or unreadable; rate "
                            "others, or start a new run without it") from None
    return out


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
    if fmt == "diffusers":
        path = lora_io.save_diffusers(state["lora"], config.lora, out)
    else:
        path = Path(out)
        if path.suffix != ".safetensors":
            path = path / f"{run_dir.name}.safetensors" if path.is_dir() else path.with_suffix(".safetensors")
        lora_io.save_kohya(state["lora"], config.lora, path, {"rlft_run": run_dir.name, "rlft_epoch": str(state["epoch"])})
    click.echo(f"wrote {path}")
