"""Tune the CLIP image tower jointly with the reward heads on the judgements (`rlft reward train --tune lora|blocks`).

The frozen path (`--tune none`, the default) fits heads full-batch on cached embeddings in seconds. `--tune heads`
keeps the tower frozen but trains the heads as the tuned path does (mini-batches, early stopping on the held-out
judgements), which separates the tower's contribution from the training regime's. `--tune blocks` tunes the
last blocks (2 by default) with the heads; `--tune lora` puts LoRA adapters on every block. On the toy world
(`bench/bench_reward.py spearman`, docs/experiments.md reward-spearman) tuning pays on size and luminance
tastes, the early-stopped heads alone already on colour ones, and LoRA costs 4-5x the time of two blocks for no
better ranking (reward-tuning-sweep). `--head patch` reads the patch tokens as well, so that *where* and *how
big* are visible (also from the frozen tower); measured, it helps luminance tastes most and position not yet
(centered-spearman-ceiling).

The ensemble shares one tuned tower: K heads, each on its own bootstrap resample of the judgements (Poisson(1)
weights, as the frozen path's), trained jointly with the tower, whose gradient is their mean. Independent LoRAs per
member would give a truer spread (the members' disagreement here leaves out the tower's own uncertainty, so the
`uncertain` strategy and the trainer's held-out member see somewhat less doubt than there is), but they cost K
times everywhere the tower runs: K tunings (5 x 0.3-4 minutes on the toy CLIP, past the 5-minute budget), and K
tower passes per image wherever the reward is applied, in the trainer's differentiable reward above all. One tower
keeps `RewardModel.embed` one pass for all members, and the spread among heads still ranks pairs for active
learning as the frozen path's does.

Overfitting a few hundred judgements is held off three ways: early stopping on the validation loss (the best
epoch's weights are kept; `--split image` makes that loss one on unseen images, which is what fresh samples are),
decoupled weight decay of the tuned tensors toward their start (LoRA: toward the frozen tower), and the heads' own
L2 prior (`--l2`). The frozen prefix of the tower runs once per image (`Tower.prefix`), so tuning only the last
blocks costs a fraction of tuning all of them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time

import numpy as np
import torch

from prefs.errors import UserError
from reward.fit import FitConfig, FitResult, pair_diff
from reward.loss import bt_loss, rao_kupper_loss
from reward.tower import Tower

PREFIX_BATCH = 64  # images per pass when running the frozen prefix
TUNE_MODES = ("none", "heads", "lora", "blocks")


@dataclasses.dataclass
class TuneConfig:
    """How the CLIP image tower is tuned with the heads (`--tune`); saved in the version's reward.json."""

    # none: frozen tower, heads fitted full-batch (the fast default); heads: frozen tower, heads trained as below
    # (mini-batches, early stopping); lora | blocks: the tower tuned with them
    mode: str = "none"
    lora_rank: int = 8  # LoRA rank on every block's attention and MLP (mode lora); higher adapts more, overfits sooner
    blocks: int = 2  # the last N residual blocks trained, with the final norm and projection (2: reward-tuning-sweep)
    epochs: int = 30  # passes over the training judgements at most; early stopping usually ends sooner
    patience: int = 4  # epochs without a lower validation loss before stopping (0: run every epoch); needs --val-frac > 0
    tower_lr: float = 1e-4  # Adam step size of the tuned tensors (a few hundred judgements move them far; 3e-4 overfit)
    head_lr: float = 3e-3  # Adam step size of the heads (mini-batches: the frozen path's full-batch 0.05 is too big)
    weight_decay: float = 0.1  # decoupled decay of the tuned tensors toward their start, per unit step size
    batch_pairs: int = 32  # judgements per optimiser step

    def __post_init__(self):
        if self.mode not in TUNE_MODES:
            raise UserError(f"unknown --tune {self.mode!r}; valid: {', '.join(TUNE_MODES)}")
        for name in ("lora_rank", "blocks", "epochs", "batch_pairs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {v!r}")
        if not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience < 0:
            raise UserError(f"--patience must be a whole number >= 0, got {self.patience!r}")
        for name in ("tower_lr", "head_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise UserError(f"--{name.replace('_', '-')} must be a number > 0, got {v!r}")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"--weight-decay must be a number >= 0, got {self.weight_decay!r}")


@dataclasses.dataclass
class TunedFit(FitResult):
    tower: Tower | None = None
    features: torch.Tensor | None = None  # the final tower's features of every image (the heads' input)
    history: dict = dataclasses.field(default_factory=dict)  # epochs run, best epoch, losses per epoch, seconds


def pool_pixels(store, images, clip) -> torch.Tensor:
    """The pool images (prefs Image rows) decoded and preprocessed for `clip`: N x 3 x S x S (any file size)."""
    from prefs.pool import read_image
    from reward.embeddings import pil_to_tensor

    out = []
    for im in images:
        x = pil_to_tensor(read_image(store.image_path(im), im.sha256[:12]))[None]
        out.append(clip.preprocess(x.to(clip.preprocess.mean.device)))
    return torch.cat(out)


def prefix_features(tower: Tower, pixels: torch.Tensor) -> torch.Tensor:
    """The frozen prefix of `tower` on preprocessed images, in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([tower.prefix(pixels[i:i + PREFIX_BATCH]) for i in range(0, len(pixels), PREFIX_BATCH)])


def suffix_features(tower: Tower, hidden: torch.Tensor, idx=None) -> torch.Tensor:
    """Features from prefix outputs (all, or the rows `idx`), in batches, without gradients."""
    hidden = hidden if idx is None else hidden[idx]
    with torch.no_grad():
        return torch.cat([tower.suffix(hidden[i:i + PREFIX_BATCH]) for i in range(0, len(hidden), PREFIX_BATCH)])


def fit_tuned(clip, pixels: torch.Tensor | None, train: tuple, val: tuple | None, fit: FitConfig, tune: TuneConfig,
              output: str, t: np.ndarray | None = None, prior=None, progress: bool = False,
              features: torch.Tensor | None = None) -> TunedFit:
    """Tune a copy of `clip`'s image tower jointly with `fit.ensemble` heads; returns the best epoch's tower and heads.

    `pixels`: N x 3 x S x S preprocessed images (`Clip.preprocess`), the images the judgements index; `train`, `val`:
    (ia, ib, y) judgement arrays (val None or empty: no early stopping, every epoch runs); `t`: N x D prompt
    embeddings for prompt-conditioned heads; `prior`: a LAION head to start every member from (pooled output).
    With `tune.mode` "heads" the tower stays frozen and only the heads are trained, this same way; then
    `features` (the frozen features, e.g. the cached embeddings) may stand in for `pixels`.
    """
    from tqdm.auto import tqdm

    ia, ib, y = (np.asarray(a) for a in train)
    if len(ia) == 0:
        raise UserError("no usable judgements to fit (a, b and tie outcomes count; skip and both_bad do not)")
    start = time.perf_counter()
    torch.manual_seed(fit.seed)
    rng = np.random.default_rng(fit.seed)
    tower = Tower(clip, "none" if tune.mode == "heads" else tune.mode, output, lora_rank=tune.lora_rank,
                  blocks=tune.blocks)
    hidden = features if features is not None and tune.mode == "heads" else prefix_features(tower, pixels)
    dev = hidden.device  # the CLIP's: heads, judgements and weights go where the features are
    T = torch.as_tensor(t, dtype=torch.float32, device=dev) if (t is not None and fit.prompt) else None
    IA, IB = torch.as_tensor(ia, device=dev), torch.as_tensor(ib, device=dev)
    Y = torch.as_tensor(y, dtype=torch.float32, device=dev)
    used = torch.unique(torch.cat([IA, IB]))
    heads = [h.to(dev) for h in _heads(fit, suffix_features(tower, hidden), T, used, prior)]
    weights = [torch.as_tensor(rng.poisson(1.0, len(ia)), dtype=torch.float32, device=dev) if fit.ensemble > 1 else None
               for _ in heads]
    log_thetas = [torch.zeros((), requires_grad=True, device=dev) if fit.ties == "rao-kupper" else None for _ in heads]
    tower_params = tower.trainable_parameters()
    start_values = [p.detach().clone() for p in tower_params]
    head_params = [p for h in heads for p in h.parameters()] + [lt for lt in log_thetas if lt is not None]
    head_lr = tune.head_lr * (0.02 if prior is not None else 1)
    groups = [{"params": head_params, "lr": head_lr}] + ([{"params": tower_params, "lr": tune.tower_lr}] if tower_params else [])
    opt = torch.optim.Adam(groups)
    has_val = val is not None and len(val[0]) > 0
    if has_val:
        va, vb, vy = (torch.as_tensor(np.asarray(a)) for a in val)
        val_images = torch.unique(torch.cat([va, vb]))
        val_local = {int(g): k for k, g in enumerate(val_images)}
        va_l = torch.as_tensor([val_local[int(i)] for i in va], device=dev)
        vb_l = torch.as_tensor([val_local[int(i)] for i in vb], device=dev)
        vy, val_images = vy.float().to(dev), val_images.to(dev)
    history = {"train_loss": [], "val_loss": [], "best_epoch": None, "stopped_early": False}
    best, best_loss, since = None, math.inf, 0
    bar = tqdm(range(tune.epochs), desc=f"tune ({tune.mode})", unit="epoch", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        tower.train()
        for h in heads:
            h.train()
        losses = []
        for batch in np.array_split(rng.permutation(len(ia)), max(1, math.ceil(len(ia) / tune.batch_pairs))):
            b = torch.as_tensor(batch, device=dev)
            imgs, inv = torch.unique(torch.cat([IA[b], IB[b]]), return_inverse=True)
            la, lb = inv[: len(b)], inv[len(b):]
            feats = tower.suffix(hidden[imgs])
            tb = None if T is None else T[imgs]
            total = 0.0
            for h, w, lt in zip(heads, weights, log_thetas, strict=True):
                d = pair_diff(h(feats, tb), la, lb)
                zero = torch.zeros((), dtype=d.dtype, device=dev)
                wb = None if w is None else w[b]
                loss = bt_loss(d, zero, Y[b], wb) if lt is None else rao_kupper_loss(d, zero, Y[b], lt, wb)
                total = total + loss + fit.l2 * h.penalty() / len(ia)
            total = total / len(heads)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            with torch.no_grad():  # decoupled decay toward the start (LoRA: B toward 0, i.e. toward the frozen tower)
                for p, p0 in zip(tower_params, start_values, strict=True):
                    p.sub_(p - p0, alpha=tune.tower_lr * tune.weight_decay)
            losses.append(float(total.detach()))
        history["train_loss"].append(round(float(np.mean(losses)), 5))
        if not has_val:
            continue
        tower.eval()
        for h in heads:
            h.eval()
        with torch.no_grad():
            feats = suffix_features(tower, hidden, val_images)
            tv = None if T is None else T[val_images]
            val_loss = float(np.mean([float(bt_loss(pair_diff(h(feats, tv), va_l, vb_l), torch.zeros((), device=dev), vy))
                                      for h in heads]))
        history["val_loss"].append(round(val_loss, 5))
        bar.set_postfix(val_loss=f"{val_loss:.4f}")
        if val_loss < best_loss - 1e-4:
            best_loss, since = val_loss, 0
            best = _snapshot(tower_params, heads, log_thetas, epoch)
        else:
            since += 1
            if tune.patience and since >= tune.patience:
                history["stopped_early"] = True
                break
    bar.close()
    if best is not None:
        _restore(best, tower_params, heads, log_thetas)
        history["best_epoch"] = best["epoch"] + 1
    history["epochs_run"] = len(history["train_loss"])
    tower.eval().requires_grad_(False)
    for h in heads:
        h.eval()
    feats = suffix_features(tower, hidden)
    with torch.no_grad():
        for h in heads:  # centre each member on the training images, as the frozen path does
            h.offset.copy_(h(feats[used], None if T is None else T[used]).mean() + h.offset)
    history["seconds"] = round(time.perf_counter() - start, 1)
    lts = [lt.detach() for lt in log_thetas if lt is not None]
    log_theta = torch.stack(lts).mean() if lts else None
    return TunedFit(heads, log_theta, [history["train_loss"][-1]] * len(heads), tower=tower, features=feats,
                    history=history)


def _heads(fit: FitConfig, feats: torch.Tensor, T, used, prior) -> list[torch.nn.Module]:
    from reward.heads import LaionPriorHead, build_head

    heads = []
    for _ in range(fit.ensemble):
        if prior is not None:
            head = LaionPriorHead(copy.deepcopy(prior.layers), getattr(prior, "path", None))
        else:
            head = build_head(fit.head, feats.shape[-1], fit.prompt, hidden=fit.hidden)
        head.set_standardisation(feats[used], None if T is None else T[used])
        heads.append(head)
    return heads


def _snapshot(tower_params, heads, log_thetas, epoch: int) -> dict:
    return {"epoch": epoch, "tower": [p.detach().clone() for p in tower_params],
            "heads": [copy.deepcopy(h.state_dict()) for h in heads],
            "log_thetas": [None if lt is None else lt.detach().clone() for lt in log_thetas]}


def _restore(snap: dict, tower_params, heads, log_thetas) -> None:
    with torch.no_grad():
        for p, v in zip(tower_params, snap["tower"], strict=True):
            p.copy_(v)
        for h, s in zip(heads, snap["heads"], strict=True):
            h.load_state_dict(s)
        for lt, v in zip(log_thetas, snap["log_thetas"], strict=True):
            if lt is not None:
                lt.copy_(v)
