"""`rlft judge RUN`: base against tuned under independent judges, on the run's sample-grid prompts and seeds.

    report = judge_run("latest", ["pickscore", "hpsv2"])    # rlft.train.judge
    report["judges"][0]  # {"judge", "base", "tuned", "diff", "ci", "win_rate", ...}

Both models draw the run's grid (its prompts, its seeds, its DDIM steps, guidance and eta) with the trainer's
sampler (`rlft.train.ddim.sample_with_logprob`) from the same initial noise, the base with the run's LoRA off;
each judge scores both sets. Per judge: the mean base and tuned scores, their mean difference (tuned - base)
with a seeded percentile bootstrap interval over the prompt+seed pairs, and the win rate of tuned over base
(ties count half).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from prefs.errors import UserError

GRID_SEED = 1_000_000  # the trainer's grid seeds: 1_000_000 + s


def grid_of(run_dir, saved: dict) -> tuple[list[str], list[int]]:
    """(prompts, seeds) of the run's sample grid, one per image, row by row: `samples/grid.json`, else what the
    trainer draws from its config."""
    import json

    path = run_dir / "samples" / "grid.json"
    if path.is_file():
        grid = json.loads(path.read_text(encoding="utf-8"))
        rows, seeds = grid["rows"], grid["seeds"]
    else:
        sample = saved["config"]["sample"]
        rows = saved["provenance"].get("prompts", [])[: sample["grid_prompts"]]
        seeds = list(range(sample["grid_seeds"]))
    if not rows:
        raise UserError(f"run {run_dir.name} has no sample-grid prompts to judge on")
    return [p for p in rows for _ in seeds], [s for _ in rows for s in seeds]


def bootstrap_mean(d: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `d` over its entries (seeded)."""
    if len(d) < 2:
        return float(d.mean()), float(d.mean())
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def compare(base: Sequence[float], tuned: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Means, the tuned - base difference with its bootstrap interval, and the win rate (ties half)."""
    b, t = np.asarray(base, dtype=np.float64), np.asarray(tuned, dtype=np.float64)
    d = t - b
    lo, hi = bootstrap_mean(d, n_boot, seed)
    return {"base": float(b.mean()), "tuned": float(t.mean()), "diff": float(d.mean()), "ci": [lo, hi],
            "win_rate": float((d > 0).mean() + 0.5 * (d == 0).mean()), "wins": int((d > 0).sum()),
            "ties": int((d == 0).sum()), "losses": int((d < 0).sum())}


def judge_run(run: str | os.PathLike, judges: Sequence[str] = (), *, device: str | None = None, n_boot: int = 2000,
              seed: int = 0, batch_size: int | None = None) -> dict:
    """Compare run `run` (`latest`, an id or a folder) with its base model under `judges` (any `--reward` form;
    default: the run's own `--judge`s). UserError when there is none, or one cannot judge the run's model."""
    import torch

    from rlft.models.adapters import adapter_for
    from rlft.models.lora import apply_lora
    from rlft.models.pipeline import load_pipeline, quiet_libraries
    from rlft.train import runs
    from rlft.train.configure import family_of, image_size_of
    from rlft.train.ddim import sample_with_logprob
    from rlft.train.rewards import check_reward, load_judge, resumed_spec, reward_label
    from rlft.train.session import resolve_judges

    run_dir = runs.resolve_run(run)
    saved = runs.read_config(run_dir)
    provenance, sample = saved["provenance"], saved["config"]["sample"]
    model = provenance["model"]
    size, family = image_size_of(model), family_of(model)
    if judges:
        resolved = resolve_judges(judges, size, model, family)
    else:
        resolved = [resumed_spec(j) for j in provenance.get("judges", [])]
        if not resolved:
            raise UserError(f"run {run_dir.name} was trained without --judge; name one: "
                            "rlft judge RUN --judge pickscore (any --reward form)")
        for j in resolved:
            check_reward(j, size, model, family)
    if not (run_dir / "lora").is_dir():
        raise UserError(f"run {run_dir.name} has no LoRA yet (no epoch finished); nothing to judge")
    prompts, seeds = grid_of(run_dir, saved)
    quiet_libraries()
    cpu = device in (None, "cpu") and not torch.cuda.is_available()
    pipe = load_pipeline(model, device=device, dtype="fp32" if cpu else None, scheduler="ddim")
    pipe.set_progress_bar_config(disable=True)
    fns = {reward_label(j): load_judge(j, device=pipe.device)[0] for j in resolved}
    adapter = adapter_for(pipe)
    batch = batch_size or sample["batch_size"]

    def draw() -> torch.Tensor:
        out = []
        for start in range(0, len(prompts), batch):
            chunk = seeds[start:start + batch]
            gens = [torch.Generator("cpu").manual_seed(GRID_SEED + s) for s in chunk]
            h, w = adapter.image_size
            shape = (pipe.unet.config.in_channels, h // pipe.vae_scale_factor, w // pipe.vae_scale_factor)
            latents = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(pipe.device, pipe.unet.dtype)
            with torch.no_grad():
                traj = sample_with_logprob(pipe, prompts[start:start + batch], steps=sample["steps"],
                                           guidance=sample["guidance"], eta=sample["eta"], generator=gens,
                                           latents=latents)
                out.append(adapter.decode(traj.final.to(pipe.vae.dtype)).float().cpu())
        return torch.cat(out)

    base = draw()
    apply_lora(pipe, run_dir)
    tuned = draw()
    rows = []
    with torch.no_grad():
        for name, fn in fns.items():
            b = np.asarray(torch.as_tensor(fn(base, prompts, {})[0]).float().cpu())
            t = np.asarray(torch.as_tensor(fn(tuned, prompts, {})[0]).float().cpu())
            rows.append({"judge": name, **compare(b, t, n_boot, seed)})
    return {"run": run_dir.name, "model": model, "pairs": len(prompts), "prompts": sorted(set(prompts)),
            "seeds": sorted(set(seeds)), "bootstrap": n_boot, "judges": rows}


def table(report: dict) -> str:
    """The report as a plain table, one judge a row."""
    head = f"{report['run']} vs base ({report['model']}), {report['pairs']} prompt+seed pairs"
    lines = [head, f"{'judge':<28} {'base':>10} {'tuned':>10} {'tuned-base':>11} {'95% interval':>22} {'win rate':>9}"]
    for r in report["judges"]:
        lo, hi = r["ci"]
        lines.append(f"{r['judge'][:28]:<28} {r['base']:>10.4g} {r['tuned']:>10.4g} {r['diff']:>+11.4g} "
                     f"{f'[{lo:+.4g}, {hi:+.4g}]':>22} {r['win_rate']:>9.1%}")
    return "\n".join(lines)
