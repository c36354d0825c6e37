"""Progress figures: counts per outcome and per rater, self-consistency, judgements over time, and the
held-out accuracy of each reward version. Returned as pandas frames for Gradio's own plot components."""

from __future__ import annotations

import dataclasses

import pandas as pd
from sqlalchemy import select

from prefs.models import OUTCOMES, JudgementRow, Rater

OUTCOME_LABELS = {"a": "A better", "b": "B better", "tie": "tie", "both_bad": "both bad", "skip": "skip"}
MAX_POINTS = 400  # points per line of the time plot: enough to see the shape, cheap to draw


@dataclasses.dataclass
class Progress:
    summary: str  # markdown
    outcomes: pd.DataFrame  # outcome, count
    raters: pd.DataFrame  # one row per rater
    over_time: pd.DataFrame  # time, judgements (cumulative), rater
    rewards: pd.DataFrame  # version, accuracy, judgements


def judgements_frame(store) -> pd.DataFrame:
    """Standing judgements: created_at, outcome, rater, decision_ms (recording order)."""
    q = (select(JudgementRow.created_at, JudgementRow.outcome, Rater.name, JudgementRow.decision_ms)
         .join(Rater, Rater.id == JudgementRow.rater_id)
         .where(JudgementRow.undone_at.is_(None)).order_by(JudgementRow.id))
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
    return pd.DataFrame(rows, columns=["created_at", "outcome", "rater", "decision_ms"])


def compute(store, versions: list[dict] | None = None) -> Progress:
    """Everything the Progress tab shows. `versions`: reward version metadata (see `ui.scoring`)."""
    from prefs.stats import compute as stats
    from ui.scoring import val_accuracy

    df = judgements_frame(store)
    st = stats(store.engine, top=0)
    outcomes = pd.DataFrame({"outcome": [OUTCOME_LABELS[o] for o in OUTCOMES],
                             "count": [st["by_outcome"][o] for o in OUTCOMES]})
    rater_rows = []
    for name, g in df.groupby("rater", sort=True):
        consistency = stats(store.engine, top=0, rater=name)["self_consistency"]
        counts = g["outcome"].value_counts()
        dm = g["decision_ms"].dropna()
        rater_rows.append({
            "rater": name, "judgements": len(g),
            **{OUTCOME_LABELS[o]: int(counts.get(o, 0)) for o in OUTCOMES},
            "self-consistency": _pct(consistency["agreement"], consistency["count"]),
            "median decision (s)": round(float(dm.median()) / 1000, 2) if len(dm) else None,
        })
    raters = pd.DataFrame(rater_rows, columns=["rater", "judgements", *OUTCOME_LABELS.values(),
                                               "self-consistency", "median decision (s)"])
    over_time = _over_time(df)
    rewards = pd.DataFrame(
        [{"version": str(v.get("id", "?")), "accuracy": acc, "judgements": v.get("judgements") or v.get("n_judgements")}
         for v in (versions or []) if (acc := val_accuracy(v)) is not None],
        columns=["version", "accuracy", "judgements"])
    sc = st["self_consistency"]
    tie = "n/a" if st["tie_rate"] is None else f"{st['tie_rate']:.0%}"
    summary = (f"**{st['judgements']}** judgements by **{len(st['raters'])}** rater(s) on **{st['images']}** images "
               f"({st['ranked_images']} ranked) · tie rate {tie} · self-consistency "
               f"{_pct(sc['agreement'], sc['count'])} · {st['undone']} undone")
    if not len(rewards):
        summary += " · no reward model yet (`rlft reward train`)"
    return Progress(summary, outcomes, raters, over_time, rewards)


def _pct(agreement, count) -> str:
    return "n/a (no repeats yet)" if agreement is None else f"{agreement:.0%} of {count} repeats"


def _over_time(df: pd.DataFrame) -> pd.DataFrame:
    """Cumulative judgements per rater, thinned to at most MAX_POINTS points per rater."""
    if df.empty:
        return pd.DataFrame({"time": pd.Series([], dtype="datetime64[ns]"), "judgements": [], "rater": []})
    parts = []
    for name, g in df.groupby("rater", sort=True):
        times = pd.to_datetime(g["created_at"], utc=True).dt.tz_localize(None)
        cum = pd.Series(range(1, len(g) + 1), index=g.index)
        step = max(1, len(g) // MAX_POINTS)
        keep = list(range(0, len(g), step))
        if keep[-1] != len(g) - 1:
            keep.append(len(g) - 1)
        parts.append(pd.DataFrame({"time": times.iloc[keep].values, "judgements": cum.iloc[keep].values,
                                   "rater": name}))
    return pd.concat(parts, ignore_index=True)
