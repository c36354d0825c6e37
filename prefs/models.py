"""The preference store's tables, as SQLAlchemy 2.x typed ORM models.

The Alembic migrations in `prefs/migrations/versions/` create exactly these tables; a test compares the two
(`alembic check`-style autogenerate diff), so change both together and add a new migration.

Three tables hold everything a person says about their taste:
- `images`: the pool, one row per distinct file (by sha256 of its bytes); the file lives in the home's
  `pool/ab/abcdef....ext`.
- `raters`: who judged.
- `comparisons`: one row per judgement; undo sets `undone_at` (soft delete), nothing is ever deleted.
`rounds` groups judgements of one steering-loop round (optional).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

OUTCOMES = ("a", "b", "tie", "both_bad", "skip")
"""Valid judgement outcomes: `a`/`b` won, `tie` (equally good), `both_bad`, `skip` (no judgement)."""
ORIGINS = ("generated", "imported")
"""Where an image came from: written by `rlft generate`, or added by `rlft import` / a file import."""
SIDES = ("a", "b")

# Stable constraint names, so migrations on SQLite (batch mode) and PostgreSQL can refer to them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Image(Base):
    """One image in the pool. `sha256` (hex of the file's bytes) is its public identity."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8))  # file extension in the pool: png, jpg, webp
    prompt: Mapped[str] = mapped_column(Text, default="")
    # First 16 hex digits of sha256(prompt): an index-friendly key for grouping images by prompt
    # (PostgreSQL btree indexes refuse very long text values).
    prompt_hash: Mapped[str] = mapped_column(String(16), index=True)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    seed: Mapped[int | None] = mapped_column(BigInteger)
    model: Mapped[str | None] = mapped_column(String(512))  # model spec it was generated with
    lora: Mapped[str | None] = mapped_column(String(512))  # LoRA / training run id, when one was applied
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # other generation settings
    origin: Mapped[str] = mapped_column(String(16))
    caption_source: Mapped[str | None] = mapped_column(String(32))  # a1111 | sidecar | cli | json | ...
    source_path: Mapped[str | None] = mapped_column(Text)  # where an imported file was found (relative)
    # Judgements (not undone) that include this image, kept in step by record/undo so `balanced` is an
    # index scan instead of a GROUP BY over every comparison.
    n_judgements: Mapped[int] = mapped_column(Integer, default=0, index=True)
    broken_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # flagged broken: never shown again
    broken_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (CheckConstraint("origin IN ('generated', 'imported')", name="origin"),)

    def __repr__(self) -> str:
        return f"Image({self.sha256[:12]}, {self.width}x{self.height}, prompt={self.prompt[:30]!r})"


class Rater(Base):
    """A person (or a simulated rater) who judges pairs."""

    __tablename__ = "raters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Round(Base):
    """One round of a steering loop (generate -> rate -> fit -> train); judgements may point at it."""

    __tablename__ = "rounds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # provenance: reward version, run, settings
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class JudgementRow(Base):
    """One judgement of a pair. `outcome` names the winner by role (`a`/`b`), not by screen side."""

    __tablename__ = "comparisons"  # the first schema's name, kept so existing databases need no migration

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_vote_id: Mapped[str] = mapped_column(String(100), unique=True)  # makes a vote idempotent
    image_a_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    image_b_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    shown_left: Mapped[str | None] = mapped_column(String(1))  # which of a/b was on the left; None: unknown
    outcome: Mapped[str] = mapped_column(String(8))
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    decision_ms: Mapped[int | None] = mapped_column(Integer)
    strategy: Mapped[str | None] = mapped_column(String(32))  # pair-selection strategy that chose the pair
    predicted_p: Mapped[float | None] = mapped_column(Float)  # predicted P(a beats b) at selection time
    undone_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("outcome IN ('a', 'b', 'tie', 'both_bad', 'skip')", name="outcome"),
        CheckConstraint("image_a_id <> image_b_id", name="distinct_images"),
        CheckConstraint("shown_left IS NULL OR shown_left IN ('a', 'b')", name="shown_left"),
        # "has this rater judged this pair?" in either order, and "the rater's latest vote" (undo, repeat).
        Index("ix_comparisons_rater_pair", "rater_id", "image_a_id", "image_b_id"),
        Index("ix_comparisons_rater_id_id", "rater_id", "id"),
        Index("ix_comparisons_image_b_id", "image_b_id"),
    )
