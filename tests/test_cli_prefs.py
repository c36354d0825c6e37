"""The prefs command line: `rlft import`, `rlft prefs export|import|stats`, and their bad inputs (exit 2)."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner
from PIL import Image
from prefs_util import add_images, png_bytes

import prefs
from prefs.pngmeta import format_parameters, pnginfo
from rlft.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def make_folder(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    text = format_parameters("an a1111 prompt", "ugly", steps=20, sampler="DDIM", cfg_scale=7.5, seed=42,
                             width=8, height=8, model="sd15")
    (d / "a1111.png").write_bytes(png_bytes(1, pnginfo=pnginfo(text)))
    (d / "sub" / "kohya.png").write_bytes(png_bytes(2))
    (d / "sub" / "kohya.txt").write_text("a sidecar prompt\n")
    (d / "plain.png").write_bytes(png_bytes(3))
    (d / "copy.png").write_bytes(png_bytes(3))  # same bytes as plain.png
    buf = io.BytesIO()
    Image.new("RGB", (5, 5)).save(buf, format="WEBP")
    (d / "photo.webp").write_bytes(buf.getvalue())
    (d / "broken.png").write_bytes(b"\x89PNG garbage")
    (d / "notes.bin").write_bytes(b"\x00\x01")
    (d / ".hidden.png").write_bytes(b"x")
    return d


def test_import_folder_reads_prompts_dedups_and_skips(tmp_path):
    d = make_folder(tmp_path)
    result = run("import", str(d), "--prompt", "fallback", "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: counts[k] for k in ("added", "duplicate", "skipped")} == {"added": 4, "duplicate": 1, "skipped": 2}
    assert "broken.png" in result.stderr and "notes.bin" in result.stderr
    with prefs.open_store() as store:
        by_path = {im.source_path: im for im in store.images()}
    a = by_path["a1111.png"]
    assert (a.prompt, a.negative_prompt, a.seed, a.model, a.caption_source, a.origin) == (
        "an a1111 prompt", "ugly", 42, "sd15", "a1111", "imported")
    assert a.params["Sampler"] == "DDIM"
    assert (by_path["sub/kohya.png"].prompt, by_path["sub/kohya.png"].caption_source) == ("a sidecar prompt", "sidecar")
    assert (by_path["copy.png"].prompt, by_path["copy.png"].caption_source) == ("fallback", "cli")
    assert by_path["photo.webp"].format == "webp"
    # Again: everything is a duplicate, nothing added.
    again = json.loads(run("import", str(d), "--json").stdout.strip().splitlines()[-1])
    assert (again["added"], again["duplicate"]) == (0, 5)


def test_import_refuses_oversized_images(tmp_path):
    d = tmp_path / "big"
    d.mkdir()
    (d / "big.png").write_bytes(png_bytes(1, size=64))
    (d / "ok.png").write_bytes(png_bytes(2, size=16))
    result = run("import", str(d), "--max-side", "32")
    assert result.exit_code == 0
    assert "added 1, duplicate 0, skipped 1" in result.stdout
    assert "big.png: 64x64 px is over the limit of 32 px a side (--max-side)" in result.stderr
    result = run("import", str(d), "--max-bytes", "10", "--json")
    assert json.loads(result.stdout.strip().splitlines()[-1])["skipped"] == 2


def test_import_bad_arguments_exit_2(tmp_path):
    assert run("import", str(tmp_path / "nope")).exit_code == 2
    assert run("import", str(tmp_path), "--max-side", "0").exit_code == 2
    with prefs.open_store() as store:
        assert store.count_images() == 0


def test_prefs_stats_json_and_text():
    with prefs.open_store() as store:
        a, b = add_images(store, 2)
        store.record_judgement(a, b, "a", rater="ann")
        store.record_judgement(a, b, "tie", rater="bob")
    result = run("prefs", "stats", "--json")
    s = json.loads(result.stdout)
    assert (s["images"], s["judgements"], s["by_outcome"]["tie"], s["raters"]) == (2, 2, 1, {"ann": 1, "bob": 1})
    text = run("prefs", "stats").stdout
    assert "judgements: 2" in text and "tie rate: 50.0%" in text and "Bradley-Terry top 2 of 2" in text


def test_prefs_export_import_round_trip(tmp_path):
    with prefs.open_store() as store:
        a, b = add_images(store, 2)
        store.record_judgement(a, b, "b", rater="ann")
    out = tmp_path / "all.jsonl"
    result = run("prefs", "export", "--format", "jsonl", "-o", str(out))
    assert result.exit_code == 0 and "wrote 1 judgements" in result.stdout
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    result = run("--db", other, "prefs", "import", str(out), "--json")
    assert json.loads(result.stdout)["added"] == 1
    assert "added 0, duplicate 1" in run("--db", other, "prefs", "import", str(out)).stdout
    assert run("prefs", "export", "-o", str(tmp_path / "x.parquet")).exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["prefs", "export", "-o", "x.txt"], "unknown export format 'txt'"),
    (["prefs", "import", "{bad}"], "not valid JSON"),
    (["--db", "mysql://h/d", "prefs", "stats"], "unsupported database 'mysql'"),
])
def test_prefs_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "{bad}").write_text("{oops\n")
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["prefs", "stats", "--bogus"], "rlft prefs stats: No such option '--bogus'"),
    (["reward", "list", "--nope"], "rlft reward list: No such option '--nope'"),
    (["toy", "pretrain"], "rlft toy pretrain: Missing option '--out'"),
    (["toy", "pretrain", "--out", "x", "--preset", "tpu"], "rlft toy pretrain: Invalid value for '--preset'"),
    (["simulate", "--oracle", "warm", "--n", "x"], "rlft simulate: Invalid value for '--n'"),
    (["bogus"], "rlft: No such command 'bogus'"),
    (["--bogus"], "rlft: No such option '--bogus'"),
])
def test_usage_errors_of_every_command_are_one_line_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args, prog_name="rlft", catch_exceptions=False)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {result.stderr[7:]}" and message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_a_group_without_a_subcommand_shows_its_help():
    result = CliRunner().invoke(main, ["prefs"], prog_name="rlft", catch_exceptions=False)
    assert "Usage: rlft prefs" in result.output and "stats" in result.output
