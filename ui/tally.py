"""How far one rater has come: standing judgements in all, and pairs of the pool still unjudged by them.

Counted with four small queries (no pair enumeration), so it stays cheap on a large pool; the rating session
runs it in its background prefetch, never between a key press and the next pair.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import and_, case, func, select

from prefs.models import Image, JudgementRow, Rater


@dataclasses.dataclass(frozen=True)
class Tally:
    """One rater's standing, counted at one moment."""

    judged: int  # standing (not undone) judgements by this rater, any pair
    left_same_prompt: int  # unjudged pairs of two usable images with the same prompt
    left_all: int  # unjudged pairs of two usable images, any prompts


def count(engine, rater: str) -> Tally:
    """`rater`'s Tally now (a rater who never voted has judged nothing, and every pair is left)."""
    usable = Image.broken_at.is_(None)
    with engine.connect() as conn:
        per_prompt = conn.execute(select(func.count()).where(usable).group_by(Image.prompt_hash)).scalars().all()
        n = sum(per_prompt)
        pairs_same = sum(k * (k - 1) // 2 for k in per_prompt)
        rid = conn.execute(select(Rater.id).where(Rater.name == rater)).scalar()
        if rid is None:
            return Tally(0, pairs_same, n * (n - 1) // 2)
        mine = and_(JudgementRow.rater_id == rid, JudgementRow.undone_at.is_(None))
        judged = conn.execute(select(func.count()).select_from(JudgementRow).where(mine)).scalar() or 0
        # Distinct unordered pairs of usable images this rater has judged (a repeat judges a pair again).
        ia, ib = Image.__table__.alias("ia"), Image.__table__.alias("ib")
        lo = case((JudgementRow.image_a_id < JudgementRow.image_b_id, JudgementRow.image_a_id),
                  else_=JudgementRow.image_b_id)
        hi = case((JudgementRow.image_a_id < JudgementRow.image_b_id, JudgementRow.image_b_id),
                  else_=JudgementRow.image_a_id)
        pairs = (select(lo.label("lo"), hi.label("hi"), (ia.c.prompt_hash == ib.c.prompt_hash).label("same"))
                 .join(ia, ia.c.id == JudgementRow.image_a_id).join(ib, ib.c.id == JudgementRow.image_b_id)
                 .where(mine, ia.c.broken_at.is_(None), ib.c.broken_at.is_(None)).distinct().subquery())
        done_all, done_same = conn.execute(
            select(func.count(), func.coalesce(func.sum(case((pairs.c.same, 1), else_=0)), 0)).select_from(pairs)).one()
    return Tally(int(judged), max(0, pairs_same - int(done_same)), max(0, n * (n - 1) // 2 - int(done_all)))
