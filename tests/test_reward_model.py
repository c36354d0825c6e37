"""Training, versions and `latest`, the RewardModel API, the uncertain-strategy plug, and the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from reward_util import judged_store

import reward
from prefs.errors import NotFoundError, UserError
from reward.fit import FitConfig
from reward.training import RewardTrainConfig

FAST = FitConfig(ensemble=3, steps=80)


@pytest.fixture
def store():
    s = judged_store()
    yield s
    s.close()


def test_no_versions_yet_says_what_to_run():
    with pytest.raises(NotFoundError, match="rlft reward train"):
        reward.load("latest")
    with pytest.raises(NotFoundError, match="none yet"):
        reward.versions.resolve("r0007")


def test_no_judgements_yet_is_a_clear_error():
    import prefs

    with prefs.open_store() as s, pytest.raises(UserError, match="no judgements"):
        reward.train(s, RewardTrainConfig(fit=FAST), progress=False)


def test_train_versions_latest_and_api(store):
    r1 = reward.train(store, RewardTrainConfig(fit=FAST), progress=False)
    r2 = reward.train(store, RewardTrainConfig(fit=FAST, val_frac=0.0, seed=1), progress=False)
    assert (r1.version, r2.version) == ("r0001", "r0002")
    assert [v["id"] for v in reward.versions.list_versions()] == ["r0001", "r0002"]
    assert reward.versions.resolve("latest") == r2.path == reward.versions.latest()
    assert reward.versions.resolve("r0001") == r1.path == reward.versions.resolve("1") == reward.versions.resolve(str(r1.path))
    with pytest.raises(NotFoundError, match="r0001, r0002"):
        reward.load("r0009")
    m = r1.metrics
    assert m["n_val"] == 24 and 0 <= m["val_accuracy"] <= 1 and m["val_ci95"][0] <= m["val_accuracy"] <= m["val_ci95"][1]
    assert {"clip_similarity", "bt_items"} <= set(m["baselines"])
    assert m["val_accuracy"] > 0.6  # warm vs cold shapes with little noise: easy

    model = reward.load("latest")
    assert model.version == "r0002" and model.members == 3 and model.clip_spec == "toy"
    assert model.metadata["n_judgements"] == 120 and model.path == r2.path
    x = torch.rand(4, 3, 100, 70, requires_grad=True)  # any size: resized inside
    s = model.score(x, ["a shape"] * 4)
    assert s.shape == (4,)
    s.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.allclose(model.subset([0, 1, 2]).score(x.detach()), s.detach(), atol=1e-5)
    one = model.subset(2)
    assert one.members == 1 and torch.allclose(one.score(x.detach()), model.member_scores(model.embed(x.detach()))[2])
    # PIL input equals the tensor path
    from rlft.toy.world import samples

    pil = [smp.image for _, smp in zip(range(2), samples(5), strict=False)]
    from reward.embeddings import pil_to_tensor

    assert torch.allclose(model.score(pil), model.score(torch.stack([pil_to_tensor(p) for p in pil])), atol=1e-5)
    p, std = model.predict_pair(pil[0], pil[1])
    p2, _ = model.predict_pair(pil[1], pil[0])
    assert 0 < p < 1 and std >= 0 and p + p2 == pytest.approx(1, abs=1e-5)
    scores, info = reward.as_reward_fn(model)(x.detach(), ["a"] * 4, {})
    assert scores.shape == (4,) and not scores.requires_grad and info["reward_version"] == "r0002"
    assert info["std"].shape == (4,)
    with pytest.raises(UserError):
        model.score(torch.rand(2, 4, 8, 8))


def test_image_split_holds_out_every_judgement_of_unseen_images():
    from reward.data import split

    rng = np.random.default_rng(0)
    ia, ib = rng.integers(0, 60, 400), rng.integers(0, 60, 400)
    tr, va = split(400, 0.2, "image", seed=3, ia=ia, ib=ib)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(400))
    seen = set(ia[tr]) | set(ib[tr])
    assert all(ia[i] not in seen or ib[i] not in seen for i in va)  # each val pair shows an image training never saw
    assert 0.12 < len(va) / 400 < 0.28  # about val_frac of the judgements
    again = split(400, 0.2, "image", seed=3, ia=ia, ib=ib)
    assert again[0].tolist() == tr.tolist() and split(400, 0.2, "image", seed=4, ia=ia, ib=ib)[1].tolist() != va.tolist()
    with pytest.raises(UserError, match="too few"):
        split(2, 0.2, "image", ia=np.array([0, 0]), ib=np.array([1, 1]))


def test_only_a_b_and_tie_judgements_become_pairs():
    """skip and both_bad say nothing about which image is better: they never reach the Bradley-Terry loss."""
    from prefs_util import add_images

    import prefs
    from reward.data import load_pairs

    with prefs.open_store() as s:
        im = add_images(s, 6)
        votes = [(0, 1, "a"), (2, 3, "skip"), (1, 2, "b"), (4, 5, "both_bad"), (0, 2, "tie"), (3, 0, "skip")]
        for i, j, outcome in votes:
            s.record_judgement(im[i], im[j], outcome)
        data = load_pairs(s)
    pairs = [(data.shas[a], data.shas[b], float(y)) for a, b, y in zip(data.ia, data.ib, data.y, strict=False)]
    assert pairs == [(im[0], im[1], 1.0), (im[1], im[2], 0.0), (im[0], im[2], 0.5)]
    assert set(data.shas) == {im[0], im[1], im[2]}  # images judged only in skips and both_bads are left out
    assert [r.sha256 for r in data.images] == data.shas


def test_time_split_holds_out_the_newest_judgements():
    """`--split time` holds out the judgements made last, by their time, also when older ones were imported later."""
    import datetime as dt

    from prefs_util import add_images

    import prefs
    from reward.data import load_pairs, split

    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    with prefs.open_store() as s:
        im = add_images(s, 12)
        for k in range(8):  # rated here, one a day from day 10
            s.record_judgement(im[k], im[k + 1], "a", created_at=t0 + dt.timedelta(days=10 + k))
        for k in range(2):  # then older judgements imported from elsewhere (days 0 and 1)
            s.record_judgement(im[k + 9], im[k + 10], "b", created_at=t0 + dt.timedelta(days=k))
        data = load_pairs(s)
        created = [j.created_at for j in s.judgements()]
    tr, va = split(len(data), 0.2, "time", seed=0, order=data.order)
    newest = sorted(range(10), key=lambda k: created[k])[-2:]
    assert va.tolist() == sorted(newest) == [6, 7]  # days 16 and 17, not the two imported last
    assert tr.tolist() == [0, 1, 2, 3, 4, 5, 8, 9]
    for seed in (1, 2):  # the seed does not matter: a time split is deterministic
        again = split(len(data), 0.2, "time", seed=seed, order=data.order)
        assert again[0].tolist() == tr.tolist() and again[1].tolist() == va.tolist()


def test_train_with_the_image_split(store):
    m = reward.train(store, RewardTrainConfig(fit=FAST, split="image"), progress=False).metrics
    assert m["n_val"] > 0 and m["n_train"] + m["n_val"] == 120
    assert "bt_items" not in m["baselines"]  # no val pair has both images seen in training
    assert m["val_accuracy"] > 0.6


def test_warm_reward_prefers_warm_shapes(store):
    from rlft.toy.world import Scene, draw

    reward.train(store, RewardTrainConfig(fit=FAST, val_frac=0), progress=False)
    model = reward.load()
    warm = [draw(Scene("circle", c, "green" if c != "green" else "blue", "medium", "center"), 1) for c in ("red", "orange", "yellow")]
    cold = [draw(Scene("circle", c, "white", "medium", "center"), 1) for c in ("blue", "green", "purple")]
    assert model.score(warm).mean() > model.score(cold).mean()


def test_uncertain_strategy_uses_the_reward(store):
    reward.train(store, RewardTrainConfig(fit=FAST, val_frac=0), progress=False)
    scorer = reward.make_scorer(store, "latest")
    pair = store.next_pair("someone-new", "uncertain", scorer=scorer)
    assert pair.strategy == "uncertain" and 0 <= pair.predicted_p <= 1
    means, stds, members = scorer([pair.a, pair.b])
    assert len(means) == 2 and all(s >= 0 for s in stds)
    # The members are the ensemble's own utilities: their mean and spread are the means and stds.
    assert members.shape == (scorer.scorer.model.members, 2)
    np.testing.assert_allclose(members.mean(0), means, atol=1e-5)
    np.testing.assert_allclose(members.std(0), stds, atol=1e-5)


def test_prompt_conditioned_and_rao_kupper(store):
    cfg = RewardTrainConfig(fit=FitConfig(ensemble=2, steps=50, prompt=True, ties="rao-kupper"))
    reward.train(store, cfg, progress=False)
    model = reward.load()
    assert model.prompt_conditioned and model.log_theta is not None
    x = torch.rand(2, 3, 64, 64)
    assert not torch.allclose(model.score(x, "a red circle"), model.score(x, "a blue square"))


def test_laion_prior_needs_matching_dims(store):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "laion-aesthetic" / "sac+logos+ava1-l14-linearMSE.pth"
    if not path.is_file():
        pytest.skip("shared LAION heads not present")
    with pytest.raises(UserError, match="768-d"):
        reward.train(store, RewardTrainConfig(fit=FAST, prior=f"laion:{path}"), progress=False)


def test_cli_train_list_show_score(store, tmp_path):
    from rlft.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["reward", "train", "--ensemble", "2", "--steps", "60"])
    assert out.exit_code == 0, out.output
    assert "r0001" in out.output and "accuracy" in out.output and "bt_items" in out.output
    listed = json.loads(runner.invoke(main, ["reward", "list", "--json"]).output)
    assert [v["id"] for v in listed] == ["r0001"]
    assert {"id", "created_at", "n_judgements"} <= set(listed[0]) and "val_accuracy" in listed[0]["metrics"]
    assert "r0001" in runner.invoke(main, ["reward", "show", "latest"]).output
    from rlft.toy.world import samples

    files = []
    for k, smp in zip(range(2), samples(9), strict=False):
        files.append(str(tmp_path / f"{k}.png"))
        smp.image.save(files[-1])
    out = runner.invoke(main, ["reward", "score", "--reward", "latest", *files, "--json"])
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert [r["path"] for r in rows] == files and all(isinstance(r["score"], float) for r in rows)


def test_cli_list_has_val_accuracy_null_without_a_validation_split(store):
    from rlft.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["reward", "train", "--val-frac", "0", "--ensemble", "2", "--steps", "20"])
    assert out.exit_code == 0, out.output
    assert "120 train, 0 held out" in out.output and "log-loss" not in out.output  # no table of empty metrics
    [listed] = json.loads(runner.invoke(main, ["reward", "list", "--json"]).output)
    assert "val_accuracy" in listed["metrics"] and listed["metrics"]["val_accuracy"] is None
    assert reward.load("latest").metadata["metrics"]["val_accuracy"] is None
    assert "val accuracy n/a" in runner.invoke(main, ["reward", "list"]).output
    shown = runner.invoke(main, ["reward", "show", "latest"])
    assert shown.exit_code == 0 and shown.output.splitlines()[-1] == "no held-out metrics (0 judgements held out at --val-frac 0)"


@pytest.mark.parametrize("args,needle", [
    (["reward", "show", "r0042"], "unknown reward"),
    (["reward", "score", "nope.png"], "no reward model yet"),
    (["reward", "train", "--clip", "no-such-clip"], "unknown CLIP"),
    (["reward", "train", "--prior", "bogus"], "laion:PATH"),
])
def test_cli_bad_input_is_one_line(args, needle):
    from rlft.cli import main

    out = CliRunner().invoke(main, args)
    assert out.exit_code == 2, out.output
    assert needle in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_cli_train_without_judgements():
    from rlft.cli import main

    out = CliRunner().invoke(main, ["reward", "train"])
    assert out.exit_code == 2 and "no judgements" in out.output


def test_a_version_refuses_clip_weights_changed_since_training(store, tmp_path):
    """The CLIP key is content-based: a copy of the same weights loads, changed weights are refused."""
    import shutil

    from safetensors.torch import load_file, save_file

    from reward.clip import builtin_clips, resolve_clip

    folder = tmp_path / "myclip"
    shutil.copytree(builtin_clips()["toy"], folder)
    key = resolve_clip(str(folder)).fingerprint()
    for f in folder.iterdir():
        os.utime(f, (1_000_000_000, 1_000_000_000))  # as a fresh clone or copy: same bytes, other mtimes
    assert resolve_clip(str(folder)).fingerprint() == key
    r = reward.train(store, RewardTrainConfig(clip=str(folder), fit=FAST), progress=False)
    assert reward.load(r.version).clip_spec == str(folder)
    weights = folder / "open_clip_model.safetensors"
    state = load_file(str(weights))
    state["visual.proj"] = state["visual.proj"] * 1.01
    save_file(state, str(weights))
    with pytest.raises(UserError, match=r"reward r0001 was trained on CLIP .* weights .* now .*rlft reward train --clip"):
        reward.load("latest")
