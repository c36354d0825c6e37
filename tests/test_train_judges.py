"""Reward expressions (`--reward "latest + 0.3 * pickscore"`), independent judges (`rlft train --judge`) and
`rlft judge RUN`, on the tiny model with rewards that mean something there: JPEG sizes and CLIPScore on the toy
CLIP."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import invoke

from prefs.errors import UserError
from reward.combine import Term, parse, text
from rlft.train.rewards import combined_scores

TINY = {"epochs": 1, "sample": {"steps": 2, "samples_per_epoch": 4, "batch_size": 4, "grid_prompts": 2, "grid_seeds": 2,
                                "images_per_prompt": 2},
        "optim": {"train_batch_size": 4}}


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a red circle\na blue square\n")
    return path


def _cells(png, rows, cols):
    arr = np.asarray(Image.open(png).convert("RGB"))
    h, w = arr.shape[0] // rows, arr.shape[1] // cols
    return [arr[r * h:(r + 1) * h, c * w:(c + 1) * w] for r in range(rows) for c in range(cols)]


def _jpeg_kb(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return len(buf.getvalue()) / 1000


# --- expressions ------------------------------------------------------------------------------------------------
def test_expressions_parse_to_weighted_terms_and_back():
    assert parse("latest + 0.3 * pickscore") == [Term(1.0, "latest"), Term(0.3, "pickscore")]
    assert parse("latest+pickscore*0.3") == [Term(1.0, "latest"), Term(0.3, "pickscore")]
    assert parse("-0.5 * jpeg-compressibility - 2 * r0003 + hpsv2=/w/HPS.pt,arch=ViT-H-14") == [
        Term(-0.5, "jpeg-compressibility"), Term(-2.0, "r0003"), Term(1.0, "hpsv2=/w/HPS.pt,arch=ViT-H-14")]
    for source in ("latest + 0.3 * pickscore", "-0.5 * jpeg-compressibility - 2 * r0003", "clipscore=toy"):
        assert text(parse(source)) == source and parse(text(parse(source))) == parse(source)


@pytest.mark.parametrize(("source", "message"), [
    ("", "empty --reward"),
    ("latest +", "a '+' or '-' without a term"),
    ("0.3 * * pickscore", "more than one '*'"),
    ("0.3 * 2", "needs one number and one reward"),
    ("latest * pickscore", "needs one number and one reward"),
    ("3", "is a number, not a reward"),
    ("nan * latest", "needs one number and one reward"),
])
def test_malformed_expressions_are_one_line_errors(source, message):
    with pytest.raises(UserError) as e:
        parse(source)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_weighted_sum_is_its_terms_normalised_per_prompt():
    prompts = ["a", "a", "a", "b", "b", "c"]
    s1 = np.array([1.0, 2.0, 6.0, 3.0, 5.0, 7.0])
    s2 = np.array([-10.0, 0.0, 40.0, 2.0, 2.0, 1.0])

    def norm(s, idx):
        g = s[idx]
        return (g - g.mean()) / (g.std() + 1e-6)

    want = np.zeros(6)
    for idx in ([0, 1, 2], [3, 4], [5]):
        want[idx] = 1.0 * norm(s1, idx) + 0.3 * norm(s2, idx)
    got = combined_scores(prompts, [s1, s2], [1.0, 0.3])
    assert got == pytest.approx(want)
    assert got[5] == 0  # a prompt's lone sample
    assert got[3:5] == pytest.approx([-1.0, 1.0], abs=1e-5)  # s2 ties within "b": only s1 moves it
    assert combined_scores(prompts, [s1], [0.5]) == pytest.approx(0.5 * s1)  # one term: scaled, not normalised


# --- rlft train --reward EXPR --judge ... --------------------------------------------------------------------------
def test_train_on_a_weighted_sum_with_judges_records_them_and_resumes_on_them(model_folder, config_file, prompts,
                                                                              rlft_home):
    reward = "jpeg-compressibility+0.5*clipscore=toy"
    result = invoke("train", "--model", model_folder, "--prompts", prompts, "--config", config_file, "--reward", reward,
                    "--judge", "jpeg-incompressibility", "--judge", "clipscore=toy", "-q")
    assert result.exit_code == 0, result.output
    run = rlft_home / "runs" / "t0001"
    provenance = json.loads((run / "config.json").read_text())["provenance"]
    assert provenance["reward"] == "jpeg-compressibility + 0.5 * clipscore=toy"
    assert [(t["label"], t["weight"]) for t in provenance["reward_terms"]] == [("jpeg-compressibility", 1.0),
                                                                               ("clipscore", 0.5)]
    assert provenance["reward_terms"][1]["builtin"]["kind"] == "clipscore"
    assert [j["label"] for j in provenance["judges"]] == ["jpeg-incompressibility", "clipscore"]
    (m,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"judge/jpeg-incompressibility", "judge/clipscore", "reward/jpeg-compressibility", "reward/clipscore",
            "grid_reward/jpeg-compressibility", "grid_reward/clipscore"} <= set(m)
    assert abs(m["reward_mean"]) < 1e-6  # the normalised sum; its terms are reported raw
    assert m["reward/jpeg-compressibility"] < 0 <= m["reward/clipscore"]
    # the judge scores the grid itself: the mean JPEG size of the PNG grid's cells, encoded here
    sizes = [_jpeg_kb(c) for c in _cells(run / "samples" / "epoch_0001.png", 2, 2)]
    assert m["judge/jpeg-incompressibility"] == pytest.approx(np.mean(sizes), abs=1e-5)
    assert m["judge/jpeg-incompressibility"] == pytest.approx(-m["grid_reward/jpeg-compressibility"])
    assert m["judge/clipscore"] == pytest.approx(m["grid_reward/clipscore"])
    grid = json.loads((run / "samples" / "grid.json").read_text())
    assert set(grid["scores"]) == {"0", "1"} and grid["scores"]["1"]["judge/clipscore"] == m["judge/clipscore"]
    assert "judge/jpeg-incompressibility" in result.output  # the epoch's summary line

    wrong = invoke("train", "--resume", "latest", "--reward", "jpeg-compressibility", "--epochs", "2")
    assert wrong.exit_code == 2 and len(wrong.output.strip().splitlines()) == 1
    assert "cannot resume with a different --reward" in wrong.output
    same = invoke("train", "--resume", "latest", "--reward", "jpeg-compressibility + 0.5*clipscore=toy", "--epochs", "2",
                  "-q")
    assert same.exit_code == 0, same.output
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["epoch"] == 2 and {"judge/jpeg-incompressibility", "judge/clipscore", "reward/clipscore"} <= set(last)

    # rlft judge: the same noise as the grid, so base = the grid at epoch 0 and tuned = the grid at the last epoch
    report = invoke("judge", "latest", "--json")
    assert report.exit_code == 0, report.output
    data = json.loads(report.output.strip().splitlines()[-1])
    assert data["pairs"] == 4 and [r["judge"] for r in data["judges"]] == ["jpeg-incompressibility", "clipscore"]
    grid = json.loads((run / "samples" / "grid.json").read_text())
    for row in data["judges"]:
        key = f"judge/{row['judge']}"
        assert row["base"] == pytest.approx(grid["scores"]["0"][key], abs=1e-4)
        assert row["tuned"] == pytest.approx(grid["scores"]["2"][key], abs=1e-4)
        assert row["diff"] == pytest.approx(row["tuned"] - row["base"], abs=1e-9)
        assert row["ci"][0] <= row["diff"] <= row["ci"][1]
        assert row["wins"] + row["ties"] + row["losses"] == 4
        assert row["win_rate"] == pytest.approx((row["wins"] + 0.5 * row["ties"]) / 4)
    printed = invoke("judge", "t0001", "--judge", "jpeg-compressibility")
    assert printed.exit_code == 0, printed.output
    lines = printed.output.strip().splitlines()
    assert lines[-3].startswith("t0001 vs base") and "95% interval" in lines[-2]
    assert lines[-1].split()[0] == "jpeg-compressibility" and lines[-1].endswith("%")


def test_a_lone_builtin_trains_on_its_raw_score_and_judges_reach_the_tracker(model_folder, config_file, prompts,
                                                                             rlft_home):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = invoke("train", "--model", model_folder, "--prompts", prompts, "--config", config_file,
                    "--reward", "jpeg-incompressibility", "--judge", "jpeg-compressibility", "--log-with", "tensorboard",
                    "-q")
    assert result.exit_code == 0, result.output
    run = rlft_home / "runs" / "t0001"
    (m,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith(("reward/", "grid_reward/")) for k in m)
    sizes = [_jpeg_kb(c) for c in _cells(run / "samples" / "epoch_0001.png", 2, 2)]
    assert m["grid_reward"] == pytest.approx(np.mean(sizes), abs=1e-5) and m["reward_mean"] > 0
    assert m["judge/jpeg-compressibility"] == pytest.approx(-m["grid_reward"])
    events = EventAccumulator(str(run / "logs" / "rlft"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    grid = json.loads((run / "samples" / "grid.json").read_text())["scores"]
    logged = events.Scalars("judge/jpeg-compressibility")
    assert [e.step for e in logged] == [0, 1]  # the base model's grid at step 0
    assert [e.value for e in logged] == pytest.approx([grid["0"]["judge/jpeg-compressibility"], m["judge/jpeg-compressibility"]])
    captions = [e.step for e in events.Tensors("samples/text_summary")]
    assert captions == [0, 1]
    provenance = json.loads((run / "config.json").read_text())["provenance"]
    assert provenance["reward"] == "jpeg-incompressibility" and provenance["heldout_member"] is None
    assert provenance["reward_terms"][0]["builtin"]["source"] == "kvablack/ddpo-pytorch rewards.py"


def test_a_sum_with_a_reward_version_holds_its_last_member_out(model_folder, config_file, prompts, rlft_home):
    from reward_util import judged_store

    judged_store(n_images=12, n_judgements=30).close()
    assert invoke("reward", "train", "--clip", "toy", "--ensemble", "2", "--steps", "30").exit_code == 0
    result = invoke("train", "--model", model_folder, "--prompts", prompts, "--config", config_file,
                    "--reward", "latest + 0.3 * jpeg-compressibility", "-q")
    assert result.exit_code == 0, result.output
    run = rlft_home / "runs" / "t0001"
    provenance = json.loads((run / "config.json").read_text())["provenance"]
    assert provenance["reward"] == "latest + 0.3 * jpeg-compressibility" and provenance["heldout_member"] == 1
    version = provenance["reward_terms"][0]
    assert version["reward"] == "r0001" and version["label"] == "r0001" and version["members"] == 2
    (m,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert isinstance(m["heldout_reward_mean"], float) and {"reward/r0001", "reward/jpeg-compressibility"} <= set(m)


@pytest.mark.parametrize(("args", "message"), [
    (("--reward", "0.3 * * jpeg-compressibility"), "more than one '*'"),
    (("--reward", "pickscore"), "pickscore judges real images"),
    (("--reward", "jpeg-compressibility", "--judge", "hpsv2=/nowhere.pt"), "hpsv2 judges real images with HPS v2's"),
    (("--reward", "jpeg-compressibility", "--judge", "laion-aesthetic=/nowhere.pth,clip=toy"),
     "no LAION aesthetic head file at /nowhere.pth"),
    (("--reward", "jpeg-compressibility", "--judge", "nope"), "unknown reward 'nope'"),
    (("--reward", "jpeg-compressibility + clipscore=toy,x=1"), "clipscore takes no option 'x'"),
])
def test_bad_reward_and_judge_specs_exit_2_with_one_line(args, message, model_folder, config_file, prompts, rlft_home):
    result = invoke("train", "--model", model_folder, "--prompts", prompts, "--config", config_file, *args, "-q")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert message in result.output
    assert not (rlft_home / "runs").is_dir() or not list((rlft_home / "runs").glob("t*"))


def test_judge_needs_a_judge_and_a_run(rlft_home):
    none = invoke("judge", "latest")
    assert none.exit_code == 2 and len(none.output.strip().splitlines()) == 1


def test_builtin_reward_fn_shape():
    from reward.builtins import load_builtin

    fn = load_builtin("jpeg-incompressibility")
    scores, info = fn(torch.zeros(2, 3, 16, 16), ["a", "b"], {})
    assert scores.shape == (2,) and info == {"reward": "jpeg-incompressibility"}
