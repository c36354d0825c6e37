"""`rlft generate` on SDXL: deterministic images with the full A1111 chunk, the pool, sizes, --aesthetic, bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from prefs.pngmeta import parse_parameters, read_parameters
from rlft.cli import main
from rlft.models.single_file import save_single_file
from rlft.models.tiny import TINY_SDXL_TEXT_WIDTHS, tiny_sdxl_pipeline

STEPS = 2


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen-sdxl") / "tiny-sdxl"
    pipe = tiny_sdxl_pipeline(seed=0)
    pipe.save_pretrained(folder)
    save_single_file(pipe, folder.parent / "tiny-sdxl.safetensors")
    return folder


def invoke(*args):
    return CliRunner().invoke(main, ["generate", *map(str, args)])


def records(result):
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def pixels(path):
    return np.asarray(Image.open(path), dtype=int)


def test_generate_is_deterministic_writes_the_a1111_chunk_and_pools(model, rlft_home, tmp_path):
    args = ["--model", model, "-p", "a red circle", "-p", "a blue square", "--seed", 5, "--steps", STEPS,
            "--guidance", 4.5, "--negative-prompt", "blurry, dark", "--json"]
    a = records(invoke(*args, "--out", tmp_path / "a"))
    b = records(invoke(*args, "--out", tmp_path / "b", "--no-pool"))
    assert [r["seed"] for r in a] == [5, 6]
    for x, y in zip(a, b, strict=True):
        assert (pixels(x["path"]) == pixels(y["path"])).all()
    assert Image.open(a[0]["path"]).size == (64, 64)  # the model's own size: sample_size * VAE factor
    digest = hashlib.sha256()
    for name in sorted(p.relative_to(model).as_posix() for p in model.rglob("*.safetensors")):
        digest.update(f"{name}\0{hashlib.sha256((model / name).read_bytes()).hexdigest()}\n".encode())
    parsed = parse_parameters(read_parameters(a[0]["path"]))
    assert parsed["prompt"] == "a red circle" and parsed["negative_prompt"] == "blurry, dark"
    s = parsed["settings"]
    assert (s["Steps"], s["Sampler"], s["CFG scale"], s["Seed"], s["Size"], s["Model"], s["Model hash"]) == (
        "2", "Euler", "4.5", "5", "64x64", "tiny-sdxl", digest.hexdigest()[:10])
    assert a[0]["model_hash"] == s["Model hash"]
    from prefs import open_store

    with open_store() as store:
        rows = {row.sha256: row for row in store.images()}
    assert {r["sha256"] for r in a} == set(rows)
    row = rows[a[1]["sha256"]]
    assert (row.prompt, row.seed, row.origin, row.params["width"]) == ("a blue square", 6, "generated", 64)


def test_single_file_model_hash_is_a1111s(model, tmp_path):
    single = model.parent / "tiny-sdxl.safetensors"
    [r] = records(invoke("--model", single, "-p", "a cat", "--seed", 1, "--steps", 1, "--json", "--no-pool",
                         "--out", tmp_path))
    assert r["model_hash"] == hashlib.sha256(single.read_bytes()).hexdigest()[:10]  # AutoV2
    assert parse_parameters(read_parameters(r["path"]))["settings"]["Model"] == "tiny-sdxl"


def test_non_square_buckets(model, tmp_path):
    [wide] = records(invoke("--model", model, "-p", "a cat", "--seed", 1, "--steps", 1, "--width", 128,
                            "--height", 64, "--json", "--no-pool", "--out", tmp_path))
    assert Image.open(wide["path"]).size == (128, 64)
    assert parse_parameters(read_parameters(wide["path"]))["settings"]["Size"] == "128x64"


def _embedding(path, dim, seed=0):
    torch.save(torch.randn(1, dim, generator=torch.Generator().manual_seed(seed)), path)
    return path


def test_aesthetic_conditions_the_encoder_of_its_space(model, tmp_path):
    from rlft.models.aesthetic import aesthetic_conditioner
    from rlft.models.generate import generate
    from rlft.models.pipeline import load_pipeline

    # a 48-d embedding lives in the tiny second encoder's space (SDXL: 1280-d, OpenCLIP bigG's)
    emb = _embedding(tmp_path / "taste.pt", TINY_SDXL_TEXT_WIDTHS[1])
    pipe = load_pipeline(model)

    def image(out, conditioner=None):
        [record] = generate(pipe, ["a cat"], seed=2, steps=STEPS, out_dir=tmp_path / out, progress=False,
                            conditioner=conditioner)
        return pixels(record.path)

    plain = image("plain")
    assert (image("w0", aesthetic_conditioner(pipe, emb, weight=0)) == plain).all()  # exactly the pipeline's encoding
    [steered] = records(invoke("--model", model, "-p", "a cat", "--seed", 2, "--steps", STEPS, "--json", "--no-pool",
                               "--out", tmp_path / "w1", "--aesthetic", emb, "--aesthetic-lr", 0.05, "--aesthetic-weight", 1))
    assert np.abs(plain - pixels(steered["path"])).max() > 0
    settings = parse_parameters(read_parameters(steered["path"]))["settings"]
    assert settings["Aesthetic embedding"] == "taste" and settings["Aesthetic encoders"] == "text_encoder_2"


def test_aesthetic_gradient_moves_the_pooled_text_toward_the_embedding(model):
    from rlft.models.aesthetic import SDXLAestheticConditioner
    from rlft.models.pipeline import load_pipeline

    pipe = load_pipeline(model)
    target = torch.nn.functional.normalize(torch.randn(1, TINY_SDXL_TEXT_WIDTHS[1], generator=torch.Generator().manual_seed(3)), dim=-1)
    plain = SDXLAestheticConditioner(pipe, target, weight=0)(["a cat"])
    steered = SDXLAestheticConditioner(pipe, target, steps=10, lr=0.05, weight=1)(["a cat"])
    cos = [torch.nn.functional.cosine_similarity(c["pooled_prompt_embeds"], target).item() for c in (plain, steered)]
    assert cos[1] > cos[0] + 0.1
    first = TINY_SDXL_TEXT_WIDTHS[0]  # the first encoder's states are untouched
    assert torch.equal(plain["prompt_embeds"][..., :first], steered["prompt_embeds"][..., :first])


def _bad_cases(model, tmp_path):
    ok = ["--model", model, "-p", "a cat", "--steps", 1]
    return {
        "width off the 64 grid": [*ok, "--width", 72],
        "height off the 64 grid": [*ok, "--height", 100],
        "embedding of another CLIP": [*ok, "--aesthetic", _embedding(tmp_path / "e16.pt", 16)],
        "single file with an SD 1.x config": ["--model", model.parent / "tiny-sdxl.safetensors", "-p", "a cat",
                                              "--config", tmp_path / "sd1"],
    }


@pytest.mark.parametrize("case", ["width off the 64 grid", "height off the 64 grid", "embedding of another CLIP",
                                  "single file with an SD 1.x config"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, model, rlft_home, tmp_path):
    from rlft.models.tiny import tiny_pipeline

    tiny_pipeline(0).save_pretrained(tmp_path / "sd1")
    out = tmp_path / "out"
    result = invoke(*_bad_cases(model, tmp_path)[case], "--out", out)
    assert result.exit_code == 2, (case, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert not out.exists() and not (rlft_home / "pool").exists()
