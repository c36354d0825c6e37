"""A model's hash for A1111's `Model hash:` field: which weights made an image, in ten hex digits.

For a single-file checkpoint it is AUTOMATIC1111's own (its "AutoV2": the first ten hex digits of the file's
SHA-256), so model sites and A1111 recognise the model from our PNGs. A diffusers folder has no A1111 hash;
ours is the same ten digits of a SHA-256 over its weight files (their paths and SHA-256s), so a folder and
any copy of it hash alike. Hashing reads every byte once; results are cached in `<home>/cache/model_hashes.json`
by path, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

HASH_DIGITS = 10  # A1111's short hash
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
CACHE_NAME = "model_hashes.json"
_CHUNK = 1 << 20


def _cache_path() -> Path:
    from prefs.home import subdir

    return subdir("cache") / CACHE_NAME


def _load_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def file_sha256(path: str | os.PathLike, cache: dict | None = None, progress: bool = False) -> str:
    """The full SHA-256 (hex) of a file, from `cache` when its size and mtime are unchanged (the cache is updated)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    entry = (cache or {}).get(key)
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry["sha256"]
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=stat.st_size, unit="B", unit_scale=True, desc=f"hash {path.name}",
                                     disable=not progress or stat.st_size < (1 << 30), leave=False) as bar:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    value = digest.hexdigest()
    if cache is not None:
        cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value}
    return value


def folder_sha256(folder: str | os.PathLike, cache: dict | None = None, progress: bool = False) -> str:
    """A SHA-256 (hex) over a diffusers folder's weight files: each one's relative path and SHA-256, sorted."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.relative_to(folder).as_posix()}\0{file_sha256(p, cache, progress)}\n".encode())
    return digest.hexdigest()


def model_hash(source, progress: bool = False) -> str | None:
    """The ten-digit hash of the model `source` (a `ModelSource`) points to; None when its files are not local."""
    from prefs.atomic import write_json

    location = Path(source.location)
    if source.kind == "hub":
        try:
            from huggingface_hub import snapshot_download

            location = Path(snapshot_download(source.location, local_files_only=True))
        except Exception:  # not in the local cache in the form we can read: no hash rather than a download
            return None
    if not location.exists():
        return None
    cache_path = _cache_path()
    cache = _load_cache(cache_path)
    before = dict(cache)
    value = file_sha256(location, cache, progress) if location.is_file() else folder_sha256(location, cache, progress)
    if cache != before:
        write_json(cache_path, cache)
    return value[:HASH_DIGITS]
