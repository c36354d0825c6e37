"""`rlft prefs import` is all or nothing for bad input: every row is checked as the store would check it before
anything is written, a bad row is named by its line, and nothing is stored (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import json

import pytest
from click.testing import CliRunner
from prefs_util import add_images, png_bytes

import prefs
from prefs.errors import UserError
from prefs.imports import import_file
from rlft.cli import main

SMALL_BATCH = 50  # judgements per write transaction in these tests (1000 in use): the same logic, less to write
BAD_AT = SMALL_BATCH + 20  # past the first write batch: a batch-by-batch check would have stored SMALL_BATCH rows


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, monkeypatch):
    monkeypatch.setattr("prefs.imports.BATCH", SMALL_BATCH)
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    with prefs.open_store(url) as s:
        yield s


def rows(shas, n):
    pairs = itertools.islice(itertools.combinations(shas, 2), n)
    return [{"schema": "rlft.judgement.v1", "client_vote_id": f"v{i}", "rater": "ann", "outcome": "a",
             "image_a": a, "image_b": b} for i, (a, b) in enumerate(pairs)]


def write(path, items):
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


@pytest.mark.parametrize("change, message", [
    ({"rater": "  "}, "rater name must not be empty"),
    ({"rater": "r" * 201}, "rater name is 201 characters long; the limit is 200"),
    ({"client_vote_id": "x" * 101}, "client_vote_id must be 1 to 100 characters"),
    ({"decision_ms": True}, "decision_ms must be a non-negative integer or null, got true"),
    ({"predicted_p": True}, "predicted_p must be a probability or null, got true"),
    ({"strategy": {"name": "random"}}, "strategy must be text or null"),
    ({"round": [1, 2]}, "round must be text or null"),
    ({"strategy": "s" * 33}, "strategy is 33 characters long; the limit is 32"),
    ({"rater": "a\u0000b"}, "rater name must not contain a NUL"),
    ({"client_vote_id": "v0", "outcome": "b"}, "client_vote_id 'v0' is used for a different judgement at .*line 1"),
])
def test_a_bad_row_past_the_first_batch_stops_the_import_with_its_line_and_writes_nothing(store, tmp_path, change, message):
    shas = add_images(store, 16)
    items = rows(shas, BAD_AT + 30)
    items[BAD_AT - 1].update(change)
    path = write(tmp_path / "j.jsonl", items)
    with pytest.raises(UserError, match=f"line {BAD_AT}: {message}"):
        import_file(store, path, progress=False)
    assert store.count_judgements() == 0 and store.raters() == []


def test_a_vote_id_stored_for_another_judgement_stops_the_import_before_anything_is_written(store, tmp_path):
    shas = add_images(store, 16)
    items = rows(shas, BAD_AT + 10)
    store.record_judgement(items[BAD_AT - 1]["image_a"], items[BAD_AT - 1]["image_b"], "tie", rater="ann",
                           client_vote_id=items[BAD_AT - 1]["client_vote_id"])
    path = write(tmp_path / "j.jsonl", items)
    with pytest.raises(UserError, match=f"line {BAD_AT}: client_vote_id 'v{BAD_AT - 1}' is already stored for a different"):
        import_file(store, path, progress=False)
    assert store.count_judgements() == 1
    items[BAD_AT - 1]["outcome"] = "tie"  # fixed: the import adds exactly the rest
    report = import_file(store, write(path, items), progress=False)
    assert (report.added, report.duplicate, store.count_judgements()) == (BAD_AT + 9, 1, BAD_AT + 10)


def test_images_a_bad_file_names_are_not_added_either(store, tmp_path):
    (tmp_path / "imgs").mkdir()
    for k in range(3):
        (tmp_path / "imgs" / f"{k}.png").write_bytes(png_bytes(k))
    items = [{"client_vote_id": "a", "rater": "ann", "outcome": "a", "image_a": "x" * 8, "image_b": "y" * 8,
              "path_a": "imgs/0.png", "path_b": "imgs/1.png"},
             {"client_vote_id": "b", "rater": "ann", "outcome": "a", "image_a": "x" * 8, "image_b": "z" * 8,
              "path_a": "imgs/0.png", "path_b": "imgs/2.png", "round": {"no": 1}}]
    with pytest.raises(UserError, match="line 2: round must be text or null"):
        import_file(store, write(tmp_path / "j.jsonl", items), progress=False)
    assert store.count_images() == 0 and not list(store.pool_dir.rglob("*.png"))


def test_a_line_that_is_not_utf8_is_named(store, tmp_path):
    shas = add_images(store, 4)
    good = json.dumps(rows(shas, 1)[0]).encode()
    path = tmp_path / "j.jsonl"
    path.write_bytes(good + b"\n" + b'{"rater": "caf\xe9"}\n')
    with pytest.raises(UserError, match="line 2: not UTF-8 text"):
        import_file(store, path, progress=False)
    ir = tmp_path / "test.json"
    ir.write_bytes(b'[\n{"id": "1", "prompt": "caf\xe9", "generations": ["a", "b"], "ranking": [1, 2]}]')
    with pytest.raises(UserError, match="line 2: not UTF-8 text"):
        import_file(store, ir, progress=False)
    assert store.count_judgements() == 0


@pytest.mark.parametrize("content, message", [
    ('[{"id": 1, "prompt": "", "generations": ["a", {"b": 1}], "ranking": [1, 2]}]', "generations must hold image paths"),
    ('[{"id": 1, "prompt": ["p"], "generations": ["a", "b"], "ranking": [1, 2]}]', "prompt must be text"),
    ('[{"id": 1, "prompt": "", "generations": ["a", "b"], "ranking": [1, NaN]}]', "ranking must hold numbers"),
    ('[{"id": {"k": 1}, "prompt": "", "generations": ["a", "b"], "ranking": [1, 2]}]', "id must be text or an integer"),
])
def test_wrong_json_types_in_imagereward_files_are_named(store, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=f"entry 0: {message}"):
        import_file(store, path, "imagereward", progress=False)


@pytest.mark.parametrize("raw, message", [
    (b'{"client_vote_id": "q", "rater": "x", "outcome": "a", "image_a": "a", "image_b": "b", "strategy": {"x": 1}}\n',
     "line 1: strategy must be text or null"),
    (b'{"client_vote_id": "q", "rater": "x", "outcome": "a", "image_a": "a", "image_b": "b"}\n\xff\xfe\n',
     "line 2: not UTF-8 text"),
    (b"[" * 100_000 + b"\n", "line 1: not valid JSON"),
])
def test_cli_prefs_import_of_bad_bytes_and_types_is_one_line_exit_2(tmp_path, raw, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(raw)
    result = CliRunner().invoke(main, ["prefs", "import", str(path)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: ") and message in result.output
