"""`rlft train` on a tiny SD3 folder: grpo by default for a flow model, a reward on a real (open_clip) CLIP, the run's
LoRA applied by `rlft generate --lora`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from train_helpers import PROMPTS

from rlft.models.tiny import tiny_sd3_pipeline


@pytest.fixture(scope="module")
def flow_home(tmp_path_factory):
    """A tiny SD3 diffusers folder, a prompt file, a small run config and a reward version on a tiny real
    (open_clip) CLIP, made in a home of their own (`--reward` names its folder)."""
    from reward_util import judged_store

    from rlft.cli import main
    from rlft.models.tiny import tiny_clip_folder

    root = tmp_path_factory.mktemp("flow-train")
    tiny_sd3_pipeline(0).save_pretrained(root / "model")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    tiny = {"epochs": 1, "sample": {"steps": 2, "samples_per_epoch": 4, "batch_size": 4, "grid_prompts": 1,
                                    "grid_seeds": 2, "guidance": 4.0},
            "optim": {"train_batch_size": 4, "learning_rate": 1e-2}, "lora": {"init_std": 0.05}}
    (root / "tiny.json").write_text(json.dumps(tiny))
    saved = os.environ.get("RLFT_HOME")
    os.environ["RLFT_HOME"] = str(root / "home")
    try:
        judged_store(n_images=12, n_judgements=30).close()
        clip = tiny_clip_folder(root / "clip")
        result = CliRunner().invoke(main, ["reward", "train", "--clip", str(clip), "--ensemble", "2", "--steps", "20"])
        assert result.exit_code == 0, result.output
    finally:
        if saved is None:
            os.environ.pop("RLFT_HOME", None)
        else:
            os.environ["RLFT_HOME"] = saved
    return {"root": root, "model": root / "model", "prompts": root / "prompts.txt", "config": root / "tiny.json",
            "reward": root / "home" / "rewards" / "r0001"}


def test_cli_run_on_sd3_and_its_lora_in_generate(flow_home, rlft_home, tmp_path):
    from rlft.cli import main

    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--model", str(flow_home["model"]), "--prompts", str(flow_home["prompts"]),
                                       "--config", str(flow_home["config"]), "--reward", str(flow_home["reward"]),
                                       "--out", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["algo"] == "grpo" and config["config"]["grpo"]["noise_level"] == 0.7
    [metrics] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics["algo"] == "grpo" and metrics["loss"] is not None
    assert not (run / "lora_kohya.safetensors").exists()
    args = ["generate", "--model", str(flow_home["model"]), "-p", PROMPTS[0], "--seed", "3", "--steps", "2",
            "--guidance", "4.0", "--json", "--no-pool", "--batch-size", "1"]
    tuned = CliRunner().invoke(main, [*args, "--lora", str(run), "--out", str(tmp_path / "a")])
    base = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b")])
    assert tuned.exit_code == 0 and base.exit_code == 0, tuned.output + base.output
    a, b = (np.asarray(Image.open(json.loads(r.stdout)["path"]), dtype=int) for r in (tuned, base))
    assert np.abs(a - b).max() > 0  # the run's LoRA is applied
