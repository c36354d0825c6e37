"""Aesthetic embeddings: the file format, the loader for published embeddings, dims checks, and that
aesthetic-gradient conditioning of the shipped toy pipeline shifts generations toward the embedding."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from prefs.errors import UserError
from reward.aesthetic import AestheticConditioner, load_embedding, save_embedding

PUBLISHED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "aesthetic-embeddings"


def _red_images(folder: Path, n: int = 12) -> Path:
    from rlft.toy.world import COLORS, POSITIONS, SHAPES, SIZES, Scene, draw

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        scene = Scene(rng.choice(SHAPES), "red", rng.choice([c for c in COLORS if c != "red"]),
                      rng.choice(list(SIZES)), rng.choice(list(POSITIONS)))
        draw(scene, k).save(folder / f"{k}.png")
    return folder


def _redness(records) -> float:
    """Mean redness R - (G + B) / 2 of the shape colour the toy checker reads in each image (red 190, blue -120)."""
    from PIL import Image

    from rlft.toy.checker import read
    from rlft.toy.world import PALETTE

    values = []
    for r in records:
        color = read(Image.open(r.path).convert("RGB")).color
        rgb = np.array(PALETTE[color], float) if color else np.zeros(3)
        values.append(rgb[0] - (rgb[1] + rgb[2]) / 2)
    return float(np.mean(values))


@pytest.mark.skipif(not PUBLISHED.is_dir(), reason="shared aesthetic embeddings not present")
def test_loader_reads_every_published_embedding():
    files = sorted(PUBLISHED.glob("*.pt"))
    assert len(files) == 8
    for f in files:
        e = load_embedding(f)
        assert e.shape == (1, 768) and e.dtype == torch.float32
        assert e.norm().item() == pytest.approx(1.0, abs=1e-4)


def test_bad_embedding_files(tmp_path):
    with pytest.raises(UserError, match="no aesthetic embedding"):
        load_embedding(tmp_path / "missing.pt")
    torch.save(torch.zeros(3, 4), tmp_path / "matrix.pt")
    with pytest.raises(UserError, match=r"shape \(D,\) or \(1, D\)"):
        load_embedding(tmp_path / "matrix.pt")


def test_cli_embed_from_dir_writes_the_extension_format(tmp_path):
    from rlft.cli import main

    out = tmp_path / "taste.pt"
    res = CliRunner().invoke(main, ["embed", "--from-dir", str(_red_images(tmp_path / "red", 4)), "-o", str(out)])
    assert res.exit_code == 0, res.output
    t = torch.load(out, map_location="cpu", weights_only=True)  # what the A1111 extension does
    assert isinstance(t, torch.Tensor) and t.shape == (1, 64) and t.dtype == torch.float32 and t.device.type == "cpu"
    prov = json.loads(out.with_suffix(".json").read_text())
    assert prov["clip_spec"] == "toy" and len(prov["images"]) == 4


def test_cli_embed_from_reward(tmp_path):
    from reward_util import train_small_reward

    from rlft.cli import main

    train_small_reward()
    out = tmp_path / "taste.pt"
    res = CliRunner().invoke(main, ["embed", "--reward", "latest", "--top-k", "5", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    prov = json.loads(res.output)
    assert prov["reward_version"] == "r0001" and len(prov["images"]) == 5
    assert abs(sum(i["weight"] for i in prov["images"]) - 1) < 1e-6
    assert load_embedding(out).shape == (1, 64)


def test_cli_embed_min_score_uses_only_images_scoring_at_least_that(tmp_path):
    from reward_util import own_member_scores, train_small_reward

    import prefs
    import reward
    from rlft.cli import main

    train_small_reward()
    with prefs.open_store() as store:
        images = list(store.images())
        scores = own_member_scores(reward.load("latest"), store, images).mean(0)
    best = np.sort(scores)[::-1]
    k = 3 + int(np.argmax(best[2:8] - best[3:9]))  # threshold in the widest gap below the 3rd..8th best
    threshold = float(best[k - 1] + best[k]) / 2
    out = tmp_path / "taste.pt"
    res = CliRunner().invoke(main, ["embed", "--reward", "latest", "--min-score", str(threshold), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert f"({k} images, clip toy)" in res.output
    prov = json.loads(out.with_suffix(".json").read_text())
    assert prov["selection"] == {"top_k": None, "min_score": threshold}
    assert {i["sha256"] for i in prov["images"]} == {im.sha256 for im, s in zip(images, scores, strict=False) if s >= threshold}
    assert len(prov["images"]) == k and all(i["score"] >= threshold for i in prov["images"])

    none, too_high = tmp_path / "none.pt", round(float(best[0]) + 1, 2)
    res = CliRunner().invoke(main, ["embed", "--reward", "latest", "--min-score", str(too_high), "-o", str(none)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.strip().splitlines() == [f"Error: no image scores >= {too_high} (best: {best[0]:.3f}); "
                                               "lower --min-score"]
    assert not none.exists() and not none.with_suffix(".json").exists()


def test_mismatched_dims_are_refused(tmp_path):
    import re
    import shlex

    from rlft.models.pipeline import load_pipeline

    pipe = load_pipeline("toy", device="cpu")
    with pytest.raises(UserError, match="768-d .* 64-d") as refused:
        AestheticConditioner(pipe, torch.randn(1, 768), clip_spec="toy")
    # The command the message suggests works as written and makes an embedding this pipeline takes.
    hint = re.search(r"`rlft (embed [^`]*)`", str(refused.value)).group(1)
    assert hint == "embed --from-dir DIR --clip toy -o taste.pt"
    folder, made = _red_images(tmp_path / "liked", 3), tmp_path / "taste.pt"
    from rlft.cli import main

    res = CliRunner().invoke(main, [str(folder) if a == "DIR" else str(made) if a == "taste.pt" else a
                                    for a in shlex.split(hint)])
    assert res.exit_code == 0, res.output
    assert AestheticConditioner(pipe, load_embedding(made), clip_spec="toy").embedding.shape == (1, 64)
    save_embedding(tmp_path / "wide.pt", np.ones(768), {"clip_spec": "toy"})
    res = CliRunner().invoke(main, ["generate", "-p", "a star", "--aesthetic", str(tmp_path / "wide.pt"), "--no-pool",
                                    "--out", str(tmp_path / "out"), "--steps", "2"])
    assert res.exit_code == 2 and "768-d" in res.output and "Traceback" not in res.output
    assert not list((tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else True


def test_red_embedding_makes_toy_generations_redder(tmp_path):
    from reward.aesthetic import build_from_dir
    from rlft.models.generate import generate
    from rlft.models.pipeline import load_pipeline

    emb, _ = build_from_dir(_red_images(tmp_path / "red"), "toy", progress=False)
    pipe = load_pipeline("toy", device="cpu")
    before = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    prompts = ["a circle", "a star", "a square"]
    # As `rlft generate --aesthetic` runs it: the model's recommended guidance (toy: CFG 3), 4 seeds per prompt.
    kw = dict(n=4, seed=0, steps=8, out_dir=None, progress=False, guidance=3.0)
    base = generate(pipe, prompts, **{**kw, "out_dir": tmp_path / "base"})
    cond = AestheticConditioner(pipe, torch.as_tensor(emb)[None], steps=5, lr=1e-4, weight=0.9, clip_spec="toy")  # CLI defaults
    tuned = generate(pipe, prompts, conditioner=cond, **{**kw, "out_dir": tmp_path / "tuned"})
    assert [r.seed for r in base] == [r.seed for r in tuned]
    assert _redness(tuned) > _redness(base) + 30
    # the pipeline's text encoder is untouched
    assert all(torch.equal(before[k], v) for k, v in pipe.text_encoder.state_dict().items())
    assert tuned[0].params["conditioning"]["Aesthetic steps"] == 5
