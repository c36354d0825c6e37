"""Reward expressions: `--reward "latest + 0.3 * pickscore"`, a weighted sum of terms.

A term is `[WEIGHT *] SPEC` or `SPEC [* WEIGHT]`: SPEC a reward version (`latest`, `r0003`, a folder) or a built-in
(`reward.builtins`), WEIGHT a number (default 1). Terms are joined by `+`, or by ` - ` with spaces around it (names
such as `jpeg-compressibility` hold hyphens). A path inside an expression cannot hold `+`, `*` or ` - `.

    parse("latest + 0.3 * pickscore")      # [Term(1.0, "latest"), Term(0.3, "pickscore")]
    text(parse("latest+0.3*pickscore"))    # "latest + 0.3 * pickscore" (the canonical form)

How terms are summed (each normalised per prompt) is the trainer's: `rlft.train.rewards.combined_scores`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from prefs.errors import UserError

_SPLIT = re.compile(r"(\s*\+\s*|\s+-\s+)")


@dataclass(frozen=True)
class Term:
    weight: float
    spec: str


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse(text: str) -> list[Term]:
    """The terms of a reward expression; UserError (one line) for a malformed one."""
    source = str(text).strip()
    if not source:
        raise UserError("empty --reward; give a reward version (latest, r0003), a built-in or a weighted sum")
    pieces = _SPLIT.split(source)
    terms, sign = [], 1.0
    for i, piece in enumerate(pieces):
        if i % 2:  # an operator
            sign = -1.0 if piece.strip() == "-" else 1.0
            continue
        part = piece.strip()
        if not part:
            raise UserError(f"--reward {source!r}: a '+' or '-' without a term beside it")
        factors = [f.strip() for f in part.split("*")]
        if len(factors) == 1:
            weight, spec = 1.0, factors[0]
        elif len(factors) == 2:
            a, b = (_number(f) for f in factors)
            if a is not None and b is None:
                weight, spec = a, factors[1]
            elif b is not None and a is None:
                weight, spec = b, factors[0]
            else:
                raise UserError(f"--reward {source!r}: the term {part!r} needs one number and one reward "
                                "(WEIGHT * REWARD)")
        else:
            raise UserError(f"--reward {source!r}: the term {part!r} has more than one '*'")
        if not spec:
            raise UserError(f"--reward {source!r}: the term {part!r} names no reward")
        if _number(spec) is not None:
            raise UserError(f"--reward {source!r}: the term {part!r} is a number, not a reward")
        terms.append(Term(sign * weight, spec))
    return terms


def text(terms: list[Term]) -> str:
    """The canonical text of `terms` (what a run records, and what `parse` reads back to the same terms)."""
    out = []
    for i, t in enumerate(terms):
        w = abs(t.weight) if i else t.weight
        body = t.spec if w == 1 else f"{w:g} * {t.spec}"
        out.append(body if not i else (" - " if t.weight < 0 else " + ") + body)
    return "".join(out)
