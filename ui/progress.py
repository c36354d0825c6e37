"""Progress figures: counts per outcome and per rater, self-consistency, one rater's (or everyone's) judgements
over time, and the held-out accuracy of each reward version. Frames for Gradio's own plot components.

Outcomes are named as the Rate tab names them: the rating app always shows image `a` on the left.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
from sqlalchemy import select

from prefs.models import OUTCOMES, JudgementRow, Rater

OUTCOME_LABELS = {"a": "left better", "b": "right better", "tie": "tie", "both_bad": "both bad", "skip": "skip"}
OUTCOME_BARS = {"a": "left", "b": "right", "tie": "tie", "both_bad": "both bad", "skip": "skip"}  # short: fit a phone
EVERYONE = "everyone"  # the time plot's choice for all raters together
MAX_POINTS = 400  # points of the time plot: enough to see the shape, cheap to draw
MIN_SPAN_MS = 600_000  # the time axis spans at least ten minutes: ticks a minute or more apart, labelled HH:MM


@dataclasses.dataclass
class Progress:
    summary: str  # markdown
    outcomes: pd.DataFrame  # outcome, count
    raters: pd.DataFrame  # one row per rater
    over_time: pd.DataFrame  # time, judgements (cumulative): for `who` only
    rewards: pd.DataFrame  # version, accuracy, judgements
    who: str  # whose judgements `over_time` counts: a rater's name or EVERYONE
    time_format: str  # d3 time format for the time axis, fitted to its span
    time_lim: list[float] | None  # the time axis' range in epoch seconds, as Gradio takes it (None: the data's)
    time_angle: float  # the time axis' label angle: slanted for the long labels of spans of days


def judgements_frame(store) -> pd.DataFrame:
    """Standing judgements: created_at, outcome, rater, decision_ms (recording order)."""
    q = (select(JudgementRow.created_at, JudgementRow.outcome, Rater.name, JudgementRow.decision_ms)
         .join(Rater, Rater.id == JudgementRow.rater_id)
         .where(JudgementRow.undone_at.is_(None)).order_by(JudgementRow.id))
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
    return pd.DataFrame(rows, columns=["created_at", "outcome", "rater", "decision_ms"])


def compute(store, versions: list[dict] | None = None, who: str | None = None) -> Progress:
    """Everything the Progress tab shows. `versions`: reward version metadata (see `ui.scoring`); `who`: the
    rater whose judgements the time plot counts (None or EVERYONE: all together, on the same scale as one)."""
    from prefs.stats import compute as stats
    from ui.scoring import val_accuracy

    df = judgements_frame(store)
    st = stats(store.engine, top=0)
    outcomes = pd.DataFrame({"outcome": [OUTCOME_BARS[o] for o in OUTCOMES],
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
    who = who if who in set(df["rater"]) else EVERYONE
    over_time = _over_time(df if who == EVERYONE else df[df["rater"] == who])
    time_format, time_lim, time_angle = time_axis(over_time["time"])
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
    return Progress(summary, outcomes, raters, over_time, rewards, who, time_format, time_lim, time_angle)


def _pct(agreement, count) -> str:
    return "n/a (no repeats yet)" if agreement is None else f"{agreement:.0%} of {count} repeats"


def _over_time(df: pd.DataFrame) -> pd.DataFrame:
    """Cumulative judgements in recording order, thinned to at most MAX_POINTS points (the last one kept)."""
    if df.empty:
        return pd.DataFrame({"time": pd.Series([], dtype="datetime64[ms]"), "judgements": pd.Series([], dtype=int)})
    # Naive UTC: Gradio sends epoch milliseconds and the browser draws them in its own time zone.
    times = pd.to_datetime(df["created_at"], utc=True).dt.tz_localize(None).reset_index(drop=True)
    step = max(1, len(df) // MAX_POINTS)
    keep = list(range(0, len(df), step))
    if keep[-1] != len(df) - 1:
        keep.append(len(df) - 1)
    return pd.DataFrame({"time": times.iloc[keep].values, "judgements": [k + 1 for k in keep]})


def time_axis(times: pd.Series) -> tuple[str, list[float] | None, float]:
    """(d3 time format, [start, end] in epoch seconds, label angle) for a time axis over `times`.

    A span under ten minutes is widened to ten around its middle (a burst of judgements within a second was
    labelled in milliseconds, ".500 .500 ..."), so ticks are a minute or more apart and read HH:MM; spans of
    days name the day, slanted so the longer labels do not run into each other; longer spans name days only."""
    if times.empty:
        return "%H:%M", None, 0.0
    lo, hi = (pd.Timestamp(t).value // 1_000_000 for t in (times.min(), times.max()))
    if hi - lo < MIN_SPAN_MS:
        mid = (lo + hi) / 2
        lo, hi = mid - MIN_SPAN_MS / 2, mid + MIN_SPAN_MS / 2
    span_h = (hi - lo) / 3_600_000
    if span_h < 20:
        fmt, angle = "%H:%M", 0.0
    elif span_h < 24 * 10:
        fmt, angle = "%b %d %H:%M", -30.0
    else:
        fmt, angle = "%b %d", 0.0
    return fmt, [lo / 1000, hi / 1000], angle
