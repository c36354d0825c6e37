"""Pairs from one set of images (`among`: the images one model and LoRA made, e.g. this round's), in the store, the
simulated rater and `rlft simulate --among`."""

from __future__ import annotations

import random

import pytest
from click.testing import CliRunner
from prefs_util import png_bytes

import prefs
from prefs.samplers import ImageSet, NoPairError, ScoreTable
from rlft.cli import main

ROUND2 = ImageSet(lora="t0001", model="toy")


@pytest.fixture
def store():
    with prefs.open_store(seed=0) as s:
        yield s


def _pool(store) -> dict[str, set[str]]:
    """A pool of three rounds' images and others: base toy images, toy + t0001, another model + t0001, imported."""
    groups: dict[str, set[str]] = {"base": set(), "t0001": set(), "other": set(), "imported": set()}
    i = 0
    for group, n, kw in (("base", 6, {"model": "toy"}), ("t0001", 6, {"model": "toy", "lora": "t0001"}),
                         ("other", 3, {"model": "other", "lora": "t0001"}), ("imported", 3, {"origin": "imported"})):
        for k in range(n):
            prompt = f"p{k % 2}"  # two prompts per group, so same_prompt has siblings everywhere
            groups[group].add(store.add_image(png_bytes(i), prompt=prompt, seed=k, **kw).sha256)
            i += 1
    return groups


@pytest.mark.parametrize("strategy", ["random", "same_prompt", "balanced", "uncertain", "random:0.5,repeat:0.5"])
def test_pairs_come_only_from_the_set_until_it_runs_out(store, strategy):
    groups = _pool(store)
    scorer = ScoreTable({sha: (random.Random(sha).random(), 0.3) for g in groups.values() for sha in g})
    seen = set()
    for _ in range(15):  # 6 images: 15 pairs
        pair = store.next_pair("r", strategy, scorer=scorer, among=ROUND2)
        assert {pair.a.sha256, pair.b.sha256} <= groups["t0001"] and (pair.a.lora, pair.b.model) == ("t0001", "toy")
        if not pair.repeat:
            assert frozenset((pair.a.sha256, pair.b.sha256)) not in seen
            seen.add(frozenset((pair.a.sha256, pair.b.sha256)))
            store.record_judgement(pair.a, pair.b, "a", rater="r")
    if "repeat" not in strategy:
        with pytest.raises(NoPairError, match="among the images of toy \\+ t0001"):
            store.next_pair("r", strategy, scorer=scorer, among=ROUND2)
    assert store.next_pair("r", "random").a  # the whole pool still has pairs


def test_the_base_model_s_set_is_its_generated_images_without_a_lora(store):
    groups = _pool(store)
    for _ in range(20):
        pair = store.next_pair("r", "random", among=ImageSet(lora=None, model="toy"))
        assert {pair.a.sha256, pair.b.sha256} <= groups["base"]
    for _ in range(20):  # any model, no LoRA: imported images are no model's output
        pair = store.next_pair("r", "random", among=ImageSet())
        assert {pair.a.sha256, pair.b.sha256} <= groups["base"]
    for _ in range(20):  # a LoRA under any model
        pair = store.next_pair("r", "random", among=ImageSet(lora="t0001"))
        assert {pair.a.sha256, pair.b.sha256} <= groups["t0001"] | groups["other"]


def test_broken_images_of_the_set_are_never_shown(store):
    groups = _pool(store)
    keep = sorted(groups["t0001"])[:2]
    for sha in groups["t0001"] - set(keep):
        store.mark_broken(sha)
    pair = store.next_pair("r", "balanced", among=ROUND2)
    assert {pair.a.sha256, pair.b.sha256} == set(keep)


def test_a_set_of_fewer_than_two_images_is_a_clear_no_pair_error(store):
    _pool(store)
    with pytest.raises(NoPairError, match="among the images of toy \\+ t0009: fewer than 2 of them are usable"):
        store.next_pair("r", "random", among=ImageSet(lora="t0009", model="toy"))


def _oracle(image, prompt=""):
    return float(sum(image.getpixel((0, 0))))


def test_the_simulated_rater_judges_the_set_then_falls_back_to_the_pool_with_a_notice(store):
    from rlft.sim.rater import SimulationConfig, simulate

    groups = _pool(store)
    said: list[str] = []
    summary = simulate(store, _oracle, SimulationConfig(n=20, noise=0, strategy="random", among=ROUND2, rater="sim"),
                       notice=said.append)
    judged = [{j.image_a, j.image_b} for j in store.judgements(rater="sim")]
    assert summary["judged"] == 20 and summary["among"] == "the images of toy + t0001"
    assert all(pair <= groups["t0001"] for pair in judged[:15])  # all 15 pairs of the set first
    assert not any(pair <= groups["t0001"] for pair in judged[15:])  # then the pool's other pairs
    assert said == [summary["among_fallback"]] and "every pair of the images of toy + t0001 was judged after 15" in said[0]


def test_the_simulated_rater_falls_back_at_once_when_the_set_has_fewer_than_two_images(store):
    from rlft.sim.rater import SimulationConfig, simulate

    _pool(store)
    said: list[str] = []
    summary = simulate(store, _oracle, SimulationConfig(n=3, noise=0, strategy="random", among=ImageSet(lora="t0009")),
                       notice=said.append)
    assert summary["judged"] == 3
    assert said == ["the images of t0009 hold 0 usable image(s), fewer than a pair: pairs come from the whole pool"]
    assert summary["among_fallback"] == said[0]


def test_rlft_simulate_among_names_a_lora_base_or_latest(store, rlft_home):
    groups = _pool(store)

    def sim(*args):
        return CliRunner().invoke(main, ["simulate", "--oracle", "tests_oracle_helper:constant", "--noise", "0",
                                         "--strategy", "random", "--rater", "x", *args])

    result = sim("--n", "3", "--among", "base")  # no run yet: `latest` is the base model too
    assert result.exit_code == 0, result.output
    assert "judged 3 pairs among the images of the base model as x" in result.stdout
    result = sim("--n", "2", "--among", "latest")
    assert result.exit_code == 0 and "among the images of the base model" in result.stdout
    judged = [{j.image_a, j.image_b} for j in store.judgements(rater="x")]
    assert len(judged) == 5 and all(pair <= groups["base"] for pair in judged)
    result = sim("--n", "1", "--among", "t0004")  # a run id must name a run
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and "t0004" in result.output
