"""Base vs tuned: who wins on the same prompt and seed, as each judge sees it.

A judge gives a score per image (higher is better): the latest reward model, the Bradley-Terry fit of the
judgements (judged images only), and any judge registered with `register_judge` (e.g. an independent public
reward, or a simulated rater's oracle): the hook for judges that did not train the model. `summarize`
counts, over every pair the two runs share (not only the rows shown), the wins, ties and losses of run B
against run A and the mean score difference B - A.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Callable, Mapping, Sequence

TIE_MARGIN = 0.05  # |score B - score A| below this is a tie: P(B beats A) within 49-51% on the Bradley-Terry scale

JudgeFn = Callable[[list], Mapping[str, float]]  # images -> score per sha256 (images it cannot score left out)
_JUDGES: dict[str, JudgeFn] = {}


def register_judge(name: str, fn: JudgeFn) -> None:
    """Add a judge every comparison is summarised under, after the built-in ones (same name: replaced)."""
    _JUDGES[name] = fn


def registered_judges() -> dict[str, JudgeFn]:
    return dict(_JUDGES)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Run B against run A over the shared prompt + seed pairs, under one judge."""

    judge: str
    wins: int  # B scored higher by more than TIE_MARGIN
    ties: int
    losses: int
    unscored: int  # pairs where the judge has no score for one of the two images
    mean_diff: float | None  # mean of score B - score A over the scored pairs

    @property
    def scored(self) -> int:
        return self.wins + self.ties + self.losses


def summarize(pairs: Sequence[tuple], judge: str, scores: Mapping[str, float], margin: float = TIE_MARGIN) -> Verdict:
    """`pairs`: (prompt, seed, image A, image B) tuples; `scores`: the judge's score per sha256."""
    wins = ties = losses = unscored = 0
    diffs = []
    for _, _, a, b, *_ in pairs:
        sa, sb = scores.get(a.sha256), scores.get(b.sha256)
        if sa is None or sb is None:
            unscored += 1
            continue
        d = float(sb) - float(sa)
        diffs.append(d)
        if d > margin:
            wins += 1
        elif d < -margin:
            losses += 1
        else:
            ties += 1
    return Verdict(judge, wins, ties, losses, unscored, statistics.fmean(diffs) if diffs else None)
