"""`rlft prefs import FILE`: judgements from our JSONL, or ranked lists in ImageReward's test.json layout.

All or nothing for bad input: the whole file is read and every row validated before anything is written,
exactly as the store would check it (types, names against their column limits, a client_vote_id reused
within the file or already stored for a different judgement, an image against itself), and a bad row raises
UserError naming its line (JSONL) or entry (ImageReward) with nothing stored, not even an image.

Images are never invented: a referenced image must be in the pool (by sha256, or for ImageReward by its
relative path from an earlier import), or be a readable image file at the given path (then it is added to the
pool); otherwise it is reported in `missing` and its judgements are skipped. Every imported judgement has a
deterministic client_vote_id, so importing a file twice is a no-op.

Once the file is validated, the new images and then the judgements are written `BATCH` to a transaction
(one transaction for everything would hold the database's write lock for minutes on a large file, stalling
everyone rating meanwhile). A fault of the machine while writing (a full disk: StorageError) therefore keeps
the batches already committed, each whole; importing the file again after the fix adds exactly the rest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from prefs.errors import UserError
from prefs.export import SCHEMA
from prefs.models import OUTCOMES, Image, JudgementRow, Rater
from prefs.pool import ImageError, Limits

if TYPE_CHECKING:
    from prefs.store import Store

FORMATS = ("jsonl", "imagereward")
IMAGEREWARD_RATER = "imagereward"
BATCH = 1000  # judgements per write transaction: one per row made a 100k-row import take minutes
IMAGE_BATCH = 200  # images per write transaction
LOOKUP_CHUNK = 500  # client_vote_ids per query when checking the file against what is stored


@dataclasses.dataclass
class JudgementImportReport:
    """What an import did: judgements added / already present / skipped for missing images."""

    format: str
    added: int = 0
    duplicate: int = 0
    skipped: int = 0
    images_added: int = 0
    missing: list[str] = dataclasses.field(default_factory=list)  # referenced images not found

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def detect_format(path: Path) -> str:
    if path.suffix.lower() == ".jsonl":
        return "jsonl"
    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(4096).lstrip("\ufeff \t\r\n")
    if head.startswith("["):
        return "imagereward"
    if head.startswith("{"):
        return "jsonl"
    raise UserError(f"{path}: cannot tell the format; give --format ({', '.join(FORMATS)})")


def import_file(store: "Store", path: str | Path, fmt: str | None = None, *, rater: str | None = None,
                images_root: str | Path | None = None, limits: Limits = Limits(), progress: bool = True) -> JudgementImportReport:
    """Import judgements from `path` (format detected unless `fmt`); see the module docstring.

    `rater`: for ImageReward, the rater name (default "imagereward"); for JSONL, overrides each row's rater.
    `images_root`: where relative image paths resolve (default: the file's folder). Raises UserError for a
    bad file (naming the line or entry; nothing is written), StorageError when the disk or database refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise UserError(f"unknown import format {fmt!r}; valid: {', '.join(FORMATS)}")
    root = Path(images_root) if images_root is not None else path.parent
    if fmt == "jsonl":
        votes = _read_jsonl(path)
        if rater is not None:
            for v in votes:
                v["rater"] = rater
    else:
        votes = _read_imagereward(path, rater or IMAGEREWARD_RATER)
    report = JudgementImportReport(fmt)
    planner = _Planner(store, root, limits, report)
    batch = _validate(store, votes, planner)
    from tqdm import tqdm

    planner.add_images()
    report.skipped = len(votes) - len(batch)
    with tqdm(total=len(batch), desc="import", unit="judgement", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(batch), BATCH):
            chunk = batch[start:start + BATCH]
            for _, new in store.record_judgements(chunk):
                report.added += int(new)
                report.duplicate += int(not new)
            bar.update(len(chunk))
    return report


def _validate(store: "Store", votes: list[dict], planner: "_Planner") -> list[dict]:
    """Check every vote as the store would and resolve its images, writing nothing; the votes to record, in
    order (rows with a missing image left out). UserError naming the line or entry of the first bad row."""
    from prefs.store import Store

    ready: list[dict] = []
    seen: dict[str, tuple[str, tuple]] = {}  # client_vote_id -> (where, what it judges)
    for v in votes:
        where = v["where"]
        args = {k: v.get(k) for k in ("outcome", "rater", "shown_left", "client_vote_id", "decision_ms", "strategy",
                                      "predicted_p", "round", "created_at", "undone_at")}
        try:
            Store._check_vote(v["image_a"], v["image_b"], **args)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        a = planner.get(v["image_a"], v.get("path_a"), v.get("prompt"), where)
        b = planner.get(v["image_b"], v.get("path_b"), v.get("prompt_b"), where)
        if a is None or b is None:
            continue
        if a == b:
            raise UserError(f"{where}: image_a and image_b are the same image ({a[:12]})")
        judged = (a, b, args["outcome"], args["rater"])
        first = seen.setdefault(args["client_vote_id"], (where, judged))
        if first[1] != judged:
            raise UserError(f"{where}: client_vote_id {args['client_vote_id']!r} is used for a different judgement "
                            f"at {first[0]}")
        ready.append({"image_a": a, "image_b": b, **args})
    _check_stored(store, ready, {vid: w for vid, (w, _) in seen.items()})
    return ready


def _check_stored(store: "Store", votes: list[dict], where: dict[str, str]) -> None:
    """UserError when a vote's client_vote_id is already stored for a different judgement (nothing written)."""
    from sqlalchemy.orm import aliased

    ia, ib = aliased(Image), aliased(Image)
    by_id = {v["client_vote_id"]: v for v in votes}
    ids = list(by_id)
    with store.engine.connect() as conn:
        for start in range(0, len(ids), LOOKUP_CHUNK):
            rows = conn.execute(
                select(JudgementRow.client_vote_id, ia.sha256, ib.sha256, JudgementRow.outcome, Rater.name)
                .join(ia, ia.id == JudgementRow.image_a_id).join(ib, ib.id == JudgementRow.image_b_id)
                .join(Rater, Rater.id == JudgementRow.rater_id)
                .where(JudgementRow.client_vote_id.in_(ids[start:start + LOOKUP_CHUNK]))
            ).all()
            for vid, sha_a, sha_b, outcome, rater in rows:
                v = by_id[vid]
                if (sha_a, sha_b, outcome, rater) != (v["image_a"], v["image_b"], v["outcome"], v["rater"]):
                    raise UserError(f"{where[vid]}: client_vote_id {vid!r} is already stored for a different judgement "
                                    f"({rater}: {outcome} on {sha_a[:12]} vs {sha_b[:12]}); nothing was imported")


@dataclasses.dataclass
class _Planned:
    """An image file to add to the pool once the whole import is validated."""

    file: Path
    rel: str
    prompt: str | None
    sha256: str


class _Planner:
    """Finds the pool image a row refers to, or a readable file to add later; records what is missing.

    Reads only: files to add are checked now (readable image, within the limits, the sha256 the row names)
    and written by `add_images` after every row has passed.
    """

    def __init__(self, store: "Store", root: Path, limits: Limits, report: JudgementImportReport):
        self.store, self.root, self.limits, self.report = store, root, limits, report
        self.cache: dict[tuple[str, str | None], str | None] = {}
        self.planned: dict[str, _Planned] = {}  # sha256 -> file to add

    def get(self, ref: str, path: str | None, prompt: str | None, where: str) -> str | None:
        key = (ref, path)
        if key not in self.cache:
            from prefs import fields

            try:  # what a file to add would store: refused now, not halfway through writing
                fields.check_text(path or "", "path")
                fields.check_text(prompt or "", "prompt")
            except UserError as e:
                raise UserError(f"{where}: {e}") from None
            self.cache[key] = self._find(ref, path, prompt)
            if self.cache[key] is None:
                self.report.missing.append(path or ref)
        return self.cache[key]

    def _find(self, ref: str, path: str | None, prompt: str | None) -> str | None:
        with self.store.engine.connect() as conn:
            if len(ref) == 64 and conn.execute(select(Image.id).where(Image.sha256 == ref.lower())).first():
                return ref.lower()
            if path and len(ref) != 64:  # ImageReward: a relative path imported before
                hit = conn.execute(select(Image.sha256).where(Image.source_path == path).limit(1)).scalar()
                if hit:
                    return hit
        if not path:
            return None
        from prefs.pool import load_image_file

        file = Path(path) if Path(path).is_absolute() else self.root / path
        try:
            if not file.is_file():
                return None
            sha = load_image_file(file, self.limits).sha256
        except (ImageError, OSError, ValueError):  # unreadable, not an image, a name the system refuses
            return None
        if len(ref) == 64 and sha != ref.lower():
            return None  # the file at that path is not the image the row names
        self.planned.setdefault(sha, _Planned(file, path, prompt, sha))
        return sha

    def add_images(self) -> None:
        """Add the planned files to the pool (after validation), `IMAGE_BATCH` to a transaction."""
        from prefs.pool import load_image_file
        from prefs.store import NewImage

        planned = list(self.planned.values())
        for start in range(0, len(planned), IMAGE_BATCH):
            batch = []
            for p in planned[start:start + IMAGE_BATCH]:
                try:
                    file = load_image_file(p.file, self.limits)
                except ImageError as e:
                    raise UserError(f"{p.rel} changed while importing ({e}); run the import again") from None
                if file.sha256 != p.sha256:
                    raise UserError(f"{p.rel} changed while importing; run the import again")
                batch.append(NewImage(file, prompt=p.prompt or "", origin="imported", caption_source="import",
                                      source_path=p.rel))
            for _, created in self.store.add_images(batch):
                self.report.images_added += int(created)


# ------------------------------------------------------------------------------------------------------
# Readers: parse and validate everything first; nothing is written for a bad file.


def _parse_time(value: Any, where: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        t = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise UserError(f"{where}: bad timestamp {value!r}; expected ISO 8601") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _lines(path: Path):
    """(line number, text) of each non-blank line; UserError naming the line that is not UTF-8."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}, line {n}: not UTF-8 text (byte {e.start + 1} of the line); "
                                "save the file as UTF-8") from None
            if n == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
            if line.strip():
                yield n, line


def _loads(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise UserError(f"{where}: not valid JSON (nested too deeply)") from None


def _optional(row: dict, key: str, kind: type | tuple[type, ...], what: str, where: str):
    value = row.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):  # JSON true is not 1
        raise UserError(f"{where}: {key} must be {what} or null, got {json.dumps(value)[:60]}")
    return value


def _read_jsonl(path: Path) -> list[dict]:
    votes = []
    for n, line in _lines(path):
        where = f"{path}, line {n}"
        row = _loads(line, where)
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object")
        if row.get("schema", SCHEMA) != SCHEMA:
            raise UserError(f"{where}: unknown schema {row.get('schema')!r}; this rlft reads {SCHEMA}")
        for key in ("client_vote_id", "rater", "outcome", "image_a", "image_b"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise UserError(f"{where}: missing or empty field {key!r}")
        if row["outcome"] not in OUTCOMES:
            raise UserError(f"{where}: invalid outcome {row['outcome']!r}; valid: {', '.join(OUTCOMES)}")
        if row["image_a"] == row["image_b"]:
            raise UserError(f"{where}: image_a and image_b are the same image")
        if row.get("shown_left") not in (None, "a", "b"):
            raise UserError(f"{where}: invalid shown_left {row['shown_left']!r}; valid: a, b, null")
        for key in ("strategy", "round", "path_a", "path_b", "prompt", "prompt_b"):
            _optional(row, key, str, "text", where)
        p = _optional(row, "predicted_p", (int, float), "a probability", where)
        if p is not None and not 0 <= p <= 1:
            raise UserError(f"{where}: predicted_p must be a probability, got {p!r}")
        ms = _optional(row, "decision_ms", int, "a non-negative integer", where)
        if ms is not None and ms < 0:
            raise UserError(f"{where}: decision_ms must be a non-negative integer, got {ms!r}")
        row["created_at"] = _parse_time(row.get("created_at"), where)
        row["undone_at"] = _parse_time(row.get("undone_at"), where)
        row["where"] = where
        votes.append(row)
    return votes


def _read_imagereward(path: Path, rater: str) -> list[dict]:
    """ImageReward test.json: per prompt `generations` (paths) and `ranking` (1 = best; equal = tie)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UserError(f"{path}, line {line}: not UTF-8 text; save the file as UTF-8") from None
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a list of ranked prompts (ImageReward test.json layout)")
    votes = []
    for k, item in enumerate(items):
        where = f"{path}: entry {k}"
        if not isinstance(item, dict) or not {"id", "prompt", "generations", "ranking"} <= set(item):
            raise UserError(f"{where}: expected keys id, prompt, generations, ranking")
        gens, ranks = item["generations"], item["ranking"]
        if not isinstance(gens, list) or not isinstance(ranks, list) or len(gens) != len(ranks):
            raise UserError(f"{where}: generations and ranking must be lists of equal length")
        if not all(isinstance(g, str) and g for g in gens):
            raise UserError(f"{where}: generations must hold image paths (text)")
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) for r in ranks):
            raise UserError(f"{where}: ranking must hold numbers (1 = best)")
        if not isinstance(item["prompt"], str):
            raise UserError(f"{where}: prompt must be text")
        if not isinstance(item["id"], (str, int)) or isinstance(item["id"], bool):
            raise UserError(f"{where}: id must be text or an integer")
        if len(set(gens)) != len(gens):
            raise UserError(f"{where}: a generation is listed twice")
        for i in range(len(gens)):
            for j in range(i + 1, len(gens)):
                outcome = "a" if ranks[i] < ranks[j] else "b" if ranks[i] > ranks[j] else "tie"
                votes.append({
                    "client_vote_id": f"imagereward:{item['id']}:{i}:{j}", "rater": rater, "outcome": outcome,
                    "image_a": gens[i], "image_b": gens[j], "path_a": gens[i], "path_b": gens[j],
                    "prompt": item["prompt"], "prompt_b": item["prompt"], "shown_left": None, "where": where,
                })
    return votes
