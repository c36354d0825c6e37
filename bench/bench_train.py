"""Benchmark `rlft train` on the toy world: headroom captured over the base, prompt adherence, speed, rounds.

    python bench/bench_train.py quality --oracle warm --algo ddpo --train-seeds 0,1   # one oracle x algorithm, end to end
    python bench/bench_train.py loop --oracle big --algo ddpo       # 1 round of 300 judgements vs 3 rounds of 100
    python bench/bench_train.py table [--write]                     # the README's steering rows (H), from the results
    python bench/bench_train.py plot                                # docs/train-bench.png
    python bench/bench_train.py backfill                            # H on stored rows that predate it
    python bench/bench_train.py speed                               # log-prob sampling vs plain diffusers
    python bench/bench_train.py reward-check --oracle warm          # how well that home's reward ranks fresh samples
    python bench/bench_train.py oracle-reward --oracle warm --epochs 20 --set ddpo.timestep_choice=random
                                                                    # train toward the oracle itself: is the reward the limit?

Quality, per oracle x algorithm, in a fresh home under $RLFT_BENCH_WORK (default /tmp/rlft-bench): generate a pool from the toy model on
training prompts that leave the oracle's attributes unspecified (`OPEN`) -> `rlft simulate --oracle X --n 300 --consistency 0.9`
(a rater 90% consistent with the oracle, its noise calibrated on the pool as in bench_reward) ->
`rlft reward train --clip toy` (its Spearman against the oracle on fresh base samples is measured) -> `rlft train
--reward latest --model toy --algo A --seed S` once per training seed (timed; target: judge + reward + train < 20 min)
-> base vs tuned images on held-out prompts (same open attributes) x seeds with the same initial noise -> per seed:
win/tie/loss by the oracle, the ceiling, headroom captured H = (win - 1/2) / (ceiling - 1/2) with a 95% bootstrap
interval over the matched pairs (`rlft.sim.measure`), the toy checker's prompt adherence (full captions) of both
models, the win-rate curve over epochs from the run's fixed-seed sample grids (epoch 0 = base); and over the seeds:
mean H with the joint bootstrap interval, and the seeds' spread. The per-pair utilities are stored, so intervals can
be recomputed. Results merge into bench/results/train.json under "quality/<oracle>/<algo>", "loop/<oracle>/<algo>"
and "speed".
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pickle
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = DEFAULT_RESULTS = ROOT / "bench" / "results" / "train.json"
# What each built-in oracle judges, left out of the prompts (the steering should fill those in).
OPEN = {"warm": {"color"}, "cool": {"color"}, "big": {"size"}, "small": {"size"}, "centered": {"position"},
        "dark": {"color", "background"}, "bright": {"color", "background"},
        # the composites judge both of their parts' attributes
        "warm+big": {"color", "size"}, "cool+centered": {"color", "position"}}


def prompts_for(oracle: str, heldout: bool, n: int) -> list[str]:
    """Captions naming every attribute but the ones the oracle judges (the steering should fill those in)."""
    from rlft.toy import world

    scenes = world.heldout_scenes() if heldout else world.train_scenes()
    mention = frozenset(set(world.ATTRIBUTES) - OPEN[oracle])
    out: list[str] = []
    for i, s in enumerate(scenes):
        c = world.caption(s, world.CaptionPlan(mention, (i * 7) % world.N_TEMPLATES, i % 12, i))
        if c not in out:
            out.append(c)
    rng = np.random.default_rng(1 if heldout else 0)
    return [out[i] for i in rng.permutation(len(out))[:n]]


@contextlib.contextmanager
def results_locked():
    """The results file's contents, written back on exit; a lock file serialises benches running side by side."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        yield data
        RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def bench_home(args) -> Path:
    """The home of one oracle x algorithm under $RLFT_BENCH_WORK (default /tmp/rlft-bench)."""
    return Path(os.environ.get("RLFT_BENCH_WORK", "/tmp/rlft-bench")) / f"{args.oracle}-{args.algo}"


def merge_result(key: str, value) -> None:
    with results_locked() as data:
        node = data
        parts = key.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value


def code_state() -> dict:
    """The commit the benchmark ran on, and how many files differed from it when it started."""
    def git(*a):
        res = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return res.stdout.strip() if res.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "--short", "HEAD"), "modified_files": None if status is None else len(status.splitlines())}


def rlft(home: Path, *args, log=None, capture: dict | None = None) -> float:
    """Run `rlft ARGS` in `home`; returns seconds. With `capture`, stdout goes to capture["stdout"] instead of `log`."""
    env = {**os.environ, "RLFT_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    cmd = [str(ROOT / ".venv" / "bin" / "rlft"), *map(str, args)]
    print("$", " ".join(cmd), flush=True)
    res = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE if capture is not None else log, stderr=log,
                         text=True)
    if capture is not None:
        capture["stdout"] = res.stdout
    return time.perf_counter() - t


def images_for(pipe, prompts, seeds, steps=20, guidance=3.0):
    import torch

    out = []
    for i in range(0, len(prompts), 16):
        gens = [torch.Generator().manual_seed(s) for s in seeds[i : i + 16]]
        with torch.no_grad():
            out += pipe(prompts[i : i + 16], num_inference_steps=steps, guidance_scale=guidance, generator=gens).images
    return out


def win_rate(oracle, base, tuned, prompts) -> float:
    return win_stats(oracle, base, tuned, prompts)["win_rate"]


def utilities(oracle, images, prompts) -> np.ndarray:
    return np.array([oracle(im, p) for im, p in zip(images, prompts, strict=True)], dtype=float)


def win_stats(oracle, base, tuned, prompts) -> dict:
    """Matched-pair oracle comparison of tuned over base (`rlft.sim.measure.pair_stats` on the oracle's utilities).

    win_rate counts a tie as half a win. On an oracle with few levels ties are common, so two more numbers put it
    in context: the decisive win rate (wins / (wins + losses)), and the ceiling: the win rate a tuned model would
    score if every one of its images reached the best utility seen in either set (a base image already at that
    best can only tie). For the two-level `warm`/`cool` the ceiling is 1 - (share of base images already
    warm/cool) / 2. The headline is the headroom captured, H = (win - 1/2) / (ceiling - 1/2)."""
    from rlft.sim.measure import pair_stats

    return pair_stats(utilities(oracle, base, prompts), utilities(oracle, tuned, prompts))


def add_headroom(row: dict) -> dict:
    """Put H on a stored result that predates it, from its win/tie/loss counts (else its win rate) and ceiling;
    its bootstrap interval is not available (the per-pair utilities were not stored). Returns `row`."""
    from rlft.sim.measure import headroom, headroom_from_counts

    if "headroom" in row or row.get("win_rate_ceiling") is None:
        return row
    if all(isinstance(row.get(k), int) for k in ("wins", "ties", "losses")):
        h, source = headroom_from_counts(row["wins"], row["ties"], row["losses"], row["win_rate_ceiling"]), "counts"
    elif row.get("win_rate") is not None:
        h, source = headroom(row["win_rate"], row["win_rate_ceiling"]), "win_rate"
    else:
        return row
    row["headroom"] = None if h is None else round(h, 4)
    row["headroom_ci95"] = None
    row["headroom_note"] = (f"recomputed from the stored {'win/tie/loss counts' if source == 'counts' else 'win rate'} "
                            "and ceiling; bootstrap interval not available (per-pair utilities not stored)")
    return row


def backfill(args) -> None:
    """H on every stored quality row, superseded row and trial that lacks it (nothing else changes)."""
    with results_locked() as data:
        rows = [*_rows_in(data.get("quality", {})), *_rows_in(data.get("superseded", {})), *_rows_in(data.get("trials", []))]
        missing = [row for row in rows if "headroom" not in row]
        for row in missing:
            add_headroom(row)
    print(f"H added to {sum('headroom' in r for r in missing)} of {len(rows)} stored rows "
          f"({sum('headroom' not in r for r in missing)} without a stored ceiling left as they are)")


def _rows_in(node):
    """The result rows (dicts with a win rate) anywhere under `node`."""
    if isinstance(node, dict):
        if "win_rate" in node:
            yield node
        else:
            for v in node.values():
                yield from _rows_in(v)
    elif isinstance(node, list):
        for v in node:
            yield from _rows_in(v)


def reward_val_accuracy(home: Path, version: str = "r0001") -> float | None:
    """Held-out accuracy of the home's reward version (dpo trains without it; it still rates the judgements)."""
    meta = home / "rewards" / version / "reward.json"
    return json.loads(meta.read_text())["metrics"].get("val_accuracy") if meta.is_file() else None


def grid_curve(run: Path, oracle) -> list[float]:
    """Oracle win rate of each epoch's grid tiles over epoch 0's (the base), on the same prompts and seeds."""
    from PIL import Image

    meta = json.loads((run / "samples" / "grid.json").read_text())
    prompts = [p for p in meta["rows"] for _ in meta["seeds"]]

    def tiles(path):
        im = Image.open(path).convert("RGB")
        cols, rows = len(meta["seeds"]), len(meta["rows"])
        w, h = im.width // cols, im.height // rows
        return [im.crop((c * w, r * h, (c + 1) * w, (r + 1) * h)) for r in range(rows) for c in range(cols)]

    files = sorted((run / "samples").glob("epoch_*.png"))
    base = tiles(files[0])
    return [round(win_rate(oracle, base, tiles(f), prompts), 4) for f in files[1:]]


def run_with_seed(home: Path, seed: int) -> Path | None:
    """The home's last run trained with `seed`, or None."""
    found = [r for r in sorted((home / "runs").glob("t[0-9]*")) if (r / "config.json").is_file()
             and json.loads((r / "config.json").read_text())["config"]["seed"] == seed]
    return found[-1] if found else None


def epochs_of(run: Path) -> tuple[int, int]:
    """(epochs done, epochs configured) of a run."""
    done = len((run / "metrics.jsonl").read_text().splitlines()) if (run / "metrics.jsonl").is_file() else 0
    return done, json.loads((run / "config.json").read_text())["config"]["epochs"]


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--train-seeds takes comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise SystemExit(f"--train-seeds takes distinct integers >= 0, got {text!r}")
    return seeds


class HeldOut:
    """The held-out evaluation of one oracle: test prompts x seeds with the same initial noise for base and tuned,
    and the toy checker's prompt adherence. The base images are cached in the home (they never change)."""

    def __init__(self, args, home: Path, oracle, train_prompts: list[str]):
        from rlft.models.clip import load_clip
        from rlft.toy import evaluate

        self.args, self.oracle = args, oracle
        test_prompts = [p for p in prompts_for(args.oracle, heldout=True, n=10_000) if p not in train_prompts][: args.test_prompts]
        seeds = [10_000 + i for i in range(args.seeds)]
        self.test_prompts = test_prompts
        self.prompts = [p for p in test_prompts for _ in seeds]
        self.all_seeds = seeds * len(test_prompts)
        clip, _, tok = load_clip("toy", device="cpu")
        self.zs = evaluate.ZeroShot(clip, tok)
        cache = home / f"base_eval_{len(test_prompts)}x{args.seeds}_{args.adherence_n}.pkl"
        if cache.is_file():
            base, self.adherence_base = pickle.loads(cache.read_bytes())
        else:
            pipe = self.pipeline()
            base = images_for(pipe, self.prompts, self.all_seeds)
            self.adherence_base, _ = evaluate.generation_adherence(pipe, self.zs, n=args.adherence_n)
            cache.write_bytes(pickle.dumps((base, self.adherence_base)))
        self.u_base = utilities(oracle, base, self.prompts)

    @staticmethod
    def pipeline(run: Path | None = None):
        from rlft.models.lora import apply_lora
        from rlft.models.pipeline import load_pipeline

        pipe = load_pipeline("toy", device="cpu", scheduler="ddim")
        if run is not None:
            apply_lora(pipe, run)
        return pipe

    def evaluate(self, run: Path, curves: bool = True) -> dict:
        """One run's LoRA against the base: pair stats, H with its bootstrap interval, adherence, curves."""
        from rlft.sim.measure import headroom_interval
        from rlft.toy import evaluate

        pipe = self.pipeline(run)
        tuned = images_for(pipe, self.prompts, self.all_seeds)
        adherence_tuned, _ = evaluate.generation_adherence(pipe, self.zs, n=self.args.adherence_n)
        u_t = utilities(self.oracle, tuned, self.prompts)
        stats = _pair_stats(self.u_base, u_t)
        h = headroom_interval(self.u_base, u_t, seed=0)
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        out = {
            "run": run.name, "train_seed": json.loads((run / "config.json").read_text())["config"]["seed"],
            "headroom": _r(h["headroom"]), "headroom_ci95": _r(h["ci"]),
            "win_rate": round(stats.pop("win_rate"), 4), **stats,
            "oracle_mean_tuned": round(float(u_t.mean()), 4),
            "adherence_tuned": {k: round(v, 4) for k, v in adherence_tuned.items()},
            "adherence_mean_drop_points": round(100 * (np.mean(list(self.adherence_base.values()))
                                                       - np.mean(list(adherence_tuned.values()))), 2),
            "epochs": len(metrics), "evaluated_epoch": metrics[-1]["epoch"],
            "u_tuned": [float(u) for u in u_t],  # unrounded: a rounded utility can turn a tie into a loss
        }
        if curves:
            out.update({"grid_win_rate_by_epoch": grid_curve(run, self.oracle),
                        "reward_by_epoch": [m.get("reward_mean") for m in metrics],
                        "heldout_reward_by_epoch": [m.get("heldout_reward_mean") for m in metrics],
                        "epoch_wall_s": [m["wall_s"] for m in metrics]})
        return out

    def summary(self, per_run: list[dict]) -> dict:
        """What several runs on these pairs (training seeds) measured together: mean H with the joint bootstrap
        interval over the pairs, the seeds' spread, and means of the rest."""
        from rlft.sim.measure import headroom_interval

        h = headroom_interval(self.u_base, [r["u_tuned"] for r in per_run], seed=0)
        hs = [r["headroom"] for r in per_run]

        def mean(key):
            return round(float(np.mean([r[key] for r in per_run])), 4)

        return {
            "headroom": _r(h["headroom"]), "headroom_ci95": _r(h["ci"]),
            "headroom_by_seed": hs, "headroom_spread": None if None in hs else round(max(hs) - min(hs), 4),
            "win_rate": mean("win_rate"), "win_rate_by_seed": [r["win_rate"] for r in per_run],
            "win_rate_ceiling": mean("win_rate_ceiling"),
            "wtl_by_seed": [[r["wins"], r["ties"], r["losses"]] for r in per_run],
            "adherence_mean_drop_points": round(float(np.mean([r["adherence_mean_drop_points"] for r in per_run])), 2),
            "adherence_drop_by_seed": [r["adherence_mean_drop_points"] for r in per_run],
            "oracle_mean_base": round(float(self.u_base.mean()), 4),
            "oracle_mean_tuned": mean("oracle_mean_tuned"),
            "n_pairs": len(self.prompts), "test_prompts": len(self.test_prompts), "seeds": self.args.seeds,
            "bootstrap": {"resamples": h["resamples"], "used": h["resamples_used"], "over": "matched prompt+seed pairs",
                          "confidence": h["confidence"], "seed": 0},
        }


def _pair_stats(u_b, u_t) -> dict:
    from rlft.sim.measure import pair_stats

    return pair_stats(u_b, u_t)


def _r(x, nd: int = 4):
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [round(float(v), nd) for v in x]
    return round(float(x), nd)


def reward_spearman(home: Path, oracle, args, version: str = "r0001") -> dict:
    """How well a reward version of the home ranks fresh samples of the base model, by the noiseless oracle: 3 new
    samples per training prompt (10 DDIM steps, CFG 3, seeds the pool did not use); Spearman, and the AUC for
    two-level oracles."""
    import torch
    from scipy.stats import mannwhitneyu, spearmanr

    import reward
    from rlft.models.pipeline import load_pipeline

    model = reward.load(str(home / "rewards" / version))
    pipe = load_pipeline("toy", device="cpu", scheduler="ddim")
    prompts = [p for p in prompts_for(args.oracle, heldout=False, n=args.train_prompts) for _ in range(3)]
    images = images_for(pipe, prompts, [500 + i for i in range(len(prompts))], steps=10)
    u = utilities(oracle, images, prompts)
    with torch.no_grad():
        score = np.asarray(model.score(images, prompts), dtype=float)
    out = {"reward": version, "n": len(images), "spearman": round(float(spearmanr(u, score).correlation), 4)}
    if len(set(u.tolist())) == 2:
        pos = u == u.max()
        out["auc"] = round(float(mannwhitneyu(score[pos], score[~pos]).statistic / (pos.sum() * (~pos).sum())), 4)
    return out


def fresh_home(args, home: Path) -> None:
    if home.exists() and not args.keep:
        import shutil

        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)


def rater_args(args) -> list:
    rater = ["--noise", args.noise] if args.noise is not None else ["--consistency", args.consistency]
    if args.strategy:
        rater += ["--strategy", args.strategy]
    return rater


def quality(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from rlft.sim.oracles import resolve_oracle

    oracle = resolve_oracle(args.oracle)
    train_seeds = parse_seeds(args.train_seeds)
    # the `rlft` subprocesses take --threads too: two runs side by side at torch's default thread count
    # oversubscribe a 2-core machine (epochs went from 15 s to 85-150 s)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    home = bench_home(args)
    fresh_home(args, home)
    train_prompts = prompts_for(args.oracle, heldout=False, n=args.train_prompts)
    (home / "train.txt").write_text("\n".join(train_prompts) + "\n")
    log = open(home / "log.txt", "a")
    timings = {}
    setup = not (args.keep and (home / "rewards").is_dir())  # --keep reuses the pool, judgements and reward
    if not setup and not args.eval_only and not args.resume_runs:
        import shutil

        shutil.rmtree(home / "runs", ignore_errors=True)
    timings["generate_s"] = None if not setup else rlft(home, "generate", "--model", "toy", "--prompts", home / "train.txt", "-n", args.pool_per_prompt,
                                 "--seed", 0, "--steps", 20, "--guidance", 3.0, "--batch-size", 16, log=log)
    rater = rater_args(args)
    sim: dict = {}
    timings["simulate_s"] = None if not setup else rlft(home, "simulate", "--oracle", args.oracle, "--n", args.judgements, *rater,
                                                        "--json", log=log, capture=sim)
    if setup:  # how this home's judgements were made, for the --keep runs that reuse them
        record = {**json.loads(sim["stdout"]), "args": [str(a) for a in rater]}
        (home / "simulate.json").write_text(json.dumps(record) + "\n")
    simulated = json.loads((home / "simulate.json").read_text()) if (home / "simulate.json").is_file() else {}
    timings["reward_s"] = None if not setup else rlft(home, "reward", "train", "--clip", "toy", log=log)
    setup_file = home / "setup_timings.json"  # a --keep run reports the setup it reuses (same pool, judgements, reward)
    if setup:
        setup_file.write_text(json.dumps({k: timings[k] for k in ("generate_s", "simulate_s", "reward_s")}) + "\n")
    elif setup_file.is_file():
        timings.update(json.loads(setup_file.read_text()))
    check_file = home / "reward_check.json"  # the reward's Spearman on fresh samples (the reward is the home's)
    if setup or not check_file.is_file():
        check_file.write_text(json.dumps(reward_spearman(home, oracle, args)) + "\n")
    reward_check = json.loads(check_file.read_text())
    train_args = ["train", "--reward", "latest", "--model", "toy", "--algo", args.algo, "--prompts", home / "train.txt", "-q"]
    if args.epochs:
        train_args += ["--epochs", args.epochs]
    train_args += shlex.split(args.train_args)  # e.g. "--kl-weight 1 --lr 3e-4 --config rwr.toml"
    runs_by_seed: dict[int, Path] = {}
    train_s: dict[int, float | None] = {}
    resumed: dict[int, int] = {}  # seed -> the epoch its interrupted run was resumed from
    for seed in train_seeds:
        found = run_with_seed(home, seed) if args.eval_only or args.resume_runs else None
        if args.eval_only:  # evaluate the runs already there (their last checkpoint's LoRA), e.g. ones cut short
            if found is None:
                raise SystemExit(f"--eval-only: no run with training seed {seed} in {home / 'runs'}")
            runs_by_seed[seed], train_s[seed] = found, None
        elif found is not None:  # --resume-runs: finish an interrupted run, keep a finished one
            done, total = epochs_of(found)
            train_s[seed] = None
            if done < total:
                resumed[seed] = done
                train_s[seed] = rlft(home, "train", "--resume", found.name, "-q", log=log)
            runs_by_seed[seed] = found
        else:
            train_s[seed] = rlft(home, *train_args, "--seed", seed, log=log)
            runs_by_seed[seed] = (home / "runs" / "latest").resolve()

    held_out = HeldOut(args, home, oracle, train_prompts)
    per_seed = [held_out.evaluate(runs_by_seed[s]) for s in train_seeds]
    summary = held_out.summary(per_seed)
    judge_reward = (None if any(timings.get(k) is None for k in ("simulate_s", "reward_s"))
                    else timings["simulate_s"] + timings["reward_s"])
    for s, r in zip(train_seeds, per_seed, strict=True):
        if s in resumed:  # the time of the resumed part only; the epochs' own times are in epoch_wall_s
            r["resumed_from_epoch"] = resumed[s]
            r["train_s_resumed_part"] = round(train_s[s], 1)
            train_s[s] = None
        r["train_s"] = None if train_s[s] is None else round(train_s[s], 1)
        r["judge_reward_train_s"] = None if judge_reward is None or train_s[s] is None else round(judge_reward + train_s[s], 1)
    first_run = runs_by_seed[train_seeds[0]]
    result = {
        "oracle": args.oracle, "algo": args.algo, **summary, "train_seeds": train_seeds,
        "rater": {"simulate_args": simulated.get("args"), "noise": simulated.get("noise"),  # None: a home judged before this record
                  "agreement_with_oracle": simulated.get("agreement")},
        "adherence_base": {k: round(v, 4) for k, v in held_out.adherence_base.items()},
        "reward_val_accuracy": reward_val_accuracy(home),
        "reward_check": reward_check,
        "by_seed": {str(s): r for s, r in zip(train_seeds, per_seed, strict=True)},
        "u_base": [float(u) for u in held_out.u_base],
        "timings_s": {k: None if v is None else round(v, 1) for k, v in timings.items()},
        "setup_reused": not setup,
        "train_within_20_min": None if any(r["judge_reward_train_s"] is None for r in per_seed)
        else all(r["judge_reward_train_s"] < 1200 for r in per_seed),
        "config": json.loads((first_run / "config.json").read_text())["config"],
        "command": " ".join(map(str, train_args)),
        "bench_command": " ".join(["python", "bench/bench_train.py", *sys.argv[1:]]),
        "threads": args.threads,
        "load_avg_start": args.load_start, "load_avg_end": [round(x, 2) for x in os.getloadavg()], "code": args.code,
    }
    if args.trial:  # a tuning trial: appended to the "trials" list, the headline result stays as it is
        add_trial({"name": args.trial, "train_args": args.train_args, "train_threads": os.environ.get("OMP_NUM_THREADS"),
                   **{k: v for k, v in result.items() if k not in ("u_base",)}})
    else:
        merge_result(f"quality/{args.oracle}/{args.algo}", result)
        plot(args)
    print(json.dumps({k: v for k, v in result.items() if k not in ("config", "by_seed", "u_base")}, indent=1))


ACTIVE_MIX = "uncertain:0.7,balanced:0.25,repeat:0.05"  # the active-learning mix the reward benchmark measured best


def loop_bench(args) -> None:
    """Rounds that compound: the same judgement budget spent in one round or in several.

    For each arm (1 x J and R x J/R judgements) a fresh home runs `rlft loop` on the quality benchmark's training
    prompts (each round generates --pool-per-prompt images per prompt with the latest LoRA, the simulated rater
    judges pairs among that round's images with --strategy, the reward is refitted on every judgement so far and a
    new run trains on it); every round's run is then evaluated as `quality` evaluates, H with its bootstrap
    interval. Merged into bench/results/train.json under "loop/<oracle>/<algo>"."""
    import torch

    torch.set_num_threads(args.threads)
    from rlft.sim.oracles import resolve_oracle

    oracle = resolve_oracle(args.oracle)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.judgements % args.rounds:
        raise SystemExit(f"--judgements {args.judgements} does not split into --rounds {args.rounds} equal rounds")
    arms = [(1, args.judgements), (args.rounds, args.judgements // args.rounds)]
    train_prompts = prompts_for(args.oracle, heldout=False, n=args.train_prompts)
    strategy = args.strategy or ACTIVE_MIX
    out: dict = {"oracle": args.oracle, "algo": args.algo, "strategy": strategy, "threads": args.threads,
                 "bench_command": " ".join(["python", "bench/bench_train.py", *sys.argv[1:]]),
                 "load_avg_start": args.load_start, "code": args.code}
    held_out = None
    for rounds, per_round in arms:
        name = f"{rounds}x{per_round}"
        home = bench_home(args).with_name(f"{args.oracle}-{args.algo}-loop-{name}")
        done = home / "loop_done.json"
        if not (args.keep and done.is_file()):
            if home.exists():
                import shutil

                shutil.rmtree(home)
            home.mkdir(parents=True)
            (home / "train.txt").write_text("\n".join(train_prompts) + "\n")
            cmd = ["loop", "--model", "toy", "--prompts", home / "train.txt", "--rounds", rounds, "-n", args.pool_per_prompt,
                   "--oracle", args.oracle, "--judgements", per_round, "--consistency", args.consistency,
                   "--strategy", strategy, "--algo", args.algo, "--seed", 0, "--among", args.among]
            if args.epochs:
                cmd += ["--epochs", args.epochs]
            with open(home / "log.txt", "a") as log:
                wall = rlft(home, *cmd, log=log)
            done.write_text(json.dumps({"wall_s": round(wall, 1), "command": " ".join(map(str, cmd))}) + "\n")
        record = json.loads(done.read_text())
        if held_out is None:  # the base images are the same for both arms: evaluate them once
            held_out = HeldOut(args, home, oracle, train_prompts)
        per_round_results = []
        for run in sorted((home / "runs").glob("t[0-9]*")):
            r = held_out.evaluate(run, curves=False)
            r.pop("u_tuned")
            r["reward_val_accuracy"] = reward_val_accuracy(home, f"r{int(run.name[1:]):04d}")
            per_round_results.append(r)
        with open_store_at(home) as store:
            judged = store.count_judgements()
            images = store.count_images()
        out[name] = {"rounds": rounds, "judgements_per_round": per_round, "judgements": judged, "pool_images": images,
                     "headroom_by_round": [r["headroom"] for r in per_round_results],
                     "headroom_ci95_by_round": [r["headroom_ci95"] for r in per_round_results],
                     "by_round": per_round_results, "wall_s": record["wall_s"], "command": record["command"]}
        print(json.dumps({name: out[name]["headroom_by_round"]}), flush=True)
    one, many = (out[f"{r}x{j}"] for r, j in arms)
    final_one, final_many = one["headroom_by_round"][-1], many["headroom_by_round"][-1]
    out["n_pairs"] = len(held_out.prompts)
    out["target_met"] = None if None in (final_one, final_many) else final_many >= final_one
    out["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    merge_result(f"loop/{args.oracle}/{args.algo}", out)
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, dict)}, indent=1))


@contextlib.contextmanager
def open_store_at(home: Path):
    from prefs import open_store

    with open_store(home=home) as store:
        yield store


ALGOS = ("ddpo", "rwr", "dpo")
H_TARGET = {"ddpo": 0.7, "rwr": 0.7, "dpo": 0.6}  # issue targets: headroom captured on every oracle
ADHERENCE_BOUND = 5.0  # points of prompt adherence a tuned model may lose against the base
LOOP_ARGS = "--pool-per-prompt 8 --test-prompts 12 --seeds 4 --adherence-n 48 --threads 1"
HEADLINE_ARGS = LOOP_ARGS + " --train-seeds 0,1"
README = ROOT / "README.md"


def _cell(row: dict | None, algo: str) -> str:
    """One oracle's H for the README: bold when the target is met within the adherence bound; the 95% interval
    and the training seeds' spread where measured; `-` where not run."""
    if row is None:
        return "-"
    row = add_headroom(dict(row))
    h = row.get("headroom")
    if h is None:
        return "n/a"
    text = f"{h:.2f}"
    drop = row.get("adherence_mean_drop_points")
    if h >= H_TARGET[algo] and drop is not None and drop <= ADHERENCE_BOUND:
        text = f"**{text}**"
    extra = []
    if row.get("headroom_ci95"):
        lo, hi = row["headroom_ci95"]
        extra.append(f"{lo:.2f} to {hi:.2f}")
    if row.get("headroom_spread") is not None and len(row.get("train_seeds", [])) > 1:
        extra.append(f"seeds {' / '.join(f'{v:.2f}' for v in row['headroom_by_seed'])}")
    return text + (f" ({'; '.join(extra)})" if extra else "")


def _minutes(row: dict) -> list[float]:
    """Judge + reward + train minutes of a row, one per training seed."""
    t = row.get("timings_s", {})
    per = [r.get("judge_reward_train_s") for r in row.get("by_seed", {}).values()]
    if any(per):
        return [v / 60 for v in per if v]
    if all(t.get(k) is not None for k in ("simulate_s", "reward_s", "train_s")):
        return [(t["simulate_s"] + t["reward_s"] + t["train_s"]) / 60]
    return []


def _by_round(hs: list) -> str:
    return " -> ".join("n/a" if h is None else f"{h:.2f}" for h in hs)


def table_rows(data: dict) -> list[str]:
    """The README's steering rows (headline figures table), one per algorithm, and the rounds row if measured."""
    quality = data.get("quality", {})
    out = []
    for algo in ALGOS:
        rows = [quality.get(o, {}).get(algo) for o in OPEN]
        measured = [r for r in rows if r is not None]
        if not measured:
            continue
        drops = {o: r["adherence_mean_drop_points"] for o, r in zip(OPEN, rows, strict=True)
                 if r is not None and r.get("adherence_mean_drop_points") is not None}
        inside = [d for d in drops.values() if d <= ADHERENCE_BOUND]
        outside = ", ".join(f"{o} (-{d:.1f})" for o, d in drops.items() if d > ADHERENCE_BOUND)
        minutes = [m for r in measured for m in _minutes(r)]
        seeds = sorted({len(r.get("train_seeds", [0])) for r in measured})
        span = "" if not minutes else (f"{min(minutes):.0f}" if round(min(minutes)) == round(max(minutes))
                                       else f"{min(minutes):.0f}-{max(minutes):.0f}")
        notes = [(f"adherence within {max(inside):.1f} points" if inside else "") + (f" except {outside}" if outside else ""),
                 f"{span} min judge + reward + train" if minutes else "",
                 " or ".join(map(str, seeds)) + f" training seed{'s' if seeds != [1] else ''}"]
        values = " / ".join(_cell(r, algo) for r in rows)
        out.append(f"| steering, `{algo}` (toy defaults): headroom captured H | >= {H_TARGET[algo]} | {values}; "
                   f"{'; '.join(n for n in notes if n)} | `python bench/bench_train.py quality --oracle O --algo {algo} "
                   f"{HEADLINE_ARGS}` |")
    loops = data.get("loop", {})
    cells = []
    for oracle in OPEN:
        for algo, rec in sorted(loops.get(oracle, {}).items()):
            arms = [v for v in rec.values() if isinstance(v, dict) and "headroom_by_round" in v]
            if len(arms) == 2:
                one, many = sorted(arms, key=lambda a: a["rounds"])
                met = rec.get("target_met")
                cell = (f"{oracle} {algo}: {one['rounds']}x{one['judgements_per_round']} {_by_round(one['headroom_by_round'])}, "
                        f"{many['rounds']}x{many['judgements_per_round']} {_by_round(many['headroom_by_round'])}")
                cells.append(f"**{cell}**" if met else cell)
    if cells:
        out.append("| rounds: 3 x 100 judgements capture at least the H of 1 x 300 (H after each round) | every oracle | "
                   + "; ".join(cells) + f" | `python bench/bench_train.py loop --oracle O --algo A {LOOP_ARGS}` |")
    return out


def table(args) -> None:
    """Print the README's steering rows from bench/results/train.json; with --write, replace them in README.md (the
    rows starting `| steering, ` and `| rounds: ` of the headline figures table, nothing else)."""
    data = json.loads(RESULTS.read_text())
    rows = table_rows(data)
    print("\n".join(rows))
    if not args.write:
        return
    lines = README.read_text().splitlines(keepends=True)
    ours = [i for i, line in enumerate(lines) if line.startswith(("| steering, ", "| rounds: "))]
    if not ours:
        raise SystemExit("README.md has no `| steering, ` rows to replace")
    if ours != list(range(ours[0], ours[0] + len(ours))):
        raise SystemExit("README.md's steering rows are not adjacent: edit them by hand")
    lines[ours[0] : ours[-1] + 1] = [r + "\n" for r in rows]
    README.write_text("".join(lines))
    print("wrote", README)


def add_trial(record: dict) -> None:
    with results_locked() as data:
        data.setdefault("trials", []).append(record)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speed_child(mode: str, threads: int) -> None:
    """One measurement in a fresh process (so peak RSS is this mode's): best of 3, batch 8, 20 steps, CFG 3."""
    import torch

    torch.set_num_threads(threads)
    from rlft.models.pipeline import load_pipeline
    from rlft.train.ddim import decode, sample_with_logprob

    pipe = load_pipeline("toy", device="cpu", scheduler="ddim")
    prompts = ["a large red circle on a blue background"] * 8
    best = float("inf")
    for r in range(4):
        gens = [torch.Generator().manual_seed(r * 8 + i) for i in range(8)]
        t = time.perf_counter()
        with torch.no_grad():
            if mode == "plain":
                pipe(prompts, num_inference_steps=20, guidance_scale=3.0, eta=1.0, generator=gens, output_type="pt")
            else:
                traj = sample_with_logprob(pipe, prompts, steps=20, guidance=3.0, eta=1.0, generator=gens)
                decode(pipe, traj.final)
        if r:  # the first is a warm-up
            best = min(best, time.perf_counter() - t)
    print(json.dumps({"mode": mode, "seconds": round(best, 3), "peak_rss_mb": round(_peak_rss_mb(), 1)}))


def speed(args) -> None:
    out = {}
    for mode in ("plain", "logprob"):
        res = subprocess.run([sys.executable, __file__, "speed-child", mode, "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True)
        out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    out["overhead_pct"] = round(100 * (out["logprob"]["seconds"] / out["plain"]["seconds"] - 1), 1)
    out["setup"] = "toy model, batch 8, 20 DDIM steps (eta 1), CFG 3, decode included, best of 3 after a warm-up"
    out["threads"] = args.threads
    merge_result("speed", out)
    print(json.dumps(out, indent=1))


SMOOTH = 5  # epochs in the running mean of the reward curves


def reward_check(args) -> None:
    """How well the home's reward r0001 ranks fresh samples of the base model, by the noiseless oracle.

    The reward's validation accuracy scores judged pairs of pool images (with a random split, images that
    training also saw); steering needs the reward to rank the model's new samples (`reward_spearman`; `quality`
    measures it on every home it builds). Merged into the quality row as "reward_check"."""
    import torch

    from rlft.sim.oracles import resolve_oracle

    torch.set_num_threads(args.threads)
    home = bench_home(args)
    out = reward_spearman(home, resolve_oracle(args.oracle), args)
    if args.trial:  # a trial home: reported, and recorded under "trials", never in the headline row
        add_trial({"name": args.trial, "what": "reward-check", "oracle": args.oracle, "home": str(home), **out})
    else:
        with results_locked() as data:
            row = data.get("quality", {}).get(args.oracle, {}).get(args.algo)
            if row is not None:
                row["reward_check"] = out
    print(json.dumps({"oracle": args.oracle, **out}))


def oracle_reward(args) -> None:
    """Train toward the noiseless oracle itself (no pool, judgements or reward model) and follow the held-out
    oracle mean every 10 epochs: separates what the optimiser can do from what the learned reward allows.
    Held-out: the quality benchmark's test prompts x seeds (20 DDIM steps, eta 0, as `quality` evaluates).
    Appended to "oracle_reward" in bench/results/train.json."""
    import torch
    import torchvision.transforms.functional as TF

    from rlft.models.pipeline import load_pipeline, quiet_libraries
    from rlft.sim.oracles import resolve_oracle
    from rlft.train.configure import build_config
    from rlft.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    quiet_libraries()
    oracle = resolve_oracle(args.oracle)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)  # numbers, true/false, lists
        except json.JSONDecodeError:
            overrides[key] = value  # a plain string: first, random, ...
    config = build_config("toy", {}, {"algo": args.algo, "epochs": args.epochs or 60, **overrides})
    pipe = load_pipeline("toy", device="cpu", scheduler="ddim")

    def reward_fn(images, prompts, metadata=None):
        pil = [TF.to_pil_image(im.clamp(0, 1)) for im in images]
        return torch.tensor([oracle(im, p) for im, p in zip(pil, prompts, strict=False)], dtype=torch.float32), {}

    train_prompts = prompts_for(args.oracle, heldout=False, n=args.train_prompts)
    test_prompts = [p for p in prompts_for(args.oracle, heldout=True, n=10_000) if p not in train_prompts][: args.test_prompts]
    seeds = [10_000 + i for i in range(args.seeds)]
    prompts, all_seeds = [p for p in test_prompts for _ in seeds], seeds * len(test_prompts)

    def held_out() -> float:
        return round(float(np.mean([oracle(im, p) for im, p in zip(images_for(pipe, prompts, all_seeds), prompts, strict=False)])), 4)

    trainer = Trainer(pipe, config, prompts=train_prompts, reward_fn=reward_fn)
    with trainer.base_model():
        curve = {0: held_out()}
    start = time.perf_counter()
    while trainer.epoch < config.epochs:
        trainer.run_epoch()
        if trainer.epoch % 10 == 0 or trainer.epoch == config.epochs:
            curve[trainer.epoch] = held_out()
            print(json.dumps({"epoch": trainer.epoch, "held_out_oracle_mean": curve[trainer.epoch]}), flush=True)
    record = {"oracle": args.oracle, "algo": args.algo, "set": args.set, "held_out_oracle_mean_by_epoch": curve,
              "n_pairs": len(prompts), "train_s": round(time.perf_counter() - start, 1), "threads": args.threads}
    with results_locked() as data:
        data.setdefault("oracle_reward", []).append(record)
    print(json.dumps(record))


def plot(args) -> None:
    """docs/train-bench.png: per algorithm, each oracle's headroom captured H with its 95% interval (top), its grid
    win rate over epochs (middle; the first training seed's run) and its training vs held-out reward (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(RESULTS.read_text()).get("quality", {})
    algos = [a for a in ALGOS if any(a in runs for runs in data.values())]
    if not algos:
        return
    fig, axes = plt.subplots(3, len(algos), figsize=(5.2 * len(algos), 11), squeeze=False)
    for col, algo in enumerate(algos):
        bars, top, bottom = axes[0, col], axes[1, col], axes[2, col]
        names = list(OPEN)
        for i, oracle in enumerate(names):
            row = data.get(oracle, {}).get(algo)
            if row is None or add_headroom(dict(row)).get("headroom") is None:
                continue
            row = add_headroom(dict(row))
            h, ci = row["headroom"], row.get("headroom_ci95")
            err = None if not ci else [[h - ci[0]], [ci[1] - h]]
            bars.bar(i, h, color=f"C{i}", yerr=err, capsize=3)
        bars.axhline(H_TARGET[algo], color="grey", lw=0.5, ls="--")
        bars.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        bars.set(ylabel="headroom captured H", title=f"{algo}: H on 48 held-out pairs (95% interval)", ylim=(-0.3, 1.1))
        for oracle in (o for o in OPEN if algo in data.get(o, {})):
            row, color = data[oracle][algo], f"C{list(OPEN).index(oracle)}"  # one colour per oracle in every panel
            r = next(iter(row["by_seed"].values())) if row.get("by_seed") else row
            curve = r["grid_win_rate_by_epoch"]
            top.plot(range(1, len(curve) + 1), curve, color=color, label=f"{oracle} (held-out win {r['win_rate']:.0%})")
            for key, style, what in (("reward_by_epoch", "-", "train"), ("heldout_reward_by_epoch", "--", "held-out member")):
                values = [v for v in r[key] if v is not None]
                if len(values) >= SMOOTH:  # a 32-sample epoch's mean reward is noisy: a running mean shows the trend
                    bottom.plot(range(SMOOTH, len(values) + 1), np.convolve(values, np.ones(SMOOTH) / SMOOTH, "valid"), style,
                                color=color, lw=1, label=f"{oracle} {what}")
        top.axhline(0.5, color="grey", lw=0.5)
        top.set(xlabel="epoch", ylabel="oracle win rate vs base (grid)", title=f"{algo}: steering over epochs", ylim=(0, 1))
        top.legend(fontsize=7)
        if bottom.lines:
            bottom.set(xlabel="epoch", ylabel=f"reward (BT logit, {SMOOTH}-epoch mean)", title=f"{algo}: training vs held-out reward")
            bottom.legend(fontsize=6, ncol=2)
        else:
            bottom.set_title(f"{algo}: no reward model (trains on the judgements)")
            bottom.axis("off")
    fig.tight_layout()
    # another results file (a smoke run's, say) plots beside itself, never over the documented figure
    out = ROOT / "docs" / "train-bench.png" if RESULTS == DEFAULT_RESULTS else RESULTS.with_suffix(".png")
    fig.savefig(out, dpi=100)
    print("wrote", out)


def main() -> None:
    global RESULTS
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["quality", "loop", "table", "plot", "backfill", "speed", "speed-child", "reward-check",
                                     "oracle-reward"])
    ap.add_argument("mode", nargs="?")
    ap.add_argument("--oracle", default="warm", choices=sorted(OPEN))
    ap.add_argument("--algo", default="ddpo", choices=["ddpo", "rwr", "dpo"])
    ap.add_argument("--epochs", type=int, default=None, help="override the toy default")
    ap.add_argument("--judgements", type=int, default=300)
    ap.add_argument("--consistency", type=float, default=0.9,
                    help="the simulated rater agrees with the noiseless oracle on this share of random pool pairs "
                         "(its noise T calibrated per oracle, as in bench_reward)")
    ap.add_argument("--noise", type=float, default=None, help="a fixed Bradley-Terry temperature T instead of --consistency")
    ap.add_argument("--strategy", default=None,
                    help="pair strategy of the simulated judgements (`rlft simulate --strategy`; default: the store's, same_prompt + 5%% repeat)")
    ap.add_argument("--train-prompts", type=int, default=24)
    ap.add_argument("--pool-per-prompt", type=int, default=8, help="pool images per training prompt (8: 192 images)")
    ap.add_argument("--test-prompts", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--adherence-n", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-args", default="", help="extra `rlft train` flags, e.g. '--kl-weight 1 --lr 3e-4'")
    ap.add_argument("--trial", default=None, help="record as a named tuning trial under 'trials' (headline result untouched)")
    ap.add_argument("--keep", action="store_true", help="reuse the home's pool, judgements and reward version")
    ap.add_argument("--eval-only", action="store_true",
                    help="with --keep: evaluate the runs already in the home (one per training seed), no training")
    ap.add_argument("--resume-runs", action="store_true",
                    help="with --keep: finish the home's interrupted runs of these training seeds, keep finished ones, "
                         "train the missing ones (after a benchmark was killed)")
    ap.add_argument("--train-seeds", default="0",
                    help="quality: train once per seed on the same pool, judgements and reward, e.g. 0,1 (the headline rows)")
    ap.add_argument("--rounds", type=int, default=3, help="loop: rounds of the many-round arm (the other arm has one)")
    ap.add_argument("--among", default="round", choices=["round", "pool"],
                    help="loop: the rater judges pairs among each round's new images (round) or the whole pool")
    ap.add_argument("--write", action="store_true", help="table: write the rows into README.md")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the results file (default bench/results/train.json)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="oracle-reward: a config field, e.g. ddpo.timestep_choice=random (repeatable)")
    args = ap.parse_args()
    RESULTS = args.results
    args.load_start = [round(x, 2) for x in os.getloadavg()]  # the machine is often shared: say how busy it was
    args.code = code_state()
    if args.what == "quality":
        quality(args)
    elif args.what == "loop":
        loop_bench(args)
    elif args.what == "table":
        table(args)
    elif args.what == "backfill":
        backfill(args)
    elif args.what == "speed":
        speed(args)
    elif args.what == "plot":
        plot(args)
    elif args.what == "reward-check":
        reward_check(args)
    elif args.what == "oracle-reward":
        oracle_reward(args)
    else:
        speed_child(args.mode, args.threads)


if __name__ == "__main__":
    main()
