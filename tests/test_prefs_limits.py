"""One limit per name and text column, checked where values enter the store: the same answer on SQLite (which
stores anything) and PostgreSQL (which refuses over-long names, NUL characters and NaN in JSON)."""

from __future__ import annotations

import pytest
from prefs_util import add_images, png_bytes
from sqlalchemy import String

import prefs
from prefs import fields
from prefs.errors import UserError
from prefs.models import Base


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request):
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    with prefs.open_store(url) as s:
        yield s


def test_every_string_column_is_checked_at_the_boundary_or_filled_by_the_store():
    columns = [c for t in Base.metadata.tables.values() for c in t.columns if isinstance(c.type, String)]
    bounded = {f"{c.table.name}.{c.name}" for c in columns if c.type.length is not None}
    assert bounded == set(fields.CHECKED) | set(fields.INTERNAL)
    assert not set(fields.CHECKED) & set(fields.INTERNAL)
    assert {f"{c.table.name}.{c.name}" for c in columns if c.type.length is None} == set(fields.TEXT)


VOTE_LIMITS = [("rater", fields.RATER, "rater name"), ("round", fields.ROUND, "round name"),
               ("strategy", fields.STRATEGY, "strategy"), ("client_vote_id", fields.VOTE_ID, "client_vote_id")]


@pytest.mark.parametrize("arg, column, what", VOTE_LIMITS, ids=[a for a, _, _ in VOTE_LIMITS])
def test_vote_names_up_to_the_limit_work_and_one_more_is_refused_on_both_backends(store, arg, column, what):
    a, b = add_images(store, 2)
    limit = fields.max_length(column)
    j = store.record_judgement(a, b, "a", **{"rater": "ann", arg: "n" * limit})
    assert getattr(j, "round" if arg == "round" else arg) == "n" * limit
    with pytest.raises(UserError, match=f"{what}.*{limit}"):
        store.record_judgement(a, b, "b", **{"rater": "bob", arg: "m" * (limit + 1)})
    assert store.count_judgements() == 1 and store.raters() == ["ann" if arg != "rater" else "n" * limit]


IMAGE_LIMITS = [("model", fields.MODEL), ("lora", fields.LORA), ("caption_source", fields.CAPTION_SOURCE)]


@pytest.mark.parametrize("arg, column", IMAGE_LIMITS, ids=[a for a, _ in IMAGE_LIMITS])
def test_image_names_up_to_the_limit_work_and_one_more_is_refused_on_both_backends(store, arg, column):
    limit = fields.max_length(column)
    row = store.add_image(png_bytes(1), **{arg: "n" * limit})
    assert getattr(row, arg) == "n" * limit
    with pytest.raises(UserError, match=f"{limit}"):
        store.add_image(png_bytes(2), **{arg: "m" * (limit + 1)})
    assert store.count_images() == 1
    assert sorted(p.name for p in store.pool_dir.rglob("*.png")) == [f"{row.sha256}.png"]  # no orphan file


@pytest.mark.parametrize("kwargs, message", [
    ({"rater": "a\x00b"}, "rater name must not contain a NUL"),
    ({"rater": "caf\udce9"}, "rater name is not valid Unicode"),
    ({"round": "r\x00"}, "round name must not contain a NUL"),
    ({"decision_ms": 2**31}, "decision_ms must be a non-negative integer, at most 2147483647"),
    ({"decision_ms": True}, "decision_ms must be a non-negative integer"),
    ({"predicted_p": True}, "predicted_p must be a probability"),
])
def test_votes_that_one_backend_would_refuse_are_refused_on_both(store, kwargs, message):
    a, b = add_images(store, 2)
    with pytest.raises(UserError, match=message):
        store.record_judgement(a, b, "a", **{"rater": "ann", **kwargs})
    assert store.count_judgements() == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": "a\x00b"}, "prompt must not contain a NUL"),
    ({"negative_prompt": "\udcff"}, "negative prompt is not valid Unicode"),
    ({"params": {"cfg": float("nan")}}, "finite numbers"),
    ({"params": {"cfg": float("inf")}}, "finite numbers"),
    ({"seed": 2**63}, "seed must be a 64-bit integer"),
])
def test_images_that_one_backend_would_refuse_are_refused_on_both(store, kwargs, message):
    with pytest.raises(UserError, match=message):
        store.add_image(png_bytes(1), **kwargs)
    assert store.count_images() == 0 and not list(store.pool_dir.rglob("*.png"))


def test_lookups_by_odd_names_find_nothing_on_both_backends(store):
    add_images(store, 2)
    with pytest.raises(prefs.NotFoundError):
        store.get_image("ab\x00cdef01")
    assert store.count_judgements(rater="x" * 500) == 0
