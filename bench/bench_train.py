"""Benchmark `rlft train` on the toy world: oracle win rate of tuned over base, prompt adherence, speed.

    python bench/bench_train.py quality --oracle warm --algo ddpo   # one oracle x algorithm, end to end
    python bench/bench_train.py speed                               # log-prob sampling vs plain diffusers
    python bench/bench_train.py reward-check --oracle warm          # how well that home's reward ranks fresh samples
    python bench/bench_train.py oracle-reward --oracle warm --epochs 20 --set ddpo.timestep_choice=random
                                                                    # train toward the oracle itself: is the reward the limit?

Quality, per oracle x algorithm, in a fresh home under $RLFT_BENCH_WORK (default /tmp/rlft-bench): generate a pool from the toy model on
training prompts that leave the oracle's attribute unspecified -> `rlft simulate --oracle X --n 300 --consistency 0.9`
(a rater 90% consistent with the oracle, its noise calibrated on the pool as in bench_reward) ->
`rlft reward train --clip toy` -> `rlft train --reward latest --model toy --algo A` (timed; target < 20 min)
-> base vs tuned images on held-out prompts (same open attribute) x seeds with the same initial noise ->
oracle win rate (ties half), plus the toy checker's prompt adherence (full captions) of both models, and
the win-rate curve over epochs from the run's fixed-seed sample grids (epoch 0 = base).
Results merge into bench/results/train.json under "quality/<oracle>/<algo>" and "speed".
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
RESULTS = ROOT / "bench" / "results" / "train.json"
# What each built-in oracle judges, left out of the prompts (the steering should fill those in).
OPEN = {"warm": {"color"}, "cool": {"color"}, "big": {"size"}, "small": {"size"}, "centered": {"position"},
        "dark": {"color", "background"}, "bright": {"color", "background"}}


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


def win_stats(oracle, base, tuned, prompts) -> dict:
    """Matched-pair oracle comparison of tuned over base.

    win_rate counts a tie as half a win (the headline number). On an oracle with few levels ties are common,
    so two more numbers put it in context: the decisive win rate (wins / (wins + losses)), and the ceiling: the
    win rate a tuned model would score if every one of its images reached the best utility seen in either set
    (a base image already at that best can only tie). For the two-level `warm`/`cool` the ceiling is
    1 - (share of base images already warm/cool) / 2."""
    u_b = np.array([oracle(im, p) for im, p in zip(base, prompts, strict=False)])
    u_t = np.array([oracle(im, p) for im, p in zip(tuned, prompts, strict=False)])
    wins, losses = int(np.sum(u_t > u_b)), int(np.sum(u_t < u_b))
    best = max(u_b.max(), u_t.max())
    return {"win_rate": float(np.mean((u_t > u_b) + 0.5 * (u_t == u_b))), "wins": wins, "losses": losses,
            "ties": len(u_b) - wins - losses,
            "win_rate_decisive": None if wins + losses == 0 else round(wins / (wins + losses), 4),
            "win_rate_ceiling": round(float(np.mean(np.where(u_b >= best, 0.5, 1.0))), 4)}


def reward_val_accuracy(home: Path) -> float | None:
    """Held-out accuracy of the home's reward version r0001 (dpo trains without it; it still rates the judgements)."""
    meta = home / "rewards" / "r0001" / "reward.json"
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


def quality(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from rlft.models.clip import load_clip
    from rlft.models.lora import apply_lora
    from rlft.models.pipeline import load_pipeline
    from rlft.sim.oracles import resolve_oracle
    from rlft.toy import evaluate

    oracle = resolve_oracle(args.oracle)
    # the `rlft` subprocesses take --threads too: two runs side by side at torch's default thread count
    # oversubscribe a 2-core machine (epochs went from 15 s to 85-150 s)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    home = bench_home(args)
    if home.exists() and not args.keep:
        import shutil

        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    train_prompts = prompts_for(args.oracle, heldout=False, n=args.train_prompts)
    test_prompts = [p for p in prompts_for(args.oracle, heldout=True, n=10_000) if p not in train_prompts][: args.test_prompts]
    (home / "train.txt").write_text("\n".join(train_prompts) + "\n")
    log = open(home / "log.txt", "a")
    timings = {}
    setup = not (args.keep and (home / "rewards").is_dir())  # --keep reuses the pool, judgements and reward
    if not setup and not args.eval_only:
        import shutil

        shutil.rmtree(home / "runs", ignore_errors=True)
    timings["generate_s"] = None if not setup else rlft(home, "generate", "--model", "toy", "--prompts", home / "train.txt", "-n", args.pool_per_prompt,
                                 "--seed", 0, "--steps", 20, "--guidance", 3.0, "--batch-size", 16, log=log)
    rater = ["--noise", args.noise] if args.noise is not None else ["--consistency", args.consistency]
    if args.strategy:
        rater += ["--strategy", args.strategy]
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
    train_args = ["train", "--reward", "latest", "--model", "toy", "--algo", args.algo, "--prompts", home / "train.txt", "-q"]
    if args.epochs:
        train_args += ["--epochs", args.epochs]
    train_args += shlex.split(args.train_args)  # e.g. "--kl-weight 1 --lr 3e-4 --config rwr.toml"
    if args.eval_only:  # evaluate the run already there (its last checkpoint's LoRA), e.g. one cut short
        timings["train_s"] = None
    else:
        timings["train_s"] = rlft(home, *train_args, log=log)
    run = home / "runs" / "t0001"
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]

    seeds = [10_000 + i for i in range(args.seeds)]
    prompts = [p for p in test_prompts for _ in seeds]
    all_seeds = seeds * len(test_prompts)
    pipe = load_pipeline("toy", device="cpu", scheduler="ddim")
    clip, _, tok = load_clip("toy", device="cpu")
    zs = evaluate.ZeroShot(clip, tok)
    cache = home / f"base_eval_{len(test_prompts)}x{args.seeds}_{args.adherence_n}.pkl"  # base images don't change between trials
    if args.keep and cache.is_file():
        base, adherence_base = pickle.loads(cache.read_bytes())
    else:
        base = images_for(pipe, prompts, all_seeds)
        adherence_base, _ = evaluate.generation_adherence(pipe, zs, n=args.adherence_n)
        cache.write_bytes(pickle.dumps((base, adherence_base)))
    apply_lora(pipe, run)
    tuned = images_for(pipe, prompts, all_seeds)
    adherence_tuned, _ = evaluate.generation_adherence(pipe, zs, n=args.adherence_n)
    stats = win_stats(oracle, base, tuned, prompts)
    result = {
        "win_rate": round(stats.pop("win_rate"), 4), **stats,
        "n_pairs": len(prompts), "test_prompts": len(test_prompts), "seeds": args.seeds,
        "rater": {"simulate_args": simulated.get("args"), "noise": simulated.get("noise"),  # None: a home judged before this record
                  "agreement_with_oracle": simulated.get("agreement")},
        "oracle_mean_base": round(float(np.mean([oracle(i, p) for i, p in zip(base, prompts, strict=False)])), 4),
        "oracle_mean_tuned": round(float(np.mean([oracle(i, p) for i, p in zip(tuned, prompts, strict=False)])), 4),
        "adherence_base": {k: round(v, 4) for k, v in adherence_base.items()},
        "adherence_tuned": {k: round(v, 4) for k, v in adherence_tuned.items()},
        "adherence_mean_drop_points": round(100 * (np.mean(list(adherence_base.values())) - np.mean(list(adherence_tuned.values()))), 2),
        "reward_val_accuracy": reward_val_accuracy(home),
        "grid_win_rate_by_epoch": grid_curve(run, oracle),
        "reward_by_epoch": [m.get("reward_mean") for m in metrics],
        "heldout_reward_by_epoch": [m.get("heldout_reward_mean") for m in metrics],
        "epoch_wall_s": [m["wall_s"] for m in metrics],
        "epochs": len(metrics), "timings_s": {k: None if v is None else round(v, 1) for k, v in timings.items()},
        "setup_reused": not setup,
        "train_within_20_min": None if any(timings.get(k) is None for k in ("simulate_s", "reward_s", "train_s"))
        else sum(timings[k] for k in ("simulate_s", "reward_s", "train_s")) < 1200,
        "evaluated_epoch": json.loads(json.dumps(metrics[-1]["epoch"])),
        "config": json.loads((run / "config.json").read_text())["config"],
        "command": " ".join(map(str, train_args)),
        "threads": args.threads,
    }
    if args.trial:  # a tuning trial: appended to the "trials" list, the headline result stays as it is
        add_trial({"name": args.trial, "oracle": args.oracle, "algo": args.algo, "train_args": args.train_args, "rater": result["rater"],
                   **{k: result[k] for k in ("win_rate", "win_rate_decisive", "win_rate_ceiling", "adherence_mean_drop_points", "oracle_mean_base", "oracle_mean_tuned",
                                             "adherence_tuned", "grid_win_rate_by_epoch", "reward_by_epoch",
                                             "heldout_reward_by_epoch", "epochs", "timings_s", "n_pairs", "config")},
                   "threads": args.threads, "train_threads": os.environ.get("OMP_NUM_THREADS"), "setup_reused": not setup})
    else:
        merge_result(f"quality/{args.oracle}/{args.algo}", result)
        plot(args)
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1))


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
    training also saw); steering needs the reward to rank the model's new samples. This draws 3 new samples
    for each training prompt (10 DDIM steps, CFG 3, seeds the pool did not use) and reports the Spearman
    correlation of reward and oracle, and for two-level oracles the AUC. Merged into the quality row as
    "reward_check"."""
    import torch
    from scipy.stats import mannwhitneyu, spearmanr

    import reward
    from rlft.models.pipeline import load_pipeline
    from rlft.sim.oracles import resolve_oracle

    torch.set_num_threads(args.threads)
    home = bench_home(args)
    oracle = resolve_oracle(args.oracle)
    model = reward.load(str(home / "rewards" / "r0001"))
    pipe = load_pipeline("toy", device="cpu", scheduler="ddim")
    prompts = [p for p in prompts_for(args.oracle, heldout=False, n=args.train_prompts) for _ in range(3)]
    images = images_for(pipe, prompts, [500 + i for i in range(len(prompts))], steps=10)
    u = np.array([oracle(im, p) for im, p in zip(images, prompts, strict=False)])
    with torch.no_grad():
        score = model.score(images, prompts).numpy()
    out = {"n": len(images), "spearman": round(float(spearmanr(u, score).correlation), 4)}
    if len(set(u.tolist())) == 2:
        pos = u == u.max()
        out["auc"] = round(float(mannwhitneyu(score[pos], score[~pos]).statistic / (pos.sum() * (~pos).sum())), 4)
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
    """docs/train-bench.png: per algorithm, each oracle's grid win rate over epochs (top) and its training vs
    held-out reward (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(RESULTS.read_text()).get("quality", {})
    algos = [a for a in ("ddpo", "rwr", "dpo") if any(a in runs for runs in data.values())]
    if not algos:
        return
    fig, axes = plt.subplots(2, len(algos), figsize=(5.2 * len(algos), 7.5), squeeze=False)
    for col, algo in enumerate(algos):
        top, bottom = axes[0, col], axes[1, col]
        for oracle in (o for o in OPEN if algo in data.get(o, {})):
            r, color = data[oracle][algo], f"C{list(OPEN).index(oracle)}"  # one colour per oracle in every panel
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
    out = ROOT / "docs" / "train-bench.png"
    fig.savefig(out, dpi=100)
    print("wrote", out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["quality", "speed", "speed-child", "plot", "reward-check", "oracle-reward"])
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
    ap.add_argument("--eval-only", action="store_true", help="with --keep: evaluate the existing run t0001, no training")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="oracle-reward: a config field, e.g. ddpo.timestep_choice=random (repeatable)")
    args = ap.parse_args()
    if args.what == "quality":
        quality(args)
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
