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
SPLITS = ("random", "time", "image")


@dataclasses.dataclass
class PairData:
    """Judgements as index arrays into `shas` (the images they involve, with rows for paths and prompts)."""

    shas: list[str]
    images: list  # prefs Image rows, aligned with shas
    ia: np.ndarray
    ib: np.ndarray
    y: np.ndarray  # P(a wins) target: 1, 0 or 0.5
    order: np.ndarray  # rank by creation time, ties in recording order (the time split; imports keep old times)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx) -> "PairData":
        return dataclasses.replace(self, ia=self.ia[idx], ib=self.ib[idx], y=self.y[idx], order=self.order[idx])

    def only_images(self, shas: set[str]) -> "PairData":
        """The judgements whose two images are both in `shas`, over the images they still involve (re-indexed;
        `order` re-ranked among them)."""
        have = np.array([s in shas for s in self.shas], dtype=bool)
        rows = have[self.ia] & have[self.ib] if len(self.y) else np.zeros(0, dtype=bool)
        used = np.zeros(len(self.shas), dtype=bool)
        used[self.ia[rows]] = used[self.ib[rows]] = True
        new_index = np.cumsum(used) - 1
        order = np.empty(int(rows.sum()), dtype=np.int64)
        order[np.argsort(self.order[rows], kind="stable")] = np.arange(len(order))
        return PairData([s for s, u in zip(self.shas, used, strict=True) if u],
                        [im for im, u in zip(self.images, used, strict=True) if u],
                        new_index[self.ia[rows]], new_index[self.ib[rows]], self.y[rows], order)


def load_pairs(store, rater: str | None = None) -> PairData:
    """All standing a/b/tie judgements (of `rater`, or everyone) with the images they involve."""
    index: dict[str, int] = {}
    ia, ib, y, created = [], [], [], []
    for j in store.judgements(rater=rater):
        t = TARGET.get(j.outcome)
        if t is None:
            continue
        ia.append(index.setdefault(j.image_a, len(index)))
        ib.append(index.setdefault(j.image_b, len(index)))
        y.append(t)
        created.append(j.created_at.timestamp())
    if not y:
        who = f" by rater {rater!r}" if rater else ""
        raise UserError(f"no judgements{who} to learn from yet: rate some pairs in `rlft ui` "
                        "(or `rlft simulate`), then run `rlft reward train` again")
    shas = list(index)
    rows = store._resolve_images(shas) if len(shas) < 5000 else _rows(store, set(shas))
    order = np.empty(len(y), dtype=np.int64)
    order[np.argsort(np.array(created), kind="stable")] = np.arange(len(y))
    return PairData(shas, [rows[s] for s in shas], np.array(ia), np.array(ib), np.array(y, dtype=np.float32), order)


def _rows(store, shas: set[str]) -> dict:
    return {im.sha256: im for im in store.images() if im.sha256 in shas}


def split(n: int, val_frac: float, how: str = "random", seed: int = 0, ia=None, ib=None,
          order=None) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) judgement indices: a seeded random split, the newest `val_frac` by time, or by image.

    `time` ranks the judgements by `order` (PairData.order: creation time), else by index.

    `image` (needs the pairs' image indices `ia`, `ib`) holds out a seeded random share of the images and,
    as validation, every judgement that involves one of them; training sees none of those images. That measures
    what fine-tuning needs, the reward on images it has never seen, where the other two splits score pairs of
    images that also appear in training pairs. The share of images, 1 - sqrt(1 - val_frac), makes about
    `val_frac` of the judgements validation when pairs are drawn at random.
    """
    if how not in SPLITS:
        raise UserError(f"unknown split {how!r}; valid: {', '.join(SPLITS)}")
    if not 0 <= val_frac < 1:
        raise UserError(f"--val-frac must be in [0, 1), got {val_frac}")
    n_val = int(round(n * val_frac))
    if val_frac > 0 and n - n_val < 1:
        raise UserError(f"{n} judgements are too few to hold out {val_frac:.0%}; rate more pairs or lower --val-frac")
    if how == "image":
        if ia is None or ib is None:
            raise ValueError("the image split needs the pairs' image indices")
        ia, ib = np.asarray(ia), np.asarray(ib)
        images = np.unique(np.concatenate([ia, ib]))
        n_out = int(round(len(images) * (1 - np.sqrt(1 - val_frac)))) if val_frac > 0 else 0
        held = np.random.default_rng(seed).permutation(images)[:n_out]
        is_val = np.isin(ia, held) | np.isin(ib, held)
        if val_frac > 0 and (is_val.all() or not is_val.any()):
            raise UserError(f"{n} judgements over {len(images)} images are too few to hold out images; rate more "
                            "pairs, or use --split random")
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)
    if how == "time":
        idx = np.arange(n) if order is None else np.argsort(np.asarray(order), kind="stable")
    else:
        idx = np.random.default_rng(seed).permutation(n)
    return np.sort(idx[: n - n_val]), np.sort(idx[n - n_val:])
