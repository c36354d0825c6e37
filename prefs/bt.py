"""Bradley-Terry scores from pairwise judgements (numpy + scipy; no torch).

Model: P(i beats j) = sigmoid(s_i - s_j). A tie counts as half a win for each side. The fit maximises the
log-likelihood minus `alpha * sum(s**2)` (a Gaussian prior, the same penalty as `choix.opt_pairwise`): with
`alpha > 0` the scores are finite even for an image that won every comparison, and unique (disconnected
groups of images are each centred near 0). Agrees with `choix.opt_pairwise` given the same data and
penalty, up to an additive constant (tested).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

DEFAULT_ALPHA = 1e-2  # weak prior: one judgement moves a score by ~1, a thousand barely feel it


def fit(n_items: int, i: np.ndarray, j: np.ndarray, w: np.ndarray | None = None, alpha: float = DEFAULT_ALPHA,
        tol: float = 1e-6, max_iter: int = 500) -> np.ndarray:
    """Scores for `n_items` items from comparisons `i[k]` vs `j[k]` where `w[k]` is i's share of the win.

    `w` is 1 (i won), 0 (j won) or 0.5 (tie); default all 1. Returns a float array of length `n_items`;
    items never compared get 0. Uses L-BFGS on the vectorised penalised log-likelihood.
    """
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    w = np.ones(len(i)) if w is None else np.asarray(w, dtype=float)
    if not (len(i) == len(j) == len(w)):
        raise ValueError("i, j and w must have the same length")
    if n_items == 0 or len(i) == 0:
        return np.zeros(n_items)
    if alpha <= 0:
        raise ValueError("alpha must be positive: without a prior, an undefeated item's score is infinite")

    def objective(s):
        d = s[i] - s[j]
        # -[w log sigmoid(d) + (1-w) log sigmoid(-d)] = softplus(d) - w d
        loss = np.logaddexp(0.0, d) - w * d
        g_d = 1.0 / (1.0 + np.exp(-d)) - w
        grad = np.bincount(i, g_d, n_items) - np.bincount(j, g_d, n_items) + 2 * alpha * s
        return loss.sum() + alpha * s.dot(s), grad

    res = minimize(objective, np.zeros(n_items), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-12})
    return res.x


def outcome_weights(outcomes) -> tuple[np.ndarray, np.ndarray]:
    """Map outcome codes to (keep mask, weight of a): a -> 1, b -> 0, tie -> 0.5; both_bad/skip dropped."""
    outcomes = np.asarray(outcomes)
    w = np.select([outcomes == "a", outcomes == "b", outcomes == "tie"], [1.0, 0.0, 0.5], default=np.nan)
    return ~np.isnan(w), w
