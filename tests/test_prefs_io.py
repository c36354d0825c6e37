"""Export (JSONL, parquet) and import (our JSONL, ImageReward ranked lists): round trips and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefs_util import add_images, png_bytes

import prefs
from prefs.errors import UserError
from prefs.export import JSONL_FIELDS, export
from prefs.imports import import_file

IMAGEREWARD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "preferences" / "imagereward_test.json"


@pytest.fixture
def store():
    with prefs.open_store(seed=0) as s:
        yield s


def some_judgements(store):
    a, b, c = add_images(store, 3, prompts=1)
    store.record_judgement(a, b, "a", rater="ann", shown_left="b", decision_ms=800, strategy="same_prompt",
                            predicted_p=0.4, round="r1", client_vote_id="v1")
    store.record_judgement(b, c, "tie", rater="bob", client_vote_id="v2")
    store.record_judgement(a, c, "skip", rater="bob", client_vote_id="v3")
    store.undo_last("bob")
    return a, b, c


def test_jsonl_round_trip_is_exact(store, tmp_path):
    a, b, _ = some_judgements(store)
    out = tmp_path / "j.jsonl"
    assert export(store, out) == 3
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert list(lines[0]) == list(JSONL_FIELDS)
    assert lines[0]["image_a"] == a and lines[0]["path_a"] == str(store.image_path(a)) and lines[0]["prompt"] == "p0"
    assert lines[2]["undone_at"] is not None
    with prefs.open_store(f"sqlite:///{tmp_path / 'other.sqlite'}") as other:
        report = import_file(other, out, progress=False)
        assert (report.added, report.duplicate, report.skipped, report.missing) == (3, 0, 0, [])
        again = tmp_path / "again.jsonl"
        export(other, again)
        assert again.read_text() == out.read_text()
        report = import_file(other, out, progress=False)  # idempotent
        assert (report.added, report.duplicate) == (0, 3)
        assert other.stats()["judgements"] == 2


def test_jsonl_import_adds_images_from_paths_and_reports_missing(store, tmp_path):
    some_judgements(store)
    out = tmp_path / "j.jsonl"
    export(store, out)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    (tmp_path / "elsewhere").mkdir()
    for r in rows:  # images moved next to the file; one of them lost
        for side in "ab":
            src = Path(r[f"path_{side}"])
            r[f"path_{side}"] = f"elsewhere/{src.name}"
            if src.name.startswith(rows[1]["image_b"]):
                continue
            (tmp_path / "elsewhere" / src.name).write_bytes(src.read_bytes())
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    home2 = tmp_path / "home2"
    with prefs.open_store(f"sqlite:///{home2 / 'p.sqlite'}", home=home2) as other:
        report = import_file(other, out, progress=False)
        assert report.missing == [f"elsewhere/{rows[1]['image_b']}.png"]
        assert (report.added, report.skipped, report.images_added) == (1, 2, 2)
        assert other.count_images() == 2  # nothing invented


@pytest.mark.parametrize("line, message", [
    ("not json", "line 2: not valid JSON"),
    ('{"rater": "x"}', "line 2: missing or empty field 'client_vote_id'"),
    ('{"client_vote_id": "q", "rater": "x", "outcome": "meh", "image_a": "a", "image_b": "b"}', "invalid outcome 'meh'"),
    ('{"client_vote_id": "q", "rater": "x", "outcome": "a", "image_a": "a", "image_b": "a"}', "the same image"),
    ('{"client_vote_id": "q", "rater": "x", "outcome": "a", "image_a": "a", "image_b": "b", "created_at": "soon"}', "bad timestamp"),
    ('{"schema": "other.v9", "client_vote_id": "q"}', "unknown schema"),
])
def test_bad_jsonl_writes_nothing(store, tmp_path, line, message):
    some_judgements(store)
    out = tmp_path / "j.jsonl"
    export(store, out)
    first = out.read_text().splitlines()[0]
    with prefs.open_store(f"sqlite:///{tmp_path / 'other.sqlite'}") as other:
        (tmp_path / "bad.jsonl").write_text(first + "\n" + line + "\n")
        with pytest.raises(UserError, match=message):
            import_file(other, tmp_path / "bad.jsonl", progress=False)
        assert other.stats()["judgements"] == 0 and other.count_images() == 0


def test_parquet_loads_with_datasets_in_pickapic_layout(store, tmp_path):
    a, b, c = some_judgements(store)
    out = tmp_path / "p.parquet"
    assert export(store, out, "parquet") == 2  # undone judgements are not training data
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    for col in ("caption", "image_0_uid", "image_1_uid", "label_0", "label_1", "best_image_uid", "user_id", "has_label"):
        assert col in ds.column_names
    r0, r1 = ds[0], ds[1]
    assert (r0["image_0_uid"], r0["label_0"], r0["label_1"], r0["best_image_uid"], r0["user_id"]) == (a, 1.0, 0.0, a, "ann")
    assert (r1["label_0"], r1["label_1"], r1["best_image_uid"], r1["has_label"]) == (0.5, 0.5, "", True)
    assert r0["caption"] == "p0" and Path(r0["image_0_path"]).is_file()


def test_unknown_export_format(store, tmp_path):
    with pytest.raises(UserError, match="unknown export format 'csv'; valid: jsonl, parquet"):
        export(store, tmp_path / "x.csv")


def write_imagereward(tmp_path, items):
    path = tmp_path / "test.json"
    path.write_text(json.dumps(items))
    return path


def test_imagereward_ranked_lists_become_pairs_with_ties(store, tmp_path):
    items = [{"id": "p1", "prompt": "a cat", "generations": ["x/0.png", "x/1.png", "x/2.png"], "ranking": [2, 1, 2]},
             {"id": "p2", "prompt": "a dog", "generations": ["y/0.png", "y/1.png"], "ranking": [1, 2]}]
    (tmp_path / "x").mkdir()
    for k in range(3):
        (tmp_path / "x" / f"{k}.png").write_bytes(png_bytes(k))
    path = write_imagereward(tmp_path, items)
    report = import_file(store, path, progress=False)
    assert report.format == "imagereward"
    assert (report.added, report.skipped, report.images_added) == (3, 1, 3)
    assert report.missing == ["y/0.png", "y/1.png"]
    got = {(store.get_image(j.image_a).source_path, store.get_image(j.image_b).source_path): j.outcome for j in store.judgements()}
    assert got == {("x/0.png", "x/1.png"): "b", ("x/0.png", "x/2.png"): "tie", ("x/1.png", "x/2.png"): "a"}
    assert store.raters() == ["imagereward"]
    assert store.get_image(next(iter(store.judgements())).image_a).prompt == "a cat"
    assert import_file(store, path, progress=False).duplicate == 3  # again: nothing new
    assert store.stats()["judgements"] == 3


@pytest.mark.skipif(not IMAGEREWARD.exists(), reason="shared reference data not present")
def test_real_imagereward_file_without_images_reports_everything_missing(store):
    report = import_file(store, IMAGEREWARD, progress=False)
    assert report.added == 0 and report.skipped == 7230 and len(report.missing) > 2000
    assert store.count_images() == 0 and store.stats()["judgements"] == 0


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "entry 0: expected keys id, prompt, generations, ranking"),
    ('[{"id": 1, "prompt": "", "generations": ["a", "b"], "ranking": [1]}]', "equal length"),
    ('[{"id": 1, "prompt": "", "generations": ["a", "b"], "ranking": [1, "x"]}]', "ranking must hold numbers"),
    ("[oops", "not valid JSON"),
])
def test_bad_imagereward_files(store, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        import_file(store, path, "imagereward", progress=False)
    assert store.stats()["judgements"] == 0
