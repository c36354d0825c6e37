"""Starting and resuming a run through the library (`rlft.train.session`): the reward version is looked up, read and
checked once, and loaded from the folder that was checked; the train command only parses, calls and prints."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from train_helpers import invoke

ROOT = Path(__file__).resolve().parents[1]
TINY = {"epochs": 1, "sample": {"steps": 2, "samples_per_epoch": 4, "batch_size": 4, "grid_prompts": 1, "grid_seeds": 2},
        "optim": {"train_batch_size": 4}}


@pytest.fixture
def judged_home(tmp_path, rlft_home):
    """A home with judgements, reward version r0001 (toy CLIP) and a prompt file; returns the prompt file."""
    from reward_util import judged_store

    judged_store(n_images=12, n_judgements=30).close()
    result = invoke("reward", "train", "--clip", "toy", "--ensemble", "2", "--steps", "30", "--seed", "0")
    assert result.exit_code == 0, result.output
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n")
    return prompts


@pytest.fixture
def counted(monkeypatch):
    """Counts of reward look-ups (any spec: latest, an id, a folder), `reward.json` reads per version folder, and
    compatibility checks."""
    from reward import versions
    from rlft.train import rewards

    counts = {"lookups": 0, "reads": {}, "checks": 0}
    locate, read_meta, check = versions._locate, versions.read_meta, rewards.check_compatible

    def counting_locate(spec, home=None):
        counts["lookups"] += 1
        return locate(spec, home)

    def counting_read(folder):
        counts["reads"][Path(folder).name] = counts["reads"].get(Path(folder).name, 0) + 1
        return read_meta(folder)

    def counting_check(*args, **kwargs):
        counts["checks"] += 1
        return check(*args, **kwargs)

    monkeypatch.setattr(versions, "_locate", counting_locate)
    monkeypatch.setattr(versions, "read_meta", counting_read)
    monkeypatch.setattr(rewards, "check_compatible", counting_check)
    return counts


def _provenance(run) -> dict:
    return json.loads((run / "config.json").read_text())["provenance"]


def test_reward_looked_up_read_and_checked_once_on_a_fresh_run_and_on_a_resume(model_folder, judged_home, tmp_path,
                                                                                rlft_home, counted):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    result = invoke("train", "--reward", "r0001", "--model", model_folder, "--prompts", judged_home, "--config", config,
                    "-q")
    assert result.exit_code == 0, result.output
    assert counted == {"lookups": 1, "reads": {"r0001": 1}, "checks": 1}
    assert _provenance(rlft_home / "runs" / "t0001")["reward"] == "r0001"

    counted.update(lookups=0, reads={}, checks=0)
    result = invoke("train", "--resume", "latest", "--epochs", "2", "-q")
    assert result.exit_code == 0, result.output
    assert counted == {"lookups": 1, "reads": {"r0001": 1}, "checks": 1}

    counted.update(lookups=0, reads={}, checks=0)  # `latest`: the one listing of the versions is the one read
    result = invoke("train", "--reward", "latest", "--model", model_folder, "--prompts", judged_home, "--config", config,
                    "-q")
    assert result.exit_code == 0, result.output
    assert counted == {"lookups": 1, "reads": {"r0001": 1}, "checks": 1}


def test_latest_moving_between_the_check_and_the_load_does_not_change_the_version_trained(
        model_folder, judged_home, rlft_home, monkeypatch):
    from reward import versions
    from rlft.train import rewards
    from rlft.train.configure import build_config
    from rlft.train.session import start_run

    check = rewards.check_compatible

    def check_then_publish_another(*args, **kwargs):  # a `rlft reward train` finishing at the worst moment
        check(*args, **kwargs)
        r1 = versions.resolve("r0001")
        versions.write_version(versions.read_meta(r1),
                               lambda path: shutil.copy(r1 / versions.WEIGHTS_NAME, path))

    monkeypatch.setattr(rewards, "check_compatible", check_then_publish_another)
    loaded = []
    import reward.model

    load = reward.model.load
    monkeypatch.setattr(reward.model, "load", lambda spec, **kw: loaded.append(spec) or load(spec, **kw))
    notices = []
    done = start_run(build_config(model_folder, TINY), model=str(model_folder), prompts_source=str(judged_home),
                     reward="latest", notice=notices.append)
    assert versions.latest().name == "r0002"  # `latest` moved
    assert [Path(getattr(spec, "folder", spec)).name for spec in loaded] == ["r0001"]  # the folder that was checked
    provenance = _provenance(done.run_dir)
    assert (provenance["reward"], Path(provenance["reward_path"]).name, provenance["reward_spec"]) == (
        "r0001", "r0001", "latest")
    assert done.main_process and notices == []


def test_a_config_file_that_sets_dpo_rater_is_refused_naming_the_key(model_folder, tmp_path, rlft_home):
    for values in ({"dpo": {"rater": "alice"}}, {"dpo.rater": "alice"}):
        config = tmp_path / "rater.json"
        config.write_text(json.dumps({**TINY, **values}))
        result = invoke("train", "--model", model_folder, "--algo", "dpo", "--config", config)
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [
            "Error: unknown config field dpo.rater (never read; `rlft train --rater NAME` picks whose judgements dpo "
            "trains on); DPOConfig has: beta, min_timestep, pairs_per_epoch"]
    assert not (rlft_home / "runs").is_dir() or not list((rlft_home / "runs").glob("t*"))


def test_the_train_command_only_parses_calls_and_prints():
    """No function in rlft/cli/train.py runs past 60 lines, and nothing outside a module imports its private
    names from the train command or the training library."""
    tree = ast.parse((ROOT / "rlft" / "cli" / "train.py").read_text(encoding="utf-8"))
    lengths = {n.name: n.end_lineno - n.lineno + 1 for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert max(lengths.values()) <= 60, lengths
    private = []
    for path in [*ROOT.glob("rlft/**/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("tests/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("rlft.cli.train", "rlft.train")):
                private += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_")]
    assert not private, private
