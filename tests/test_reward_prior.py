"""A personal reward that starts from a prior: w * prior + personal, its weight, its version, its bad specs."""

from __future__ import annotations

import json
import shutil
import sys
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from prefs_util import add_toy_images
from scipy.stats import spearmanr

import prefs
import reward
from prefs.errors import NotFoundError, UserError
from reward.fit import FitConfig
from reward.training import PRIOR_FIT, RewardTrainConfig

FAST = FitConfig(ensemble=3, steps=80)
PERSONAL = FitConfig(ensemble=3, steps=80, **PRIOR_FIT)  # what `--prior` trains by default, fewer steps
N_IMAGES = 30


def judged(home, name: str, oracle: str, n: int, seed: int = 0):
    """A store of its own (`name`.sqlite) over the home's pool of N_IMAGES toy images, `n` judgements of `oracle`."""
    from rlft.sim.oracles import resolve_oracle
    from rlft.sim.rater import SimulationConfig, simulate

    store = prefs.open_store(f"sqlite:///{home / name}.sqlite", home=home, seed=seed)
    add_toy_images(store, N_IMAGES, seed=0)
    if n:
        simulate(store, resolve_oracle(oracle), SimulationConfig(n=n, noise=0.3, strategy="random", seed=seed))
    return store


@pytest.fixture(scope="module")
def population_home(tmp_path_factory):
    """A home whose r0001 is a reward of the warm taste (the prior), trained on population.sqlite's judgements."""
    home = tmp_path_factory.mktemp("population") / "home"
    home.mkdir()
    with judged(home, "population", "warm", 150) as store:
        result = reward.train(store, RewardTrainConfig(fit=FAST, val_frac=0), progress=False, home=home)
    assert result.version == "r0001"
    return home


@pytest.fixture
def population(population_home, rlft_home):
    """The test's home as a copy of `population_home`, and the open store r0001 was trained on."""
    shutil.copytree(population_home, rlft_home, dirs_exist_ok=True)
    store = prefs.open_store(f"sqlite:///{rlft_home / 'population'}.sqlite")
    yield store
    store.close()


def pool_tensor(store) -> tuple[list, torch.Tensor]:
    from reward.embeddings import pil_to_tensor

    rows = list(store.images())
    return rows, torch.stack([pil_to_tensor(store.open_image(im)) for im in rows])


def record(store, rows, pairs, outcome="a", rater="me"):
    for a, b in pairs:
        store.record_judgement(rows[a], rows[b], outcome, rater=rater, shown_left="a")


def test_scores_as_the_prior_where_judgements_are_silent_and_moves_where_they_speak(population, rlft_home):
    rows, x = pool_tensor(population)
    with torch.no_grad():
        prior = reward.load("r0001").score(x).numpy()
    # Among images 0..5 only, the person disagrees with the prior on three pairs of neighbours in its ranking and
    # agrees with it on the two widest pairs.
    order = np.argsort(prior[:6])
    pairs = [(int(order[0]), int(order[1])), (int(order[2]), int(order[3])), (int(order[4]), int(order[5]))]
    agreed = [(int(order[5]), int(order[0])), (int(order[4]), int(order[1]))]
    with prefs.open_store(f"sqlite:///{rlft_home / 'me'}.sqlite") as store:
        add_toy_images(store, N_IMAGES, seed=0)
        mine = list(store.images())
        assert [im.sha256 for im in mine] == [im.sha256 for im in rows]
        record(store, mine, pairs * 3 + agreed * 3)  # "a" wins: in `pairs` the image the prior ranks lower
        model = reward.train(store, RewardTrainConfig(fit=PERSONAL, val_frac=0, prior="r0001"), progress=False).model
        plain = reward.train(store, RewardTrainConfig(fit=FAST, val_frac=0), progress=False).model
    with torch.no_grad():
        s, s_plain = model.score(x).numpy(), plain.score(x).numpy()
    silent = np.arange(6, N_IMAGES)
    assert spearmanr(s[silent], prior[silent]).correlation > 0.85  # where no judgement speaks: the prior's order
    assert abs(spearmanr(s_plain[silent], prior[silent]).correlation) < 0.6  # 15 judgements alone know nothing there
    for a, b in pairs:  # where they speak, the reward moved toward the person: each judged pair now goes their way
        assert prior[a] < prior[b] and s[a] - s[b] > (prior[a] - prior[b]) * model.metadata["prior"]["weight"]["mean"]
        assert s[a] > s[b]


def test_weight_set_or_learnt(population, rlft_home):
    rows, x = pool_tensor(population)
    with torch.no_grad():
        prior = reward.load("r0001").score(x).numpy()
    with judged(rlft_home, "cool", "cool", 80, seed=1) as store:
        zero = FitConfig(ensemble=2, steps=0)
        start = reward.train(store, RewardTrainConfig(fit=zero, val_frac=0, prior="r0001", prior_weight=0.5),
                             progress=False).model
        with torch.no_grad():  # no steps: the personal part is 0, the reward is 0.5 x the prior, centred
            s = start.score(x).numpy()
        np.testing.assert_allclose(s - s.mean(), 0.5 * (prior - prior.mean()), atol=1e-4)
        assert start.metadata["prior"]["weight"] == {"mode": "set", "start": 0.5, "members": [0.5, 0.5], "mean": 0.5}
        fixed = reward.train(store, RewardTrainConfig(fit=PERSONAL, val_frac=0, prior="r0001", prior_weight=0.5),
                             progress=False).model
        assert [float(h.weight) for h in fixed.heads] == [0.5] * 3
        # A cool rater contradicts the warm prior: the learnt weight falls from 1 toward 0 or below.
        learnt = reward.train(store, RewardTrainConfig(fit=PERSONAL, val_frac=0.2, prior="r0001"), progress=False)
    w = learnt.model.metadata["prior"]["weight"]
    assert w["mode"] == "learnt" and w["start"] == 1.0 and len(set(w["members"])) == 3
    assert w["mean"] < 0.5, w
    base = learnt.metrics["baselines"]["prior"]  # the prior alone on the held-out judgements: mostly wrong
    assert base["n"] == learnt.metrics["n_val"] == 16 and base["accuracy"] < 0.5 < learnt.metrics["val_accuracy"]


def test_version_round_trip_records_the_prior_and_carries_it(population, rlft_home, tmp_path):
    from rlft.cli import main

    rows, x = pool_tensor(population)
    with judged(rlft_home, "big", "big", 40, seed=2) as store:
        result = reward.train(store, RewardTrainConfig(fit=dict(ensemble=3, steps=80), val_frac=0, prior="latest"),
                              progress=False)
        want = result.model.score(x)
        meta = json.loads((result.path / "reward.json").read_text())
        prior_meta = reward.versions.read_meta(rlft_home / "rewards" / "r0001")
        assert meta["prior"]["kind"] == "version" and meta["prior"]["spec"] == "latest"
        assert meta["prior"]["id"] == "r0001" and meta["prior"]["created_at"] == prior_meta["created_at"]
        assert meta["prior"]["folder"] == "prior" and meta["prior"]["weight"]["mode"] == "learnt"
        assert meta["config"]["prior"] == "latest" and meta["config"]["prior_weight"] is None
        assert (result.path / "prior" / "weights.safetensors").is_file()
        assert (rlft_home / "cache" / "priors" / meta["prior"]["key"]).is_dir()  # the pool's prior scores, cached
        shutil.rmtree(rlft_home / "rewards" / "r0001")  # the version carries its prior: the original may go
        model = reward.load("r0002")
        assert model.prior is not None and model.prior.spec == "latest" and model.metadata["prior"]["id"] == "r0001"
        pix = x.clone().requires_grad_(True)
        got = model.score(pix)
        assert torch.allclose(got, want, atol=1e-5)
        got.sum().backward()  # differentiable in the pixels, through the prior's CLIP too
        assert pix.grad.abs().sum() > 0
        # The active-learning scorer (cached embeddings and prior scores) agrees; members differ.
        means, stds, members = reward.make_scorer(store, "r0002")(rows)
        np.testing.assert_allclose(means, want.detach().numpy(), atol=1e-4)
        assert min(stds) > 0 and members.shape == (3, N_IMAGES)
        pair = store.next_pair("me", "uncertain", scorer=reward.make_scorer(store, "r0002"))
        assert pair.strategy == "uncertain"
        scores, info = reward.as_reward_fn(model)(x[:4], [""] * 4)
        assert torch.allclose(scores, want[:4], atol=1e-5) and info["reward_version"] == "r0002"
    files = []
    for k in range(2):
        files.append(str(tmp_path / f"{k}.png"))
        population.open_image(rows[k]).save(files[-1])
    out = CliRunner().invoke(main, ["reward", "score", "--reward", "r0002", *files, "--json"])
    assert out.exit_code == 0, out.output
    scored = [json.loads(line)["score"] for line in out.output.splitlines()]
    np.testing.assert_allclose(scored, want[:2].detach().numpy(), atol=1e-4)
    shown = CliRunner().invoke(main, ["reward", "show", "r0002"]).output
    assert "prior r0001" in shown and "learnt from 1)" in shown
    assert "prior r0001" in CliRunner().invoke(main, ["reward", "list"]).output


def fake_builtins(monkeypatch, calls: list):
    """`reward.builtins` as its API promises it: a `hpsv2` scorer of mean brightness (torch, differentiable)."""

    class Brightness:
        name = "hpsv2"

        def score(self, images, prompts):
            calls.append(len(images))
            if not isinstance(images, torch.Tensor):
                from reward.embeddings import pil_to_tensor

                images = torch.stack([pil_to_tensor(im) for im in images])
            return 10 * images.mean(dim=(1, 2, 3))

        def provenance(self):
            return {"name": "hpsv2", "weights": "brightness-test"}

    module = types.ModuleType("reward.builtins")
    module.is_builtin = lambda spec: spec in ("pickscore", "hpsv2", "laion-aesthetic")
    module.load_builtin = lambda spec, device=None: Brightness()
    monkeypatch.setitem(sys.modules, "reward.builtins", module)


def test_a_builtin_prior_on_a_real_clip(monkeypatch, rlft_home, tmp_path):
    from reward_util import tiny_clip_folder

    calls: list = []
    fake_builtins(monkeypatch, calls)
    clip = str(tiny_clip_folder(tmp_path / "clip", 16))
    with judged(rlft_home, "me", "bright", 30) as store:
        zero = FitConfig(ensemble=2, steps=0)
        result = reward.train(store, RewardTrainConfig(clip=clip, fit=zero, val_frac=0, prior="hpsv2"), progress=False)
        rows, x = pool_tensor(store)
        judged_rows = [k for k, im in enumerate(rows) if im.sha256 in {s for j in store.judgements()
                                                                        for s in (j.image_a, j.image_b)}]
        assert sum(calls) == len(judged_rows)  # each judged image scored once
        bright = 10 * x.mean(dim=(1, 2, 3))
        w = result.model.metadata["prior"]["weight"]
        assert w["start"] == pytest.approx(1 / float(np.std(bright[judged_rows].numpy())), rel=1e-3)  # a spread: a logit
        model = reward.load(result.version)
        assert model.metadata["prior"]["provenance"] == {"name": "hpsv2", "weights": "brightness-test"}
        with torch.no_grad():
            s = model.score(x)
        np.testing.assert_allclose((s - s.mean()).numpy(), (w["start"] * (bright - bright.mean())).numpy(), atol=1e-4)
        reward.train(store, RewardTrainConfig(clip=clip, fit=zero, val_frac=0, prior="hpsv2"), progress=False)
        assert sum(calls) == len(judged_rows) + N_IMAGES  # the score above; training again read the cache
    monkeypatch.setattr("reward.prior._builtins_module", lambda: None)
    with pytest.raises(UserError, match="needs the reward.builtins module"):
        reward.load(result.version)


def test_a_prior_of_another_world_is_refused(population, rlft_home, tmp_path):
    from reward_util import tiny_clip_folder

    clip = str(tiny_clip_folder(tmp_path / "clip", 16))
    with pytest.raises(UserError, match="judges the toy world's shapes .* reads real images"):
        reward.train(population, RewardTrainConfig(clip=clip, fit=FAST, prior="r0001"), progress=False)
    with pytest.raises(UserError, match="judges real images .* reads the toy world's shapes"):
        reward.train(population, RewardTrainConfig(fit=FAST, prior="pickscore"), progress=False)
    assert [v["id"] for v in reward.versions.list_versions()] == ["r0001"]  # nothing written


@pytest.mark.parametrize("args,needle", [
    (["--prior", "r0042"], "unknown prior 'r0042'"),
    (["--prior", ""], "--prior is empty"),
    (["--prior", "laion:"], "needs a path"),
    (["--prior-weight", "0.5"], "--prior-weight needs a --prior"),
    (["--prior", "r0001", "--prior-weight", "nan"], "finite"),
    (["--prior", "r0001", "--tune", "blocks"], "--tune none"),
    (["--prior", "r0001", "--head", "patch"], "without --head patch"),
    (["--prior", "pickscore"], "judges real images"),
])
def test_bad_prior_specs_are_one_line(population, rlft_home, args, needle):
    from rlft.cli import main

    out = CliRunner().invoke(main, ["--db", f"sqlite:///{rlft_home / 'population'}.sqlite", "reward", "train", *args])
    assert out.exit_code == 2, out.output
    assert needle in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert [v["id"] for v in reward.versions.list_versions()] == ["r0001"]


def test_parse_and_load_errors():
    from reward.model import load
    from reward.prior import load_prior, parse_prior

    assert parse_prior(None) is None
    assert parse_prior("laion:/x.pth").kind == "laion" and parse_prior("hpsv2").kind == "builtin"
    assert parse_prior("r0003").kind == "version"
    with pytest.raises(NotFoundError, match="reward version .* pickscore, hpsv2, laion-aesthetic"):
        load_prior("r0003", load_model=load)


def test_rlft_train_on_a_reward_with_a_prior_and_its_resume(population, rlft_home, tmp_path):
    from rlft.cli import main
    from rlft.models.tiny import tiny_pipeline

    with judged(rlft_home, "me", "big", 20, seed=3) as store:
        reward.train(store, RewardTrainConfig(fit=dict(ensemble=2, steps=40), val_frac=0, prior="r0001"), progress=False)
    model = tmp_path / "tiny"
    tiny_pipeline(0).save_pretrained(model)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"epochs": 1, "optim": {"train_batch_size": 4},
                                  "sample": {"steps": 2, "samples_per_epoch": 4, "batch_size": 4, "grid_prompts": 1,
                                             "grid_seeds": 2}}))
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n")

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    first = invoke("train", "--reward", "r0002", "--model", model, "--prompts", prompts, "--config", config, "-q")
    assert first.exit_code == 0, first.output
    assert invoke("train", "--resume", "latest", "--epochs", "2", "-q").exit_code == 0
    run = rlft_home / "runs" / "t0001"
    assert json.loads((run / "config.json").read_text())["provenance"]["reward"] == "r0002"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(np.isfinite(m["reward_mean"]) and np.isfinite(m["heldout_reward_mean"]) for m in metrics)
