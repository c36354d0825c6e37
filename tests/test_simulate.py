"""Simulated raters: oracles on toy images, `rlft simulate` through next_pair + record_judgement."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image
from prefs_util import add_toy_images, count_strategy_parses

import prefs
from prefs.errors import UserError
from rlft.cli import main
from rlft.sim import oracles
from rlft.toy.world import Scene, draw


def scene(**kw):
    base = dict(shape="circle", color="red", background="blue", size="medium", position="center")
    base.update(kw)
    return draw(Scene(**base), seed=1)


def test_oracles_rank_toy_images_as_named():
    assert oracles.warm(scene(color="orange")) > oracles.warm(scene(color="green"))
    assert oracles.cool(scene(color="green")) > oracles.cool(scene(color="yellow"))
    assert oracles.big(scene(size="large")) > oracles.big(scene(size="medium")) > oracles.big(scene(size="small"))
    assert oracles.small(scene(size="small")) > oracles.small(scene(size="large"))
    assert oracles.centered(scene(position="center")) > oracles.centered(scene(position="left"))
    assert oracles.dark(scene(background="black", color="red")) > oracles.dark(scene(background="white", color="red"))
    assert oracles.bright(scene(background="white")) > oracles.bright(scene(background="black", color="red"))


def test_composite_oracles_add_two_tastes():
    warm_big, warm_small = scene(color="orange", size="large"), scene(color="orange", size="small")
    cold_big = scene(color="green", size="large")
    for img in (warm_big, warm_small, cold_big):
        assert oracles.ORACLES["warm+big"](img) == pytest.approx(oracles.warm(img) + oracles.big(img))
        assert oracles.ORACLES["cool+centered"](img) == pytest.approx(oracles.cool(img) + oracles.centered(img))
    # it wants both: warm and big beats warm alone and big alone
    assert oracles.ORACLES["warm+big"](warm_big) > max(oracles.ORACLES["warm+big"](warm_small),
                                                       oracles.ORACLES["warm+big"](cold_big))
    any_two = oracles.resolve_oracle("dark+small")
    assert any_two(warm_small) == pytest.approx(oracles.dark(warm_small) + oracles.small(warm_small))
    for bad in ("warm+tasty", "warm+warm", "warm+big+big", "warm+"):
        with pytest.raises(UserError, match="cannot combine"):
            oracles.resolve_oracle(bad)


def test_resolve_oracle():
    assert oracles.resolve_oracle("warm") is oracles.warm
    assert oracles.resolve_oracle("rlft.sim.oracles:big") is oracles.big
    with pytest.raises(UserError, match="unknown oracle 'tasty'; valid: big, bright, centered, cool, cool\\+centered, dark, "
                                        "small, warm, warm\\+big"):
        oracles.resolve_oracle("tasty")
    with pytest.raises(UserError, match="cannot import oracle module"):
        oracles.resolve_oracle("no_such_module_xyz:f")
    with pytest.raises(UserError, match="has no function 'nope'"):
        oracles.resolve_oracle("rlft.sim.oracles:nope")


def sim(*args):
    return CliRunner().invoke(main, ["simulate", *args], catch_exceptions=False)


def test_noiseless_simulation_agrees_with_the_oracle_and_bt_recovers_it():
    with prefs.open_store() as store:
        shas = add_toy_images(store, 24)
    result = sim("--oracle", "big", "--n", "120", "--noise", "0", "--strategy", "random", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["judged"] == 120 and summary["agreement"] == 1.0 and summary["stopped"] is None
    with prefs.open_store() as store:
        assert store.raters() == ["sim-big"]
        scores = store.fit_scores()
        util = {s: oracles.big(Image.open(store.image_path(s))) for s in shas}
    ranked = sorted(scores, key=scores.get)
    # The fitted ranking follows the oracle: the best-scored third is bigger on average than the worst third.
    third = len(ranked) // 3
    assert sum(util[s] for s in ranked[-third:]) > sum(util[s] for s in ranked[:third]) + third


def test_noise_ties_mixes_and_custom_oracle():
    with prefs.open_store() as store:
        add_toy_images(store, 16)
    result = sim("--oracle", "tests_oracle_helper:constant", "--n", "60", "--tie-prob", "1", "--rater", "bot",
                 "--strategy", "uncertain:0.5,balanced:0.5", "--seed", "3", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["by_outcome"] == {"tie": 60}
    with prefs.open_store() as store:
        used = {j.strategy for j in store.judgements()}
        assert used == {"uncertain", "balanced"}
        assert {j.rater for j in store.judgements()} == {"bot"}
        assert all(j.predicted_p is not None for j in store.judgements() if j.strategy == "uncertain")


def test_simulation_stops_when_pairs_run_out():
    with prefs.open_store() as store:
        add_toy_images(store, 3)
    result = sim("--oracle", "warm", "--n", "10", "--strategy", "random")
    assert result.exit_code == 0
    assert "judged 3 pairs" in result.stdout and "stopped early" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--oracle", "tasty", "--n", "1"], "unknown oracle 'tasty'"),
    (["--oracle", "warm", "--n", "-1"], "--n must be >= 0"),
    (["--oracle", "warm", "--n", "1", "--noise", "-1"], "--noise must be a finite number"),
    (["--oracle", "warm", "--n", "1", "--tie-prob", "2"], "--tie-prob must be in [0, 1]"),
    (["--oracle", "warm", "--n", "1", "--strategy", "best"], "unknown pair strategy 'best'"),
    (["--oracle", "warm", "--n", "1", "--consistency", "1.2"], "--consistency must be strictly between 0.5 and 1"),
    (["--oracle", "warm", "--n", "1", "--consistency", "0.9", "--noise", "1"], "give --noise or --consistency, not both"),
    (["--oracle", "tests_oracle_helper:constant", "--n", "1", "--consistency", "0.9"], "the oracle gives all 4 pool images the same utility"),
])
def test_bad_simulate_arguments_exit_2(args, message):
    with prefs.open_store() as store:
        add_toy_images(store, 4)
    result = sim(*args)
    assert result.exit_code == 2 and message in result.stderr
    with prefs.open_store() as store:
        assert store.stats()["judgements"] == 0


def test_simulate_parses_the_strategy_once_for_the_whole_run(monkeypatch):
    with prefs.open_store() as store:
        add_toy_images(store, 10)
    parses = count_strategy_parses(monkeypatch)
    result = sim("--oracle", "warm", "--n", "30", "--noise", "0", "--strategy", "random:0.5,balanced:0.5", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["judged"] == 30
    assert parses == [{"random": 0.5, "balanced": 0.5}]  # at the command line, not once per pair


def test_calibrate_noise_hits_the_requested_consistency():
    import numpy as np

    from rlft.sim.rater import calibrate_noise

    u = np.array([0.0, 0.0, 1.0, 3.0])
    # Distinct-utility pairs: gaps 1 (x2), 3 (x2), 2, so E[sigmoid(gap/T)] over uniformly drawn pairs weights
    # them 2:2:1; solve that equation independently by bisection-free root finding on a grid.
    t = calibrate_noise(u, 0.9, np.random.default_rng(0), pairs=200_000)
    gaps = np.array([1, 1, 3, 3, 2], dtype=float)
    grid = np.linspace(0.05, 3, 300_000)
    want = grid[np.argmin(np.abs((1 / (1 + np.exp(-gaps[None] / grid[:, None]))).mean(1) - 0.9))]
    assert abs(t - want) < 0.01 * want
    # Scaling the utilities scales T; a lower consistency means a noisier rater.
    assert calibrate_noise(10 * u, 0.9, np.random.default_rng(0), pairs=200_000) == pytest.approx(10 * t, rel=1e-6)
    assert calibrate_noise(u, 0.7, np.random.default_rng(0)) > 2 * t
    # One extreme utility among many ordinary ones: the search range spans the smallest gap too.
    wide = np.append(np.random.default_rng(1).normal(size=99), 1e7)
    t = calibrate_noise(wide, 0.9, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, 100, 20_000), rng.integers(0, 100, 20_000)
    gaps = np.abs(wide[i] - wide[j])
    assert (1 / (1 + np.exp(-gaps[gaps > 0] / t))).mean() == pytest.approx(0.9, abs=1e-3)
    for bad in (0.5, 1.0, float("nan")):
        with pytest.raises(UserError, match="strictly between 0.5 and 1"):
            calibrate_noise(u, bad)
    with pytest.raises(UserError, match="on 1 pool image"):
        calibrate_noise([1.0], 0.9)


def test_simulate_with_consistency_calibrates_the_rater_per_oracle():
    with prefs.open_store() as store:
        add_toy_images(store, 40)
    out = {}
    for oracle in ("big", "dark"):
        result = sim("--oracle", oracle, "--n", "300", "--consistency", "0.9", "--strategy", "random", "--rater", oracle, "--json")
        assert result.exit_code == 0, result.output
        out[oracle] = json.loads(result.stdout)
    # Utilities of `dark` span a smaller range than `big`'s, so its T is smaller, and both raters agree with
    # their oracle on about 90% of decisive pairs (300 votes: +- ~3.5 points at 2 sigma; ties excluded).
    assert out["dark"]["noise"] < out["big"]["noise"]
    for s in out.values():
        assert 0.83 < s["agreement"] < 0.96
    default = json.loads(sim("--oracle", "dark", "--n", "5", "--rater", "d1", "--json").stdout)
    assert default["noise"] == 1.0


def test_uncertain_asks_an_online_ensemble_refitted_every_50_votes():
    with prefs.open_store() as store:
        add_toy_images(store, 30)
    result = sim("--oracle", "warm", "--n", "120", "--noise", "0", "--strategy", "uncertain", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # Fits at votes 20 (the first 20 usable judgements; the Bradley-Terry table stands in before) and 70.
    assert summary["judged"] == 120 and summary["refits"] == 2
    result = sim("--oracle", "warm", "--n", "10", "--strategy", "uncertain", "--scorer", "bt", "--rater", "b", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["refits"] == 0
    # bald and epig are scored strategies too: they get the same online ensemble.
    result = sim("--oracle", "warm", "--n", "30", "--noise", "0", "--strategy", "bald:0.5,epig:0.5", "--rater", "c", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["refits"] == 1
    with prefs.open_store() as store:
        used = {j.strategy for j in store.judgements() if j.rater == "c"}
    assert used <= {"bald", "epig", "random"} and used & {"bald", "epig"}


def test_uncertain_with_a_missing_reward_version_is_a_clear_error():
    with prefs.open_store() as store:
        add_toy_images(store, 6)
    result = sim("--oracle", "warm", "--n", "5", "--strategy", "uncertain", "--scorer", "r0042")
    assert result.exit_code == 2 and "r0042" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with prefs.open_store() as store:
        assert store.stats()["judgements"] == 0


def test_uncertain_with_a_saved_reward_version_records_its_predictions():
    import numpy as np
    from reward_util import own_member_scores, train_small_reward

    import reward

    train_small_reward()  # r0001, on a judged 20-image pool in this home
    result = sim("--oracle", "warm", "--n", "8", "--strategy", "uncertain", "--scorer", "latest", "--rater", "u", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["judged"] == 8 and summary["refits"] == 0  # the saved version, no ensemble fitted here
    with prefs.open_store() as store:
        rows = [j for j in store.judgements() if j.rater == "u"]
        model = reward.load("r0001")
        assert len(rows) == 8 and {j.strategy for j in rows} == {"uncertain"}
        for j in rows:  # P(a beats b) recorded is r0001's: the mean over its members of sigmoid(r_a - r_b)
            m = own_member_scores(model, store, [j.image_a, j.image_b])
            assert j.predicted_p == pytest.approx(float(np.mean(1 / (1 + np.exp(m[:, 1] - m[:, 0])))), abs=1e-4)


def test_online_scorer_learns_the_oracle_and_refits_only_on_new_votes():
    import numpy as np
    from reward_util import judged_store

    import reward

    store = judged_store(n_images=40, n_judgements=120, oracle="warm", noise=0.1)
    try:
        images = list(store.images())
        scorer = reward.OnlineScorer(store, rater="sim", refit_every=10)
        means, stds, members = scorer(images)
        assert members.shape == (5, len(images))  # the ensemble's members go along, for the joint BALD/EPIG
        assert scorer.refits == 1 and scorer.fitted_on == store.count_judgements(rater="sim", outcomes=["a", "b", "tie"])
        util = np.array([oracles.warm(Image.open(store.image_path(im))) for im in images])
        # Warm images score higher: the ensemble's mean tracks the oracle, and members disagree somewhat.
        assert np.corrcoef(util, means)[0, 1] > 0.6
        assert min(stds) > 0
        assert scorer.refresh() is False  # no new votes
        for k in range(10):
            store.record_judgement(images[k], images[k + 1], "a", rater="sim")
        assert scorer.refresh() is True and scorer.refits == 2
        store.record_judgement(images[0], images[1], "skip", rater="sim")
        assert store.count_judgements(rater="sim") == 131 and store.count_judgements(rater="sim", outcomes=["skip"]) == 1
        store.undo_last("sim")
        assert store.count_judgements(rater="sim") == 130 and store.count_judgements(rater="nobody") == 0
        with pytest.raises(UserError, match="refit_every"):
            reward.OnlineScorer(store, refit_every=0)
    finally:
        store.close()


def test_simulating_again_with_the_same_seed_adds_judgements():
    with prefs.open_store() as store:
        add_toy_images(store, 12)
    for rater in ("a", "b", "a"):
        result = sim("--oracle", "big", "--n", "10", "--strategy", "random", "--rater", rater, "--json")
        assert result.exit_code == 0, result.output
    with prefs.open_store() as store:
        assert store.count_judgements(rater="a") == 20 and store.count_judgements(rater="b") == 10
