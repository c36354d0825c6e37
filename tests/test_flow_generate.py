"""`rlft generate` on SD3 and FLUX: deterministic per seed, the A1111 chunk, the pool, sizes and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from prefs.pngmeta import parse_parameters, read_parameters
from rlft.cli import main
from rlft.models.tiny import tiny_flux_pipeline, tiny_sd3_pipeline

STEPS = 2


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen-flow")
    tiny_sd3_pipeline(seed=0).save_pretrained(root / "tiny-sd3")
    tiny_flux_pipeline(seed=0).save_pretrained(root / "tiny-flux")
    return root


def invoke(*args):
    return CliRunner().invoke(main, ["generate", *map(str, args)])


def records(result):
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def pixels(path):
    return np.asarray(Image.open(path), dtype=int)


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-flux"])
def test_generate_is_deterministic_per_seed_writes_the_a1111_chunk_and_pools(models, name, rlft_home, tmp_path):
    from diffusers import DiffusionPipeline

    flux = name == "tiny-flux"
    negative = [] if flux else ["--negative-prompt", "blurry, dark"]
    args = ["--model", models / name, "-p", "a red circle", "-n", 2, "--seed", 5, "--steps", STEPS,
            "--guidance", 4.5, *negative, "--json"]
    a = records(invoke(*args, "--out", tmp_path / "a"))
    b = records(invoke(*args, "--out", tmp_path / "b", "--no-pool"))
    c = records(invoke(*args, "--out", tmp_path / "c", "--no-pool", "--batch-size", 1))
    assert [r["seed"] for r in a] == [5, 6]
    for x, y, z in zip(a, b, c, strict=True):
        assert (pixels(x["path"]) == pixels(y["path"])).all()  # same settings, same pixels
        # another batch size: the same noise and schedule; BLAS may round a matmul of another batch in the last
        # bit (the CLIP projections do), which can move a pixel by one level
        assert np.abs(pixels(x["path"]) - pixels(z["path"])).max() <= 1
    assert not (pixels(a[0]["path"]) == pixels(a[1]["path"])).all()
    assert Image.open(a[0]["path"]).size == (64, 64)  # the model's own size
    # the plain pipeline with the same seed's CPU noise draws the same image (one at a time, as --batch-size 1)
    pipe = DiffusionPipeline.from_pretrained(models / name, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {} if flux else {"negative_prompt": "blurry, dark"}
    plain = pipe("a red circle", num_inference_steps=STEPS, guidance_scale=4.5, height=64, width=64,
                 generator=torch.Generator().manual_seed(6), output_type="np", **kwargs).images[0]
    assert ((plain * 255).round().astype(int) == pixels(c[1]["path"])).all()
    settings = parse_parameters(read_parameters(a[0]["path"]))["settings"]
    assert (settings["Steps"], settings["Sampler"], settings["Seed"], settings["Size"], settings["Model"]) == (
        "2", "Euler", "5", "64x64", name)
    assert settings["Model hash"] == a[0]["model_hash"] and len(a[0]["model_hash"]) == 10
    if flux:  # FLUX.1-dev's guidance is distilled: Forge's fields
        assert (settings["CFG scale"], settings["Distilled CFG Scale"]) == ("1.0", "4.5")
    else:
        assert settings["CFG scale"] == "4.5" and "Distilled CFG Scale" not in settings
    from prefs import open_store

    with open_store() as store:
        rows = {row.sha256: row for row in store.images()}
    assert {r["sha256"] for r in a} == set(rows)
    row = rows[a[1]["sha256"]]
    assert (row.prompt, row.seed, row.origin, row.params["sampler"]) == ("a red circle", 6, "generated", "Euler")


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-flux"])
def test_non_square_sizes(models, name, tmp_path):
    [r] = records(invoke("--model", models / name, "-p", "a cat", "--seed", 1, "--steps", 1, "--width", 96,
                         "--height", 48, "--json", "--no-pool", "--out", tmp_path))
    assert Image.open(r["path"]).size == (96, 48)


@pytest.mark.parametrize("name,args,message", [
    ("tiny-sd3", ["--width", 72], "multiple of 16 for SD3"),
    ("tiny-flux", ["--height", 40], "multiple of 16 for FLUX"),
    ("tiny-flux", ["--negative-prompt", "blurry"], "FLUX models take no negative prompt"),
    ("tiny-sd3", ["--scheduler", "dpm++"], "does not run SD3 models; choose one of: flow_euler"),
    ("tiny-flux", ["--aesthetic", "missing.pt"], "FLUX models are not supported by it"),
])
def test_bad_input_is_one_line_and_writes_nothing(models, name, args, message, tmp_path, rlft_home):
    out = tmp_path / "out"
    result = invoke("--model", models / name, "-p", "a cat", "--seed", 1, "--steps", 1, "--out", out, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_flow_sampler_on_a_unet_model_is_refused(tmp_path):
    from prefs.errors import UserError
    from rlft.models.schedulers import set_scheduler
    from rlft.models.tiny import tiny_pipeline

    with pytest.raises(UserError, match="does not run SD 1.x models"):
        set_scheduler(tiny_pipeline(), "flow_euler")
    pipe = tiny_sd3_pipeline()
    assert set_scheduler(pipe, "flow_euler").scheduler.config.shift == 3.0  # the model's schedule is kept


def test_train_takes_grpo_for_flow_models_and_refuses_the_others_in_one_line(models, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    result = CliRunner().invoke(main, ["train", "--model", str(models / "tiny-flux"), "--prompts", str(prompts),
                                       "--algo", "ddpo"])
    assert result.exit_code == 2, result.output
    assert "is FLUX, which trains with --algo grpo (Flow-GRPO), not ddpo" in result.output
    assert len(result.output.strip().splitlines()) == 1
    from rlft.train.configure import build_config

    assert build_config(str(models / "tiny-sd3")).algo == "grpo"  # the default for a flow model
    assert build_config("toy").algo == "ddpo"
