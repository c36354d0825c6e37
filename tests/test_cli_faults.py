"""Faults and odd input at the command line: each a one-line `Error:` and exit 2 (or a notice and a skip), never
a traceback, and nothing half-written: no pool file without its row, no empty folder, no model loaded in vain."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from prefs_util import add_toy_images, png_bytes

import prefs
from rlft.cli import COMMANDS, main
from rlft.cli.params import FiniteFloatParam


def run(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="rlft", **kw)


def one_line_error(result, *fragments):
    """Exit 2 and one `Error:` line, the last on stderr (progress bars and notices may come before it)."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if "Error" in line]
    assert len(errors) == 1 and result.stderr.endswith(errors[0] + "\n"), result.stderr
    assert errors[0].startswith("Error: ") or "\rError: " in errors[0] or "\nError: " in errors[0], errors
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in errors[0], errors[0]


def pool_files(home):
    return sorted(p.name.split(".")[0] for p in (home / "pool").rglob("*") if p.is_file())


def stored_shas(url=None):
    with prefs.open_store(url) as store:
        return sorted(im.sha256 for im in store.images())


def noise_png(path, seed, side=100):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)


@contextlib.contextmanager
def small_filesystem(path, size: str):
    """A tmpfs of `size` mounted at `path` (a real full disk); skips the test where mounting is not allowed."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder, leave_kb: int) -> None:
    """Fill the file system of `folder` up to `leave_kb` KiB free."""
    free_kb = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize // 1024
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, (free_kb - leave_kb) * 1024))


# -- item 11: file names that are not UTF-8 ------------------------------------------------------------------


def test_import_takes_a_file_name_that_is_not_utf8_and_the_rest_of_the_folder(tmp_path, rlft_home):
    folder = tmp_path / "imgs"
    folder.mkdir()
    try:
        with open(os.path.join(os.fsencode(folder), b"caf\xe9-\xff.png"), "wb") as f:  # Latin-1 and a stray byte
            f.write(png_bytes(1))
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    (folder / "a.png").write_bytes(png_bytes(2))
    (folder / "z.png").write_bytes(png_bytes(3))
    result = run("import", folder, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["added"] == 3
    with prefs.open_store() as store:
        assert sorted(im.source_path for im in store.images()) == ["a.png", "caf\\xe9-\\xff.png", "z.png"]
    assert pool_files(rlft_home) == stored_shas()
    again = run("import", folder, "--json")  # a rerun meets the same name without trouble
    assert again.exit_code == 0 and json.loads(again.stdout.splitlines()[-1])["duplicate"] == 3


def test_an_import_batch_the_database_refuses_leaves_no_pool_file(tmp_path, rlft_home, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from prefs.store import Store

    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(5):
        (folder / f"{k}.png").write_bytes(png_bytes(k))
    with prefs.open_store():
        pass

    def refuse(session):  # the insert of the batch's rows, as SQLite refuses it on a full disk
        raise OperationalError("INSERT INTO images ...", {}, Exception("database or disk is full"))

    monkeypatch.setattr(Store, "_insert_images_tx", staticmethod(lambda images: refuse))
    one_line_error(run("import", folder), "database or disk is full")
    assert pool_files(rlft_home) == []


# -- item 14: a bad database, a full disk, leftovers, empty folders, work before failing --------------------


@pytest.mark.parametrize("command", [["import", "IMGS"], ["prefs", "stats"], ["db", "upgrade"], ["db", "current"]])
@pytest.mark.parametrize("where, message", [
    ("picture.png", "file is not a database"),
    ("picture.png/prefs.sqlite", "picture.png is a file, not a folder"),
])
def test_a_database_url_that_is_not_a_database_is_one_line(tmp_path, rlft_home, command, where, message):
    (tmp_path / "picture.png").write_bytes(png_bytes(9))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.png").write_bytes(png_bytes(1))
    args = [str(imgs) if a == "IMGS" else a for a in command]
    result = run("--db", f"sqlite:///{tmp_path / where}", *args)
    if command == ["db", "current"] and "not a folder" in message:
        message = "unable to open database file"
    one_line_error(result, message)
    assert not (rlft_home / "pool").exists()


def test_a_full_disk_under_the_pool_is_one_line_and_leaves_no_pool_file(tmp_path):
    with small_filesystem(tmp_path / "disk", "300k") as disk:
        home = disk / "home"
        imgs = tmp_path / "imgs"
        imgs.mkdir()
        for k in range(10):  # about 30 KB each: 300 KB in all, more than the disk holds with the database
            noise_png(imgs / f"{k}.png", k)
        result = run("--home", home, "import", imgs)
        one_line_error(result, "No space left on device")
        assert pool_files(home) == [] and stored_shas(f"sqlite:///{home / 'prefs.sqlite'}") == []


def test_a_full_disk_under_the_database_is_one_line_and_leaves_no_pool_file(tmp_path, rlft_home):
    with small_filesystem(tmp_path / "disk", "400k") as disk:
        url = f"sqlite:///{disk / 'prefs.sqlite'}"
        assert run("--db", url, "db", "upgrade").exit_code == 0
        imgs = tmp_path / "imgs"
        imgs.mkdir()
        for k in range(300):
            (imgs / f"{k}.png").write_bytes(png_bytes(k))
            (imgs / f"{k}.txt").write_text(f"prompt {k} " + "x" * 2000)
        fill(disk, leave_kb=40)
        result = run("--db", url, "import", imgs)
        one_line_error(result, "cannot")
        assert "full" in result.stderr or "I/O" in result.stderr
        (disk / "filler").unlink()
        assert pool_files(rlft_home) == stored_shas(url)  # whole batches, and no file without its row


def test_generate_on_a_home_it_cannot_write_fails_before_loading_the_model(tmp_path, monkeypatch):
    import rlft.models.pipeline as pipeline

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although the database cannot be opened")

    monkeypatch.setattr(pipeline, "load_pipeline", no_model)
    (tmp_path / "file").write_text("not a folder")
    result = run("--home", tmp_path / "file" / "home", "generate", "-p", "a red circle")
    one_line_error(result, "cannot create the rlft home")


def test_generate_on_a_read_only_home_fails_before_loading_the_model(tmp_path, monkeypatch):
    import rlft.models.pipeline as pipeline

    with small_filesystem(tmp_path / "ro", "1m") as ro:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        monkeypatch.setattr(pipeline, "load_pipeline", lambda *a, **k: pytest.fail("model loaded before the store"))
        result = run("--home", ro / "home", "generate", "-p", "a red circle")
        one_line_error(result, "Read-only file system")


def test_the_next_reward_training_removes_builds_that_were_killed(tmp_path, rlft_home):
    from reward_util import train_small_reward

    from reward.versions import STALE_BUILD_S, rewards_dir

    root = rewards_dir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    killed = root / f".building-{host}-{int(gone.stdout)}-abc"  # its process is gone
    old = root / ".building-q1w2e3"  # an older rlft's name, left long ago
    running = root / f".building-{host}-{os.getpid()}-xyz"  # a build in progress right now
    for p in (killed, old, running):
        p.mkdir()
        (p / "weights.safetensors").write_bytes(b"partial")
    os.utime(old, (time.time() - STALE_BUILD_S - 60,) * 2)
    train_small_reward(n_images=8, n_judgements=12, ensemble=1, steps=2)
    assert sorted(p.name for p in root.iterdir()) == sorted(["r0001", running.name])


@pytest.mark.parametrize("args", [["reward", "show", "r9999"], ["reward", "list"], ["reward", "score", "x.png"],
                                  ["reward", "train"], ["embed", "-o", "taste.pt"]])
def test_looking_up_or_training_without_data_makes_no_empty_folder(tmp_path, monkeypatch, args):
    home = tmp_path / "fresh"
    monkeypatch.chdir(tmp_path)
    result = run("--home", home, *args)
    assert result.exit_code in (0, 2) and "Traceback" not in result.output, result.output
    made = sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.exists() else []
    assert made in ([], ["prefs.sqlite"], ["prefs.sqlite", "prefs.sqlite-shm", "prefs.sqlite-wal"]), made


# -- item 15: non-finite numbers --------------------------------------------------------------------------


def test_no_float_flag_of_any_command_takes_click_float():
    """Every float flag is a FiniteFloatParam (click's FLOAT and FloatRange take nan and inf). `train` and
    `loop` are being rebuilt and adopt it with their new flags."""
    ctx = click.Context(main, info_name="rlft")
    pending = {"train", "export-lora", "loop"}
    found = []

    def walk(command, path):
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), f"{path} {name}")
            return
        for p in command.params:
            if isinstance(p.type, (click.types.FloatParamType, FiniteFloatParam)):
                found.append((path, p.name, isinstance(p.type, FiniteFloatParam)))

    for name in sorted(set(COMMANDS) - pending):
        walk(main.get_command(ctx, name), name)
    assert found and all(ok for *_, ok in found), [f for f in found if not f[2]]


@pytest.mark.parametrize("args", [
    ["generate", "-p", "a red circle", "--guidance", "nan"],
    ["generate", "-p", "a red circle", "--guidance", "inf"],
    ["generate", "-p", "a red circle", "--cfg", "-inf"],
    ["generate", "-p", "a red circle", "--aesthetic-lr", "nan"],
    ["generate", "-p", "a red circle", "--aesthetic-weight", "inf"],
    ["simulate", "--oracle", "warm", "--n", "1", "--noise", "inf"],
    ["simulate", "--oracle", "warm", "--n", "1", "--tie-prob", "nan"],
    ["reward", "train", "--l2", "nan"],
    ["reward", "train", "--val-frac", "nan"],
    ["embed", "--min-score", "nan", "-o", "t.pt"],
    ["toy", "pretrain", "--out", "x", "--scale", "nan"],
    ["toy", "eval", "--guidance", "inf"],
])
def test_non_finite_numbers_are_refused_before_any_work(tmp_path, monkeypatch, rlft_home, args):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    one_line_error(result, "is not a finite number")
    assert not (rlft_home / "pool").exists() and not (tmp_path / "x").exists()


# -- item 16: a missing or unreadable pool file -----------------------------------------------------------


def lose_files(store, shas):
    """The first image's pool file deleted, the second's overwritten with bytes that are not an image."""
    store.image_path(shas[0]).unlink()
    store.image_path(shas[1]).write_bytes(b"not an image any more")


def test_simulate_skips_pairs_with_a_missing_or_unreadable_pool_file(rlft_home):
    with prefs.open_store() as store:
        shas = add_toy_images(store, 12)
        lose_files(store, shas)
    result = run("simulate", "--oracle", "warm", "--n", "20", "--strategy", "random", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["judged"] == 20 and sorted(summary["unreadable"]) == sorted(shas[:2])
    assert "notice: skipped image " in result.stderr and "is missing" in result.stderr
    assert "is not a readable image" in result.stderr
    with prefs.open_store() as store:
        judged = {s for j in store.judgements() for s in (j.image_a, j.image_b)}
    assert not judged & set(shas[:2])


def test_simulate_stops_when_every_pair_shows_a_lost_file(rlft_home):
    with prefs.open_store() as store:
        shas = add_toy_images(store, 3)
        for s in shas:
            store.image_path(s).unlink()
    result = run("simulate", "--oracle", "warm", "--n", "5", "--strategy", "random")
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "judged 0 pairs" in result.stdout and "stopped early:" in result.stderr and "restore the files" in result.stderr


def test_reward_training_embedding_scoring_and_export_skip_a_lost_pool_file(tmp_path, rlft_home):
    from reward_util import judged_store

    with judged_store(n_images=12, n_judgements=40) as store:
        n = store.count_judgements()
        lost = [store.judgements().__next__().image_a, next(j.image_b for j in store.judgements())]
        lose_files(store, lost)
        affected = sum(bool({j.image_a, j.image_b} & set(lost)) for j in store.judgements())
    result = run("reward", "train", "--ensemble", "1", "--steps", "5", "--val-frac", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_judgements"] == n - affected
    assert result.stderr.count("notice: skipped image ") == 2 and f"left out {affected} of {n}" in result.stderr
    result = run("embed", "-o", tmp_path / "taste.pt", "--top-k", "3")
    assert result.exit_code == 0 and result.stderr.count("notice: skipped image ") == 2, result.output
    result = run("prefs", "export", "-o", tmp_path / "j.jsonl")
    assert result.exit_code == 0 and f"wrote {n} judgements" in result.stdout
    import reward

    with prefs.open_store() as store:
        rows = [store.get_image(s) for s in lost] + [im for im in store.images() if im.sha256 not in lost][:2]
        means, stds, members = reward.make_scorer(store, "latest")(rows)
    assert means[:2] == [0.0, 0.0] and stds[:2] == [0.0, 0.0] and members.shape == (1, 4)


def test_reward_training_with_every_judged_file_lost_is_one_line(rlft_home):
    from reward_util import judged_store

    with judged_store(n_images=4, n_judgements=6) as store:
        for im in store.images():
            store.image_path(im).unlink()
    one_line_error(run("reward", "train", "--ensemble", "1", "--steps", "2", "--val-frac", "0"),
                   "no judgement left to learn from")
