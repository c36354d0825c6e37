"""What the store's text, name and JSON columns accept: checked where values enter, the same on every backend.

SQLite stores whatever it is given; PostgreSQL refuses a string longer than its column
(`StringDataRightTruncation`), a NUL character in text, and NaN or Infinity in JSON; neither can encode an
unpaired surrogate (what Python makes of a file name that is not UTF-8). So the store checks every value a
person or a file supplies against one limit per column, read from the column itself (`prefs.models`), and
raises UserError before anything is written: a name that works on SQLite works on PostgreSQL and the reverse.

Columns the store fills itself (sha256, format, prompt_hash, origin, outcome, shown_left) are checked where
they are made; `CHECKED` lists which column each public argument lands in, and a test walks every String
column of `prefs.models` to keep the two in step.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy import Column

from prefs.errors import UserError
from prefs.models import Image, JudgementRow, Rater, Round

RATER = Rater.__table__.c.name
ROUND = Round.__table__.c.name
VOTE_ID = JudgementRow.__table__.c.client_vote_id
STRATEGY = JudgementRow.__table__.c.strategy
MODEL = Image.__table__.c.model
LORA = Image.__table__.c.lora
CAPTION_SOURCE = Image.__table__.c.caption_source

CHECKED = {c.table.name + "." + c.name: c for c in (RATER, ROUND, VOTE_ID, STRATEGY, MODEL, LORA, CAPTION_SOURCE)}
"""String columns that take values from outside the store, each checked against its own length."""
TEXT = ("images.prompt", "images.negative_prompt", "images.source_path", "images.broken_reason")
"""Unbounded text columns: checked with `check_text` (no NUL, valid Unicode) where values enter."""
INTERNAL = ("images.sha256", "images.format", "images.prompt_hash", "images.origin", "comparisons.outcome",
            "comparisons.shown_left")
"""String columns the store fills itself (hashes, a file's format) or checks against a fixed list of values."""


def max_length(column: Column) -> int:
    """The longest value `column` holds (its VARCHAR length)."""
    return int(column.type.length)


def check_text(value: Any, what: str) -> str:
    """`value` as text any backend stores: a str without NUL characters or unpaired surrogates."""
    if not isinstance(value, str):
        raise UserError(f"{what} must be text, got {type(value).__name__} {_short(value)}")
    if "\x00" in value:
        raise UserError(f"{what} must not contain a NUL character: {_short(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{what} is not valid Unicode text (a name that is not UTF-8?): {_short(value)}") from None
    return value


def check_name(value: Any, what: str, column: Column, *, optional: bool = False, blank: bool = False) -> str | None:
    """A name for `column`: text (see `check_text`), at most the column's length; not empty or blank unless
    `blank`; None only when `optional`."""
    if value is None and optional:
        return None
    text = check_text(value, what)
    if not blank and not text.strip():
        raise UserError(f"{what} must not be empty")
    limit = max_length(column)
    if len(text) > limit:
        raise UserError(f"{what} is {len(text)} characters long; the limit is {limit}: {_short(text)}")
    return text


def check_json(value: Any, what: str) -> Any:
    """`value` as JSON any backend stores: numbers finite, keys and strings text (see `check_text`)."""
    if value is None:
        return None
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise UserError(f"{what} must be JSON with finite numbers: {e}") from None
    _walk_json(value, what)
    return value


def _walk_json(value: Any, what: str) -> None:
    if isinstance(value, str):
        check_text(value, what)
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str):
                check_text(k, what)
            _walk_json(v, what)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _walk_json(v, what)
    elif isinstance(value, float) and not math.isfinite(value):  # json.dumps caught it; kept for clarity
        raise UserError(f"{what} must hold finite numbers, got {value}")


def _short(value: Any, n: int = 40) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return repr(text if len(text) <= n else text[:n] + "...")
