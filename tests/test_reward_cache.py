"""The embedding cache: incremental, resumable after a kill, shared across instances, compacted."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from reward import embeddings
from reward.embeddings import EmbeddingCache, VectorStore


class Killed(Exception):
    pass


def _files(tmp_path, n):
    from rlft.toy.world import samples

    items = []
    for k, s in zip(range(n), samples(3), strict=False):
        p = tmp_path / f"{k}.png"
        s.image.save(p)
        items.append((hashlib.sha256(p.read_bytes()).hexdigest(), p))
    return items


def test_killed_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "SHARD_SIZE", 4)
    items = _files(tmp_path, 10)
    cache = EmbeddingCache("toy")

    def kill_after_first_shard(done):
        raise Killed

    with pytest.raises(Killed):
        cache.embed_files(items, progress=False, on_shard=kill_after_first_shard)
    fresh = EmbeddingCache("toy")  # a new process: reads what the killed one finished
    assert len(fresh.images) == 4
    computed = []
    fresh.embed_files(items, progress=False, on_shard=computed.append)
    assert computed == [4, 6]  # only the 6 missing images were embedded
    full = EmbeddingCache("toy").embed_files(items, progress=False)
    assert full.shape == (10, 64)
    assert np.allclose(np.linalg.norm(full, axis=1), 1, atol=1e-5)
    # the same as embedding from scratch, in another home
    other = EmbeddingCache("toy", home=tmp_path / "other").embed_files(items, progress=False)
    assert np.allclose(full, other, atol=1e-5)


def test_damaged_shard_is_ignored_and_recomputed(tmp_path):
    items = _files(tmp_path, 3)
    cache = EmbeddingCache("toy")
    cache.embed_files(items, progress=False)
    (cache.images.folder / "shard-999999.npz").write_bytes(b"half a file")
    again = EmbeddingCache("toy")
    assert len(again.images) == 3


def test_vector_store_compacts(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "COMPACT_AT", 3)
    vs = VectorStore(tmp_path / "vs")
    for k in range(5):
        vs.put([f"k{k}"], np.full((1, 2), k, np.float32))
    assert len(list((tmp_path / "vs").glob("shard-*.npz"))) < 3
    assert VectorStore(tmp_path / "vs").get(["k0", "k4"]).tolist() == [[0, 0], [4, 4]]


def test_text_embeddings_are_cached():
    cache = EmbeddingCache("toy")
    a = cache.embed_texts(["a red circle", "a blue star", "a red circle"])
    assert a.shape == (3, 64) and np.allclose(a[0], a[2])
    assert len(EmbeddingCache("toy").texts) == 2


def test_unknown_clip_spec_is_a_clear_error(tmp_path):
    from prefs.errors import NotFoundError

    with pytest.raises(NotFoundError, match="valid|toy"):
        EmbeddingCache("no-such-clip")
    with pytest.raises(NotFoundError, match="open_clip_config.json"):
        EmbeddingCache(str(tmp_path))
    with pytest.raises(NotFoundError, match="tags"):
        EmbeddingCache("ViT-B-32/nonsense")
