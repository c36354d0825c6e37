"""Benchmark: a new person's reward from few judgements, with and without a population prior (toy world).

1. Pool: toy-pipeline images from prompts that name only the shape (bench_reward's pool), split by a seeded
   permutation into judged images and fresh ones that no rater ever sees (the held-out images).
2. Population prior: 6 simulated raters, each 90% consistent with a mix of built-in oracles (POPULATION; noise
   calibrated on the judged images as `rlft simulate --consistency 0.9` does), judge 300 random pairs each;
   `rlft reward train` on all 1,800 gives the population's reward version.
3. A new rater with another mix (NEW), 90% consistent, judges n = 10, 25, 50, 100, 200 random pairs (nested: the
   first n of one sequence); for each n, `rlft reward train` with its defaults without a prior (MLP x5) and with
   `--prior <the population version>` (weight learnt; linear personal heads x5), for 4 rater seeds (pairs, noise
   and training seed).
4. On the fresh images: held-out accuracy, the expected agreement with the new rater's judgements (over its noise)
   on 3,000 random fresh pairs, and Spearman of the reward against the new rater's noiseless utility.

Target: with the prior at 50 judgements >= without it at 200, on both metrics (means over the seeds).
Writes bench/results/prior.json and docs/prior_learning_curves.png.

    .venv/bin/python bench/bench_prior.py [--seeds 4] [--pool 360] [--fresh 120] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

POPULATION = ("warm+big", "warm+centered", "big+centered", "warm+bright", "big+bright", "warm+big+bright")
NEW = "warm+big+centered"  # a mix no population rater has
POPULATION_JUDGEMENTS = 300  # per population rater
CHECKPOINTS = (10, 25, 50, 100, 200)
N_TEST = 3000
CONSISTENCY = 0.90
WORK = ROOT / "tmp" / "bench_prior"


def sigmoid(z):
    return 1 / (1 + np.exp(-np.clip(z, -50, 50)))


def utilities(oracle: str, images) -> np.ndarray:
    from rlft.sim.oracles import resolve_oracle

    fn = resolve_oracle(oracle)
    return np.array([fn(im, "") for im in images], dtype=float)


def judge(store, rows, u: np.ndarray, T: float, n: int, rng, rater: str) -> list[tuple[int, int, str]]:
    """`n` random pairs of `rows` judged by a rater with utilities `u` and noise T, recorded under `rater`."""
    out = []
    while len(out) < n:
        a, b = rng.integers(0, len(rows), 2)
        if a == b:
            continue
        outcome = "a" if rng.random() < sigmoid((u[a] - u[b]) / T) else "b"
        out.append((int(a), int(b), outcome))
    record(store, rows, out, rater)
    return out


def record(store, rows, judgements, rater: str) -> None:
    for a, b, outcome in judgements:
        store.record_judgement(rows[a], rows[b], outcome, rater=rater, shown_left="a")


def evaluate(model, fresh_x, u_fresh: np.ndarray, test) -> dict:
    import torch
    from scipy.stats import spearmanr

    with torch.no_grad():
        s = model.score(fresh_x).numpy()
    ti, tj, tp = test
    pick = np.sign(s[ti] - s[tj])
    acc = float(np.where(pick > 0, tp, np.where(pick < 0, 1 - tp, 0.5)).mean())
    return {"accuracy": round(acc, 4), "spearman": round(float(spearmanr(s, u_fresh).correlation), 4)}


def plot(result: dict, path: Path, new: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric, label in ((axes[0], "accuracy", "held-out accuracy"), (axes[1], "spearman", "Spearman vs oracle")):
        for name, style in (("no_prior", "o-"), ("prior", "s-")):
            ax.plot(CHECKPOINTS, result[name][metric]["mean"], style,
                    label="population prior + judgements" if name == "prior" else "judgements only")
        ax.axhline(result["prior_alone"][metric], color="tab:green", ls=":", label="population prior alone")
        if metric == "accuracy":
            ax.axhline(result["ceiling"], color="gray", ls="--", label="oracle ceiling")
        ax.set_xscale("log")
        ax.set_xticks(CHECKPOINTS, [str(c) for c in CHECKPOINTS])
        ax.minorticks_off()
        ax.set_xlabel("the new rater's judgements")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"new rater {new}; prior: 6 raters x {POPULATION_JUDGEMENTS} judgements", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4, help="new raters (rater seeds 0 .. seeds-1)")
    ap.add_argument("--pool", type=int, default=360, help="toy-pipeline images in all")
    ap.add_argument("--fresh", type=int, default=120, help="of those, images never judged (the held-out images)")
    ap.add_argument("--gen-steps", type=int, default=10, help="DDIM steps of the pool images")
    ap.add_argument("--first-seed", type=int, default=0, help="rater seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--new", default=NEW, help="the new rater's oracle mix")
    ap.add_argument("--l2", type=float, default=None, help="--l2 of the new rater's rewards (default: rlft's)")
    ap.add_argument("--prior-l2", type=float, default=None, help="--l2 of the rewards with the prior (default: rlft's)")
    ap.add_argument("--prior-head", default=None, help="--head of the rewards with the prior (default: rlft's)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--work", default=str(WORK), help="scratch folder (a fresh home each run)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "prior.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "prior_learning_curves.png"))
    args = ap.parse_args()
    import bench_reward
    import torch
    from PIL import Image

    import prefs
    import reward
    from reward.embeddings import pil_to_tensor
    from reward.training import RewardTrainConfig
    from rlft.sim.rater import calibrate_noise

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    bench_reward.WORK.mkdir(parents=True, exist_ok=True)
    paths = sorted(bench_reward.make_pool(args.pool, args.gen_steps).glob("*.png"))[: args.pool]
    order = np.random.default_rng(0).permutation(len(paths))
    fresh_paths = [paths[i] for i in order[: args.fresh]]
    pool_paths = [paths[i] for i in order[args.fresh:]]
    pool_pil = [Image.open(p).convert("RGB") for p in pool_paths]
    fresh_pil = [Image.open(p).convert("RGB") for p in fresh_paths]
    fresh_x = torch.stack([pil_to_tensor(im) for im in fresh_pil])
    print(f"pool: {len(pool_paths)} judged + {len(fresh_paths)} fresh images", flush=True)

    shutil.rmtree(args.work, ignore_errors=True)
    home = Path(args.work) / "home"
    home.mkdir(parents=True)

    def open_store(name: str, seed: int):
        store = prefs.open_store(f"sqlite:///{home / name}.sqlite", home=home, seed=seed)
        rows = [store.add_image(p, prompt="", model="toy") for p in pool_paths]
        return store, rows

    # The population: 6 raters of different mixes, one reward version on all their judgements.
    raters = {}
    store, rows = open_store("population", 0)
    with store:
        for k, mix in enumerate(POPULATION):
            u = utilities(mix, pool_pil)
            T = calibrate_noise(u, CONSISTENCY, np.random.default_rng(k))
            judge(store, rows, u, T, POPULATION_JUDGEMENTS, np.random.default_rng(100 + k), f"pop{k}")
            raters[mix] = {"noise": round(T, 4)}
        t = time.perf_counter()
        population = reward.train(store, RewardTrainConfig(clip="toy", val_frac=0), progress=False, home=home)
        population_s = time.perf_counter() - t
    print(f"population prior {population.version}: {population.n_judgements} judgements, {population_s:.1f} s", flush=True)

    # The new rater: utilities, noise, test pairs over the fresh images.
    u_pool, u_fresh = utilities(args.new, pool_pil), utilities(args.new, fresh_pil)
    T = calibrate_noise(u_pool, CONSISTENCY, np.random.default_rng(7))
    rng = np.random.default_rng(123)
    ti, tj = rng.integers(0, len(fresh_pil), N_TEST), rng.integers(0, len(fresh_pil), N_TEST)
    keep = ti != tj
    ti, tj = ti[keep], tj[keep]
    tp = sigmoid((u_fresh[ti] - u_fresh[tj]) / T)
    test = (ti, tj, tp)
    ceiling = float(np.where(u_fresh[ti] > u_fresh[tj], tp, np.where(u_fresh[ti] < u_fresh[tj], 1 - tp, 0.5)).mean())
    prior_alone = evaluate(reward.load(population.path), fresh_x, u_fresh, test)
    print(f"new rater {args.new}: T={T:.3f}, ceiling {ceiling:.3f}; prior alone {prior_alone}", flush=True)

    # rlft's defaults (reward.training.fit_defaults: MLP, L2 1 alone; a linear personal head, L2 10 beside a prior),
    # unless overridden (the prior-personal-head trial)
    fit = {} if args.l2 is None else {"l2": args.l2}
    fit_prior = {k: v for k, v in (("head", args.prior_head), ("l2", args.prior_l2)) if v is not None}
    per_seed = {"no_prior": [], "prior": []}
    weights, train_s = [], {"no_prior": [], "prior": []}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        store, rows = open_store(f"new-{seed}", seed)
        with store:
            rng = np.random.default_rng(1000 + seed)
            judgements = []
            while len(judgements) < CHECKPOINTS[-1]:
                a, b = rng.integers(0, len(rows), 2)
                if a != b:
                    judgements.append((int(a), int(b), "a" if rng.random() < sigmoid((u_pool[a] - u_pool[b]) / T) else "b"))
            rows_acc = {"no_prior": [], "prior": []}
            for n in CHECKPOINTS:
                record(store, rows, judgements[:n], f"n{n}")
                for name, prior in (("no_prior", None), ("prior", str(population.path))):
                    t = time.perf_counter()
                    result = reward.train(store, RewardTrainConfig(clip="toy", val_frac=0, rater=f"n{n}", seed=seed,
                                                                   prior=prior, fit=fit_prior if prior else fit),
                                          progress=False, home=home)
                    train_s[name].append(time.perf_counter() - t)
                    m = evaluate(reward.load(result.path), fresh_x, u_fresh, test)
                    rows_acc[name].append(m)
                    if prior:
                        weights.append({"seed": seed, "n": n, "weight": round(result.model.metadata["prior"]["weight"]["mean"], 4)})
                print(f"seed {seed} n={n}: no prior {rows_acc['no_prior'][-1]}  prior {rows_acc['prior'][-1]}", flush=True)
            for name in per_seed:
                per_seed[name].append(rows_acc[name])

    result = {"ceiling": round(ceiling, 4), "prior_alone": prior_alone}
    for name in per_seed:
        result[name] = {}
        for metric in ("accuracy", "spearman"):
            values = np.array([[m[metric] for m in seed_rows] for seed_rows in per_seed[name]])
            result[name][metric] = {"mean": [round(float(v), 4) for v in values.mean(0)],
                                    "std": [round(float(v), 4) for v in values.std(0, ddof=1)] if len(values) > 1 else None,
                                    "per_seed": values.tolist()}
    i50, i200 = CHECKPOINTS.index(50), CHECKPOINTS.index(200)
    targets = {metric: {"prior_50": result["prior"][metric]["mean"][i50],
                        "no_prior_200": result["no_prior"][metric]["mean"][i200],
                        "met": result["prior"][metric]["mean"][i50] >= result["no_prior"][metric]["mean"][i200]}
               for metric in ("accuracy", "spearman")}
    out = {
        "benchmark": "prior",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "threads": args.threads,
                    "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "setup": {"pool_images": len(pool_paths), "fresh_images": len(fresh_paths), "pool_gen_steps": args.gen_steps,
                  "population": {"raters": raters, "judgements_each": POPULATION_JUDGEMENTS,
                                 "version_train_s": round(population_s, 1)},
                  "new_rater": {"oracle": args.new, "noise": round(T, 4), "consistency": CONSISTENCY},
                  "checkpoints": CHECKPOINTS, "seeds": args.seeds, "first_seed": args.first_seed,
                  "fit": {"no_prior": fit, "prior": fit_prior}, "test_pairs": int(len(ti)),
                  "reward": "rlft reward train defaults (x5 members, --val-frac 0; MLP heads at L2 1 alone, linear "
                            "personal heads at L2 10 beside the prior) and `fit`'s overrides; --prior <population "
                            "version>, its weight learnt",
                  "accuracy": "expected agreement with the new rater's judgements (over its noise) on random pairs of "
                              "the fresh images",
                  "spearman": "the reward's ensemble mean against the new rater's noiseless utility on the fresh images"},
        "curves": result,
        "prior_weights": weights,
        "train_s": {name: round(float(np.mean(v)), 2) for name, v in train_s.items()},
        "targets": targets,
        "target_met": all(t["met"] for t in targets.values()),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    plot(result, Path(args.plot), args.new)
    print(json.dumps(targets), flush=True)


if __name__ == "__main__":
    main()
