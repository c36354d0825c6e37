"""Summary statistics of the store, computed from one pass over the standing judgements with numpy.

The judgements are read as five integer columns and aggregated in numpy, which keeps `rlft prefs stats`
within a few seconds at a million judgements, where one SQL GROUP BY per figure would not. (Grouping by
pair in SQL does not help either: almost every pair is judged once, so it returns as many rows as it reads.)
On SQLite each column comes back as one comma-separated string (`group_concat`, parsed by numpy in C):
fetching a million rows as Python tuples cost three times as long.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from sqlalchemy import Engine, case, func, select

from prefs import bt
from prefs.models import OUTCOMES, Image, JudgementRow, Rater

DECISIVE = ("a", "b", "tie")  # outcomes that say which image is better (a tie: equally good)
STATS_TOL = 1e-4  # gradient tolerance of the ranking fit: scores to ~4 decimals, all a ranking needs


@dataclasses.dataclass
class Columns:
    """Standing judgements as arrays, in recording order: image ids, outcome codes (index into OUTCOMES), rater ids."""

    a: np.ndarray
    b: np.ndarray
    outcome: np.ndarray
    rater: np.ndarray


def load_columns(engine: Engine, rater: str | None = None) -> Columns:
    """Standing judgements, in recording order, as integer arrays (outcomes coded in SQL: no Python loop)."""
    code = case(*((JudgementRow.outcome == name, k) for k, name in enumerate(OUTCOMES)), else_=-1)
    exprs = (JudgementRow.id, JudgementRow.image_a_id, JudgementRow.image_b_id, code, JudgementRow.rater_id)
    where = [JudgementRow.undone_at.is_(None)]
    if rater is not None:
        where.append(JudgementRow.rater_id == select(Rater.id).where(Rater.name == rater).scalar_subquery())
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # Every column is NOT NULL (the outcome code has an ELSE), so group_concat skips nothing and the
            # five strings stay aligned row for row.
            texts = conn.execute(select(*(func.group_concat(e) for e in exprs)).where(*where)).one()
            arr = np.array([_parse_ints(t) for t in texts]).reshape(len(exprs), -1)
        else:
            q = select(*exprs).where(*where).order_by(JudgementRow.id)
            if rater is None:  # the big read: raw DBAPI rows straight into numpy (SQLAlchemy Rows cost seconds)
                cur = conn.connection.driver_connection.cursor()
                cur.execute(str(q.compile(conn, compile_kwargs={"literal_binds": True})))
                rows = cur.fetchall()
                cur.close()
            else:
                rows = conn.execute(q).all()
            arr = np.array(rows, dtype=np.int64).reshape(-1, len(exprs)).T
    ids = arr[0]
    if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():  # scan order is id order in practice; make sure
        arr = arr[:, np.argsort(ids, kind="stable")]
    return Columns(arr[1].copy(), arr[2].copy(), arr[3].copy(), arr[4].copy())


def _decisive(cols: Columns) -> np.ndarray:
    """Mask of the judgements whose outcome is one of DECISIVE (codes 0, 1, 2)."""
    return (cols.outcome >= 0) & (cols.outcome < len(DECISIVE))


def _parse_ints(text: str | None) -> np.ndarray:
    """'3,1,4' -> array([3, 1, 4]); None (group_concat of no rows) -> empty."""
    if not text:
        return np.zeros(0, dtype=np.int64)
    return np.fromstring(text, dtype=np.int64, sep=",")


def self_consistency(cols: Columns) -> tuple[float | None, int]:
    """Agreement of repeated judgements of one pair by one rater with that rater's first judgement of it.

    Only a/b/tie count; agreement means the same winner (by image, whatever the sides) or tie again.
    Returns (agreement rate or None, number of repeat judgements compared).
    """
    keep = _decisive(cols)
    a, b, o, r = cols.a[keep], cols.b[keep], cols.outcome[keep], cols.rater[keep]
    if len(a) == 0:
        return None, 0
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    # Winner as an image id: lo won -> 0, hi won -> 1, tie -> 2.
    a_is_lo = a == lo
    tie = o == OUTCOMES.index("tie")
    a_won = o == OUTCOMES.index("a")
    result = np.where(tie, 2, np.where(a_won == a_is_lo, 0, 1))
    # Group by (rater, pair), keeping recording order within a group: one stable sort of a packed key when
    # it fits in 63 bits (it does for any real store), else a lexsort, four times slower at a million rows.
    span = int(hi.max()) + 1
    if (int(r.max()) + 1) * span * span < 2**62 and r.min() >= 0:
        key = (r * span + lo) * span + hi
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = key[1:] != key[:-1]
    else:
        order = np.lexsort((np.arange(len(a)), hi, lo, r))
        keys = np.stack([r[order], lo[order], hi[order]], 1)
        first = np.ones(len(order), dtype=bool)
        first[1:] = (keys[1:] != keys[:-1]).any(1)
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    res = result[order]
    repeats = ~first
    n = int(repeats.sum())
    if n == 0:
        return None, 0
    agree = res[repeats] == res[group_start[repeats]]
    return float(agree.mean()), n


def fit_columns(cols: Columns, alpha: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bradley-Terry scores for the images in `cols`: (image ids, scores), ties as half wins."""
    w = _WEIGHTS[cols.outcome] if len(cols.outcome) else np.zeros(0)
    keep = ~np.isnan(w)
    a, b, w = cols.a[keep], cols.b[keep], w[keep]
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    ids, i, j = _dense(a, b)
    scores = bt.fit(len(ids), i, j, w, alpha=bt.DEFAULT_ALPHA if alpha is None else alpha, tol=STATS_TOL)
    return ids, scores


# `bt.outcome_weights` per outcome code, so a million codes map to weights by one indexing (NaN: dropped);
# the extra last entry is what code -1 (an unknown outcome) indexes.
_WEIGHTS = np.append(bt.outcome_weights(list(OUTCOMES))[1], np.nan)


def _dense(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted distinct image ids in a and b, a and b as indices into them)."""
    # Image ids are small dense integers: a lookup table beats np.unique's sort at a million rows.
    ids = np.flatnonzero(np.bincount(np.concatenate([a, b])))
    lut = np.zeros(int(ids[-1]) + 1, dtype=np.int64)
    lut[ids] = np.arange(len(ids))
    return ids, lut[a], lut[b]


def bt_scores(engine: Engine, rater: str | None = None, alpha: float | None = None) -> dict[str, float]:
    ids, scores = fit_columns(load_columns(engine, rater), alpha)
    shas = _shas(engine, ids)
    return {shas[int(i)]: float(s) for i, s in zip(ids, scores, strict=False)}


def _shas(engine: Engine, ids) -> dict[int, str]:
    ids = [int(i) for i in ids]
    out: dict[int, str] = {}
    with engine.connect() as conn:
        for k in range(0, len(ids), 5000):
            out.update(conn.execute(select(Image.id, Image.sha256).where(Image.id.in_(ids[k:k + 5000]))).all())
    return out


def compute(engine: Engine, top: int = 10, rater: str | None = None) -> dict[str, Any]:
    """The `rlft prefs stats --json` object.

    Keys: `images` (in the pool), `broken_images`, `judgements` (standing, i.e. not undone; skips
    included), `undone`, `by_outcome` (outcome -> count, every outcome listed), `raters` (name -> standing
    judgements), `tie_rate` (ties / (a + b + tie), None without any), `self_consistency`
    ({"agreement", "count"}), `ranking` (the `top` best images by Bradley-Terry score: sha256, score,
    wins, losses, ties, prompt), `ranked_images` (images with a score).
    """
    cols = load_columns(engine, rater)
    with engine.connect() as conn:
        n_images = conn.execute(select(func.count(Image.id))).scalar_one()
        n_broken = conn.execute(select(func.count(Image.id)).where(Image.broken_at.is_not(None))).scalar_one()
        n_undone = conn.execute(select(func.count(JudgementRow.id)).where(JudgementRow.undone_at.is_not(None))).scalar_one()
        rater_names = dict(conn.execute(select(Rater.id, Rater.name)).all())
    counts = np.bincount(cols.outcome, minlength=len(OUTCOMES))
    by_outcome = {name: int(counts[i]) for i, name in enumerate(OUTCOMES)}
    decided = by_outcome["a"] + by_outcome["b"] + by_outcome["tie"]
    rater_ids, rater_counts = np.unique(cols.rater, return_counts=True)
    agreement, n_repeats = self_consistency(cols)

    ids, scores = fit_columns(cols)
    ranking = []
    if len(ids) and top > 0:
        best = np.argsort(-scores, kind="stable")[:top]
        wins, losses, ties = _tallies(cols, ids)
        with engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(select(Image.id, Image.sha256, Image.prompt).where(
                Image.id.in_([int(ids[k]) for k in best])))}
        for k in best:
            row = rows[int(ids[k])]
            ranking.append({"sha256": row.sha256, "score": round(float(scores[k]), 4), "wins": int(wins[k]),
                            "losses": int(losses[k]), "ties": int(ties[k]), "prompt": row.prompt})
    return {
        "images": int(n_images),
        "broken_images": int(n_broken),
        "judgements": int(len(cols.outcome)),
        "undone": int(n_undone),
        "by_outcome": by_outcome,
        "raters": {rater_names[int(r)]: int(c) for r, c in zip(rater_ids, rater_counts, strict=False)},
        "tie_rate": (by_outcome["tie"] / decided) if decided else None,
        "self_consistency": {"agreement": agreement, "count": n_repeats},
        "ranked_images": int(len(ids)),
        "ranking": ranking,
    }


def _tallies(cols: Columns, ids: np.ndarray):
    """Wins, losses and ties per image in `ids` (the images `fit_columns` ranked), from decisive judgements."""
    n = len(ids)
    decisive = _decisive(cols)
    _, ia, ib = _dense(cols.a[decisive], cols.b[decisive])  # same ids as the fit's: same decisive rows
    o = cols.outcome[decisive]
    a_w, b_w, t = o == 0, o == 1, o == 2
    wins = np.bincount(ia[a_w], minlength=n) + np.bincount(ib[b_w], minlength=n)
    losses = np.bincount(ib[a_w], minlength=n) + np.bincount(ia[b_w], minlength=n)
    ties = np.bincount(ia[t], minlength=n) + np.bincount(ib[t], minlength=n)
    return wins, losses, ties


def bt_score_table(engine: Engine, rater: str | None = None):
    """A `ScoreTable` scorer from the current Bradley-Terry fit: mean = score, std = 1 / sqrt(1 + n).

    n is the image's number of informative judgements, so rarely judged images look uncertain. Lets the
    `uncertain` strategy run before any reward model exists (the simulated raters use it).
    """
    from prefs.samplers import ScoreTable

    cols = load_columns(engine, rater)
    ids, scores = fit_columns(cols)
    if not len(ids):
        return ScoreTable({})
    wins, losses, ties = _tallies(cols, ids)
    n = wins + losses + ties
    shas = _shas(engine, ids)
    return ScoreTable({shas[int(i)]: (float(s), float(1 / np.sqrt(1 + k))) for i, s, k in zip(ids, scores, n, strict=False)})
