"""Held-out metrics for pairwise preference predictions.

`p` is the predicted P(a wins), `y` the outcome as a target (1 a won, 0 b won, 0.5 tie).
- accuracy: 1 for the right winner, 0 for the wrong one, 0.5 when the label is a tie (the model always picks
  a side; PickScore's convention) or when the model says exactly 0.5;
- log-loss: binary cross-entropy with the tie as target 0.5;
- ECE: expected calibration error of the confidence max(p, 1 - p) on decisive pairs, 10 equal-width bins;
- a bootstrap 95% interval on accuracy (resampling held-out judgements).
"""

from __future__ import annotations

import numpy as np

N_BINS = 10
N_BOOT = 1000


def credit(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-judgement accuracy credit in {0, 0.5, 1}."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    pick = np.sign(p - 0.5)  # +1 predicts a, -1 predicts b, 0 undecided
    truth = np.sign(y - 0.5)
    return np.where((truth == 0) | (pick == 0), 0.5, (pick == truth).astype(float))


def accuracy(p, y) -> float:
    c = credit(p, y)
    return float(c.mean()) if len(c) else float("nan")


def log_loss(p, y, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(p, float), eps, 1 - eps)
    y = np.asarray(y, float)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if len(p) else float("nan")


def ece(p, y, n_bins: int = N_BINS) -> float:
    p, y = np.asarray(p, float), np.asarray(y, float)
    keep = y != 0.5
    p, y = p[keep], y[keep]
    if not len(p):
        return float("nan")
    conf = np.maximum(p, 1 - p)
    correct = ((p >= 0.5) == (y == 1)).astype(float)
    bins = np.minimum(((conf - 0.5) * 2 * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(total)


def bootstrap_ci(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`."""
    values = np.asarray(values, float)
    if not len(values):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def metrics(p, y, seed: int = 0) -> dict:
    """accuracy, ci95, log_loss, ece and n for predictions `p` against outcomes `y`."""
    c = credit(p, y)
    return {
        "accuracy": float(c.mean()) if len(c) else None,
        "ci95": list(bootstrap_ci(c, seed=seed)) if len(c) else None,
        "log_loss": log_loss(p, y) if len(c) else None,
        "ece": ece(p, y) if len(c) else None,
        "n": int(len(c)),
    }


def sigmoid(z):
    return 1 / (1 + np.exp(-np.clip(z, -50, 50)))
