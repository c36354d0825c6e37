"""A reward whose CLIP image tower is tuned on the judgements (`--tune lora|blocks`), or whose head reads the patch
tokens (`--head patch`): training learns, versions save, load, score, resume and serve the scorer like head-only
ones, and the pixels keep their gradient. A tiny random CLIP built here stands in for a real one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from reward_util import judged_store

import reward
from prefs.errors import UserError
from reward.fit import FitConfig
from reward.training import RewardTrainConfig
from reward.tune import TuneConfig

FIT = FitConfig(ensemble=2, steps=30)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """An open_clip folder: a 2-block, 32-wide ViT on 64 px (8 x 8 patches), random weights."""
    import open_clip

    from rlft.toy.pretrain import ClipConfig, clip_model_cfg, save_clip_folder

    folder = tmp_path_factory.mktemp("clip") / "tiny"
    cfg = ClipConfig(embed_dim=16, image_width=32, image_layers=2, text_width=32, text_layers=1, text_heads=2)
    torch.manual_seed(0)
    save_clip_folder(open_clip.model.CLIP(**clip_model_cfg(cfg, 77)), cfg, folder)
    return str(folder)


@pytest.fixture
def store():
    s = judged_store(n_images=16, n_judgements=60)
    yield s
    s.close()


def _train(store, clip, head="patch", mode="lora", **tune):
    tune = {"epochs": 2, "patience": 0, **tune}
    config = RewardTrainConfig(clip=clip, fit=FitConfig(head=head, ensemble=2, steps=30), val_frac=0.25, split="image",
                               tune=TuneConfig(mode=mode, **tune))
    return reward.train(store, config, progress=False)


def _bright_pairs(n_images: int = 24, n_pairs: int = 60, seed: int = 0):
    """Random 64 px images and judgements that prefer the brighter one (a taste the tower can learn)."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n_images, 3, 64, 64, generator=g) * torch.linspace(0.2, 1, n_images)[:, None, None, None]
    rng = np.random.default_rng(seed)
    ia, ib = rng.integers(0, n_images, n_pairs), rng.integers(0, n_images, n_pairs)
    keep = ia != ib
    ia, ib = ia[keep], ib[keep]
    y = (pixels.mean((1, 2, 3))[ia] > pixels.mean((1, 2, 3))[ib]).float().numpy()
    return pixels, ia, ib, y


def test_tuning_moves_the_lora_weights_and_lowers_the_training_loss(tiny_clip):
    from reward.clip import load_clip
    from reward.tune import fit_tuned

    clip = load_clip(tiny_clip, "cpu")
    pixels, ia, ib, y = _bright_pairs()
    fitted = fit_tuned(clip, clip.preprocess(pixels), (ia, ib, y), None, FitConfig(head="patch", ensemble=2),
                       TuneConfig(mode="lora", epochs=8, tower_lr=3e-3, batch_pairs=16), "tokens")
    state = fitted.tower.trainable_state()
    lora_b = [t for n, t in state.items() if "lora_B" in n]
    assert lora_b and all(n.count("lora_") == 1 for n in state)  # only adapters are tuned
    assert any(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: the adapters moved
    losses = fitted.history["train_loss"]
    assert len(losses) == 8 and losses[-1] < losses[0]
    # the shared CLIP is untouched: a frozen tower still gives the frozen embedding
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(clip.encode_pixels(x), torch.nn.functional.normalize(clip.model.encode_image(clip.preprocess(x)), dim=-1))
    assert not any(p.requires_grad for p in clip.model.parameters())


def test_blocks_mode_tunes_only_the_last_blocks(tiny_clip):
    from reward.clip import load_clip
    from reward.tower import Tower

    clip = load_clip(tiny_clip, "cpu")
    tower = Tower(clip, "blocks", "pooled", blocks=1)
    assert tower.train_names and all(n.startswith(("transformer.resblocks.1.", "ln_post", "proj")) for n in tower.train_names)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():  # untuned, the split tower is the frozen one
        assert torch.allclose(tower(x), clip.encode_pixels(x), atol=1e-5)
    with pytest.raises(UserError, match="--blocks must be in 1..2"):
        Tower(clip, "blocks", "pooled", blocks=3)


def test_early_stopping_stops_and_keeps_the_best_epoch(tiny_clip):
    from reward.clip import load_clip
    from reward.tune import fit_tuned

    clip = load_clip(tiny_clip, "cpu")
    pixels, ia, ib, y = _bright_pairs(n_pairs=80)
    # held-out judgements that say the opposite: the better training fits, the worse validation gets
    fitted = fit_tuned(clip, clip.preprocess(pixels), (ia[:60], ib[:60], y[:60]), (ia[60:], ib[60:], 1 - y[60:]),
                       FitConfig(head="mlp", ensemble=2), TuneConfig(mode="lora", epochs=30, patience=2, tower_lr=3e-3,
                                                                     head_lr=1e-2, batch_pairs=16), "pooled")
    h = fitted.history
    assert h["stopped_early"] and h["epochs_run"] < 30
    assert h["epochs_run"] == h["best_epoch"] + 2  # two epochs without a better validation loss, then stop
    assert h["val_loss"][h["best_epoch"] - 1] == min(h["val_loss"])


def test_a_tuned_version_saves_loads_and_scores_as_in_memory(store, tiny_clip):
    result = _train(store, tiny_clip)
    folder = result.path
    assert (folder / "tower.safetensors").is_file() and (folder / "weights.safetensors").is_file()
    meta = json.loads((folder / "reward.json").read_text())
    tower = meta["tower"]
    assert tower["mode"] == "lora" and tower["output"] == "tokens" and tower["file"] == "tower.safetensors"
    assert tower["trainable_params"] > 0 and len(tower["sha256"]) == 64 and tower["fit"]["epochs_run"] == 2
    assert meta["config"]["tune"]["mode"] == "lora" and meta["config"]["fit"]["head"] == "patch"

    model = reward.load("latest")
    assert model.tower is not None and model.tower.mode == "lora" and model.members == 2
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.score(x), result.model.score(x), atol=1e-5)
        assert torch.allclose(model.subset([1]).score(x), model.member_scores(model.embed(x))[1], atol=1e-6)
    # differentiable in the pixels, through the tuned tower
    px = torch.rand(2, 3, 80, 72, requires_grad=True)
    model.score(px).sum().backward()
    assert px.grad is not None and px.grad.abs().sum() > 0
    scores, info = reward.as_reward_fn(model, grad=True)(x.clone().requires_grad_(True), ["a"] * 4)
    assert scores.requires_grad and info["members"] == 2
    # the tuned weights matter: a frozen tower under the same heads scores differently
    from reward.tower import Tower

    frozen = Tower(model.clip, "none", "tokens")
    with torch.no_grad():
        assert not torch.allclose(model.member_scores(frozen(x)), model.member_scores(model.embed(x)), atol=1e-4)


def test_the_scorer_uses_the_tuned_tower(store, tiny_clip):
    from reward_util import own_member_scores

    _train(store, tiny_clip, head="mlp", mode="blocks", blocks=1)
    model = reward.load("latest")
    pool = list(store.images())
    images = pool[:6]
    scorer = reward.make_scorer(store, "latest")
    means, stds = scorer(images)[:2]
    own = own_member_scores(model, store, images)
    assert np.allclose(means, own.mean(0), atol=1e-5) and np.allclose(stds, own.std(0), atol=1e-5)
    # a missing pool file scores 0 with no spread, as with cached embeddings
    gone = pool[7]
    store.image_path(gone).unlink()
    m, s, members = reward.scorer.RewardScorer(model, store)([gone, images[0]])
    assert m[0] == 0 and s[0] == 0 and m[1] == pytest.approx(own.mean(0)[0], abs=1e-5)


def test_patch_head_on_the_frozen_tower(store, tiny_clip):
    result = _train(store, tiny_clip, mode="none")
    assert not (result.path / "tower.safetensors").exists()
    model = reward.load("latest")
    assert model.tower is not None and model.tower.mode == "none" and model.tower.output == "tokens"
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.score(x), result.model.score(x), atol=1e-5)
    assert not list(model.state_dict().keys() & {"tower.visual.conv1.weight"})  # the shared CLIP is not part of it


def test_heads_mode_trains_the_heads_on_the_frozen_tower(store, tiny_clip):
    result = _train(store, tiny_clip, head="mlp", mode="heads", epochs=3)
    meta = json.loads((result.path / "reward.json").read_text())
    assert meta["config"]["tune"]["mode"] == "heads" and meta["tower"]["mode"] == "none"
    assert meta["tower"]["fit"]["epochs_run"] == 3 and not (result.path / "tower.safetensors").exists()
    model = reward.load("latest")
    assert model.tower is None  # it reads the cached embeddings, as a head-only version does
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.score(x), result.model.score(x), atol=1e-5)


def test_a_run_resumes_on_its_tuned_reward(store, tiny_clip):
    from rlft.train.rewards import load_rewards, resumed_reward

    result = _train(store, tiny_clip, head="mlp", mode="lora", lora_rank=4)
    ref = reward.versions.ref("latest")
    provenance = {"reward": ref.version, "reward_path": str(ref.folder), "reward_created_at": ref.created_at}
    _train(store, tiny_clip, head="mlp", mode="none")  # latest moves on
    again = resumed_reward(provenance)
    assert again.folder == result.path.resolve()
    train_fn, held_fn, info = load_rewards(again)
    x = torch.rand(3, 3, 64, 64)
    scores, _ = train_fn(x, ["a"] * 3)
    assert torch.allclose(scores, result.model.subset([0]).score(x), atol=1e-5)
    assert info["members"] == 2 and held_fn is not None


def test_cli_trains_shows_and_lists_a_tuned_reward(store, tiny_clip):
    from rlft.cli import main

    out = CliRunner().invoke(main, ["reward", "train", "--clip", tiny_clip, "--head", "patch", "--tune", "lora",
                                    "--lora-rank", "4", "--epochs", "2", "--patience", "1", "--ensemble", "2",
                                    "--split", "image", "--val-frac", "0.25"])
    assert out.exit_code == 0, out.output
    show = CliRunner().invoke(main, ["reward", "show"])
    assert "tower tuned: LoRA rank 4" in show.output
    listing = CliRunner().invoke(main, ["reward", "list"])
    assert "patch x2" in listing.output and "tuned lora" in listing.output


@pytest.mark.parametrize("args, needle", [
    (["--tune", "bogus"], "--tune"),
    (["--tune", "lora", "--lora-rank", "0"], "--lora-rank must be a whole number >= 1"),
    (["--tune", "lora", "--epochs", "0"], "--epochs must be a whole number >= 1"),
    (["--tune", "lora", "--patience", "-1"], "--patience must be a whole number >= 0"),
    (["--tune", "lora", "--weight-decay", "nan"], "--weight-decay"),
    (["--tune", "lora", "--weight-decay", "-1"], "--weight-decay must be a number >= 0"),
    (["--tune", "lora", "--tower-lr", "0"], "--tower-lr must be a number > 0"),
    (["--tune", "blocks", "--blocks", "0"], "--blocks must be a whole number >= 1"),
    (["--head", "patch", "--prior", "laion:x.pth"], "LAION prior"),
])
def test_cli_bad_tuning_values_are_one_line(args, needle):
    from rlft.cli import main

    out = CliRunner().invoke(main, ["reward", "train", *args])
    assert out.exit_code == 2, out.output
    assert needle in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_cli_too_many_blocks_is_one_line(store, tiny_clip):
    from rlft.cli import main

    out = CliRunner().invoke(main, ["reward", "train", "--clip", tiny_clip, "--tune", "blocks", "--blocks", "5"])
    assert out.exit_code == 2 and "--blocks must be in 1..2" in out.output
    assert len(out.output.strip().splitlines()) == 1
