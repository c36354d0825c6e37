"""`rlft prefs export`: every judgement as JSONL (our public interchange format) or Pick-a-Pic-style parquet.

JSONL: one object per judgement, undone ones included (with `undone_at`), in recording order; the schema
is documented in docs/prefs-jsonl.md and `JSONL_FIELDS`. `prefs.imports` reads it back exactly.

Parquet: standing (not undone) judgements in Pick-a-Pic's column layout, loadable with Hugging Face
`datasets.load_dataset("parquet", data_files=...)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from sqlalchemy import select

from prefs.atomic import atomic_path
from prefs.errors import UserError
from prefs.models import Image
from prefs.pool import pool_path

if TYPE_CHECKING:
    from prefs.store import Store

FORMATS = ("jsonl", "parquet")
SCHEMA = "rlft.judgement.v1"
JSONL_FIELDS = (
    "schema", "client_vote_id", "rater", "outcome", "image_a", "image_b", "path_a", "path_b", "prompt", "prompt_b",
    "shown_left", "strategy", "predicted_p", "decision_ms", "round", "created_at", "undone_at",
)


def _iso(t):
    return None if t is None else t.isoformat()


def rows(store: "Store", include_undone: bool = True) -> Iterator[dict]:
    """Judgements as JSONL-ready dicts (keys in `JSONL_FIELDS` order)."""
    cache: dict[str, tuple[str, str]] = {}

    def info(sha: str) -> tuple[str, str]:
        if sha not in cache:
            if len(cache) > 100_000:
                cache.clear()
            with store.engine.connect() as conn:
                fmt, prompt = conn.execute(select(Image.format, Image.prompt).where(Image.sha256 == sha)).one()
            cache[sha] = (str(pool_path(store.pool_dir, sha, fmt)), prompt)
        return cache[sha]

    for j in store.judgements(include_undone=include_undone):
        (path_a, prompt_a), (path_b, prompt_b) = info(j.image_a), info(j.image_b)
        yield {
            "schema": SCHEMA, "client_vote_id": j.client_vote_id, "rater": j.rater, "outcome": j.outcome,
            "image_a": j.image_a, "image_b": j.image_b, "path_a": path_a, "path_b": path_b,
            "prompt": prompt_a, "prompt_b": prompt_b, "shown_left": j.shown_left, "strategy": j.strategy,
            "predicted_p": j.predicted_p, "decision_ms": j.decision_ms, "round": j.round,
            "created_at": _iso(j.created_at), "undone_at": _iso(j.undone_at),
        }


def export(store: "Store", path: str | Path, fmt: str | None = None) -> int:
    """Write the judgements to `path` atomically; `fmt` defaults from the suffix. Returns rows written."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "jsonl":
        n = 0
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for row in rows(store):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        return n
    return _parquet(store, path)


PICKAPIC_LABELS = {"a": (1.0, 0.0), "b": (0.0, 1.0), "tie": (0.5, 0.5)}


def _parquet(store: "Store", path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, list] = {k: [] for k in (
        "ranking_id", "user_id", "caption", "image_0_uid", "image_1_uid", "image_0_path", "image_1_path",
        "label_0", "label_1", "best_image_uid", "has_label", "are_different", "outcome", "model_0", "model_1",
        "created_at")}
    models: dict[str, str | None] = {}
    with store.engine.connect() as conn:
        for sha, model in conn.execute(select(Image.sha256, Image.model)):
            models[sha] = model
    for r in rows(store, include_undone=False):
        label = PICKAPIC_LABELS.get(r["outcome"])
        cols["ranking_id"].append(r["client_vote_id"])
        cols["user_id"].append(r["rater"])
        cols["caption"].append(r["prompt"])
        cols["image_0_uid"].append(r["image_a"])
        cols["image_1_uid"].append(r["image_b"])
        cols["image_0_path"].append(r["path_a"])
        cols["image_1_path"].append(r["path_b"])
        cols["label_0"].append(label[0] if label else 0.0)
        cols["label_1"].append(label[1] if label else 0.0)
        cols["best_image_uid"].append({"a": r["image_a"], "b": r["image_b"]}.get(r["outcome"], ""))
        cols["has_label"].append(label is not None)
        cols["are_different"].append(r["image_a"] != r["image_b"])
        cols["outcome"].append(r["outcome"])
        cols["model_0"].append(models.get(r["image_a"]))
        cols["model_1"].append(models.get(r["image_b"]))
        cols["created_at"].append(r["created_at"])
    schema = pa.schema([
        ("ranking_id", pa.string()), ("user_id", pa.string()), ("caption", pa.string()),
        ("image_0_uid", pa.string()), ("image_1_uid", pa.string()), ("image_0_path", pa.string()),
        ("image_1_path", pa.string()), ("label_0", pa.float64()), ("label_1", pa.float64()),
        ("best_image_uid", pa.string()), ("has_label", pa.bool_()), ("are_different", pa.bool_()),
        ("outcome", pa.string()), ("model_0", pa.string()), ("model_1", pa.string()), ("created_at", pa.string()),
    ])
    table = pa.table(cols, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return table.num_rows
