"""Judgements from the preference store as arrays a head can be fitted on.

Only `a`, `b` and `tie` say which image is better; `skip` says nothing and `both_bad` says both are bad but
not which is worse, so both are left out of the pairwise loss (pushing both down would need an absolute
anchor that pairwise data does not have).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from prefs.errors import UserError

TARGET = {"a": 1.0, "b": 0.0, "tie": 0.5}
SPLITS = ("random", "time")


@dataclasses.dataclass
class PairData:
    """Judgements as index arrays into `shas` (the images they involve, with rows for paths and prompts)."""

    shas: list[str]
    images: list  # prefs Image rows, aligned with shas
    ia: np.ndarray
    ib: np.ndarray
    y: np.ndarray  # P(a wins) target: 1, 0 or 0.5
    order: np.ndarray  # recording order (for the time split)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx) -> "PairData":
        return dataclasses.replace(self, ia=self.ia[idx], ib=self.ib[idx], y=self.y[idx], order=self.order[idx])


def load_pairs(store, rater: str | None = None) -> PairData:
    """All standing a/b/tie judgements (of `rater`, or everyone) with the images they involve."""
    index: dict[str, int] = {}
    ia, ib, y = [], [], []
    for j in store.comparisons(rater=rater):
        t = TARGET.get(j.outcome)
        if t is None:
            continue
        ia.append(index.setdefault(j.image_a, len(index)))
        ib.append(index.setdefault(j.image_b, len(index)))
        y.append(t)
    if not y:
        who = f" by rater {rater!r}" if rater else ""
        raise UserError(f"no judgements{who} to learn from yet: rate some pairs in `rlft ui` "
                        "(or `rlft simulate`), then run `rlft reward train` again")
    shas = list(index)
    rows = store._resolve_images(shas) if len(shas) < 5000 else _rows(store, set(shas))
    return PairData(shas, [rows[s] for s in shas], np.array(ia), np.array(ib), np.array(y, dtype=np.float32),
                    np.arange(len(y)))


def _rows(store, shas: set[str]) -> dict:
    return {im.sha256: im for im in store.images() if im.sha256 in shas}


def split(n: int, val_frac: float, how: str = "random", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) judgement indices: a seeded random split, or the newest `val_frac` by time."""
    if how not in SPLITS:
        raise UserError(f"unknown split {how!r}; valid: {', '.join(SPLITS)}")
    if not 0 <= val_frac < 1:
        raise UserError(f"--val-frac must be in [0, 1), got {val_frac}")
    n_val = int(round(n * val_frac))
    if val_frac > 0 and n - n_val < 1:
        raise UserError(f"{n} judgements are too few to hold out {val_frac:.0%}; rate more pairs or lower --val-frac")
    idx = np.arange(n) if how == "time" else np.random.default_rng(seed).permutation(n)
    return np.sort(idx[: n - n_val]), np.sort(idx[n - n_val:])
