"""The preference store: the image pool and every judgement, behind one `Store` object.

Open it with `prefs.open_store()`; all methods are thread-safe (each call uses its own short transaction).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from sqlalchemy import Engine, bindparam, func, insert, select, update
from sqlalchemy.exc import DatabaseError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, aliased

from prefs import fields, samplers
from prefs.engine import WRITE, make_engine, open_error, prepare_folder, write_error
from prefs.errors import NotFoundError, UserError
from prefs.home import db_url, home_dir
from prefs.migrate import ensure_current
from prefs.models import ORIGINS, OUTCOMES, Image, JudgementRow, Rater, Round, utcnow
from prefs.pool import ImageFile, Limits, load_image_file, pool_path, read_image, store_file
from prefs.records import Judgement, Pair

DEFAULT_RATER = "default"
RETRIES = 8  # transient conflicts (a racing insert of the same rater, a PostgreSQL deadlock) are retried
DECISION_MS_MAX = 2**31 - 1  # the column is a 32-bit integer on PostgreSQL (about 24 days)


class ConflictError(UserError):
    """A client_vote_id was reused for a different judgement."""


@dataclasses.dataclass
class NewImage:
    """An image to add, with its metadata (see `Store.add_image` for the fields)."""

    file: ImageFile
    prompt: str = ""
    negative_prompt: str = ""
    seed: int | None = None
    model: str | None = None
    lora: str | None = None
    params: dict[str, Any] | None = None
    origin: str = "generated"
    caption_source: str | None = None
    source_path: str | None = None


SEED_RANGE = (-(2**63), 2**63 - 1)  # a 64-bit integer column
_HEX = "0123456789abcdef"


def check_new_image(im: NewImage) -> None:
    """UserError unless every field of `im` fits its column on every backend (see `prefs.fields`)."""
    if im.origin not in ORIGINS:
        raise UserError(f"unknown image origin {im.origin!r}; valid: {', '.join(ORIGINS)}")
    fields.check_text(im.prompt or "", "prompt")
    fields.check_text(im.negative_prompt or "", "negative prompt")
    fields.check_name(im.model, "model name", fields.MODEL, optional=True, blank=True)
    fields.check_name(im.lora, "lora name", fields.LORA, optional=True, blank=True)
    fields.check_name(im.caption_source, "caption source", fields.CAPTION_SOURCE, optional=True, blank=True)
    if im.source_path is not None:
        fields.check_text(im.source_path, "source path")
    if im.seed is not None and (not isinstance(im.seed, int) or isinstance(im.seed, bool)
                                or not SEED_RANGE[0] <= im.seed <= SEED_RANGE[1]):
        raise UserError(f"seed must be a 64-bit integer, got {im.seed!r}")
    fields.check_json(im.params, "generation settings (params)")


# Statements of the vote path, built once (see record_judgement).
_IDS_BY_SHA = select(Image.sha256, Image.id).where(Image.sha256.in_(bindparam("shas", expanding=True)))
_RATER_BY_NAME = select(Rater.id).where(Rater.name == bindparam("name"))
_RATER_BY_NAME_LOCKED = _RATER_BY_NAME.with_for_update()  # SQLite renders no FOR UPDATE: its writers are serial
# A standing judgement of the pair {x, y} by the rater, in either order.
_STANDING = select(JudgementRow.id).where(
    JudgementRow.rater_id == bindparam("rater_id"),
    JudgementRow.image_a_id.in_(bindparam("pair", expanding=True)),
    JudgementRow.image_b_id.in_(bindparam("pair", expanding=True)),
    JudgementRow.undone_at.is_(None),
).limit(1)
_VOTE_BY_ID = select(JudgementRow.id, JudgementRow.image_a_id, JudgementRow.image_b_id, JudgementRow.outcome,
                     JudgementRow.rater_id).where(JudgementRow.client_vote_id == bindparam("v"))
_INSERT_VOTE = insert(JudgementRow).returning(JudgementRow.id)
_IMAGE_A, _IMAGE_B = aliased(Image), aliased(Image)
# A stored vote as a Judgement, in one Core query (a retried vote, a re-imported file: ORM loads cost ~1 ms).
_JUDGEMENT_BY_ID = (
    select(JudgementRow.id, JudgementRow.client_vote_id, Rater.name, _IMAGE_A.sha256, _IMAGE_B.sha256, JudgementRow.outcome,
           JudgementRow.shown_left, JudgementRow.created_at, JudgementRow.decision_ms, JudgementRow.strategy,
           JudgementRow.predicted_p, JudgementRow.undone_at, Round.name)
    .join(Rater, Rater.id == JudgementRow.rater_id)
    .join(_IMAGE_A, _IMAGE_A.id == JudgementRow.image_a_id)
    .join(_IMAGE_B, _IMAGE_B.id == JudgementRow.image_b_id)
    .outerjoin(Round, Round.id == JudgementRow.round_id)
    .where(JudgementRow.id == bindparam("id"))
)
_BUMP = update(Image).where(Image.id == bindparam("image_id")).values(
    n_judgements=Image.n_judgements + bindparam("delta"))


def prompt_hash(prompt: str) -> str:
    """The 16-hex-digit key images are grouped by for `same_prompt`."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def _is_transient(e: DBAPIError) -> bool:
    text = str(e.orig).lower() if e.orig is not None else str(e).lower()
    return any(s in text for s in ("database is locked", "deadlock", "could not serialize", "unique", "duplicate key"))


class Store:
    """The image pool and judgements. Create with `prefs.open_store(url)`."""

    def __init__(self, engine: Engine, pool_dir: Path, seed: int | None = None):
        self.engine = engine
        self._write_engine = engine.execution_options(**WRITE)
        self.pool_dir = Path(pool_dir)
        self._rng = random.Random(seed)

    # -- plumbing -------------------------------------------------------------------------------------
    def _read(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _write(self, fn, core: bool = False):
        """Run `fn(session)` (or `fn(connection)` with `core`) in one write transaction, retrying conflicts."""
        for attempt in range(RETRIES):
            try:
                if core:
                    with self._write_engine.begin() as conn:
                        return fn(conn)
                with Session(self._write_engine, expire_on_commit=False) as s, s.begin():
                    return fn(s)
            except (IntegrityError, OperationalError) as e:
                if attempt == RETRIES - 1 or not _is_transient(e):
                    if isinstance(e, OperationalError):
                        raise write_error(self.engine, e) from e
                    raise
                time.sleep(0.005 * (2**attempt) * (0.5 + random.random()))
            except DatabaseError as e:
                if type(e) is DatabaseError:  # SQLite: not a database, or a damaged file
                    raise write_error(self.engine, e) from e
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- images -----------------------------------------------------------------------------------------
    def add_image(
        self,
        data_or_path: bytes | str | os.PathLike | Any,
        *,
        prompt: str = "",
        negative_prompt: str = "",
        seed: int | None = None,
        model: str | None = None,
        lora: str | None = None,
        params: Mapping[str, Any] | None = None,
        origin: str = "generated",
        caption_source: str | None = None,
        limits: Limits = Limits(),
    ) -> Image:
        """Add one image to the pool and return its row (the existing row if the same bytes are there).

        `data_or_path`: the encoded file's bytes, a path to a PNG/JPEG/WebP file, or a PIL image (stored as
        PNG, keeping a `parameters` text in `image.info`). `prompt`/`negative_prompt`/`seed`: how it was
        generated; `model`: the model spec; `lora`: the LoRA or training-run id applied, if any; `params`:
        any other generation settings (JSON-serialisable); `origin`: "generated" or "imported";
        `caption_source`: where the prompt came from (e.g. "generate", "a1111", "sidecar", "cli").
        Metadata of an image already in the pool is not changed. The returned row's `sha256` is the image's
        id everywhere else in the API. Raises ImageError for corrupt/oversized files, UserError for a bad
        origin.
        """
        file = load_image_file(data_or_path, limits)
        new = NewImage(file, prompt, negative_prompt, seed, model, lora, dict(params) if params else None, origin, caption_source)
        return self.add_images([new])[0][0]

    def add_images(self, images: Sequence[NewImage]) -> list[tuple[Image, bool]]:
        """Add a batch in one transaction (all or nothing); returns (row, created) per input, in order.

        Files are written first, so a row never points at a missing file; should the rows not be committed
        (a full disk, a database that refuses the write, an interrupt), the files this call wrote are removed
        again, so no file is left in the pool without a row. Raises UserError for a field that does not fit
        its column (`prefs.fields`), StorageError when the disk or the database refuses the write.
        """
        for im in images:
            check_new_image(im)
        written: list[tuple[str, Path]] = []
        try:
            for im in images:
                path, created = store_file(self.pool_dir, im.file)
                if created:
                    written.append((im.file.sha256, path))
            return self._write(self._insert_images_tx(images))
        except BaseException:
            self._remove_orphans(written)
            raise

    def _remove_orphans(self, written: Sequence[tuple[str, Path]]) -> None:
        """Remove pool files this process wrote whose rows were not committed (none of ours; nor, as far as the
        database says, another process's that added the same bytes meanwhile)."""
        if not written:
            return
        try:
            with self.engine.connect() as conn:
                kept = set(conn.execute(select(Image.sha256).where(Image.sha256.in_([sha for sha, _ in written]))).scalars())
        except DBAPIError:  # the database is unreachable or broken: the rows we meant to write are not there
            kept = set()
        for sha, path in written:
            if sha not in kept:
                with contextlib.suppress(OSError):
                    path.unlink()

    @staticmethod
    def _insert_images_tx(images: Sequence[NewImage]):
        def tx(s: Session):
            shas = list({im.file.sha256 for im in images})
            existing = {r.sha256: r for r in s.scalars(select(Image).where(Image.sha256.in_(shas)))} if shas else {}
            out = []
            for im in images:
                row = existing.get(im.file.sha256)
                if row is not None:
                    out.append((row, False))
                    continue
                row = Image(
                    sha256=im.file.sha256, width=im.file.width, height=im.file.height, format=im.file.format,
                    prompt=im.prompt or "", prompt_hash=prompt_hash(im.prompt or ""),
                    negative_prompt=im.negative_prompt or "", seed=im.seed, model=im.model, lora=im.lora,
                    params=im.params, origin=im.origin, caption_source=im.caption_source,
                    source_path=im.source_path, n_judgements=0, created_at=utcnow(),
                )
                s.add(row)
                existing[row.sha256] = row
                out.append((row, True))
            s.flush()
            return out

        return tx

    def get_image(self, sha256: str) -> Image:
        """The image row for a sha256 (a unique prefix of at least 8 hex digits also works)."""
        return self._resolve_images([sha256])[sha256]

    def _resolve_images(self, refs: Sequence[str | Image], session: Session | None = None) -> dict[str, Image]:
        keys = [r.sha256 if isinstance(r, Image) else str(r).lower() for r in refs]
        s = session or self._read()
        try:
            full = [k for k in keys if len(k) == 64]
            found = {r.sha256: r for r in s.scalars(select(Image).where(Image.sha256.in_(full)))} if full else {}
            for k in keys:
                if k in found:
                    continue
                if 8 <= len(k) < 64 and not k.strip(_HEX):  # only hex can match (and odd text can't reach the query)
                    rows = s.scalars(select(Image).where(Image.sha256.startswith(k)).limit(2)).all()
                    if len(rows) == 1:
                        found[k] = rows[0]
                        continue
                    if len(rows) > 1:
                        raise UserError(f"image prefix {k!r} is ambiguous; give more digits")
                raise NotFoundError(f"no image {k!r} in the pool (add it with `rlft import` or Store.add_image)")
            return {k: found[k] for k in keys}
        finally:
            if session is None:
                s.close()

    def image_path(self, image: str | Image) -> Path:
        """The file of an image in the pool (`home/pool/ab/abcdef....png`)."""
        row = image if isinstance(image, Image) else self.get_image(image)
        return pool_path(self.pool_dir, row.sha256, row.format)

    def open_image(self, image: str | Image):
        """An image's pool file decoded to an RGB PIL image; ImageError when the file is missing or unreadable
        (every reader of the pool meets a lost file as this one error, and skips the image with a notice)."""
        row = image if isinstance(image, Image) else self.get_image(image)
        return read_image(self.image_path(row), f"image {row.sha256[:12]}")

    def images(self, batch: int = 1000) -> Iterator[Image]:
        """Every image row, oldest first (streamed in batches)."""
        last = 0
        while True:
            with self._read() as s:
                rows = s.scalars(select(Image).where(Image.id > last).order_by(Image.id).limit(batch)).all()
            if not rows:
                return
            yield from rows
            last = rows[-1].id

    def count_images(self) -> int:
        with self._read() as s:
            return s.scalar(select(func.count(Image.id)))

    def count_judgements(self, rater: str | None = None, outcomes: Sequence[str] | None = None) -> int:
        """Standing (not undone) judgements, of `rater` or everyone, optionally only these outcomes."""
        q = select(func.count(JudgementRow.id)).where(JudgementRow.undone_at.is_(None))
        if rater is not None:
            q = q.join(Rater, Rater.id == JudgementRow.rater_id).where(Rater.name == rater)
        if outcomes is not None:
            q = q.where(JudgementRow.outcome.in_(list(outcomes)))
        with self._read() as s:
            return int(s.scalar(q))

    def mark_broken(self, image: str | Image, reason: str = "", broken: bool = True) -> None:
        """Flag an image as broken (never shown in a pair again), or clear the flag with `broken=False`."""
        row = self.get_image(image) if not isinstance(image, Image) else image
        fields.check_text(reason or "", "reason")
        self._write(lambda s: s.execute(
            update(Image).where(Image.id == row.id).values(
                broken_at=utcnow() if broken else None, broken_reason=(reason or None) if broken else None)
        ))

    # -- judgements -------------------------------------------------------------------------------------
    def record_judgement(
        self,
        image_a: str | Image,
        image_b: str | Image,
        outcome: str,
        *,
        rater: str = DEFAULT_RATER,
        shown_left: str | None = "a",
        client_vote_id: str | None = None,
        decision_ms: int | None = None,
        strategy: str | None = None,
        predicted_p: float | None = None,
        round: str | None = None,
        created_at: dt.datetime | None = None,
        undone_at: dt.datetime | None = None,
    ) -> Judgement:
        """Record one judgement of `image_a` vs `image_b` (sha256s or rows) in one transaction.

        `outcome`: "a" or "b" (that image won), "tie", "both_bad", or "skip". `shown_left`: which of a/b
        the rater saw on the left ("a", "b", or None if unknown). `client_vote_id`: a stable id from the
        client (e.g. a UUID made when the pair was shown); recording the same id again returns the stored
        judgement instead of a second row, so retries are safe; reusing it for a different judgement raises
        ConflictError. Default: a fresh UUID. `decision_ms`: how long the rater took. `strategy`,
        `predicted_p`: from the `Pair` that `next_pair` returned (P(a beats b)). `round`: a steering-loop
        round name (created on first use). `created_at`/`undone_at`: only for imports of old judgements.
        The rater is created on first use. Raises UserError (bad outcome/side/numbers, an image against
        itself, a name over its limit: `prefs.fields`), NotFoundError (an image not in the pool),
        ConflictError, StorageError (the disk or database refused the write; nothing was stored).

        A judgement of a pair the rater already has a standing judgement of is recorded as a repeat
        (`strategy` "repeat", whatever was passed), in the same transaction that checks, with the rater's
        votes serialised: so each rater's standing judgements that are not repeats hold every pair at most
        once, also when two sessions of one rater were offered the same pair at once (`next_pair` chooses
        outside the vote's transaction). The vote itself is always kept: it is what the person said.
        """
        vote = self._check_vote(image_a, image_b, outcome, rater=rater, shown_left=shown_left,
                                client_vote_id=client_vote_id, decision_ms=decision_ms, strategy=strategy,
                                predicted_p=predicted_p, round=round, created_at=created_at, undone_at=undone_at)
        return self._write(lambda conn: self._insert_vote(conn, vote, live=True)[0], core=True)

    def record_judgements(self, votes: Sequence[Mapping[str, Any]]) -> list[tuple[Judgement, bool]]:
        """Record many judgements in one transaction: all of them, or (on any error) none.

        Each vote is a mapping of `record_judgement`'s arguments (`image_a`, `image_b`, `outcome`, and any
        of its keywords). Every vote is validated before anything is written. Returns, per vote, the stored
        judgement and whether it is new (False: its client_vote_id was already recorded, so nothing was
        added). Imports use this: one transaction per thousand rows instead of one per row. Votes are
        recorded as given (an import restores history): the repeat rule of `record_judgement` is not applied.
        """
        checked = [self._check_vote(**v) for v in votes]
        if not checked:
            return []
        return self._write(lambda conn: [self._insert_vote(conn, v) for v in checked], core=True)

    @staticmethod
    def _check_vote(image_a: str | Image, image_b: str | Image, outcome: str, *, rater: str = DEFAULT_RATER,
                    shown_left: str | None = "a", client_vote_id: str | None = None, decision_ms: int | None = None,
                    strategy: str | None = None, predicted_p: float | None = None, round: str | None = None,
                    created_at: dt.datetime | None = None, undone_at: dt.datetime | None = None) -> dict[str, Any]:
        """Validate one vote's arguments (raising UserError) and normalise them for `_insert_vote`."""
        if outcome not in OUTCOMES:
            raise UserError(f"invalid outcome {outcome!r}; valid: {', '.join(OUTCOMES)}")
        if shown_left not in (None, "a", "b"):
            raise UserError(f"invalid shown_left {shown_left!r}; valid: a, b, or None")
        if not rater or not str(rater).strip():
            raise UserError("rater name must not be empty")
        rater = fields.check_name(rater, "rater name", fields.RATER)
        round = fields.check_name(round, "round name", fields.ROUND, optional=True)
        strategy = fields.check_name(strategy, "strategy", fields.STRATEGY, optional=True)
        if decision_ms is not None and (not isinstance(decision_ms, int) or isinstance(decision_ms, bool)
                                        or not 0 <= decision_ms <= DECISION_MS_MAX):
            raise UserError(f"decision_ms must be a non-negative integer, at most {DECISION_MS_MAX}, got {decision_ms!r}")
        if predicted_p is not None and not (isinstance(predicted_p, (int, float)) and not isinstance(predicted_p, bool)
                                            and 0.0 <= predicted_p <= 1.0):
            raise UserError(f"predicted_p must be a probability in [0, 1], got {predicted_p!r}")
        vote_id = str(client_vote_id) if client_vote_id is not None else uuid.uuid4().hex
        if not vote_id or len(vote_id) > fields.max_length(fields.VOTE_ID):
            raise UserError(f"client_vote_id must be 1 to {fields.max_length(fields.VOTE_ID)} characters")
        fields.check_text(vote_id, "client_vote_id")
        for when, what in ((created_at, "created_at"), (undone_at, "undone_at")):
            if when is not None and not isinstance(when, dt.datetime):
                raise UserError(f"{what} must be a datetime, got {when!r}")
        ref_a = image_a.sha256 if isinstance(image_a, Image) else str(image_a).lower()
        ref_b = image_b.sha256 if isinstance(image_b, Image) else str(image_b).lower()
        fields.check_text(ref_a, "image_a")
        fields.check_text(ref_b, "image_b")
        if ref_a == ref_b:
            raise UserError("cannot compare an image with itself")
        return {"ref_a": ref_a, "ref_b": ref_b, "outcome": outcome, "rater": rater, "shown_left": shown_left,
                "vote_id": vote_id, "decision_ms": decision_ms, "strategy": strategy,
                "predicted_p": None if predicted_p is None else float(predicted_p), "round": round,
                "created_at": created_at, "undone_at": undone_at}

    def _insert_vote(self, conn, v: dict[str, Any], live: bool = False) -> tuple[Judgement, bool]:
        """Write one checked vote on `conn` (inside the caller's transaction): (judgement, whether new).

        `live`: a vote being cast now; one of a pair the rater already has standing becomes a repeat (see
        `record_judgement`), checked under a lock on the rater's row (PostgreSQL; SQLite's write transactions
        are serial already)."""
        # Prebuilt Core statements on a bare connection: this is the hot path of every vote (bench target:
        # p99 <= 5 ms), and ORM sessions or per-call statement building cost a millisecond.
        ref_a, ref_b, vote_id, outcome = v["ref_a"], v["ref_b"], v["vote_id"], v["outcome"]
        ids = dict(conn.execute(_IDS_BY_SHA, {"shas": [ref_a, ref_b]}).all())
        if len(ids) < 2:  # a prefix, or a missing image (raises NotFoundError)
            with Session(bind=conn) as s:
                found = self._resolve_images([ref_a, ref_b], session=s)
            sha_a, sha_b = found[ref_a].sha256, found[ref_b].sha256
            ids = {sha_a: found[ref_a].id, sha_b: found[ref_b].id}
        else:
            sha_a, sha_b = ref_a, ref_b
        a_id, b_id = ids[sha_a], ids[sha_b]
        if a_id == b_id:
            raise UserError("cannot compare an image with itself")
        rater_id = self._rater_id(conn, v["rater"], create=True, lock=live)
        old = conn.execute(_VOTE_BY_ID, {"v": vote_id}).first()
        if old is not None:
            if tuple(old[1:]) != (a_id, b_id, outcome, rater_id):
                raise ConflictError(f"client_vote_id {vote_id!r} was already used for a different judgement")
            return Judgement(*conn.execute(_JUDGEMENT_BY_ID, {"id": old[0]}).one()), False
        if live and v["strategy"] != "repeat" and v["undone_at"] is None and conn.execute(
                _STANDING, {"rater_id": rater_id, "pair": [a_id, b_id]}).first() is not None:
            v = {**v, "strategy": "repeat"}
        round_id = self._round_id(conn, v["round"]) if v["round"] else None
        when = v["created_at"] or utcnow()
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        undone_at = v["undone_at"]
        new_id = conn.execute(_INSERT_VOTE, {
            "client_vote_id": vote_id, "image_a_id": a_id, "image_b_id": b_id, "shown_left": v["shown_left"],
            "outcome": outcome, "rater_id": rater_id, "round_id": round_id, "created_at": when,
            "decision_ms": v["decision_ms"], "strategy": v["strategy"], "predicted_p": v["predicted_p"],
            "undone_at": undone_at,
        }).scalar_one()
        if undone_at is None:
            self._bump(conn, (a_id, b_id), +1)
        return Judgement(new_id, vote_id, v["rater"], sha_a, sha_b, outcome, v["shown_left"], when, v["decision_ms"],
                         v["strategy"], v["predicted_p"], undone_at, v["round"]), True

    @staticmethod
    def _bump(s, ids: tuple[int, int], delta: int) -> None:
        # Lock rows in id order: two transactions touching the same two images can't deadlock (PostgreSQL).
        for image_id in sorted(ids):
            s.execute(_BUMP, {"image_id": image_id, "delta": delta})

    @staticmethod
    def _rater_id(s, name: str, create: bool, lock: bool = False) -> int | None:
        """The rater's id (created when `create`); `lock` holds the rater's row until the transaction ends,
        so one rater's votes are recorded one at a time (PostgreSQL: SELECT ... FOR UPDATE)."""
        rid = s.execute(_RATER_BY_NAME_LOCKED if lock else _RATER_BY_NAME, {"name": name}).scalar()
        if rid is None and create:
            rid = s.execute(insert(Rater).values(name=name, created_at=utcnow()).returning(Rater.id)).scalar_one()
        return rid

    @staticmethod
    def _round_id(s, name: str) -> int:
        rid = s.execute(select(Round.id).where(Round.name == name)).scalar()
        if rid is None:
            rid = s.execute(insert(Round).values(name=name, created_at=utcnow()).returning(Round.id)).scalar_one()
        return rid

    @staticmethod
    def _judgement(s: Session, c: JudgementRow) -> Judgement:
        shas = dict(s.execute(select(Image.id, Image.sha256).where(Image.id.in_((c.image_a_id, c.image_b_id)))).all())
        rater = s.scalar(select(Rater.name).where(Rater.id == c.rater_id))
        round_name = s.scalar(select(Round.name).where(Round.id == c.round_id)) if c.round_id else None
        return Judgement(c.id, c.client_vote_id, rater, shas[c.image_a_id], shas[c.image_b_id], c.outcome, c.shown_left,
                         c.created_at, c.decision_ms, c.strategy, c.predicted_p, c.undone_at, round_name)

    def undo_last(self, rater: str = DEFAULT_RATER) -> Judgement | None:
        """Undo the rater's latest standing judgement (soft delete: sets `undone_at`); returns it, or None.

        Calling it again undoes the one before. The pair becomes eligible to be shown again.
        """

        def tx(s: Session):
            rid = self._rater_id(s, rater, create=False)
            if rid is None:
                return None
            row = s.scalars(
                select(JudgementRow).where(JudgementRow.rater_id == rid, JudgementRow.undone_at.is_(None))
                .order_by(JudgementRow.id.desc()).limit(1)
            ).first()
            if row is None:
                return None
            row.undone_at = utcnow()
            s.flush()
            self._bump(s, (row.image_a_id, row.image_b_id), -1)
            return self._judgement(s, row)

        return self._write(tx)

    def judgements(self, include_undone: bool = False, rater: str | None = None, batch: int = 5000) -> Iterator[Judgement]:
        """Every judgement in recording order (undone ones only with `include_undone`), streamed in batches."""
        ia, ib = Image.__table__.alias("ia"), Image.__table__.alias("ib")
        q = (
            select(JudgementRow, ia.c.sha256, ib.c.sha256, Rater.name, Round.name)
            .join(ia, ia.c.id == JudgementRow.image_a_id)
            .join(ib, ib.c.id == JudgementRow.image_b_id)
            .join(Rater, Rater.id == JudgementRow.rater_id)
            .outerjoin(Round, Round.id == JudgementRow.round_id)
            .order_by(JudgementRow.id)
        )
        if not include_undone:
            q = q.where(JudgementRow.undone_at.is_(None))
        if rater is not None:
            q = q.where(Rater.name == rater)
        last = 0
        while True:
            with self._read() as s:
                rows = s.execute(q.where(JudgementRow.id > last).limit(batch)).all()
            if not rows:
                return
            for c, sha_a, sha_b, rater_name, round_name in rows:
                yield Judgement(c.id, c.client_vote_id, rater_name, sha_a, sha_b, c.outcome, c.shown_left, c.created_at,
                                c.decision_ms, c.strategy, c.predicted_p, c.undone_at, round_name)
            last = rows[-1][0].id

    def raters(self) -> list[str]:
        with self._read() as s:
            return list(s.scalars(select(Rater.name).order_by(Rater.id)))

    # -- pair selection ---------------------------------------------------------------------------------
    def default_strategy(self) -> samplers.StrategyMix:
        """`same_prompt` when some prompt has several images, else `random`; plus the 5% `repeat` share."""
        with self.engine.connect() as conn:
            shared = conn.execute(
                select(Image.prompt_hash).group_by(Image.prompt_hash).having(func.count(Image.id) > 1).limit(1)
            ).first()
        main = "same_prompt" if shared else "random"
        return samplers.StrategyMix({main: 1 - samplers.DEFAULT_REPEAT_SHARE, "repeat": samplers.DEFAULT_REPEAT_SHARE})

    def next_pair(
        self,
        rater: str = DEFAULT_RATER,
        strategy: samplers.StrategyMix | str | Mapping[str, float] | None = None,
        *,
        scorer: samplers.Scorer | None = None,
        rng: random.Random | None = None,
        among: samplers.ImageSet | None = None,
    ) -> Pair:
        """Choose the next two images for `rater`, sides randomised (show `pair.a` left, `pair.b` right).

        `strategy`: a `prefs.samplers.StrategyMix` (from `parse_mix`), used as it is; or, read here with
        `parse_mix` on every call, a name (`random`, `same_prompt`, `balanced`, `uncertain`, `repeat`, or any
        registered with `prefs.samplers.register_strategy`), a weighted mix as text ("uncertain:0.7,
        balanced:0.25,repeat:0.05") or a dict: a caller asking for many pairs parses once and passes the
        mix. Default `default_strategy()`. `scorer`: needed by `uncertain` (see
        `prefs.samplers` for the protocol). Never returns an image against itself, a broken image, or a
        pair the rater already judged (except a `repeat`, flagged `pair.repeat`). `among`: a
        `prefs.samplers.ImageSet` (e.g. the images one model and LoRA made), so both images come from it; the
        caller decides what to do when it runs out. Raises NoPairError (a UserError) when nothing is left to show
        (naming `among`), UserError for an unknown strategy.
        """
        mix = samplers.parse_mix(strategy) if strategy else self.default_strategy()
        rng = rng or self._rng
        with self.engine.connect() as conn:
            rid = conn.execute(select(Rater.id).where(Rater.name == rater)).scalar()
            ctx = samplers.PairContext(conn, rid, rng, scorer, among)
            name, (x, y, p) = samplers.choose(ctx, mix)
            rows = ctx.load_images((x, y))
        if rng.random() < 0.5:
            x, y, p = y, x, (None if p is None else 1.0 - p)
        return Pair(rows[x], rows[y], name, p, repeat=(name == "repeat"))

    # -- analysis ---------------------------------------------------------------------------------------
    def stats(self, top: int = 10, rater: str | None = None) -> dict[str, Any]:
        """Counts, tie rate, self-consistency and a Bradley-Terry ranking; see `prefs.stats.compute`."""
        from prefs.stats import compute

        return compute(self.engine, top=top, rater=rater)

    def fit_scores(self, rater: str | None = None, alpha: float | None = None) -> dict[str, float]:
        """Bradley-Terry score per judged image sha256 (ties half wins; both_bad/skip ignored)."""
        from prefs.stats import bt_scores

        return bt_scores(self.engine, rater=rater, alpha=alpha)


def open_store(url: str | None = None, *, home: str | os.PathLike | None = None, upgrade: bool = False,
               seed: int | None = None) -> Store:
    """Open the preference store at `url` (default: `RLFT_DB`, else SQLite in the home).

    A new database is created at the current schema. An older one raises `prefs.migrate.SchemaError`
    naming the command to run (`rlft db upgrade`), unless `upgrade=True`. The image pool is the home's
    `pool/` folder. `seed` makes pair selection reproducible. A database that cannot be opened (not a
    database, a path under a file, a read-only place, a full disk) raises StorageError.
    """
    url = db_url(url, home)
    engine = make_engine(url)
    try:
        prepare_folder(engine)
        ensure_current(engine, upgrade_old=upgrade)
        pool = home_dir(home) / "pool"  # made by the first image written: opening the store adds no empty folder
    except DBAPIError as e:
        engine.dispose()
        raise open_error(engine, e) from e
    except BaseException:
        engine.dispose()
        raise
    return Store(engine, pool, seed=seed)


__all__ = ["Store", "open_store", "NewImage", "ConflictError", "prompt_hash"]
