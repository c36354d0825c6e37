"""The store's write paths: adding images, recording and undoing judgements, and every bad input."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from prefs_util import add_images, png_bytes
from sqlalchemy import func, select

import prefs
from prefs.errors import NotFoundError, UserError
from prefs.models import JudgementRow, Rater
from prefs.pool import ImageError, Limits
from prefs.store import ConflictError


@pytest.fixture
def store():
    with prefs.open_store(seed=0) as s:
        yield s


def n_rows(store, model=JudgementRow):
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def test_add_image_from_bytes_path_and_pil_is_content_addressed(store, tmp_path, rlft_home):
    data = png_bytes(1)
    row = store.add_image(data, prompt="a red circle", negative_prompt="blurry", seed=5, model="toy",
                          lora="t0001", params={"steps": 2}, caption_source="generate")
    assert row.width == row.height == 8 and row.format == "png" and row.origin == "generated"
    path = store.image_path(row.sha256)
    assert path == rlft_home / "pool" / row.sha256[:2] / f"{row.sha256}.png"
    assert path.read_bytes() == data
    # Same bytes from a path: the same row, metadata unchanged, one file.
    (tmp_path / "x.png").write_bytes(data)
    again = store.add_image(tmp_path / "x.png", prompt="other")
    assert again.sha256 == row.sha256 and again.prompt == "a red circle" and again.params == {"steps": 2}
    assert store.count_images() == 1
    # A PIL image is stored as PNG.
    pil = store.add_image(Image.new("RGB", (3, 5), (1, 2, 3)))
    assert (pil.width, pil.height, pil.format) == (3, 5, "png")
    assert store.get_image(pil.sha256[:10]).id == pil.id


def test_jpeg_and_webp_keep_their_bytes(store):
    for fmt, ext in (("JPEG", "jpg"), ("WEBP", "webp")):
        buf = io.BytesIO()
        Image.new("RGB", (6, 4), (9, 9, 9)).save(buf, format=fmt)
        row = store.add_image(buf.getvalue(), origin="imported")
        assert row.format == ext and store.image_path(row).read_bytes() == buf.getvalue()


@pytest.mark.parametrize("data, limits, message", [
    (b"not an image at all", Limits(), "not a readable image"),
    (png_bytes(1)[:40], Limits(), "not a readable image"),
    (png_bytes(1, size=20), Limits(max_side=16), "over the limit of 16 px"),
    (png_bytes(1), Limits(max_bytes=10), "over the limit of 10 bytes"),
])
def test_bad_images_are_refused_and_nothing_is_written(store, data, limits, message, rlft_home):
    with pytest.raises(ImageError, match=message):
        store.add_image(data, limits=limits)
    assert store.count_images() == 0
    assert not any(p.is_file() for p in (rlft_home / "pool").rglob("*"))


def test_unsupported_format_and_bad_origin(store):
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="GIF")
    with pytest.raises(ImageError, match="unsupported image format GIF"):
        store.add_image(buf.getvalue())
    with pytest.raises(UserError, match="unknown image origin 'web'; valid: generated, imported"):
        store.add_image(png_bytes(1), origin="web")
    assert store.count_images() == 0


def test_decompression_bomb_is_refused_from_the_header(store):
    buf = io.BytesIO()
    Image.new("1", (10000, 5000)).save(buf, format="PNG")  # a few kB of file, a 50 Mpx canvas
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(ImageError, match="10000x5000 px is over the limit of 4096 px a side"):
        store.add_image(buf.getvalue())
    assert store.count_images() == 0


def test_record_comparison_stores_every_field(store):
    a, b = add_images(store, 2)
    j = store.record_judgement(a, b, "b", rater="alice", shown_left="b", client_vote_id="v1", decision_ms=1200,
                                strategy="random", predicted_p=0.25, round="r1")
    assert (j.image_a, j.image_b, j.outcome, j.rater, j.shown_left, j.winner) == (a, b, "b", "alice", "b", b)
    [back] = list(store.judgements())
    assert back == j
    assert (back.decision_ms, back.strategy, back.predicted_p, back.round) == (1200, "random", 0.25, "r1")
    assert back.created_at.tzinfo is not None
    assert store.get_image(a).n_judgements == 1 and store.get_image(b).n_judgements == 1
    assert store.raters() == ["alice"]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"outcome": "left"}, UserError, "invalid outcome 'left'; valid: a, b, tie, both_bad, skip"),
    ({"same": True}, UserError, "cannot compare an image with itself"),
    ({"missing": True}, NotFoundError, "no image"),
    ({"shown_left": "c"}, UserError, "invalid shown_left"),
    ({"decision_ms": -5}, UserError, "decision_ms must be a non-negative integer"),
    ({"predicted_p": 1.5}, UserError, "predicted_p must be a probability"),
    ({"rater": " "}, UserError, "rater name must not be empty"),
    ({"client_vote_id": "x" * 101}, UserError, "client_vote_id must be 1 to 100 characters"),
])
def test_bad_judgements_are_refused_and_nothing_is_written(store, kwargs, error, message):
    a, b = add_images(store, 2)
    kwargs = dict(kwargs)
    outcome = kwargs.pop("outcome", "a")
    if kwargs.pop("same", False):
        b = a
    if kwargs.pop("missing", False):
        b = "f" * 64
    with pytest.raises(error, match=message):
        store.record_judgement(a, b, outcome, **kwargs)
    assert n_rows(store) == 0 and n_rows(store, Rater) == 0
    assert store.get_image(a).n_judgements == 0


def test_same_image_by_prefix_and_full_hash_is_refused(store):
    a, _ = add_images(store, 2)
    with pytest.raises(UserError, match="itself"):
        store.record_judgement(a, a[:12], "a")
    assert n_rows(store) == 0


def test_client_vote_id_makes_a_vote_idempotent(store):
    a, b, c = add_images(store, 3)
    first = store.record_judgement(a, b, "a", rater="r", client_vote_id="vote-1")
    again = store.record_judgement(a, b, "a", rater="r", client_vote_id="vote-1")
    assert again == first and n_rows(store) == 1
    assert store.get_image(a).n_judgements == 1  # the retry did not count twice
    with pytest.raises(ConflictError, match="already used for a different judgement"):
        store.record_judgement(a, c, "a", rater="r", client_vote_id="vote-1")
    assert n_rows(store) == 1


def test_undo_last_is_a_soft_delete_in_reverse_order(store):
    a, b, c = add_images(store, 3)
    j1 = store.record_judgement(a, b, "a", rater="r")
    j2 = store.record_judgement(b, c, "tie", rater="r")
    store.record_judgement(a, c, "b", rater="other")
    undone = store.undo_last("r")
    assert undone.id == j2.id and undone.undone_at is not None
    assert store.undo_last("r").id == j1.id
    assert store.undo_last("r") is None
    assert store.undo_last("nobody") is None
    assert n_rows(store) == 3  # nothing deleted
    assert [j.rater for j in store.judgements()] == ["other"]
    assert len(list(store.judgements(include_undone=True))) == 3
    assert [store.get_image(s).n_judgements for s in (a, b, c)] == [1, 0, 1]
    # An undone pair may be judged again.
    assert store.record_judgement(a, b, "b", rater="r").outcome == "b"


def test_mark_broken_round_trip(store):
    a, _ = add_images(store, 2)
    store.mark_broken(a, "black frame")
    row = store.get_image(a)
    assert row.broken_at is not None and row.broken_reason == "black frame"
    store.mark_broken(a, broken=False)
    assert store.get_image(a).broken_at is None


def test_images_iterates_in_batches(store):
    shas = add_images(store, 7)
    assert [im.sha256 for im in store.images(batch=3)] == shas


def test_unsupported_database_url_is_a_user_error():
    with pytest.raises(UserError, match="unsupported database 'mysql'"):
        prefs.open_store("mysql://x@localhost/db")


def test_record_comparisons_writes_a_batch_all_or_nothing(store):
    x, y, z = add_images(store, 3)
    store.record_judgement(x, y, "a", rater="r", client_vote_id="v1")
    votes = [
        {"image_a": x, "image_b": y, "outcome": "a", "rater": "r", "client_vote_id": "v1"},  # already there
        {"image_a": y, "image_b": z, "outcome": "tie", "rater": "r", "client_vote_id": "v2", "decision_ms": 5},
        {"image_a": z, "image_b": x, "outcome": "b", "rater": "s", "undone_at": None},
    ]
    out = store.record_judgements(votes)
    assert [new for _, new in out] == [False, True, True]
    assert out[1][0].outcome == "tie" and out[1][0].decision_ms == 5 and out[2][0].rater == "s"
    assert n_rows(store) == 3
    bad_late = [{"image_a": x, "image_b": z, "outcome": "a", "client_vote_id": "v3"},
                {"image_a": x, "image_b": "f" * 64, "outcome": "a"}]  # second image not in the pool
    with pytest.raises(NotFoundError):
        store.record_judgements(bad_late)
    conflict = [{"image_a": x, "image_b": z, "outcome": "a", "client_vote_id": "v4"},
                {"image_a": y, "image_b": z, "outcome": "b", "rater": "r", "client_vote_id": "v2"}]
    with pytest.raises(ConflictError):
        store.record_judgements(conflict)
    with pytest.raises(UserError, match="invalid outcome"):  # checked before anything is written
        store.record_judgements([{"image_a": x, "image_b": z, "outcome": "a"}, {"image_a": x, "image_b": z, "outcome": "?"}])
    assert n_rows(store) == 3 and store.record_judgements([]) == []
