"""How far steering moved a model toward an oracle: matched-pair win rate, its ceiling, and headroom captured.

Base and tuned images are drawn on the same held-out prompts and seeds (the same initial noise), so each index is
one matched pair. With u_b, u_t the oracle's utilities of a pair's base and tuned image:

- win rate: the share of pairs the tuned image wins, a tie counting half;
- ceiling: the win rate a tuned model would score if every one of its images reached the best utility seen in
  either set (a base image already at that best can only tie); for a two-level oracle it is
  1 - (share of base images already at the top) / 2;
- headroom captured H = (win - 1/2) / (ceiling - 1/2): 0 is the base, 1 is the ceiling, negative is worse than
  the base. It is undefined (None) when the ceiling is 1/2: every base image is already at the best utility seen.

`headroom_interval` gives a percentile bootstrap interval of H over the pairs: pairs are resampled with
replacement and the win rate, ceiling and H recomputed from the resample with the same definitions. Given
several tuned sets on the same pairs (training seeds), the pairs are resampled jointly and the interval is that
of the seeds' mean H.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def pair_stats(u_base: Sequence[float], u_tuned: Sequence[float]) -> dict:
    """Matched-pair comparison of tuned over base from the oracle's utilities of each pair's two images.

    win_rate counts a tie as half a win (the headline number); the decisive win rate is wins / (wins + losses);
    the ceiling is the win rate of a tuned model whose every image reached the best utility seen in either set."""
    u_b, u_t = np.asarray(u_base, dtype=float), np.asarray(u_tuned, dtype=float)
    if u_b.shape != u_t.shape or u_b.ndim != 1 or len(u_b) == 0:
        raise ValueError(f"need two equally long, non-empty 1-d utility arrays, got {u_b.shape} and {u_t.shape}")
    wins, losses = int(np.sum(u_t > u_b)), int(np.sum(u_t < u_b))
    best = max(u_b.max(), u_t.max())
    return {"win_rate": float(np.mean((u_t > u_b) + 0.5 * (u_t == u_b))), "wins": wins, "losses": losses,
            "ties": len(u_b) - wins - losses,
            "win_rate_decisive": None if wins + losses == 0 else round(wins / (wins + losses), 4),
            "win_rate_ceiling": round(float(np.mean(np.where(u_b >= best, 0.5, 1.0))), 4)}


def headroom(win_rate: float, ceiling: float) -> float | None:
    """H = (win - 1/2) / (ceiling - 1/2); None when the ceiling is 1/2 (no headroom to capture)."""
    if ceiling - 0.5 <= 1e-12:
        return None
    return (win_rate - 0.5) / (ceiling - 0.5)


def headroom_from_counts(wins: int, ties: int, losses: int, ceiling: float) -> float | None:
    """H from a stored win/tie/loss count and ceiling (ties half), for results that kept no per-pair data."""
    n = wins + ties + losses
    if n <= 0:
        raise ValueError("no pairs counted")
    return headroom((wins + 0.5 * ties) / n, ceiling)


def _win_and_ceiling(u_b: np.ndarray, u_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`pair_stats`' win rate and ceiling (unrounded) of each row of R x N utility arrays."""
    win = np.mean((u_t > u_b) + 0.5 * (u_t == u_b), axis=-1)
    best = np.maximum(u_b.max(axis=-1), u_t.max(axis=-1))[..., None]
    ceiling = np.mean(np.where(u_b >= best, 0.5, 1.0), axis=-1)
    return win, ceiling


def headroom_interval(u_base: Sequence[float], u_tuned: Sequence[float] | Sequence[Sequence[float]], *,
                      resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE,
                      seed: int = 0) -> dict:
    """H (the mean over tuned sets) with a percentile bootstrap interval over the matched pairs.

    `u_tuned` is one tuned set's utilities or several (one per training seed), each matched to `u_base` pair by
    pair. Returns {"headroom", "ci": [lo, hi] or None, "resamples_used", "confidence"}: resamples whose ceiling
    is 1/2 for some set (H undefined) are left out and counted; the interval is None when the point H is
    undefined or fewer than half of the resamples define it. Deterministic for a given `seed`."""
    u_b = np.asarray(u_base, dtype=float)
    u_t = np.asarray(u_tuned, dtype=float)
    if u_t.ndim == 1:
        u_t = u_t[None]
    if u_b.ndim != 1 or u_t.ndim != 2 or u_t.shape[1] != len(u_b) or len(u_b) == 0:
        raise ValueError(f"u_tuned must be matched to u_base pair by pair: got {u_t.shape} for {u_b.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    points = [headroom(*map(float, _win_and_ceiling(u_b, t))) for t in u_t]
    out = {"headroom": None if any(p is None for p in points) else float(np.mean(points)), "ci": None,
           "resamples_used": 0, "resamples": resamples, "confidence": confidence}
    if out["headroom"] is None or resamples < 1:
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(u_b), size=(resamples, len(u_b)))
    b = u_b[idx]  # R x N
    hs = []
    for t in u_t:
        win, ceiling = _win_and_ceiling(b, t[idx])
        with np.errstate(divide="ignore", invalid="ignore"):
            hs.append(np.where(ceiling - 0.5 > 1e-12, (win - 0.5) / (ceiling - 0.5), np.nan))
    h = np.mean(hs, axis=0)
    h = h[np.isfinite(h)]
    out["resamples_used"] = int(len(h))
    if len(h) >= resamples / 2:
        alpha = (1 - confidence) / 2
        out["ci"] = [float(np.quantile(h, alpha)), float(np.quantile(h, 1 - alpha))]
    return out
