"""Start, resume and record a training run: what `rlft train` does, and `rlft loop`, the benchmarks and tests too.

    config = build_config("toy", read_config_file("tiny.toml"), {"algo": "rwr"})   # rlft.train.configure
    run = start_run(config, model="toy", prompts_source="toy", reward="latest")    # a new run folder tNNNN
    resume_run(run.run_dir, overrides={"epochs": 120})                             # continue it, exactly

`start_run` resolves everything a run needs once (the model, its prompts, the reward version, the store's
judgements or images), records it in the run folder's `config.json` (the config and its provenance), points
`runs/latest` at the folder and trains; a run refused before its first epoch leaves no trace. `resume_run`
continues a run on what it recorded: its model, prompts, config, reward version and training data, so a
resumed run ends where an uninterrupted one does. Both work under `accelerate launch` (`rlft.train.processes`).
Errors for bad input are `UserError`s.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prefs.errors import UserError
from reward.versions import RewardRef
from rlft.train import runs
from rlft.train.config import TrainConfig
from rlft.train.configure import check_trainable, family_of, image_size_of
from rlft.train.data import training_data
from rlft.train.processes import finish_processes, main_process_only, process_state
from rlft.train.rewards import RewardMix

Notice = Callable[[str], None]
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedRun:
    """A finished `start_run` / `resume_run`: its folder, and whether this process is the one that reports it
    (under `accelerate launch` every process returns one)."""

    run_dir: Path
    main_process: bool = True


@dataclass
class _Plan:
    """What a run trains on, resolved before the (slow) pipeline loads."""

    config: TrainConfig
    model: str
    prompts: list[str]
    reward: RewardRef | RewardMix | None  # None for dpo
    image_size: int
    log_with: list[str]
    provenance: dict  # a resumed run's, updated as it goes; a new run's is written with its folder
    data: tuple[list, list, dict] = field(default_factory=lambda: ([], [], {}))  # judgements, images, their record
    family: str | None = None  # the model's family as its files say (None: a hub model not yet downloaded)
    judges: list = field(default_factory=list)  # resolved rewards (RewardRef / RewardMix) that score the grid only


def start_run(config: TrainConfig, *, model: str = "toy", prompts_source: str | None = None,
              reward: str | os.PathLike | RewardRef | RewardMix | None = None, rater: str | None = None,
              out_dir: str | os.PathLike | None = None, device: str | None = None, log_with=(), progress: bool = False,
              on_epoch: Callable[[dict], None] | None = None, report: Notice | None = None,
              notice: Notice | None = None, judges=()) -> TrainedRun:
    """Start a new run of `config` (a `TrainConfig`, e.g. from `build_config`) on `model` and train it.

    prompts_source: a prompt file or named set (ddpo, rwr; optional for dpo). reward: the reward (`latest` when
    None; a version, a built-in or a weighted sum: `rlft.train.rewards`), resolved and checked once; dpo ignores it
    (with a notice). judges: rewards (the same forms) never trained on that score each epoch's sample grid
    (`judge/NAME` in the metrics). rater: dpo trains on this rater's judgements only. out_dir: the run folder
    (default: the home's next `tNNNN`).
    device: cuda, cpu, ... (default: the best available). log_with: experiment trackers. progress: a progress
    bar on stderr. on_epoch: called with each epoch's metrics; report: with each epoch's one-line summary
    (`epoch_summary`); notice: with each notice (default: logged as warnings).
    """
    from rlft.train import tracking
    from rlft.train.rewards import resolve_reward

    log_with = tracking.check_trackers(log_with)
    state, device = process_state(device)
    say = _notices(state, notice)
    prompts = training_prompts(prompts_source) if config.algo != "dpo" or prompts_source else []
    if config.algo != "dpo" and not prompts:
        raise UserError("no prompts given; pass --prompts FILE (one prompt a line) or a named set")
    size, family = image_size_of(model), family_of(model)
    check_trainable(family, model, config.algo)
    ref = None
    if config.algo == "dpo":
        if reward is not None:
            say("dpo trains on the stored judgements directly; --reward is ignored")
    else:
        ref = resolve_reward("latest" if reward is None else reward, size, model, family)
    plan = _Plan(config, model, prompts, ref, size, log_with, {}, training_data(config, rater, None, say), family,
                 resolve_judges(judges, size, model, family))
    pipe, rewards = _load(plan, device)
    previous_latest = runs.latest_run()  # before the new folder: where `latest` goes back if the run is refused
    plan.provenance = _new_provenance(plan, pipe, prompts_source, _spec_text(reward), rater, rewards[2],
                                      state.num_processes)
    plan.provenance["judges"] = rewards[4]
    run_dir = Path(main_process_only(state, lambda: str(_create(out_dir, config, plan.provenance))))
    try:
        _fit(plan, pipe, rewards, run_dir, resume=False, progress=progress, on_epoch=_epoch_hook(plan, on_epoch, report))
    except UserError:
        from rlft.train.trainer import CHECKPOINT

        if not (run_dir / CHECKPOINT).exists() and state.is_main_process:
            runs.discard(run_dir, previous_latest)  # refused before its first epoch: leave no trace
        raise
    finish_processes(state)
    return TrainedRun(run_dir, state.is_main_process)


def resume_run(run: str | os.PathLike, *, overrides: dict | None = None, reward: str | None = None,
               rater: str | None = None, device: str | None = None, log_with=(), progress: bool = False,
               on_epoch: Callable[[dict], None] | None = None, report: Notice | None = None,
               notice: Notice | None = None, judges=()) -> TrainedRun:
    """Continue run `run` (`latest`, a run id or folder) from its last checkpoint, on its own model, prompts,
    config, reward version and training data.

    overrides: config fields to change, as dotted keys (only `RESUMABLE` ones: more epochs, say). reward: the
    run's reward named again (a moved folder); another reward is a UserError, as is a `rater` other than the
    run's. log_with: trackers (default: the run's own). judges: replace the run's judges (default: its own).
    The rest as for `start_run`.
    """
    from rlft.train import tracking
    from rlft.train.configure import config_for_resume
    from rlft.train.rewards import check_reward, resumed_spec

    log_with = tracking.check_trackers(log_with)
    state, device = process_state(device)
    say = _notices(state, notice)
    run_dir = runs.resolve_run(run)
    saved = runs.read_config(run_dir)
    config = config_for_resume(saved, overrides)
    provenance = saved["provenance"]
    model = provenance["model"]
    ref = resumed_spec(provenance, reward, say) if config.algo != "dpo" else None
    if rater is not None and rater != provenance.get("rater"):
        raise UserError(f"cannot resume with a different --rater ({rater}; the run trains on "
                        f"{provenance.get('rater') or 'every rater'}'s judgements); start a new run")
    provenance["log_with"] = log_with = log_with or tracking.check_trackers(provenance.get("log_with", []))
    size, family = image_size_of(model), family_of(model)
    check_trainable(family, model, config.algo)
    if ref is not None:
        check_reward(ref, size, model, family)
    elif reward is not None:
        say("dpo trains on the stored judgements directly; --reward is ignored")
    data = training_data(config, provenance.get("rater"), provenance, say)
    provenance.update(data[2])  # a run from before these keys existed has them from now on
    if judges:
        judged = resolve_judges(judges, size, model, family)
    else:
        judged = [resumed_spec(j, None, say) for j in provenance.get("judges", [])]
        for j in judged:
            check_reward(j, size, model, family)
    plan = _Plan(config, model, provenance.get("prompts", []), ref, size, list(log_with), provenance, data, family,
                 judged)
    pipe, rewards = _load(plan, device)
    _record_resumed(plan, rewards[2], state.num_processes, say)
    provenance["judges"] = rewards[4]
    main_process_only(state, lambda: record_run(run_dir, config, provenance, set_latest=True))
    _fit(plan, pipe, rewards, run_dir, resume=True, progress=progress, on_epoch=_epoch_hook(plan, on_epoch, report))
    finish_processes(state)
    return TrainedRun(run_dir, state.is_main_process)


def record_run(run_dir: Path, config: TrainConfig, provenance: dict, set_latest: bool = False) -> None:
    """Write the run's `config.json` (its config and provenance) atomically, keeping any other keys it holds;
    with `set_latest`, point `runs/latest` at it."""
    from prefs.atomic import write_json

    path = Path(run_dir) / runs.CONFIG_NAME
    data = runs.read_config(Path(run_dir)) if path.is_file() else {}
    data["config"], data["provenance"] = config.to_dict(), provenance
    write_json(path, data)
    if set_latest:
        runs.set_latest(Path(run_dir))


def training_prompts(source: str | None) -> list[str]:
    """The prompts of a prompt file or named set, stripped, blank lines dropped; UserError when none is left."""
    if not source:
        return []
    from rlft.prompts import load_prompts

    prompts = [p.strip() for p in load_prompts(source)]
    if not any(prompts):
        raise UserError(f"the prompt set {source} is empty")
    return [p for p in prompts if p]


def make_run_dir(out_dir: str | os.PathLike | None = None) -> Path:
    """A new, empty run folder: `out_dir`, or the home's next `tNNNN`; UserError when `out_dir` holds files."""
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


def epoch_summary(metrics: dict, epochs: int) -> str:
    """One line for an epoch's metrics: `epoch 3/60  reward 0.41  held-out 0.38  judge/hpsv2 0.27  loss ...  s 12.1`
    (a weighted sum's terms, `reward/TERM`, in place of its normalised total)."""
    parts = [f"epoch {metrics['epoch']}/{epochs}"]
    terms = [(k, k) for k in metrics if k.startswith("reward/")]  # a weighted sum's terms (its total is normalised)
    judges = [(k, k) for k in metrics if k.startswith("judge/")]
    rewards = terms or [("reward_mean", "reward")]
    for key, label in (*rewards, ("heldout_reward_mean", "held-out"), *judges, ("loss", "loss"),
                       ("implicit_acc", "acc"), ("clipfrac", "clip"), ("kl", "kl"), ("wall_s", "s")):
        if metrics.get(key) is not None:
            parts.append(f"{label} {metrics[key]:.4g}")
    return "  ".join(parts)


def done_message(run_dir: Path) -> str:
    """What to tell the user when a run finished: where its LoRA is and how to use it."""
    return (f"run {run_dir.name} done: LoRA in {run_dir / 'lora'} (kohya: {run_dir / 'lora_kohya.safetensors'}); "
            f"try `rlft generate --lora {run_dir.name} --prompts ...`")


def _epoch_hook(plan: _Plan, on_epoch, report: Notice | None):
    """The trainer's per-epoch callback: `on_epoch(metrics)`, then `report(epoch_summary(...))`."""
    if report is None:
        return on_epoch

    def hook(metrics: dict) -> None:
        if on_epoch is not None:
            on_epoch(metrics)
        report(epoch_summary(metrics, plan.config.epochs))

    return hook


def _notices(state, notice: Notice | None) -> Notice:
    """Notices from the main process only (the others would repeat them)."""
    say = notice or _log.warning
    return say if state.is_main_process else (lambda message: None)


def _spec_text(reward) -> str:
    if reward is None:
        return "latest"
    return getattr(reward, "version", None) or getattr(reward, "text", None) or os.fspath(reward)


def resolve_judges(specs, image_size: int, model: str, family: str | None) -> list:
    """Each judge spec resolved and checked as `--reward` is (`resolve_reward`); UserError for two of one name."""
    from rlft.train.rewards import resolve_reward, reward_label

    judges = [resolve_reward(s, image_size, model, family) for s in dict.fromkeys(str(s) for s in specs)]
    labels = [reward_label(j) for j in judges]
    for label in labels:
        if labels.count(label) > 1:
            raise UserError(f"two judges are both called {label}; give each judge once")
    return judges


def _load(plan: _Plan, device: str | None):
    """(the pipeline, (reward fn, held-out fn, reward record, {judge name: fn}, judge records)) on `device`; the
    reward and judges `plan` resolved, nothing looked up again."""
    import torch

    from rlft.models.families import family_of_pipeline
    from rlft.models.pipeline import load_pipeline, quiet_libraries
    from rlft.train.rewards import check_reward, load_judge, load_rewards, model_image_size, reward_label

    quiet_libraries()
    cpu = device in (None, "cpu") and not torch.cuda.is_available()
    # the UNet families sample with DDIM; the flow ones (grpo) with their own schedule
    scheduler = None if plan.config.algo == "grpo" else "ddim"
    pipe = load_pipeline(plan.model, device=device, dtype="fp32" if cpu else None, scheduler=scheduler)
    family = family_of_pipeline(pipe).name
    if model_image_size(pipe) != plan.image_size or family != plan.family:  # a hub model its files did not tell
        for r in ([plan.reward] if plan.reward is not None else []) + plan.judges:
            check_reward(r, model_image_size(pipe), plan.model, family)
    judges, records = {}, []
    for j in plan.judges:
        fn, info = load_judge(j, device=pipe.device)
        judges[reward_label(j)] = fn
        records.append({"label": reward_label(j), **info})
    if plan.reward is None:
        return pipe, (None, None, {}, judges, records)
    return pipe, (*load_rewards(plan.reward, plan.config.heldout_member, device=pipe.device), judges, records)


def _new_provenance(plan: _Plan, pipe, prompts_source, reward_spec: str, rater, reward_info: dict,
                    processes: int) -> dict:
    judgements, extra, data_info = plan.data
    from rlft.models.families import family_of_pipeline

    return {"model": plan.model, "model_source": pipe.model_source.location,
            "family": family_of_pipeline(pipe).name, "prompts_source": prompts_source,
            "prompts": plan.prompts, "reward_spec": reward_spec, **reward_info, "rater": rater,
            "judgements": len(judgements), "mixed_images": len(extra), **data_info, "log_with": list(plan.log_with),
            "processes": processes, "rlft_version": _version(), "created": _now()}


def _record_resumed(plan: _Plan, reward_info: dict, processes: int, say: Notice) -> None:
    provenance = plan.provenance
    if "reward_terms" in reward_info:  # where each version is now, the built-ins as loaded now
        provenance["reward_terms"] = reward_info["reward_terms"]
    elif reward_info:  # where the version is now (a moved home), and its creation time if the run predates recording it
        provenance["reward_path"] = reward_info["reward_path"]
        provenance.setdefault("reward_created_at", reward_info["reward_created_at"])
    if provenance.get("processes", processes) != processes:
        say(f"this run started on {provenance['processes']} process(es) and resumes on {processes}: "
            "each process samples its share, so the epochs from here differ from an uninterrupted run's")
    provenance["processes"] = processes


def _create(out_dir, config: TrainConfig, provenance: dict) -> Path:
    folder = make_run_dir(out_dir)
    record_run(folder, config, provenance, set_latest=True)
    return folder


def _fit(plan: _Plan, pipe, rewards, run_dir: Path, *, resume: bool, progress: bool, on_epoch) -> None:
    from rlft.train.trainer import Trainer

    judgements, extra, _ = plan.data
    reward_fn, heldout_fn, _, judges, _ = rewards
    trainer = Trainer(pipe, plan.config, prompts=plan.prompts, reward_fn=reward_fn, heldout_fn=heldout_fn,
                      judgements=judgements, extra_images=extra, run_dir=run_dir, progress=progress,
                      on_epoch=on_epoch, provenance=plan.provenance, log_with=plan.log_with, judges=judges)
    trainer.train(resume=resume)


def _version() -> str:
    from rlft import __version__

    return __version__


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
