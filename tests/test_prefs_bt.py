"""Bradley-Terry fitting: hand-checked cases and agreement with `choix` on ImageReward's pairs."""

from __future__ import annotations

import csv
from pathlib import Path

import choix
import numpy as np
import pytest

from prefs import bt

PAIRS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "preferences" / "imagereward_test_pairs.csv"


def load_pairs():
    with open(PAIRS, newline="") as f:
        rows = list(csv.DictReader(f))
    items = sorted({r["image_a"] for r in rows} | {r["image_b"] for r in rows})
    index = {p: k for k, p in enumerate(items)}
    i = np.array([index[r["image_a"]] for r in rows])
    j = np.array([index[r["image_b"]] for r in rows])
    w = np.array([{"a": 1.0, "b": 0.0, "tie": 0.5}[r["winner"]] for r in rows])
    return len(items), i, j, w


def test_two_items_closed_form():
    # 3 wins to 1 with a vanishing prior: s0 - s1 = log(3).
    s = bt.fit(2, [0, 0, 0, 1], [1, 1, 1, 0], alpha=1e-9)
    assert s[0] - s[1] == pytest.approx(np.log(3), abs=1e-4)


def test_ties_are_half_wins():
    # One win each way equals two ties: equal scores.
    s = bt.fit(2, [0, 0], [1, 1], [0.5, 0.5], alpha=1e-6)
    assert s[0] == pytest.approx(s[1], abs=1e-8)
    s2 = bt.fit(3, [0, 0, 1], [1, 2, 2], [0.5, 1.0, 1.0], alpha=1e-6)
    assert s2[0] > s2[1] - 1e-6 and s2[1] > s2[2]


@pytest.mark.skipif(not PAIRS.exists(), reason="shared reference data not present")
def test_agrees_with_choix_on_imagereward_pairs():
    n, i, j, w = load_pairs()
    assert n > 2000 and len(i) == 7230
    # choix takes (winner, loser) tuples and no ties: give it every decisive pair twice and a tie as one
    # win each way, which is exactly twice our likelihood (ties as half wins); so its penalty is twice ours.
    data = []
    for a, b, x in zip(i, j, w, strict=False):
        if x == 0.5:
            data += [(a, b), (b, a)]
        else:
            win, lose = (a, b) if x == 1.0 else (b, a)
            data += [(win, lose), (win, lose)]
    alpha = 0.05
    ours = bt.fit(n, i, j, w, alpha=alpha, tol=1e-9, max_iter=5000)
    theirs = choix.opt_pairwise(n, data, alpha=2 * alpha, method="Newton-CG", tol=1e-10)
    d = (ours - ours.mean()) - (theirs - theirs.mean())
    assert np.abs(d).max() < 1e-3
    assert np.corrcoef(ours, theirs)[0, 1] > 0.99999


def test_outcome_weights():
    keep, w = bt.outcome_weights(["a", "b", "tie", "skip", "both_bad"])
    assert keep.tolist() == [True, True, True, False, False]
    assert w[:3].tolist() == [1.0, 0.0, 0.5]
