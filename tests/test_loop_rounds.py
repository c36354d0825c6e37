"""`rlft loop` rounds compound: each round generates with the latest LoRA, the simulated rater judges that round's
images with the same noise as round 1, the reward is refitted on every judgement so far and the round's run trains
on that latest reward."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rlft.cli import main
from rlft.models.tiny import tiny_pipeline

TINY = {"epochs": 1, "sample": {"steps": 2, "samples_per_epoch": 4, "batch_size": 4, "grid_prompts": 1, "grid_seeds": 2},
        "optim": {"train_batch_size": 4}}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipeline(0).save_pretrained(path)
    return path


def _loop(model_folder, tmp_path, *extra):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    return CliRunner().invoke(main, [str(a) for a in (
        "loop", "--model", model_folder, "--prompts", prompts, "--rounds", "2", "-n", "2", "--oracle", "big",
        "--judgements", "5", "--consistency", "0.9", "--strategy", "uncertain:0.7,balanced:0.3", "--algo", "ddpo",
        "--config", config, *extra)], catch_exceptions=False)


def _image_loras(store) -> dict[str, str | None]:
    return {im.sha256: im.lora for im in store.images()}


def test_each_round_judges_its_own_images_and_trains_on_the_latest_reward(model_folder, tmp_path, rlft_home):
    from prefs import open_store

    result = _loop(model_folder, tmp_path)
    assert result.exit_code == 0, result.output
    runs, rewards = rlft_home / "runs", rlft_home / "rewards"
    assert sorted(p.name for p in runs.glob("t*")) == ["t0001", "t0002"]
    assert sorted(p.name for p in rewards.glob("r[0-9]*")) == ["r0001", "r0002"]
    # every round's run trains on the reward fitted that round, and that reward on every judgement so far
    for run, reward, judged in (("t0001", "r0001", 5), ("t0002", "r0002", 10)):
        provenance = json.loads((runs / run / "config.json").read_text())["provenance"]
        assert provenance["reward"] == reward
        assert json.loads((rewards / reward / "reward.json").read_text())["n_judgements"] == judged
    with open_store() as store:
        lora = _image_loras(store)
        assert sorted(lora.values(), key=str) == [None] * 4 + ["t0001"] * 4  # round 2 generated with round 1's LoRA
        judgements = list(store.judgements(rater="sim-big"))
    assert len(judgements) == 10
    # round 1 judged the base model's images, round 2 only the images round 1's LoRA made
    assert all(lora[j.image_a] is None and lora[j.image_b] is None for j in judgements[:5])
    assert all(lora[j.image_a] == "t0001" and lora[j.image_b] == "t0001" for j in judgements[5:])
    # one rater throughout: round 2 keeps the noise round 1 calibrated
    assert "at calibrated noise T=" in result.output and "the rater keeps round 1's calibrated noise T=" in result.output
    assert "--among t0001" in result.output and "judged 5 pairs among the images of" in result.output
