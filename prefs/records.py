"""Plain records the store hands out: judgements with image hashes and rater names, and chosen pairs.

These are frozen dataclasses, safe to keep after the session that read them has closed and to pass
between threads. Images are handed out as detached `prefs.models.Image` rows (all columns loaded).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from prefs.models import Image


@dataclasses.dataclass(frozen=True)
class Judgement:
    """One recorded judgement. `outcome` refers to `image_a`/`image_b` (roles), not screen sides."""

    id: int
    client_vote_id: str
    rater: str
    image_a: str  # sha256
    image_b: str  # sha256
    outcome: str  # a | b | tie | both_bad | skip
    shown_left: str | None  # which of a/b was on the left; None when unknown (imports)
    created_at: dt.datetime
    decision_ms: int | None = None
    strategy: str | None = None  # pair-selection strategy that produced the pair
    predicted_p: float | None = None  # the strategy's P(a beats b) at selection time
    undone_at: dt.datetime | None = None
    round: str | None = None

    @property
    def winner(self) -> str | None:
        """sha256 of the winner for a decisive outcome, else None."""
        return {"a": self.image_a, "b": self.image_b}.get(self.outcome)


@dataclasses.dataclass(frozen=True)
class Pair:
    """Two images to compare: show `a` on the left and `b` on the right (sides are already randomised).

    Pass `strategy` and `predicted_p` on to `Store.record_judgement` so the judgement records why the pair
    was shown. `repeat` marks a pair the rater judged before (self-consistency check).
    """

    a: Image
    b: Image
    strategy: str
    predicted_p: float | None = None  # P(a beats b) predicted by the scorer, when one was used
    repeat: bool = False
