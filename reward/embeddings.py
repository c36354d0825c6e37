"""Cached CLIP embeddings: computed once per (image sha256 or prompt text, CLIP), kept in the home.

Layout: `<home>/cache/embeddings/<clip key>/{image,text}/shard-NNNNNN.npz`, each shard holding `keys` and
`vectors` (float32, L2-normalised) for one batch group. A shard is written atomically (temp file, fsync,
rename) as soon as its images are embedded, so a killed run keeps every finished shard and the next run only
embeds what is missing. Many small shards are merged into one (`compact`) when they pile up.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from prefs.atomic import atomic_path
from prefs.home import home_dir
from prefs.pool import ImageError

SHARD_SIZE = 1024  # images per shard: a kill loses at most this much work
COMPACT_AT = 64  # merge shards into one when there are this many
BATCH_SIZE = 128  # images per forward pass
_log = logging.getLogger(__name__)


def text_key(text: str) -> str:
    """Cache key of a prompt."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class VectorStore:
    """An append-only, sharded, crash-safe map from string keys to float32 vectors (one folder)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)  # made by the first `put`: reading an empty cache creates nothing
        self._lock = threading.Lock()
        self._index: dict[str, np.ndarray] = {}
        self._seen: set[str] = set()
        self.refresh()

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.npz"))

    def refresh(self) -> None:
        """Read shards written since the last look (by this or another process)."""
        for shard in self._shards():
            if shard.name in self._seen:
                continue
            try:
                with np.load(shard) as z:
                    keys, vecs = z["keys"], z["vectors"]
            except (OSError, ValueError, KeyError, EOFError):  # a foreign or damaged file: skip it, recompute
                continue
            self._seen.add(shard.name)
            for k, v in zip(keys.tolist(), vecs, strict=False):
                self._index[k] = v

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    @property
    def dim(self) -> int | None:
        return next((len(v) for v in self._index.values()), None)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Vectors for `keys` (all must be present), stacked."""
        if not keys:
            return np.zeros((0, self.dim or 0), np.float32)
        return np.stack([self._index[k] for k in keys]).astype(np.float32, copy=False)

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in dict.fromkeys(keys) if k not in self._index]

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Write one shard atomically and add it to the index."""
        if not len(keys):
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            n = max([int(p.stem.split("-")[1]) for p in self._shards()] + [0]) + 1
            path = self.folder / f"shard-{n:06d}.npz"
            buf = io.BytesIO()
            np.savez(buf, keys=np.array(list(keys)), vectors=vectors)
            with atomic_path(path) as tmp:
                tmp.write_bytes(buf.getvalue())
            self._seen.add(path.name)
            for k, v in zip(keys, vectors, strict=False):
                self._index[k] = v
            if len(self._seen) >= COMPACT_AT:
                self.compact()

    def compact(self) -> None:
        """Merge all shards into one (written before the old ones are removed, so a kill loses nothing)."""
        old = self._shards()
        if len(old) < 2:
            return
        keys = list(self._index)
        n = max(int(p.stem.split("-")[1]) for p in old) + 1
        path = self.folder / f"shard-{n:06d}.npz"
        buf = io.BytesIO()
        np.savez(buf, keys=np.array(keys), vectors=self.get(keys))
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())
        for p in old:
            p.unlink(missing_ok=True)
        self._seen = {path.name}


def cache_root(home=None) -> Path:
    return home_dir(home, create=False) / "cache" / "embeddings"


class UnreadableImagesError(ImageError):
    """Some image files could not be read (missing or not images); `unreadable` maps each key to the reason."""

    def __init__(self, unreadable: dict[str, str]):
        self.unreadable = dict(unreadable)
        first = next(iter(self.unreadable.values()))
        more = f" (and {len(self.unreadable) - 1} more)" if len(self.unreadable) > 1 else ""
        super().__init__(f"{first}{more}")


def _decode(path: str | os.PathLike) -> torch.Tensor | ImageError:
    """A file as a 3 x H x W uint8 tensor, or the ImageError that says why it could not be read."""
    from prefs.pool import read_image

    try:
        arr = np.asarray(read_image(path), dtype=np.uint8)
    except ImageError as e:
        return e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def pil_to_tensor(image) -> torch.Tensor:
    """A PIL image as a 3 x H x W float tensor in [0, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)


class EmbeddingCache:
    """Image and prompt embeddings for one CLIP, cached in the home.

    `clip` is a `reward.clip.Clip`, loaded lazily by `clip_loader` the first time something must be computed
    (a fully cached run never loads the model).
    """

    def __init__(self, clip_spec: str = "toy", home=None, clip=None, device=None):
        from reward.clip import resolve_clip

        self.source = clip.source if clip is not None else resolve_clip(clip_spec)
        self.clip_spec = self.source.spec
        self.home = home
        self._clip = clip
        self._device = device
        root = cache_root(home) / self.source.cache_key()
        self.images = VectorStore(root / "image")
        self.texts = VectorStore(root / "text")

    @property
    def clip(self):
        if self._clip is None:
            from reward.clip import load_clip

            self._clip = load_clip(self.clip_spec, self._device)
        return self._clip

    # -- images -------------------------------------------------------------------------------------------
    def embed_files(self, items: Sequence[tuple[str, str | os.PathLike]], progress: bool = True,
                    batch_size: int = BATCH_SIZE, on_shard: Callable[[int], None] | None = None) -> np.ndarray:
        """Embeddings for `(sha256, path)` pairs, computing (and caching) only the missing ones.

        Decoding runs in a thread pool while the model embeds the previous batch. Returns an N x D array in
        the order of `items`. `on_shard(n_done)` is called after each shard is written (tests use it to
        simulate a kill). A file that is missing or not an image raises UnreadableImagesError naming it, after
        every readable one is embedded and cached (`embed_pool` skips such files instead).
        """
        unreadable = self._compute(items, progress, batch_size, on_shard)
        if unreadable:
            raise UnreadableImagesError(unreadable)
        return self.images.get([k for k, _ in items])

    def _compute(self, items, progress: bool, batch_size: int, on_shard) -> dict[str, str]:
        """Embed and cache the items not cached yet; returns {key: reason} for files that could not be read."""
        from tqdm.auto import tqdm

        paths = dict(items)
        todo = self.images.missing(paths)
        unreadable: dict[str, str] = {}
        if todo:
            clip = self.clip
            bar = tqdm(total=len(todo), desc=f"embed ({self.clip_spec})", unit="img", disable=not progress,
                       dynamic_ncols=True)
            done = 0
            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                for start in range(0, len(todo), SHARD_SIZE):
                    shard, keys, vecs = todo[start:start + SHARD_SIZE], [], []
                    decoded = zip(shard, pool.map(_decode, [paths[k] for k in shard]), strict=True)
                    for chunk in _batched(decoded, batch_size):
                        good = [(k, t) for k, t in chunk if not isinstance(t, ImageError)]
                        unreadable.update((k, str(t)) for k, t in chunk if isinstance(t, ImageError))
                        if good:
                            vecs.append(self._embed_uint8(clip, [t for _, t in good]))
                            keys += [k for k, _ in good]
                        bar.update(len(chunk))
                    if keys:
                        self.images.put(keys, np.concatenate(vecs))
                    done += len(shard)
                    if on_shard is not None:
                        on_shard(done)
            bar.close()
        return unreadable

    def embed_pool(self, store, images, progress: bool = True, notice: Callable[[str], None] | None = None):
        """Embeddings of the pool images (prefs Image rows) whose files can be read: `(kept rows, N x D array)`.

        A missing or unreadable file is skipped, with one notice naming it (default: a logged warning): how
        every reader of the pool treats a lost file."""
        items = [(im.sha256, store.image_path(im)) for im in images]
        unreadable = self._compute(items, progress, BATCH_SIZE, None)
        for sha, reason in unreadable.items():
            (notice or _log.warning)(f"skipped image {sha[:12]}: {reason}")
        kept = [im for im in images if im.sha256 not in unreadable]
        return kept, self.images.get([im.sha256 for im in kept])

    @staticmethod
    def _embed_uint8(clip, chunk: list[torch.Tensor]) -> np.ndarray:
        with torch.inference_mode():
            if len({tuple(t.shape) for t in chunk}) == 1:
                out = clip.encode_pixels(torch.stack(chunk).float().div_(255))
            else:  # mixed sizes: preprocess one by one (same function), then one forward pass
                x = torch.cat([clip.preprocess(t[None].float().div_(255).to(clip.preprocess.mean.device)) for t in chunk])
                out = torch.nn.functional.normalize(clip.model.encode_image(x).float(), dim=-1)
        return out.cpu().numpy()

    def embed_store_images(self, store, images, progress: bool = True) -> np.ndarray:
        """Embeddings of pool images (prefs Image rows), cached by sha256; UnreadableImagesError when a file is
        missing or unreadable (`embed_pool` skips those instead)."""
        return self.embed_files([(im.sha256, store.image_path(im)) for im in images], progress=progress)

    # -- prompts ------------------------------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Text embeddings of prompts, cached by sha256 of the text."""
        keys = [text_key(t) for t in texts]
        by_key = dict(zip(keys, texts, strict=False))
        todo = self.texts.missing(keys)
        if todo:
            vecs = [self.clip.encode_text([by_key[k] for k in todo[i:i + batch_size]]).cpu().numpy()
                    for i in range(0, len(todo), batch_size)]
            self.texts.put(todo, np.concatenate(vecs))
        return self.texts.get(keys)


def _batched(it, n):
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
