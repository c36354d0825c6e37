"""`rlft reward train` as a library call: judgements -> embeddings -> heads -> held-out metrics -> a version.

With the defaults the CLIP tower is frozen and its embeddings come from the on-disk cache (`reward.fit`, seconds).
`--head patch` reads the frozen tower's patch tokens (computed in memory); `--tune lora|blocks` tunes the tower
with the heads (`reward.tune`), and the version folder keeps the tuned tensors beside the heads."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from prefs.errors import UserError
from reward import evaluate
from reward.data import PairData, load_pairs, split
from reward.fit import FitConfig, fit_ensemble
from reward.heads import TOKEN_HEADS
from reward.tune import TuneConfig
from reward.versions import TOWER_NAME

_log = logging.getLogger(__name__)


# The personal part beside a scored prior (a reward version or a built-in): a linear head under a stronger L2 prior,
# a small smooth correction that few judgements cannot turn into noise (docs/experiments.md prior-personal-head).
PRIOR_FIT = {"head": "linear", "l2": 10.0}


def fit_defaults(prior: str | None) -> dict:
    """The FitConfig fields whose defaults depend on `--prior`: PRIOR_FIT beside a scored prior, else none."""
    from reward.prior import parse_prior

    spec = parse_prior(prior)
    return dict(PRIOR_FIT) if spec is not None and spec.kind != "laion" else {}


@dataclasses.dataclass
class RewardTrainConfig:
    """Everything `train` needs besides the store; saved in the version's reward.json."""

    clip: str = "toy"  # CLIP spec for the embeddings (ViT-L-14/openai for SD 1.x)
    fit: FitConfig | None = None  # head, ensemble, ties, L2, steps (None: FitConfig(**fit_defaults(prior)))
    val_frac: float = 0.2  # share of judgements held out for the metrics (0: train on all, no metrics)
    split: str = "random"  # random (seeded), time (newest judgements held out) or image (unseen images held out)
    prior: str | None = None  # a reward version, pickscore | hpsv2 | laion-aesthetic (reward.prior), or laion:PATH
    prior_weight: float | None = None  # w in w * prior + personal: None learns it, a number fixes it
    rater: str | None = None  # only this rater's judgements (default: everyone's)
    seed: int = 0  # split, bootstrap and initialisation
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)  # tower: frozen (default), or LoRA / last blocks tuned

    def __post_init__(self):
        if self.fit is None:
            self.fit = FitConfig(**fit_defaults(self.prior))
        if isinstance(self.fit, dict):
            self.fit = FitConfig(**{**fit_defaults(self.prior), **self.fit})
        if isinstance(self.tune, dict):
            self.tune = TuneConfig(**self.tune)
        from reward.prior import parse_prior

        spec = parse_prior(self.prior)
        if spec is not None and self.fit.head == "patch":
            what = "a LAION prior is a head on" if spec.kind == "laion" else "a prior is read beside"
            raise UserError(f"{what} the pooled embedding: use it without --head patch")
        if spec is not None and spec.kind != "laion" and self.tune.mode != "none":
            raise UserError(f"--prior {self.prior} is fitted on the frozen CLIP's embeddings: use it with --tune none")
        if self.prior_weight is not None:
            if spec is None or spec.kind == "laion":
                raise UserError("--prior-weight needs a --prior to weigh (a reward version, pickscore, hpsv2 or "
                                "laion-aesthetic)")
            if not (isinstance(self.prior_weight, (int, float)) and math.isfinite(self.prior_weight)):
                raise UserError(f"--prior-weight must be a finite number, got {self.prior_weight!r}")
        if not 0 <= self.val_frac < 1:
            raise UserError(f"--val-frac must be in [0, 1), got {self.val_frac}")


@dataclasses.dataclass
class TrainResult:
    path: Path  # the new version folder
    version: str
    metrics: dict  # val metrics of the reward and of each baseline
    n_judgements: int
    model: object = None  # the new reward in memory, a RewardModel (what `reward.load` of the version gives)


def embedded_pairs(store, cache, rater: str | None = None, prompt: bool = False, progress: bool = False,
                   notice: Callable[[str], None] | None = None):
    """The standing judgements (of `rater`, or everyone) as PairData, with image embeddings and, for
    prompt-conditioned heads, prompt embeddings (else None), both from `cache`.

    A judgement of an image whose pool file is missing or unreadable is left out, with one notice per such
    image (default: a logged warning); UserError when no judgement is left."""
    data = load_pairs(store, rater)
    kept, x = cache.embed_pool(store, data.images, progress=progress, notice=notice)
    if len(kept) < len(data.images):
        n = len(data)
        data = data.only_images({im.sha256 for im in kept})
        if not len(data):
            raise UserError(f"no judgement left to learn from: each of the {n} involves an image whose pool file is "
                            "missing or unreadable")
        (notice or _log.warning)(f"left out {n - len(data)} of {n} judgements over images whose files are missing")
        row = {im.sha256: i for i, im in enumerate(kept)}
        x = x[[row[s] for s in data.shas]]
    t = cache.embed_texts([im.prompt or "" for im in data.images]) if prompt else None
    return data, x, t


def train(store, config: RewardTrainConfig | None = None, progress: bool = True, home=None, save: bool = True,
          notice: Callable[[str], None] | None = None) -> TrainResult:
    """Fit a reward on the store's judgements and write it as the next version (`r0001`, ...).

    `notice(message)`: told of judgements left out because an image's pool file is missing (default: logged)."""
    from reward.clip import resolve_clip
    from reward.embeddings import EmbeddingCache
    from reward.laion import load_laion
    from reward.model import load, save_weights
    from reward.prior import PRIOR_DIR, PriorScoreCache, check_world, check_world_of, load_prior, parse_prior
    from reward.versions import read_meta, write_version

    config = config or RewardTrainConfig()
    spec = parse_prior(config.prior)
    prior_path = spec.spec if spec is not None and spec.kind == "laion" else None
    resolve_clip(config.clip)  # an unknown spec fails before any work
    prior = load_laion(prior_path) if prior_path else None
    scored = None  # a prior scored on pixels (a reward version or a built-in): w * prior + personal
    if spec is not None and spec.kind != "laion":
        if spec.kind == "builtin":  # public rewards judge real images: refused for the toy world before loading
            check_world_of(spec.spec, "real", config.clip)
        scored = load_prior(spec, home, load_model=load)
        check_world(scored, config.clip)
    cache = EmbeddingCache(config.clip, home=home)
    if config.tune.mode != "none" or config.fit.head in TOKEN_HEADS:  # a tower that cannot be tuned fails before any work
        from reward.tower import check_tower

        check_tower(cache.clip, "none" if config.tune.mode == "heads" else config.tune.mode,
                    "tokens" if config.fit.head in TOKEN_HEADS else "pooled", config.tune.blocks)
    data, x, t = embedded_pairs(store, cache, config.rater, config.fit.prompt, progress, notice)
    if prior is not None:
        prior.path = prior_path
        if prior.in_dim != x.shape[1]:
            raise UserError(f"the LAION head expects {prior.in_dim}-d embeddings but --clip {config.clip} gives "
                            f"{x.shape[1]}-d; use --clip ViT-L-14/openai with LAION priors")
    s = None  # the scored prior's scores of the judged images
    if scored is not None:
        kept, s = PriorScoreCache(scored, home).scores(store, data.images, notice)
        if len(kept) != len(data.images):  # read a moment ago for the embeddings: the files went meanwhile
            raise UserError("pool files went missing while the reward was trained; run it again")
    tr, va = split(len(data), config.val_frac, config.split, config.seed, data.ia, data.ib, data.order)
    train_data = data.take(tr)
    fit = dataclasses.replace(config.fit, seed=config.seed)
    tower, tower_meta = None, {"mode": "none", "output": "pooled"}
    if config.tune.mode == "none" and config.fit.head not in TOKEN_HEADS:
        start = 1.0 if scored is None or scored.kind == "version" else 1.0 / max(float(np.std(s)), 1e-6)
        fitted = fit_ensemble(x, train_data.ia, train_data.ib, train_data.y, fit, t=t, prior=prior, prior_scores=s,
                              prior_weight=config.prior_weight, prior_start=start)
        features = torch.as_tensor(x)
    else:
        fitted, tower, features, tower_meta = _fit_with_tower(store, data, train_data, data.take(va), config, fit,
                                                              cache, x, t, prior, progress)
    with torch.no_grad():
        T = torch.as_tensor(t) if t is not None else None
        extra = () if s is None else (torch.as_tensor(s),)
        member = torch.stack([h(features, None if T is None else T.to(features.device), *extra)
                              for h in fitted.heads]).cpu().numpy()
    # val_accuracy is always there (null without a validation split): `reward list` promises it for every version.
    metrics: dict = {"train_loss": float(np.mean(fitted.train_loss)), "n_train": int(len(tr)), "n_val": int(len(va)),
                     "val_accuracy": None}
    if len(va):
        val = data.take(va)
        metrics.update(_evaluate(member, x, val, config, cache, data, train_data, prior, s))
    meta = {
        "clip_spec": config.clip,
        "clip_key": cache.source.cache_key(),
        "embed_dim": int(x.shape[1]),
        "config": {**dataclasses.asdict(config), "head": "laion" if prior is not None else config.fit.head},
        "heads": [h.config for h in fitted.heads],
        "n_judgements": len(data),
        "n_images": len(data.shas),
        "metrics": metrics,
        "tie_model": config.fit.ties,
        "log_theta": None if fitted.log_theta is None else float(fitted.log_theta),
        "tower": tower_meta,
    }
    if scored is not None:
        weights = [float(h.weight.detach()) for h in fitted.heads]
        meta["prior"] = {**scored.record(), "folder": PRIOR_DIR if scored.kind == "version" else None,
                         "weight": {"mode": "set" if config.prior_weight is not None else "learnt",
                                    "start": float(fitted.heads[0].start), "members": weights,
                                    "mean": float(np.mean(weights))}}
    from reward.model import RewardModel

    def in_memory(meta, path=None):
        return RewardModel(fitted.heads, config.clip, meta, path, fitted.log_theta, tower=tower, prior=scored)

    if not save:
        return TrainResult(Path(), "", metrics, len(data), in_memory(meta))
    tower_bytes = _tower_file(tower, meta["tower"])

    def write_weights(p: Path) -> None:
        save_weights(p, fitted.heads, fitted.log_theta)
        if tower_bytes is not None:
            (p.parent / TOWER_NAME).write_bytes(tower_bytes)
        if scored is not None and scored.kind == "version":  # the prior goes with the version
            import shutil

            shutil.copytree(scored.record()["path"], p.parent / PRIOR_DIR)

    path = write_version(meta, write_weights, home)
    return TrainResult(path, path.name, metrics, len(data), in_memory(read_meta(path), path))


def _fit_with_tower(store, data, train_data, val, config, fit, cache, x, t, prior, progress):
    """Heads on the tower's features: patch tokens of the frozen tower (computed in memory, heads fitted
    full-batch as on cached embeddings), or a tower tuned with the heads. Returns (fitted, tower, features of
    every image, the tower's provenance for reward.json)."""
    from reward.tower import Tower
    from reward.tune import fit_tuned, pool_pixels, prefix_features, suffix_features

    output = "tokens" if config.fit.head in TOKEN_HEADS else "pooled"
    clip = cache.clip
    if config.tune.mode == "heads" and output == "pooled":  # the cached embeddings are the frozen tower's features
        fitted = fit_tuned(clip, None, (train_data.ia, train_data.ib, train_data.y), (val.ia, val.ib, val.y), fit,
                           config.tune, output, t=t, prior=prior, progress=progress,
                           features=torch.as_tensor(x, dtype=torch.float32))
        return fitted, None, fitted.features, {**fitted.tower.spec, "file": None, "trainable_params": 0,
                                               "fit": fitted.history}
    pixels = pool_pixels(store, data.images, clip)
    if config.tune.mode == "none":
        tower = Tower(clip, "none", output)
        features = suffix_features(tower, prefix_features(tower, pixels)).cpu()  # heads fitted full-batch on the CPU
        fitted = fit_ensemble(features.numpy(), train_data.ia, train_data.ib, train_data.y, fit, t=t, prior=prior)
        return fitted, tower, features, {**tower.spec, "file": None, "trainable_params": 0}
    fitted = fit_tuned(clip, pixels, (train_data.ia, train_data.ib, train_data.y), (val.ia, val.ib, val.y), fit,
                       config.tune, output, t=t, prior=prior, progress=progress)
    trainable = sum(p.numel() for p in fitted.tower.trainable_parameters())
    return fitted, fitted.tower, fitted.features, {**fitted.tower.spec, "file": TOWER_NAME if trainable else None,
                                                   "trainable_params": trainable, "fit": fitted.history}


def _tower_file(tower, tower_meta: dict) -> bytes | None:
    """The tuned tower's tensors as safetensors bytes (None for a frozen tower); their sha256 goes in `tower_meta`."""
    if tower is None or not tower.train_names:
        return None
    import hashlib

    from safetensors.torch import save

    data = save(tower.trainable_state())
    tower_meta["sha256"] = hashlib.sha256(data).hexdigest()
    return data


def _p_from_scores(s: np.ndarray, val: PairData) -> np.ndarray:
    return evaluate.sigmoid(s[val.ia] - s[val.ib])


def _evaluate(member: np.ndarray, x, val: PairData, config, cache, data, train_data, prior, prior_scores=None) -> dict:
    """Held-out metrics of the members' utilities (K x N, over `data.shas`) and the baselines (`x`: the frozen
    CLIP embeddings; `prior_scores`: a scored prior's, over `data.shas`)."""
    # Ensemble prediction: average the members' probabilities (a proper mixture), not their scores.
    p = evaluate.sigmoid(member[:, val.ia] - member[:, val.ib]).mean(0)
    out = {"val_" + k: v for k, v in evaluate.metrics(p, val.y, config.seed).items()}
    baselines = {}
    # CLIP image-text similarity with each image's own prompt, on CLIP's logit scale.
    prompts = [im.prompt or "" for im in data.images]
    if any(prompts):
        te = cache.embed_texts(prompts)
        scale = float(cache.clip.model.logit_scale.exp()) if hasattr(cache.clip.model, "logit_scale") else 100.0
        sim = (x * te).sum(1) * scale
        baselines["clip_similarity"] = evaluate.metrics(_p_from_scores(sim, val), val.y, config.seed)
    if prior is not None:
        with torch.no_grad():
            s = prior(torch.as_tensor(x)).numpy()
        baselines["laion_prior"] = evaluate.metrics(_p_from_scores(s, val), val.y, config.seed)
    if prior_scores is not None:
        baselines["prior"] = evaluate.metrics(_p_from_scores(np.asarray(prior_scores), val), val.y, config.seed)
    # Bradley-Terry item scores from the training judgements, on val pairs whose images were both seen.
    from prefs import bt

    seen = np.zeros(len(data.shas), bool)
    seen[train_data.ia] = seen[train_data.ib] = True
    s = bt.fit(len(data.shas), train_data.ia, train_data.ib, train_data.y)
    both = seen[val.ia] & seen[val.ib]
    if both.any():
        sub = val.take(np.flatnonzero(both))
        m = evaluate.metrics(_p_from_scores(s, sub), sub.y, config.seed)
        m["reward_accuracy_same_pairs"] = evaluate.accuracy(p[both], sub.y)
        baselines["bt_items"] = m
    out["baselines"] = baselines
    return out


def metrics_table(metrics: dict) -> str:
    """The held-out metrics of the reward and its baselines as a small text table."""
    rows = [("reward", {k[4:]: v for k, v in metrics.items() if k.startswith("val_")})]
    rows += list(metrics.get("baselines", {}).items())
    lines = [f"{'model':<18}{'n':>6}{'accuracy':>10}{'95% CI':>16}{'log-loss':>10}{'ECE':>8}"]
    for name, m in rows:
        if not m or m.get("n") is None:
            continue
        ci = m.get("ci95") or [float("nan")] * 2
        lines.append(f"{name:<18}{m['n']:>6}{m['accuracy']:>10.3f}{f'[{ci[0]:.3f}, {ci[1]:.3f}]':>16}"
                     f"{m['log_loss']:>10.3f}{m['ece']:>8.3f}")
    return "\n".join(lines)
