"""`rlft prefs import FILE`: judgements from our JSONL, or ranked lists in ImageReward's test.json layout.

Both are validated whole before anything is written: a malformed file raises UserError naming the line
or entry, and nothing is stored. Images are never invented: a referenced image must be in the pool (by
sha256, or for ImageReward by its relative path from an earlier import), or be a readable file at the
given path (then it is added to the pool); otherwise it is reported in `missing` and its judgements are
skipped. Every imported judgement has a deterministic client_vote_id, so importing a file twice is a no-op.
Judgements are written `BATCH` to a transaction; should the database refuse one (say, a client_vote_id
already used for a different judgement) that batch is rolled back, and importing the file again after the
fix adds exactly the rest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from prefs.errors import UserError
from prefs.export import SCHEMA
from prefs.models import OUTCOMES, Image
from prefs.pool import ImageError, Limits

if TYPE_CHECKING:
    from prefs.store import Store

FORMATS = ("jsonl", "imagereward")
IMAGEREWARD_RATER = "imagereward"
BATCH = 1000  # judgements per write transaction: one per row made a 100k-row import take minutes


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
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):
        return "imagereward"
    if head.startswith("{"):
        return "jsonl"
    raise UserError(f"{path}: cannot tell the format; give --format ({', '.join(FORMATS)})")


def import_file(store: "Store", path: str | Path, fmt: str | None = None, *, rater: str | None = None,
                images_root: str | Path | None = None, limits: Limits = Limits(), progress: bool = True) -> JudgementImportReport:
    """Import judgements from `path` (format detected unless `fmt`); see the module docstring.

    `rater`: for ImageReward, the rater name (default "imagereward"); for JSONL, overrides each row's rater.
    `images_root`: where relative image paths resolve (default: the file's folder).
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
    else:
        votes = _read_imagereward(path, rater or IMAGEREWARD_RATER)
    report = JudgementImportReport(fmt)
    resolver = _Resolver(store, root, limits, report)
    from tqdm import tqdm

    bar = tqdm(total=len(votes), desc="import", unit="judgement", file=sys.stderr, disable=not progress)
    batch: list[dict] = []
    for v in votes:
        a, b = resolver.get(v["image_a"], v.get("path_a"), v.get("prompt")), resolver.get(v["image_b"], v.get("path_b"), v.get("prompt_b"))
        if a is None or b is None:
            report.skipped += 1
            bar.update(1)
            continue
        batch.append({
            "image_a": a, "image_b": b, "outcome": v["outcome"],
            "rater": rater if (rater and fmt == "jsonl") else v["rater"], "shown_left": v.get("shown_left"),
            "client_vote_id": v["client_vote_id"], "decision_ms": v.get("decision_ms"), "strategy": v.get("strategy"),
            "predicted_p": v.get("predicted_p"), "round": v.get("round"), "created_at": v.get("created_at"),
            "undone_at": v.get("undone_at"),
        })
        if len(batch) == BATCH:
            _write_batch(store, batch, report, bar)
            batch = []
    _write_batch(store, batch, report, bar)
    bar.close()
    return report


def _write_batch(store: "Store", batch: list[dict], report: JudgementImportReport, bar) -> None:
    for _, new in store.record_judgements(batch):
        if new:
            report.added += 1
        else:
            report.duplicate += 1
    bar.update(len(batch))


class _Resolver:
    """Finds (or adds from a file) the pool image a row refers to; records what is missing."""

    def __init__(self, store: "Store", root: Path, limits: Limits, report: JudgementImportReport):
        self.store, self.root, self.limits, self.report = store, root, limits, report
        self.cache: dict[str, str | None] = {}

    def get(self, ref: str, path: str | None, prompt: str | None) -> str | None:
        key = f"{ref}\0{path}"
        if key not in self.cache:
            self.cache[key] = self._find(ref, path, prompt)
            if self.cache[key] is None:
                self.report.missing.append(path or ref)
        return self.cache[key]

    def _find(self, ref: str, path: str | None, prompt: str | None) -> str | None:
        with self.store.engine.connect() as conn:
            if len(ref) == 64 and conn.execute(select(Image.id).where(Image.sha256 == ref)).first():
                return ref
            if path and len(ref) != 64:  # ImageReward: a relative path imported before
                hit = conn.execute(select(Image.sha256).where(Image.source_path == path).limit(1)).scalar()
                if hit:
                    return hit
        if not path:
            return None
        file = Path(path) if Path(path).is_absolute() else self.root / path
        if not file.is_file():
            return None
        try:
            row = self.store.add_images([self._new(file, path, prompt)])[0]
        except ImageError:
            return None
        if len(ref) == 64 and row[0].sha256 != ref:
            return None  # the file at that path is not the image the row names
        self.report.images_added += int(row[1])
        return row[0].sha256

    def _new(self, file: Path, rel: str, prompt: str | None):
        from prefs.pool import load_image_file
        from prefs.store import NewImage

        return NewImage(load_image_file(file, self.limits), prompt=prompt or "", origin="imported",
                        caption_source="import", source_path=rel)


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


def _read_jsonl(path: Path) -> list[dict]:
    votes = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not valid JSON ({e.msg})") from None
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
            p = row.get("predicted_p")
            if p is not None and (not isinstance(p, (int, float)) or not 0 <= p <= 1):
                raise UserError(f"{where}: predicted_p must be a probability, got {p!r}")
            ms = row.get("decision_ms")
            if ms is not None and (not isinstance(ms, int) or ms < 0):
                raise UserError(f"{where}: decision_ms must be a non-negative integer, got {ms!r}")
            row["created_at"] = _parse_time(row.get("created_at"), where)
            row["undone_at"] = _parse_time(row.get("undone_at"), where)
            votes.append(row)
    return votes


def _read_imagereward(path: Path, rater: str) -> list[dict]:
    """ImageReward test.json: per prompt `generations` (paths) and `ranking` (1 = best; equal = tie)."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
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
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in ranks):
            raise UserError(f"{where}: ranking must hold numbers (1 = best)")
        if len(set(gens)) != len(gens):
            raise UserError(f"{where}: a generation is listed twice")
        for i in range(len(gens)):
            for j in range(i + 1, len(gens)):
                outcome = "a" if ranks[i] < ranks[j] else "b" if ranks[i] > ranks[j] else "tie"
                votes.append({
                    "client_vote_id": f"imagereward:{item['id']}:{i}:{j}", "rater": rater, "outcome": outcome,
                    "image_a": gens[i], "image_b": gens[j], "path_a": gens[i], "path_b": gens[j],
                    "prompt": item["prompt"], "prompt_b": item["prompt"], "shown_left": None,
                })
    return votes
