"""`rlft import DIR`: add a folder of existing images to the pool, recursively.

The prompt of each image comes from, in order: an AUTOMATIC1111 `parameters` text in the file, a
kohya-style sidecar (`image.txt` beside `image.png`), the `prompt` argument, else empty. Identical bytes
are stored once. Unreadable, unsupported or oversized files are reported by name and skipped. A file name
that is not UTF-8 is imported, its source path recorded with the odd bytes written as `\\xNN`. Rows are
written one transaction per batch, so an interrupted import never leaves half-written rows, and running
it again picks up where it stopped (already added files count as duplicates); should the database refuse a
batch (a full disk), the pool files it wrote are removed again, and the import stops with StorageError.
"""

from __future__ import annotations

import dataclasses
import os
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


def printable(name: str | os.PathLike) -> str:
    """A file name as text any database and terminal takes: bytes that are not UTF-8 (Python keeps them as
    unpaired surrogates) written as `\\xNN`. The same name always gives the same text."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _clean(text: str) -> str:
    """Text read from a file, storable: NUL characters dropped, unpaired surrogates escaped."""
    return text.replace("\x00", "").encode("utf-8", "backslashreplace").decode("utf-8")


def describe(path: Path, root: Path, prompt: str | None, limits: Limits) -> "NewImage":
    """Load one file and work out its metadata (raises ImageError for a bad file).

    Text found in the file or its sidecar is made storable (`_clean`); a model name over the column's limit
    is left out of `model` (the whole `parameters` text stays in `params`); the source path is `printable`.
    """
    from prefs import fields
    from prefs.store import NewImage

    rel = printable(path.relative_to(root).as_posix())
    file = load_image_file(path, limits, name=rel)
    new = NewImage(file, origin="imported", source_path=rel)
    sidecar = path.with_suffix(".txt")
    if file.parameters:
        parsed = parse_parameters(_clean(file.parameters))
        settings = parsed["settings"]
        new.prompt, new.negative_prompt, new.caption_source = parsed["prompt"], parsed["negative_prompt"], "a1111"
        new.seed = _int_or_none(settings.get("Seed"))
        model = settings.get("Model")
        new.model = model if model is None or len(model) <= fields.max_length(fields.MODEL) else None
        new.params = settings or None
    elif sidecar.is_file():
        new.prompt, new.caption_source = _clean(sidecar.read_text(encoding="utf-8", errors="replace").strip()), "sidecar"
    elif prompt is not None:
        new.prompt, new.caption_source = prompt, "cli"
    return new


def _int_or_none(text):
    """A seed as the store keeps it (a 64-bit integer), else None."""
    from prefs.store import SEED_RANGE

    try:
        seed = int(text)
    except (TypeError, ValueError):
        return None
    return seed if SEED_RANGE[0] <= seed <= SEED_RANGE[1] else None


def import_folder(store: "Store", root: str | Path, *, prompt: str | None = None, limits: Limits = Limits(),
                  batch_size: int = BATCH, progress: bool = True) -> ImportReport:
    """Import every image under `root` into the store's pool; returns the counts."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder")
    if prompt is not None:
        from prefs import fields

        fields.check_text(prompt, "--prompt")
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

    from prefs.store import check_new_image

    for path in tqdm(files, desc="import", unit="file", file=sys.stderr, disable=not progress):
        try:
            new = describe(path, root, prompt, limits)
            check_new_image(new)  # one file that does not fit is skipped, not its whole batch
        except ImageError as e:
            report.skipped += 1
            report.skipped_files.append(str(e))
            continue
        except (UserError, OSError) as e:
            report.skipped += 1
            report.skipped_files.append(f"{printable(path.relative_to(root).as_posix())}: {e}")
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
