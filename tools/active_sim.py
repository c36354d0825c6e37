"""Compare pair-selection rules for active learning, fast: a store-free copy of bench/bench_reward.py's loop.

Same 120-image pool, rater calibration (90% consistent), 3,000 test pairs and MLP x5 ensemble (refit every
50 votes after 50 random ones) as the bench, without the database, so a rule costs about a minute per
oracle and seed. Prints exact expected accuracy at 50/100/200/300/400/800 judgements and the share of
chosen pairs whose utilities differ. Exploration only; the issue's numbers come from bench_reward.py.

    .venv/bin/python tools/active_sim.py ORACLES RULES SEEDS
    .venv/bin/python tools/active_sim.py warm,centered random,epig,close 2

Rules: random, epig (what `uncertain` did until session 19), bald, qbc (variance of the members' utility
gap), fisher, close (nearest even odds under the ensemble mean: `uncertain` since session 19, which also
breaks ties by BALD), dopt (p(1-p) x squared embedding distance). Modifiers: RULE@0.5 (half the picks
random), RULE+cov (candidates: the 48 least-judged images), RULE+lin (linear heads for selection),
RULE+l2=X, RULE+refit=N (refit every N votes, default 50), RULE+warm=N (random pairs before the first fit,
default 50), RULE+cand=N (N candidate images, default 48); a modifier that takes a number goes last, and
only one of them per rule.
Session 18: close met random@400 at 300 on warm, cool, dark, bright; short by 0.001-0.008 elsewhere.
"""
import sys, hashlib, random, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "bench"))
import numpy as np, torch
torch.set_num_threads(1)
import bench_reward as B
from PIL import Image
from reward.embeddings import EmbeddingCache
from reward.fit import FitConfig, fit_ensemble
from rlft.oracles import resolve_oracle
from prefs.samplers import EPIG_SHORTLIST, EPIG_TARGETS, UNCERTAIN_CANDIDATES, pair_epig, _entropy_bits

B.WORK.mkdir(parents=True, exist_ok=True)
pool = B.make_pool(120, 10); paths = sorted(pool.glob("*.png"))[:120]
home = B.WORK / "home-curves"; home.mkdir(exist_ok=True)
shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
emb = EmbeddingCache("toy", home=home).embed_files(list(zip(shas, paths)), progress=False)
pil = [Image.open(p).convert("RGB") for p in paths]
N = len(paths)

def members_of(ia, ib, y, seed, head="mlp", l2=1.0):
    fit = fit_ensemble(emb, np.array(ia), np.array(ib), np.array(y, np.float32), FitConfig(head=head, seed=seed, l2=l2))
    return B.member_utilities(fit.heads, emb).astype(np.float64)

def select(strategy, M, judged, rng, counts=None, cand=UNCERTAIN_CANDIDATES):
    if counts is not None:  # coverage: the least-judged images (random among equals)
        ids = sorted(range(N), key=lambda i: (counts[i], rng.random()))[:cand]
    else:
        ids = rng.sample(range(N), cand)
    iu, ju = np.triu_indices(cand, 1)
    a, b = np.array(ids)[iu], np.array(ids)[ju]
    d = M[:, a] - M[:, b]
    pk = 1 / (1 + np.exp(-np.clip(d, -60, 60)))
    pij = pk.mean(0)
    bald = np.maximum(_entropy_bits(pij) - _entropy_bits(pk).mean(0), 0)
    if strategy == "epig":
        top = np.argsort(-bald, kind="stable")[:EPIG_SHORTLIST]
        t = rng.sample(range(len(iu)), min(EPIG_TARGETS, len(iu)))
        info = np.zeros_like(bald); info[top] = pair_epig(pk[:, top], pk[:, t]) + 1e-9
    elif strategy == "bald":
        info = bald
    elif strategy == "qbc":  # variance of the utility gap across members
        info = d.var(0)
    elif strategy == "close":  # closest to even odds under the mean
        info = -np.abs(pij - 0.5)
    elif strategy == "dopt":  # logistic Fisher information in the embedding: p(1-p) ||e_a - e_b||^2
        info = pij * (1 - pij) * ((emb[a] - emb[b]) ** 2).sum(1)
    elif strategy == "fisher":  # expected Fisher info p(1-p) x member variance of the gap
        info = pij * (1 - pij) * d.var(0)
    else:
        raise ValueError(strategy)
    order = np.lexsort((np.abs(pij - 0.5), -info))
    for k in order[:50]:
        x, yv = int(a[k]), int(b[k])
        if (min(x, yv), max(x, yv)) not in judged:
            return x, yv
    return None

def curve(u, T, test, strategy, seed, refit=B.REFIT, mix=0.0, shead="mlp", sl2=1.0, cov=False, cand=UNCERTAIN_CANDIDATES,
          warmup=B.WARMUP):
    counts = np.zeros(N)
    rng = random.Random(seed)
    ia, ib, y, judged, accs, M = [], [], [], set(), [], None
    distinct = []
    for k in range(1, 801):
        pair = None
        if strategy != "random" and k > warmup and rng.random() >= mix:
            if M is None or (k - 1 - warmup) % refit == 0:
                M = members_of(ia, ib, y, seed + k, shead, sl2)
            pair = select(strategy, M, judged, rng, counts if cov else None, cand)
        if pair is None:
            while True:
                x, yv = rng.sample(range(N), 2)
                if (min(x, yv), max(x, yv)) not in judged: break
            pair = (x, yv)
        x, yv = pair
        judged.add((min(x, yv), max(x, yv))); counts[x] += 1; counts[yv] += 1
        out = 1.0 if rng.random() < B.sigmoid((u[x] - u[yv]) / T) else 0.0
        ia.append(x); ib.append(yv); y.append(out)
        if k > warmup: distinct.append(abs(u[x] - u[yv]) > 1e-9)
        if k in B.CHECKPOINTS:
            accs.append(B.ensemble_accuracy(members_of(ia, ib, y, seed), test))
    return accs, float(np.mean(distinct))

if __name__ == "__main__":
    oracles, strats, seeds = sys.argv[1].split(","), sys.argv[2].split(","), int(sys.argv[3])
    for name in oracles:
        fn = resolve_oracle(name)
        u = np.array([fn(im, "") for im in pil], dtype=float)
        T, test, _ = B.oracle_test(u)
        for s in strats:
            mix, shead, sl2, refit, cand, warmup = 0.0, "mlp", 1.0, B.REFIT, UNCERTAIN_CANDIDATES, B.WARMUP
            s0 = s
            if "+warm=" in s0: s0, warmup = s0.split("+warm=")[0], int(s0.split("+warm=")[1])
            if "+refit=" in s0: s0, refit = s0.split("+refit=")[0], int(s0.split("+refit=")[1])
            if "+cand=" in s0: s0, cand = s0.split("+cand=")[0], int(s0.split("+cand=")[1])
            cov = "+cov" in s0; s0 = s0.replace("+cov", "")
            if "+lin" in s0: s0, shead = s0.replace("+lin", ""), "linear"
            if "+l2=" in s0: s0, sl2 = s0.split("+l2=")[0], float(s0.split("+l2=")[1])
            if "@" in s0: s0, mix = s0.split("@")[0], float(s0.split("@")[1])
            t0 = time.time()
            res = [curve(u, T, test, s0, sd, refit=refit, mix=mix, shead=shead, sl2=sl2, cov=cov, cand=cand, warmup=warmup) for sd in range(seeds)]
            acc = np.mean([r_[0] for r_ in res], 0); dist = np.mean([r_[1] for r_ in res])
            print(f"{name} {s:10s} 50/100/200/300/400/800 = {np.round(acc,3).tolist()} distinct={dist:.2f} ({time.time()-t0:.0f}s)", flush=True)
