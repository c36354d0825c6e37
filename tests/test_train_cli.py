"""`rlft train`, `rlft export-lora`, `rlft generate --lora latest` through the CLI: end to end and bad input."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from train_helpers import invoke

from prefs.errors import UserError

TINY = {"epochs": 1, "sample": {"steps": 2, "samples_per_epoch": 4, "batch_size": 4, "grid_prompts": 1, "grid_seeds": 2},
        "optim": {"train_batch_size": 4}, "dpo": {"pairs_per_epoch": 4}}


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def _judged_pool():
    from prefs import open_store

    with open_store() as store:
        red = store.add_image(Image.new("RGB", (64, 64), (230, 30, 30)), prompt="a circle")
        blue = store.add_image(Image.new("RGB", (64, 64), (30, 30, 230)), prompt="a circle")
        store.record_judgement(red, blue, "a")
        store.record_judgement(blue, red, "b")


def _processes_output(stderr: str, limit: int = 6000) -> str:
    """What the processes a launcher started printed, without the launcher's own report of their exit (which
    names the signal, not the cause)."""
    cut = stderr.find("Traceback (most recent call last):\n  File \"<frozen runpy>\"")
    mine = stderr[:cut] if cut > 0 else stderr
    return mine[-limit:] + "\n[launcher] " + stderr[cut:][-600:] if cut > 0 else mine[-limit:]


def _runs(home):
    return sorted(p.name for p in (home / "runs").glob("t*")) if (home / "runs").is_dir() else []


def test_dpo_run_export_generate_and_resume(model_folder, config_file, tmp_path, rlft_home):
    _judged_pool()
    result = invoke("train", "--model", model_folder, "--algo", "dpo", "--config", config_file, "--reward", "r0007", "-q")
    assert result.exit_code == 0, result.output
    assert "notice: dpo trains on the stored judgements directly; --reward is ignored" in result.output
    run = rlft_home / "runs" / "t0001"
    assert (rlft_home / "runs" / "latest").resolve() == run.resolve()
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["algo"] == "dpo" and saved["provenance"]["judgements"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1

    out = invoke("export-lora", "latest", "--format", "kohya", "--out", tmp_path / "mine.safetensors")
    assert out.exit_code == 0 and (tmp_path / "mine.safetensors").is_file()
    assert invoke("export-lora", "t0001").output.strip().endswith("lora")
    out = invoke("export-lora", "t0001", "--format", "diffusers", "--out", tmp_path / "mine")
    assert out.exit_code == 0, out.output
    from safetensors.torch import load_file

    exported, saved = load_file(str(tmp_path / "mine" / "pytorch_lora_weights.safetensors")), _lora(run)
    assert exported.keys() == saved.keys() and all((exported[k] == saved[k]).all() for k in saved)

    gen = invoke("generate", "--model", model_folder, "--lora", "latest", "-p", "a circle", "--steps", "2",
                 "--seed", "1", "--out", tmp_path / "gen", "--json")
    assert gen.exit_code == 0, gen.output
    line = next(l for l in gen.output.splitlines() if '{"path"' in l)  # stderr's progress bar shares the output
    record = json.loads(line[line.index('{"path"'):])
    assert record["lora"] == "t0001"  # the run `latest` meant, not the moving alias

    bad = invoke("train", "--resume", "latest", "--lora-rank", "8")
    assert bad.exit_code == 2 and "different config" in bad.output and len(bad.output.strip().splitlines()) == 1
    more = invoke("train", "--resume", "latest", "--epochs", "2", "-q")  # extending a run is allowed
    assert more.exit_code == 0, more.output
    assert [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("case", ["no reward", "empty prompts", "no prompts", "no judgements", "unknown model",
                                  "bad resume", "bad config", "bad algo", "bad epochs", "unknown tracker"])
def test_bad_input_one_line_exit_2_nothing_written(case, model_folder, config_file, tmp_path, rlft_home):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a circle\n")
    bad_cfg = tmp_path / "bad.json"
    bad_cfg.write_text(json.dumps({"sample": {"steps": 0}}))
    args = {
        "no reward": ["--model", model_folder, "--prompts", prompts],
        "empty prompts": ["--model", model_folder, "--prompts", empty],
        "no prompts": ["--model", model_folder],
        "no judgements": ["--model", model_folder, "--algo", "dpo"],
        "unknown model": ["--model", tmp_path / "nope", "--prompts", prompts],
        "bad resume": ["--resume", "latest"],
        "bad config": ["--model", model_folder, "--prompts", prompts, "--config", bad_cfg],
        "bad algo": ["--algo", "ppo", "--prompts", prompts],
        "bad epochs": ["--epochs", "0", "--prompts", prompts],
        "unknown tracker": ["--model", model_folder, "--prompts", prompts, "--log-with", "neptune"],
    }[case]
    result = invoke("train", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    assert _runs(rlft_home) == []
    if case == "unknown tracker":  # refused for the tracker, not for the missing reward that comes after
        assert lines[0].startswith("Error: unknown tracker 'neptune' for --log-with; choose from tensorboard, wandb")


def test_log_with_tensorboard_gets_every_epoch_s_metrics_and_sample_grid(model_folder, config_file, rlft_home):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _judged_pool()
    result = invoke("train", "--model", model_folder, "--algo", "dpo", "--config", config_file, "--epochs", "2",
                    "--log-with", "tensorboard", "-q")
    assert result.exit_code == 0, result.output
    run = rlft_home / "runs" / "t0001"
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run / "logs" / "rlft"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    for key in ("loss", "implicit_acc", "lr", "wall_s"):
        logged = events.Scalars(key)
        assert [e.step for e in logged] == [1, 2], key
        assert [e.value for e in logged] == pytest.approx([m[key] for m in metrics], rel=1e-6), key
    grids = events.Images("samples")
    assert [e.step for e in grids] == [0, 1, 2]  # epoch 0 is the base model
    png = Image.open(run / "samples" / "epoch_0002.png")
    assert (grids[-1].width, grids[-1].height) == png.size
    hparams = next((run / "logs" / "rlft").rglob("hparams.yml")).read_text()
    assert "dpo.beta:" in hparams and "algo: dpo" in hparams


def test_log_with_survives_resume_without_duplicate_epochs(model_folder, config_file, rlft_home):
    """A crash after an epoch was logged but before its checkpoint: the resumed run redoes that epoch, and
    TensorBoard shows it once (purge_step), with the trackers remembered from the run, not retyped."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _judged_pool()
    assert invoke("train", "--model", model_folder, "--algo", "dpo", "--config", config_file, "--epochs", "1",
                  "--log-with", "tensorboard", "-q").exit_code == 0
    run = rlft_home / "runs" / "t0001"
    epoch1 = (run / "checkpoint.pt").read_bytes()
    assert invoke("train", "--resume", "latest", "--epochs", "2", "-q").exit_code == 0
    (run / "checkpoint.pt").write_bytes(epoch1)  # as if killed after logging epoch 2, before its checkpoint
    result = invoke("train", "--resume", "latest", "-q")
    assert result.exit_code == 0, result.output
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    events = EventAccumulator(str(run / "logs" / "rlft"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [1, 2]
    assert [e.value for e in loss] == pytest.approx([m["loss"] for m in metrics], rel=1e-6)
    assert [e.step for e in events.Images("samples")] == [0, 1, 2]
    assert json.loads((run / "config.json").read_text())["provenance"]["log_with"] == ["tensorboard"]


def test_a_tracker_that_fails_to_start_is_one_line_and_leaves_no_run(model_folder, config_file, rlft_home, monkeypatch):
    import accelerate

    def refuse(self, *args, **kwargs):
        raise RuntimeError("api key not configured\nrun `wandb login`")

    _judged_pool()
    train = ("train", "--model", model_folder, "--algo", "dpo", "--config", config_file, "-q")
    for before in ([], ["t0001"]):  # the first run of a home, then one after a finished run
        with monkeypatch.context() as m:
            m.setattr(accelerate.Accelerator, "init_trackers", refuse)
            result = invoke(*train, "--log-with", "tensorboard")
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [
            "Error: --log-with tensorboard: the tracker did not start (api key not configured)"]
        assert _runs(rlft_home) == before  # the refused run's folder is gone
        latest = rlft_home / "runs" / "latest"
        if before:  # `latest` is back on the finished run
            assert latest.resolve() == (rlft_home / "runs" / "t0001").resolve()
        else:
            assert not latest.is_symlink()
            assert invoke(*train).exit_code == 0  # t0001, for the second round


def test_log_with_a_tracker_whose_package_is_missing_is_a_one_line_error(model_folder, tmp_path, rlft_home, monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    prompts = tmp_path / "p.txt"
    prompts.write_text("a circle\n")
    result = invoke("train", "--model", model_folder, "--prompts", prompts, "--log-with", "tensorboard")
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        "Error: --log-with tensorboard needs the tensorboard package, which is not installed (pip install tensorboard)"]
    assert _runs(rlft_home) == []


def test_generate_lora_latest_without_runs_fails_cleanly(model_folder, tmp_path):
    result = invoke("generate", "--model", model_folder, "--lora", "latest", "-p", "x", "--no-pool", "--out", tmp_path)
    assert result.exit_code == 2 and "no training runs" in result.output


def test_loop_runs_two_rounds_generating_with_the_last_round_s_lora(model_folder, config_file, tmp_path, rlft_home):
    from prefs import open_store

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a circle\na square\n")
    config_file.write_text(json.dumps({**TINY, "algo": "dpo"}))  # the file's algorithm: no reward model needed
    result = invoke("loop", "--model", model_folder, "--prompts", prompts, "--rounds", "2", "-n", "2", "--oracle", "big",
                    "--judgements", "5", "--consistency", "0.9", "--strategy", "uncertain:0.5,balanced:0.5", "--config", config_file,
                    "--log-with", "tensorboard")
    assert result.exit_code == 0, result.output
    assert _runs(rlft_home) == ["t0001", "t0002"] and "at calibrated noise T=" in result.output
    for run in ("t0001", "t0002"):  # every round's training logged to its own run folder
        assert list((rlft_home / "runs" / run / "logs" / "rlft").glob("events.out.tfevents.*"))
    config = json.loads((rlft_home / "runs" / "t0002" / "config.json").read_text())["config"]
    assert config["seed"] == 1 and config["algo"] == "dpo" and config["sample"]["steps"] == TINY["sample"]["steps"]
    with open_store() as store:
        images = list(store.images())
        assert len(images) == 8 and store.count_judgements(rater="sim-big") == 10
        assert {c.strategy for c in store.judgements()} <= {"uncertain", "balanced", "random"}
        # Round 2 generated with round 1's LoRA, and recorded which one in the pool, on round 1's seeds: the
        # Gallery's compare view pairs every base image with its tuned twin.
        assert [im.lora for im in images] == [None] * 4 + ["t0001"] * 4
        from ui.gallery import compare, run_label

        base, tuned = run_label(images[0]), run_label(images[-1])
        rows = compare(images, {}, base, tuned)
        assert [(r[0], r[1]) for r in rows] == sorted((im.prompt, im.seed) for im in images[:4])
        assert all(r[2].lora is None and r[3].lora == "t0001" for r in rows)


@pytest.mark.parametrize("args, message", [
    (["--consistency", "0.9"], "it needs --oracle"),
    (["--strategy", "uncertain"], "it needs --oracle"),
    (["--oracle", "big", "--strategy", "nonsense"], "unknown pair strategy 'nonsense'"),
    (["--oracle", "big", "--consistency", "1.5"], "strictly between 0.5 and 1"),
    (["--config", "missing.toml"], "no config file missing.toml"),
    (["--algo", "dpo", "--config", "bad.json"], "unknown config field"),
    (["--log-with", "neptune"], "unknown tracker 'neptune' for --log-with"),
    (["--algo", "ddpo", "--clip", "ViT-B-32/openai"], "which was never shown the toy world"),
])
def test_loop_checks_its_arguments_before_the_first_round(args, message, model_folder, tmp_path, rlft_home, monkeypatch):
    from prefs import open_store

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"bogus": 1}))
    result = invoke("loop", "--model", model_folder, "--prompts", "toy", *args)
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    with open_store() as store:
        assert store.count_images() == 0


def test_load_judgements_keeps_each_image_s_own_prompt(tmp_path, rlft_home):
    from PIL import Image

    from prefs import open_store
    from rlft.train.data import load_judgements

    paths = []
    for name, colour in (("red", (230, 30, 30)), ("blue", (30, 30, 230)), ("green", (30, 230, 30))):
        paths.append(tmp_path / f"{name}.png")
        Image.new("RGB", (8, 8), colour).save(paths[-1])
    with open_store() as store:
        red = store.add_image(paths[0], prompt="a red circle", model="toy")
        blue = store.add_image(paths[1], prompt="a blue square", model="toy")
        green = store.add_image(paths[2], prompt="a green star", model="toy")
        store.record_judgement(red, blue, "b", rater="r")  # blue wins a pair of two prompts
        store.record_judgement(red, green, "tie", rater="r")  # ties teach dpo nothing
        out, _ = load_judgements(store)
    assert len(out) == 1
    win, lose, win_prompt, lose_prompt = out[0]
    assert (win_prompt, lose_prompt) == ("a blue square", "a red circle")
    assert win.getpixel((0, 0)) == (30, 30, 230) and lose.getpixel((0, 0)) == (230, 30, 30)


def test_training_data_skips_judgements_and_rated_images_whose_files_are_gone(tmp_path, rlft_home):
    from PIL import Image

    from prefs import open_store
    from rlft.train.data import load_judgements, top_rated

    with open_store() as store:
        shas = []
        for k in range(4):
            Image.new("RGB", (8, 8), (60 * k, 0, 0)).save(tmp_path / f"{k}.png")
            shas.append(store.add_image(tmp_path / f"{k}.png", prompt=f"p{k}", model="toy").sha256)
        for k in range(3):  # image k+1 beats image k: 3 wins for 1, 2, 3 ... and the last is rated best
            store.record_judgement(shas[k], shas[k + 1], "b", rater="r")
        store.image_path(store.get_image(shas[3])).unlink()  # the best-rated image's file is gone
        notices = []
        out, last = load_judgements(store, notice=notices.append)
        assert [(w.getpixel((0, 0))[0], lo.getpixel((0, 0))[0]) for w, lo, *_ in out] == [(60, 0), (120, 60)]
        assert len(notices) == 1 and notices[0].startswith("1 judgement(s) skipped: 1 of their pool image file(s)")
        best, best_shas = top_rated(store, 2, notices.append)
        assert best_shas == [shas[2], shas[1]] and [p for _, p in best] == ["p2", "p1"]
        assert notices[-1].startswith("1 top-rated pool image(s) skipped")
        for sha in shas[:3]:
            store.image_path(store.get_image(sha)).unlink()
        with pytest.raises(UserError, match="no decisive judgements"):
            load_judgements(store)


@pytest.mark.parametrize("flag", ["--lr", "--kl-weight", "--guidance"])
def test_train_float_flags_refuse_nan_and_inf(flag, model_folder, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a circle\n")
    for bad in ("nan", "inf"):
        result = invoke("train", "--model", model_folder, "--prompts", prompts, flag, bad)
        assert result.exit_code == 2 and "is not a finite number" in result.output, result.output


def test_loop_consistency_refuses_nan(model_folder):
    result = invoke("loop", "--model", model_folder, "--prompts", "toy", "--oracle", "warm", "--consistency", "nan")
    assert result.exit_code == 2 and "is not a finite number" in result.output


def _lora(run):
    from safetensors.torch import load_file

    return load_file(str(run / "lora" / "pytorch_lora_weights.safetensors"))


def _same_lora(a, b) -> bool:
    import torch

    x, y = _lora(a), _lora(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _reward_version(seed: int) -> None:
    result = invoke("reward", "train", "--clip", "toy", "--ensemble", "2", "--steps", "30", "--seed", seed)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("algo", ["ddpo", "rwr"])
def test_train_reward_latest_end_to_end_and_a_resume_keeps_the_run_s_own_reward(algo, model_folder, config_file, tmp_path,
                                                                                 rlft_home):
    """`rlft train --reward latest` on a reward trained by `rlft reward train`; a resume after the person trained a
    new reward version ends where an uninterrupted run ends, on the version the run started with."""
    from reward_util import judged_store

    judged_store(n_images=12, n_judgements=30).close()
    _reward_version(0)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n")
    mix = ["--mix-top-rated", "2"] if algo == "rwr" else []
    train = ("train", "--reward", "latest", "--model", model_folder, "--prompts", prompts, "--algo", algo,
             "--config", config_file, *mix, "-q")
    full = invoke(*train, "--epochs", "2")  # t0001: uninterrupted
    assert full.exit_code == 0, full.output
    run = rlft_home / "runs" / "t0001"
    provenance = _provenance(run)
    assert provenance["reward"] == "r0001" and provenance["heldout_member"] == 1
    if algo == "rwr":
        assert provenance["mixed_images"] == 2 and len(provenance["mixed_image_sha256"]) == 2
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(isinstance(m["reward_mean"], float) and isinstance(m["heldout_reward_mean"], float) for m in metrics)
    assert metrics[0]["reward_mean"] != metrics[0]["heldout_reward_mean"]  # two different ensemble members

    assert invoke(*train, "--epochs", "1").exit_code == 0  # t0002, stopped after one epoch
    judged_store(n_images=4, n_judgements=30, seed=1).close()  # more judgements, then a new reward: r0002 is latest
    _reward_version(1)
    wrong = invoke("train", "--resume", "t0002", "--reward", "r0002")
    assert wrong.exit_code == 2 and wrong.output.strip().splitlines() == [
        "Error: cannot resume with a different --reward (r0002; the run trains on r0001); resume without --reward, "
        "or start a new run"]
    resumed = invoke("train", "--resume", "t0002", "--epochs", "2", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert _same_lora(run, rlft_home / "runs" / "t0002")
    if algo == "ddpo":  # the home moved: its own r0001 (the same creation time) stands in for the recorded folder
        _edit_provenance(run, reward_path="/elsewhere/rewards/r0001")
        assert invoke("train", "--resume", "t0001", "--epochs", "3", "-q").exit_code == 0
        _edit_provenance(run, reward_path="/elsewhere/rewards/r0001",  # another home's r0001: refused
                         reward_created_at="2020-01-01T00:00:00+00:00")
        gone = invoke("train", "--resume", "t0001", "--epochs", "4")
        assert gone.exit_code == 2 and gone.output.strip().splitlines() == [
            "Error: cannot resume: the reward version r0001 this run trains on (/elsewhere/rewards/r0001, created "
            "2020-01-01T00:00:00+00:00) is not here; start a new run"]
    if algo == "rwr":  # a run from before the images were recorded: told, and recorded from now on
        _edit_provenance(run, drop="mixed_image_sha256")
        older = invoke("train", "--resume", "t0001", "--epochs", "3", "-q")
        assert older.exit_code == 0 and "notice: this run did not record which rated images it mixed in" in older.output
        assert len(_provenance(run)["mixed_image_sha256"]) == 2


def test_dpo_resume_trains_on_the_judgements_the_run_started_from(model_folder, config_file, rlft_home):
    from prefs import open_store

    _judged_pool()
    train = ("train", "--model", model_folder, "--algo", "dpo", "--config", config_file, "-q")
    assert invoke(*train, "--epochs", "2").exit_code == 0  # t0001: uninterrupted
    assert invoke(*train, "--epochs", "1").exit_code == 0  # t0002: one epoch, then the person judges more
    with open_store() as store:
        red, blue = (im.sha256 for im in store.images())
        for _ in range(6):
            store.record_judgement(blue, red, "a")
    resumed = invoke("train", "--resume", "t0002", "--epochs", "2", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert _same_lora(rlft_home / "runs" / "t0001", rlft_home / "runs" / "t0002")
    provenance = _provenance(rlft_home / "runs" / "t0002")
    assert provenance["judgements"] == 2 and provenance["judgements_through"] == 2

    assert invoke(*train, "--epochs", "1").exit_code == 0  # t0003 starts from all 8
    with open_store() as store:
        store.undo_last()  # the newest: not one t0002 trained on, so it resumes; t0003 cannot
        assert invoke("train", "--resume", "t0002", "--epochs", "3", "-q").exit_code == 0
        refused = invoke("train", "--resume", "t0003", "--epochs", "2")
    assert refused.exit_code == 2 and refused.output.strip().splitlines() == [
        "Error: cannot resume: the store holds 7 of the 8 judgements this run started from (some were undone or "
        "deleted); start a new run"]
    wrong_rater = invoke("train", "--resume", "t0002", "--rater", "someone")
    assert wrong_rater.exit_code == 2 and "different --rater" in wrong_rater.output
    # A run from before `judgements_through` was recorded resumes on the first judgements it counted.
    _edit_provenance(rlft_home / "runs" / "t0001", drop="judgements_through")
    assert invoke("train", "--resume", "t0001", "--epochs", "3", "-q").exit_code == 0
    assert _provenance(rlft_home / "runs" / "t0001")["judgements_through"] == 2


def _provenance(run) -> dict:
    return json.loads((run / "config.json").read_text())["provenance"]


def _edit_provenance(run, drop: str | None = None, **values) -> None:
    """Rewrite a run's provenance as an older rlft or another home would have left it."""
    data = json.loads((run / "config.json").read_text())
    data["provenance"].pop(drop, None)
    data["provenance"].update(values)
    (run / "config.json").write_text(json.dumps(data))


def test_two_processes_train_one_run(model_folder, config_file, tmp_path, rlft_home):
    """`torchrun -m rlft train` with two processes (the launcher `accelerate launch` uses on several GPUs; gloo on
    the CPU): one run folder, config and `latest` written by the main process, each epoch's samples gathered."""
    import os
    import subprocess
    import sys

    from reward_util import judged_store

    judged_store(n_images=12, n_judgements=30).close()
    _reward_version(0)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n")
    config_file.write_text(json.dumps({**TINY, "epochs": 2, "sample": {**TINY["sample"], "batch_size": 2}}))
    # a process that dies in native code (a signal) prints its Python stack: the failure names where it stopped
    env = {**os.environ, "RLFT_HOME": str(rlft_home), "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}

    def launch(*more, config=config_file):
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "-m", "rlft", "train", "--model", str(model_folder), "--prompts", str(prompts),
                               "--config", str(config), "--device", "cpu", "-q", *map(str, more)],
                              env=env, capture_output=True, text=True, timeout=300)

    # The main process cannot make the folder: every process stops with its message, none waits for the others.
    (tmp_path / "a-file").write_text("")
    refused = launch("--out", tmp_path / "a-file" / "run")
    assert refused.returncode != 0 and _runs(rlft_home) == []
    assert refused.stderr.count("Error: --out") == 2 and "cannot make the run folder" in refused.stderr

    out = launch()
    assert out.returncode == 0, _processes_output(out.stderr)
    assert _runs(rlft_home) == ["t0001"] and out.stdout.count("run t0001 done") == 1
    assert (rlft_home / "runs" / "latest").resolve() == (rlft_home / "runs" / "t0001").resolve()
    metrics = [json.loads(l) for l in (rlft_home / "runs" / "t0001" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and [m["samples"] for m in metrics] == [4, 4]  # 2 per process
    assert sorted(p.name for p in (rlft_home / "runs" / "t0001" / "samples").glob("*.png")) == [
        "epoch_0000.png", "epoch_0001.png", "epoch_0002.png"]
    alone = invoke("train", "--resume", "latest", "--epochs", "3", "-q")  # on one process: it may, and says so
    assert alone.exit_code == 0 and "notice: this run started on 2 process(es) and resumes on 1" in alone.output

    # rwr with shared noise packs each process's samples into micro-batches by prompt: their counts differ when
    # one process drew a prompt twice, and the one with fewer pads (before, both waited for each other for good).
    rwr = tmp_path / "rwr.json"
    rwr.write_text(json.dumps({"epochs": 3, "algo": "rwr", "sample": {**TINY["sample"], "samples_per_epoch": 16,
                                                                     "images_per_prompt": 4},
                               "optim": {"train_batch_size": 3}, "rwr": {"shared_noise": True}}))
    out = launch(config=rwr)
    assert out.returncode == 0, _processes_output(out.stderr)
    metrics = [json.loads(l) for l in (rlft_home / "runs" / "t0002" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3] and sum(m["padded_batches"] for m in metrics) > 0


def test_loop_says_when_a_round_adds_no_new_images(model_folder, config_file, tmp_path, rlft_home):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a circle\n")
    config_file.write_text(json.dumps({**TINY, "algo": "dpo"}))
    assert invoke("generate", "--model", model_folder, "--prompts", prompts, "-n", "2", "--seed", "0").exit_code == 0
    result = invoke("loop", "--model", model_folder, "--prompts", prompts, "-n", "2", "--oracle", "big",
                    "--judgements", "1", "--config", config_file)  # no run yet: the base model, on the same seeds
    assert result.exit_code == 0, result.output
    assert "notice: round 1 added no new images" in result.output and _runs(rlft_home) == ["t0001"]
