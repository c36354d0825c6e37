"""`rlft generate` and `rlft.models.generate`: determinism, batch invariance, A1111 PNG parameters, the pool, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from prefs.errors import NotFoundError, UserError
from prefs.pngmeta import parse_parameters, read_parameters
from rlft import load_pipeline
from rlft.cli import main
from rlft.models.generate import GenerateSettings, generate
from rlft.models.single_file import save_single_file
from rlft.models.tiny import tiny_pipeline
from rlft.prompts import PROMPT_SETS, load_prompts, register_prompt_set

STEPS = 2  # tests check behaviour, not quality


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen") / "tiny-sd"
    pipe = tiny_pipeline(seed=0)
    pipe.save_pretrained(folder)
    save_single_file(pipe, folder.parent / "tiny-sd.safetensors")
    return folder


@pytest.fixture(scope="module")
def pipe(model_folder):
    return load_pipeline(model_folder)


def pixels(records):
    return [np.asarray(Image.open(r.path)) for r in records]


def test_same_settings_same_pixels(pipe, tmp_path):
    a = generate(pipe, ["a cat", "a dog"], n=2, seed=7, steps=STEPS, out_dir=tmp_path / "a", progress=False)
    b = generate(pipe, ["a cat", "a dog"], n=2, seed=7, steps=STEPS, out_dir=tmp_path / "b", progress=False)
    assert [r.seed for r in a] == [7, 8, 9, 10]
    assert [r.prompt for r in a] == ["a cat", "a cat", "a dog", "a dog"]
    assert all((x == y).all() for x, y in zip(pixels(a), pixels(b), strict=False))
    images = pixels(a)
    assert not (images[0] == images[1]).all()  # a different seed is a different image


def assert_same_up_to_rounding(a, b):
    # Batched float kernels sum in another order than single ones (~1e-6), which can flip the uint8 rounding
    # of a rare pixel by one level; the noise, and so the image, is the same.
    for x, y in zip(pixels(a), pixels(b), strict=False):
        diff = np.abs(x.astype(int) - y.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_batch_size_does_not_change_the_images(pipe, tmp_path):
    one = generate(pipe, ["a cat", "a dog"], n=3, seed=3, steps=STEPS, batch_size=1, out_dir=tmp_path / "1", progress=False)
    four = generate(pipe, ["a cat", "a dog"], n=3, seed=3, steps=STEPS, batch_size=4, out_dir=tmp_path / "4", progress=False)
    assert [r.seed for r in one] == [r.seed for r in four]
    assert_same_up_to_rounding(one, four)


def test_an_image_can_be_remade_from_its_recorded_seed(pipe, tmp_path):
    run = generate(pipe, ["a cat", "a dog"], n=2, seed=100, steps=STEPS, out_dir=tmp_path / "run", progress=False)
    third = run[2]
    again = generate(pipe, [third.prompt], n=1, seed=third.seed, steps=STEPS, out_dir=tmp_path / "again", progress=False)
    assert_same_up_to_rounding([third], again)


def test_stochastic_sampler_is_deterministic_and_batch_invariant(model_folder, tmp_path):
    pipe = load_pipeline(model_folder, scheduler="euler_a")
    a = generate(pipe, ["x", "y", "z"], seed=1, steps=STEPS, batch_size=1, out_dir=tmp_path / "a", progress=False)
    b = generate(pipe, ["x", "y", "z"], seed=1, steps=STEPS, batch_size=3, out_dir=tmp_path / "b", progress=False)
    assert_same_up_to_rounding(a, b)
    assert a[0].params["sampler"] == "Euler a"


def test_png_parameters_round_trip(pipe, tmp_path):
    prompt = "a “quoted”, colon: café\nsecond line"
    [record] = generate(pipe, [prompt], seed=42, steps=STEPS, guidance=3.5, negative_prompt="blurry, low: quality",
                        out_dir=tmp_path, progress=False, lora="my-lora")
    parsed = parse_parameters(read_parameters(record.path))
    assert parsed["prompt"] == prompt and parsed["negative_prompt"] == "blurry, low: quality"
    s = parsed["settings"]
    assert (s["Steps"], s["Sampler"], s["CFG scale"], s["Seed"], s["Size"], s["Model"], s["Lora"]) == (
        "2", "DDIM", "3.5", "42", "64x64", "tiny-sd", "my-lora")
    assert record.path.name == "00000-42.png" and record.params == {
        "steps": 2, "sampler": "DDIM", "cfg_scale": 3.5, "width": 64, "height": 64}


def test_numbering_continues_in_a_folder(pipe, tmp_path):
    generate(pipe, ["a"], seed=5, steps=1, out_dir=tmp_path, progress=False)
    [second] = generate(pipe, ["a"], seed=5, steps=1, out_dir=tmp_path, progress=False)
    assert second.path.name == "00001-5.png"


def test_size_override(pipe, tmp_path):
    [record] = generate(pipe, ["a"], seed=0, steps=1, width=32, height=48, out_dir=tmp_path, progress=False)
    assert Image.open(record.path).size == (32, 48)


def test_random_seed_is_recorded(pipe, tmp_path):
    [record] = generate(pipe, ["a"], steps=1, out_dir=tmp_path, progress=False)
    assert 0 <= record.seed < 2**32 and f"Seed: {record.seed}," in read_parameters(record.path)


def test_images_go_to_the_pool(pipe, tmp_path):
    from prefs import open_store

    with open_store() as store:
        records = generate(pipe, ["a cat", "a dog"], seed=9, steps=STEPS, out_dir=tmp_path, store=store,
                           progress=False, model="tiny-sd")
        rows = {row.sha256: row for row in store.images()}
    assert len(rows) == 2
    for r in records:
        row = rows[r.sha256]
        assert (row.prompt, row.seed, row.model, row.origin) == (r.prompt, r.seed, "tiny-sd", "generated")
        assert row.params["steps"] == STEPS


@pytest.mark.parametrize("bad", [dict(n=0), dict(steps=0), dict(batch_size=0), dict(width=65), dict(height=0),
                                 dict(guidance=-1.0), dict(seed=-5), dict(seed=2**40)])
def test_settings_validation(bad):
    with pytest.raises(UserError):
        GenerateSettings(**bad)


# -- prompt sets ---------------------------------------------------------------------------------------


def test_prompt_text_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# my prompts\na cat\n\n  a dog  \n#skip\n", encoding="utf-8")
    assert load_prompts(path) == ["a cat", "a dog"]


@pytest.mark.parametrize("name,count,first", [
    ("parti", 1632, "bond"), ("imagereward", 100, "a concept art of a vehicle, cyberpunk"),
    ("ddpo-animals", 45, "cat"), ("ddpo-activities", 135, "a cat washing the dishes"),
    ("ddpo-imagenet", 1000, "tench, Tinca tinca"), ("imagereward-refl", 10000, None),
])
def test_named_prompt_sets(name, count, first):
    from rlft.prompts import data_dir

    if not data_dir().is_dir():
        pytest.skip(f"shared prompt data not found at {data_dir()}")
    prompts = load_prompts(name)
    assert len(prompts) == count and (first is None or prompts[0] == first)


def test_prompt_set_errors(tmp_path, monkeypatch):
    with pytest.raises(NotFoundError, match="parti"):
        load_prompts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(UserError, match="no prompts"):
        load_prompts(tmp_path / "empty.txt")
    monkeypatch.setenv("RLFT_DATA_DIR", str(tmp_path))
    with pytest.raises(NotFoundError, match="RLFT_DATA_DIR"):
        load_prompts("parti")


def test_registering_a_prompt_set(monkeypatch):
    monkeypatch.setitem(PROMPT_SETS, "unit", PROMPT_SETS["parti"])  # restored after the test
    register_prompt_set("unit", lambda: ["a red circle"], "a test set")
    assert load_prompts("unit") == ["a red circle"]


# -- the CLI -------------------------------------------------------------------------------------------


def invoke(*args):
    return CliRunner().invoke(main, ["generate", *map(str, args)])


def test_cli_generates_json_lines(model_folder, rlft_home, tmp_path):
    out = tmp_path / "out"
    result = invoke("--model", model_folder, "-p", "a cat", "-p", "a dog", "-n", 2, "--seed", 11,
                    "--steps", STEPS, "--batch-size", 3, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["seed"] for r in records] == [11, 12, 13, 14]
    assert {r["model"] for r in records} == {str(model_folder)} and all(r["sha256"] for r in records)
    assert sorted(p.name for p in out.iterdir()) == ["00000-11.png", "00001-12.png", "00002-13.png", "00003-14.png"]
    assert records[0]["params"]["steps"] == STEPS


def test_cli_default_out_dir_and_no_pool(model_folder, rlft_home):
    result = invoke("--model", model_folder, "-p", "a cat", "--steps", 1, "--no-pool")
    assert result.exit_code == 0, result.output
    [day] = (rlft_home / "outputs").iterdir()
    assert len(list(day.glob("*.png"))) == 1 and "wrote 1 image" in result.stdout
    assert not (rlft_home / "pool").exists() or not any((rlft_home / "pool").rglob("*.png"))


def test_cli_single_file_model_and_prompt_file(model_folder, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n")
    single = model_folder.parent / "tiny-sd.safetensors"
    result = invoke("--model", single, "--prompts", prompts, "--seed", 1, "--steps", 1, "--scheduler", "dpm++",
                    "--out", tmp_path / "o", "--json", "--no-pool")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["prompt"] for r in records] == ["a cat", "a dog"] and records[0]["params"]["sampler"] == "DPM++ 2M"


def _bad_cases(tmp_path, model):
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n")
    ok = ["--model", model, "-p", "a cat"]
    return {
        "unknown model": ["--model", "no-such-model", "-p", "a cat"],
        "missing prompt file": ["--model", model, "--prompts", tmp_path / "missing.txt"],
        "empty prompt file": ["--model", model, "--prompts", empty],
        "no prompts": ["--model", model],
        "blank prompt": ["--model", model, "-p", "  "],
        "both prompt kinds": [*ok, "--prompts", empty],
        "width not a multiple of 8": [*ok, "--width", 65],
        "height not a multiple of 8": [*ok, "--height", 30],
        "n < 1": [*ok, "-n", 0],
        "steps < 1": [*ok, "--steps", 0],
        "batch size < 1": [*ok, "--batch-size", 0],
        "negative guidance": [*ok, "--guidance", -2],
        "bad seed": [*ok, "--seed", -7],
        "unknown scheduler": [*ok, "--scheduler", "warp"],
        "n not a number": [*ok, "-n", "lots"],
        "unknown option": [*ok, "--colour", "red"],
        "missing lora": [*ok, "--lora", tmp_path / "no-lora"],
        "bad dtype": [*ok, "--dtype", "fp7"],
    }


@pytest.mark.parametrize("case", [
    "unknown model", "missing prompt file", "empty prompt file", "no prompts", "blank prompt", "both prompt kinds",
    "width not a multiple of 8", "height not a multiple of 8", "n < 1", "steps < 1", "batch size < 1",
    "negative guidance", "bad seed", "unknown scheduler", "n not a number", "unknown option", "missing lora", "bad dtype",
])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(case, model_folder, rlft_home, tmp_path):
    out = tmp_path / "out"
    args = _bad_cases(tmp_path, model_folder)[case]
    result = invoke(*args, "--out", out)
    assert result.exit_code == 2, (case, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not (rlft_home / "outputs").exists() and not (rlft_home / "pool").exists()


def test_cli_lora_changes_the_images_and_is_recorded(model_folder, tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    pipe = tiny_pipeline(seed=0)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, weight in pipe.unet.named_parameters():
            if "lora_B" in name:  # B starts at zero (a no-op LoRA); make it do something
                weight.normal_(std=0.5)
    lora_dir = tmp_path / "lora"
    StableDiffusionPipeline.save_lora_weights(lora_dir, unet_lora_layers=convert_state_dict_to_diffusers(
        get_peft_model_state_dict(pipe.unet)))
    common = ["--model", model_folder, "-p", "a cat", "--seed", 3, "--steps", STEPS, "--json", "--no-pool"]
    plain = invoke(*common, "--out", tmp_path / "plain")
    with_lora = invoke(*common, "--out", tmp_path / "lora-out", "--lora", lora_dir)
    assert plain.exit_code == 0 and with_lora.exit_code == 0, with_lora.output
    a, b = (json.loads(r.stdout) for r in (plain, with_lora))
    assert b["lora"] == str(lora_dir) and parse_parameters(read_parameters(b["path"]))["settings"]["Lora"] == str(lora_dir)
    assert np.abs(np.asarray(Image.open(a["path"]), int) - np.asarray(Image.open(b["path"]), int)).max() > 10
