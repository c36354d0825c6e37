"""`rlft import DIR`: add a folder of existing images to the pool, recursively.

The prompt of each image comes from, in order: an AUTOMATIC1111 `parameters` text in the file, a
kohya-style sidecar (`image.txt` beside `image.png`), the `prompt` argument, else empty. Identical bytes
are stored once. Unreadable, unsupported or oversized files are reported by name and skipped. Rows are
written one transaction per batch, so an interrupted import never leaves half-written rows, and running
it again picks up where it stopped (already added files count as duplicates).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from prefs.errors import UserError
from prefs.pngmeta import parse_parameters
from prefs.pool import EXTENSIONS, ImageError, Limits, load_image_file

if TYPE_CHECKING:
    from prefs.store import NewImage, Store

BATCH = 200  # images per transaction: big enough to be fast, small enough to lose little on a crash
IGNORED_SUFFIXES = {".txt", ".caption", ".json", ".jsonl", ".yaml", ".yml", ".toml", ".md", ".csv", ".npz", ".safetensors"}


@dataclasses.dataclass
class ImportReport:
    """Counts of an import; `skipped_files` holds one "path: reason" line per skipped file."""

    added: int = 0
    duplicate: int = 0
    skipped: int = 0
    skipped_files: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return {"added": self.added, "duplicate": self.duplicate, "skipped": self.skipped, "skipped_files": self.skipped_files}


def candidate_files(root: Path) -> list[Path]:
    """Files to try, sorted: images by extension, plus unknown files (reported if they are not images).

    Hidden files and known sidecar/metadata extensions are left alone.
    """
    out = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if p.suffix.lower() in EXTENSIONS or p.suffix.lower() not in IGNORED_SUFFIXES:
            out.append(p)
    return out


def describe(path: Path, root: Path, prompt: str | None, limits: Limits) -> "NewImage":
    """Load one file and work out its metadata (raises ImageError for a bad file)."""
    from prefs.store import NewImage

    file = load_image_file(path, limits, name=str(path.relative_to(root)))
    new = NewImage(file, origin="imported", source_path=path.relative_to(root).as_posix())
    sidecar = path.with_suffix(".txt")
    if file.parameters:
        parsed = parse_parameters(file.parameters)
        settings = parsed["settings"]
        new.prompt, new.negative_prompt, new.caption_source = parsed["prompt"], parsed["negative_prompt"], "a1111"
        new.seed = _int_or_none(settings.get("Seed"))
        new.model = settings.get("Model")
        new.params = settings or None
    elif sidecar.is_file():
        new.prompt, new.caption_source = sidecar.read_text(encoding="utf-8", errors="replace").strip(), "sidecar"
    elif prompt is not None:
        new.prompt, new.caption_source = prompt, "cli"
    return new


def _int_or_none(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def import_folder(store: "Store", root: str | Path, *, prompt: str | None = None, limits: Limits = Limits(),
                  batch_size: int = BATCH, progress: bool = True) -> ImportReport:
    """Import every image under `root` into the store's pool; returns the counts."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder")
    files = candidate_files(root)
    report = ImportReport()
    seen: set[str] = set()
    batch: list = []

    def flush():
        for _row, created in store.add_images(batch):
            if created:
                report.added += 1
            else:
                report.duplicate += 1
        batch.clear()

    from tqdm import tqdm

    for path in tqdm(files, desc="import", unit="file", file=sys.stderr, disable=not progress):
        try:
            new = describe(path, root, prompt, limits)
        except (ImageError, OSError) as e:
            report.skipped += 1
            report.skipped_files.append(str(e) if isinstance(e, ImageError) else f"{path}: {e}")
            continue
        if new.file.sha256 in seen:
            report.duplicate += 1
            continue
        seen.add(new.file.sha256)
        batch.append(new)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return report
