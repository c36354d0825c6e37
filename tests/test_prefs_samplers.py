"""Pair selection: the rules every strategy keeps, what each strategy prefers, and mixing."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from prefs_util import add_images, count_strategy_parses

import prefs
from prefs.errors import UserError
from prefs.samplers import (
    STRATEGIES,
    NoPairError,
    ScoreCache,
    ScoreTable,
    StrategyMix,
    moderated_p,
    pair_epig,
    parse_mix,
)


@pytest.fixture
def store():
    with prefs.open_store(seed=0) as s:
        yield s


def key(pair):
    return frozenset((pair.a.sha256, pair.b.sha256))


@pytest.mark.parametrize("strategy", ["random", "same_prompt", "balanced"])
def test_strategy_never_repeats_a_pair_and_then_runs_out(store, strategy):
    add_images(store, 6, prompts=1)  # one prompt: 15 pairs in all
    seen = set()
    for _ in range(15):
        pair = store.next_pair("r", strategy)
        assert pair.a.sha256 != pair.b.sha256 and key(pair) not in seen and pair.strategy == strategy
        seen.add(key(pair))
        store.record_judgement(pair.a, pair.b, "skip", rater="r")
    with pytest.raises(NoPairError, match="judged every pair"):
        store.next_pair("r", strategy)
    assert store.next_pair("someone else", strategy)  # per rater
    store.undo_last("r")  # an undone pair is eligible again
    assert store.next_pair("r", strategy)


def test_broken_images_are_never_shown(store):
    shas = add_images(store, 5, prompts=1)
    for s in shas[:3]:
        store.mark_broken(s)
    for strategy in ("random", "same_prompt", "balanced"):
        pair = store.next_pair("r", strategy)
        assert {pair.a.sha256, pair.b.sha256} == set(shas[3:])
    store.mark_broken(shas[3])
    with pytest.raises(NoPairError):
        store.next_pair("r", "random")


def test_empty_and_single_image_pools(store):
    with pytest.raises(NoPairError, match="fewer than 2 usable images"):
        store.next_pair("r")
    add_images(store, 1)
    with pytest.raises(NoPairError):
        store.next_pair("r", "balanced")


def test_same_prompt_pairs_share_a_prompt_and_is_the_default_when_prompts_repeat(store):
    add_images(store, 40, prompts=10)
    for _ in range(30):
        pair = store.next_pair("r", "same_prompt")
        assert pair.a.prompt == pair.b.prompt
        store.record_judgement(pair.a, pair.b, "a", rater="r")
    assert store.default_strategy() == {"same_prompt": 0.95, "repeat": 0.05}


def test_default_is_random_when_every_prompt_is_unique(store):
    add_images(store, 4)
    assert store.default_strategy() == {"random": 0.95, "repeat": 0.05}
    assert store.next_pair("r").strategy == "random"  # repeat has nothing yet, falls back


def test_balanced_prefers_least_judged_images(store):
    shas = add_images(store, 70)
    for k in range(2, 70):  # every image but the first two has a judgement
        store.record_judgement(shas[k], shas[(k + 1) % 68 + 2], "a", rater="x")
    pair = store.next_pair("r", "balanced")
    assert {pair.a.sha256, pair.b.sha256} == set(shas[:2])


def test_sides_are_randomised(store):
    add_images(store, 2)
    lefts = Counter()
    for seed in range(40):
        pair = store.next_pair("r", "random", rng=random.Random(seed))
        lefts[pair.a.prompt] += 1
    assert set(lefts) == {"prompt 0", "prompt 1"} and min(lefts.values()) >= 8


def test_uncertain_picks_the_pair_closest_to_even_odds(store):
    shas = add_images(store, 6)
    table = ScoreTable({shas[0]: (0.0, 0.0), shas[1]: (5.0, 0.0), shas[2]: (10.0, 0.0), shas[3]: (15.0, 0.0),
                        shas[4]: (20.0, 0.0), shas[5]: (10.2, 0.0)})
    pair = store.next_pair("r", "uncertain", scorer=table)
    assert key(pair) == {shas[2], shas[5]}
    ordered = (pair.a.sha256, pair.b.sha256)
    expected = moderated_p(10.0, 10.2) if ordered == (shas[2], shas[5]) else moderated_p(10.2, 10.0)
    assert pair.predicted_p == pytest.approx(expected)
    store.record_judgement(pair.a, pair.b, "a", rater="r", strategy=pair.strategy, predicted_p=pair.predicted_p)
    assert key(store.next_pair("r", "uncertain", scorer=table)) != {shas[2], shas[5]}


def test_uncertain_uses_ensemble_disagreement(store):
    shas = add_images(store, 4)
    # Means equally far apart, but the ensemble disagrees about images 0 and 1.
    table = ScoreTable({shas[0]: (0.0, 3.0), shas[1]: (2.0, 3.0), shas[2]: (10.0, 0.0), shas[3]: (12.0, 0.0)})
    assert key(store.next_pair("r", "uncertain", scorer=table)) == {shas[0], shas[1]}


def test_uncertain_needs_a_scorer_and_checks_its_output(store):
    add_images(store, 3)
    with pytest.raises(UserError, match="the 'uncertain' strategy needs a scorer"):
        store.next_pair("r", "uncertain")
    for name in ("bald", "epig"):
        with pytest.raises(UserError, match=f"the '{name}' strategy needs a scorer"):
            store.next_pair("r", name)
    with pytest.raises(ValueError, match="scorer returned"):
        store.next_pair("r", "uncertain", scorer=lambda images: ([0.0], None))


def test_score_cache_scores_each_image_once(store):
    add_images(store, 5)
    calls = []

    def scorer(images):
        calls.extend(im.sha256 for im in images)
        return [float(len(im.prompt)) for im in images], None

    cached = ScoreCache(scorer)
    for _ in range(3):
        store.next_pair("r", "uncertain", scorer=cached)
    assert len(calls) == len(set(calls)) == 5


def test_repeat_shows_an_old_pair_again_and_stats_measure_consistency(store):
    add_images(store, 12)
    for _ in range(20):
        pair = store.next_pair("r", "random")
        store.record_judgement(pair.a, pair.b, "a", rater="r")
    judged = {frozenset((j.image_a, j.image_b)): j for j in store.judgements()}
    repeat = store.next_pair("r", "repeat")
    assert repeat.repeat and key(repeat) in judged
    old = judged[key(repeat)]
    # Judge it again the same way (same winner, whatever the sides): consistent.
    same = "a" if repeat.a.sha256 == old.winner else "b"
    store.record_judgement(repeat.a, repeat.b, same, rater="r", strategy="repeat")
    stats = store.stats()
    assert stats["self_consistency"] == {"agreement": 1.0, "count": 1}


def test_repeat_waits_for_enough_history(store):
    add_images(store, 6)
    pair = store.next_pair("r", "random")
    store.record_judgement(pair.a, pair.b, "a", rater="r")
    # Nothing old enough to repeat: a new random pair instead, not flagged as a repeat.
    fallback = store.next_pair("r", "repeat")
    assert fallback.strategy == "random" and not fallback.repeat and key(fallback) != key(pair)


def test_mix_follows_its_weights(store):
    add_images(store, 30, prompts=5)
    rng = random.Random(1)
    used = Counter(store.next_pair("r", "random:0.75,balanced:0.25", rng=rng).strategy for _ in range(400))
    assert 0.68 < used["random"] / 400 < 0.82 and used["random"] + used["balanced"] == 400


@pytest.mark.parametrize("spec, message", [
    ("nonsense", "unknown pair strategy 'nonsense'; valid: balanced, bald, epig, random, repeat, same_prompt, uncertain"),
    ("random:x", "bad weight 'x'"),
    ("random:0", "must be positive"),
    ({"random": -1}, "must be positive"),
])
def test_bad_strategy_specs(spec, message):
    with pytest.raises(UserError, match=message):
        parse_mix(spec, {})


def test_parse_mix_normalises():
    assert parse_mix("uncertain:0.7,balanced:0.25,repeat:0.05", {}) == pytest.approx(
        {"uncertain": 0.7, "balanced": 0.25, "repeat": 0.05})
    assert parse_mix("random", {}) == {"random": 1.0}
    assert parse_mix(None, {"random": 1.0}) == {"random": 1.0}


def test_strategy_mix_is_a_checked_immutable_value():
    mix = parse_mix("uncertain:7,balanced:2.5,repeat:0.5")
    assert isinstance(mix, StrategyMix) and list(mix) == ["uncertain", "balanced", "repeat"]
    assert dict(mix) == pytest.approx({"uncertain": 0.7, "balanced": 0.25, "repeat": 0.05})
    assert parse_mix(mix) is mix  # already parsed: passed through, not read again
    assert str(mix) == "uncertain:0.7,balanced:0.25,repeat:0.05" and parse_mix(str(mix)) == mix
    assert hash(parse_mix(str(mix))) == hash(mix) and str(parse_mix("random")) == "random"
    assert mix.needs_scorer and not parse_mix("balanced,repeat:0.05").needs_scorer
    with pytest.raises(AttributeError, match="immutable"):
        mix._weights = {}
    with pytest.raises(UserError, match="no pair strategy given; valid: balanced, bald, epig, random, repeat"):
        parse_mix("")
    with pytest.raises(UserError, match="unknown pair strategy 'best'; valid: balanced, bald, epig"):
        StrategyMix({"best": 1.0})


def test_next_pair_uses_a_parsed_mix_as_it_is(store, monkeypatch):
    add_images(store, 12, prompts=3)
    mix = parse_mix("random:0.5,balanced:0.5")
    parses = count_strategy_parses(monkeypatch)
    for _ in range(25):
        pair = store.next_pair("r", mix)
        store.record_judgement(pair.a, pair.b, "a", rater="r", strategy=pair.strategy)
    assert parses == []  # no pair read the mix again
    store.next_pair("r", "random")  # mix text from a library caller is still read, once for this call
    assert parses == [{"random": 1.0}]


def test_custom_strategy_can_be_registered(store):
    shas = add_images(store, 4)

    @prefs.register_strategy("first_two")
    def first_two(ctx):
        ids = sorted(ctx.usable_ids(10))
        return (ids[0], ids[1], 0.5) if ctx.ok(ids[0], ids[1]) else None

    try:
        pair = store.next_pair("r", "first_two")
        assert key(pair) == {shas[0], shas[1]} and pair.predicted_p == 0.5
    finally:
        del STRATEGIES["first_two"]


def test_pair_information_is_zero_without_disagreement_and_grows_with_it():
    from prefs.samplers import pair_information

    info = pair_information(np.array([0.0, 3.0, 0.0, 0.0, 1.0]), np.array([0.0, 0.0, 0.01, 4.0, 4.0]))
    assert info[0] == pytest.approx(0.0, abs=1e-9) and info[1] == pytest.approx(0.0, abs=1e-9)
    assert info[2] < 0.01 < info[3]  # a confident coin flip teaches nothing; a disputed pair does
    # Against Monte Carlo: d ~ N(1, 4), H[E sigmoid(d)] - E[H sigmoid(d)] in bits.
    d = np.random.default_rng(0).normal(1.0, 2.0, 400_000)
    p = 1 / (1 + np.exp(-d))
    h = lambda q: -(q * np.log2(q) + (1 - q) * np.log2(1 - q))  # noqa: E731
    assert pair_information(np.array([1.0]), np.array([4.0]))[0] == pytest.approx(h(p.mean()) - h(p).mean(), abs=2e-3)


def test_bald_and_epig_ask_the_disputed_pair_uncertain_the_even_one(store):
    shas = add_images(store, 4)
    # 0 and 1: the ensemble agrees they are equal (a true tie). 2 and 3: its members disagree about the order.
    table = ScoreTable({shas[0]: (0.0, 0.05), shas[1]: (0.0, 0.05), shas[2]: (5.0, 1.5), shas[3]: (6.5, 1.5)})
    assert key(store.next_pair("r", "bald", scorer=table)) == {shas[2], shas[3]}
    assert key(store.next_pair("r", "epig", scorer=table)) == {shas[2], shas[3]}  # from stds alone: BALD
    pair = store.next_pair("r", "uncertain", scorer=table)
    assert key(pair) == {shas[0], shas[1]} and pair.predicted_p == pytest.approx(0.5)


def _member_scorer(members_by_sha, with_members=True):
    def scorer(images):
        m = np.array([members_by_sha[im.sha256] for im in images], dtype=float).T  # K x N
        return (m.mean(0).tolist(), m.std(0).tolist(), m) if with_members else (m.mean(0).tolist(), m.std(0).tolist())

    return scorer


def test_bald_with_members_skips_a_pair_every_member_ranks_alike(store):
    shas = add_images(store, 4)
    # Images 0 and 1: each member is unsure where both sit (std ~2.4) but every member puts 1 just above 0.
    # Images 2 and 3: surer of each image (std ~0.4), yet the members disagree about which is better.
    table = {shas[0]: [-3.0, 0.0, 3.0], shas[1]: [-2.5, 0.5, 3.5], shas[2]: [10.0, 11.0, 10.5], shas[3]: [11.0, 10.0, 10.5]}
    pair = store.next_pair("r", "bald", scorer=_member_scorer(table))
    assert key(pair) == {shas[2], shas[3]} and pair.predicted_p == pytest.approx(0.5)
    # From stds alone (independent errors) the wide pair 0-1 looks the more informative one.
    assert key(store.next_pair("r", "bald", scorer=_member_scorer(table, with_members=False))) == {shas[0], shas[1]}


def test_uncertain_with_members_asks_the_pair_nearest_even_odds_under_the_members_mean(store):
    shas = add_images(store, 4)
    # 0 and 1: every member gives image 1 a small, sure edge: P(0 beats 1) = sigmoid(-0.1) = 0.475 in each.
    # 2 and 3: the members dispute the order (gaps -2, +4, -4), but their mean is P = 0.373: further from even.
    table = {shas[0]: [0.0, 0.0, 0.0], shas[1]: [0.1, 0.1, 0.1], shas[2]: [10.0, 14.0, 10.0], shas[3]: [12.0, 10.0, 14.0]}
    p23 = float(np.mean(1 / (1 + np.exp(-np.array([-2.0, 4.0, -4.0])))))
    assert abs(p23 - 0.5) > abs(1 / (1 + np.exp(0.1)) - 0.5)
    pair = store.next_pair("r", "uncertain", scorer=_member_scorer(table))
    assert key(pair) == {shas[0], shas[1]}
    assert pair.predicted_p == pytest.approx(1 / (1 + np.exp(0.1 if pair.a.sha256 == shas[0] else -0.1)))
    assert key(store.next_pair("r", "bald", scorer=_member_scorer(table))) == {shas[2], shas[3]}
    # Once 0-1 is judged, uncertain asks the next nearest even odds: 2-3 (every cross pair is ~10 logits apart).
    store.record_judgement(pair.a, pair.b, "a", rater="r", strategy=pair.strategy, predicted_p=pair.predicted_p)
    assert key(store.next_pair("r", "uncertain", scorer=_member_scorer(table))) == {shas[2], shas[3]}


def test_uncertain_breaks_a_tie_in_odds_by_the_members_dispute(store):
    shas = add_images(store, 4)
    # Both pairs are exactly even under the members' mean (gaps 0,0,0 and -2,+2,0: the sigmoids of +-2 sum to 1),
    # but the members dispute only 2-3; every cross pair is ~10 logits apart.
    table = {shas[0]: [0.0, 0.0, 0.0], shas[1]: [0.0, 0.0, 0.0], shas[2]: [10.0, 12.0, 11.0], shas[3]: [12.0, 10.0, 11.0]}
    for seed in range(8):  # the candidates come in a different order each time: the tie-break decides, not the order
        pair = store.next_pair("r", "uncertain", scorer=_member_scorer(table), rng=random.Random(seed))
        assert key(pair) == {shas[2], shas[3]} and pair.predicted_p == pytest.approx(0.5)


def test_needs_scorer_follows_registration():
    from prefs.samplers import needs_scorer, register_strategy

    assert needs_scorer("uncertain") and needs_scorer("bald:0.5,balanced:0.5") and needs_scorer({"epig": 1.0})
    assert not needs_scorer("balanced,repeat:0.05") and not needs_scorer(None)
    assert needs_scorer(parse_mix("uncertain:0.5,balanced:0.5")) and not needs_scorer(parse_mix("repeat"))
    with pytest.raises(UserError, match="unknown pair strategy 'uncertainty'"):  # one parser: no silent False
        needs_scorer("uncertainty")
    try:
        register_strategy("my_scored", needs_scorer=True)(lambda ctx: None)
        register_strategy("my_plain")(lambda ctx: None)
        assert needs_scorer("my_scored:0.5,balanced:0.5") and not needs_scorer("my_plain")
    finally:
        from prefs.samplers import SCORED_STRATEGIES

        for name in ("my_scored", "my_plain"):
            STRATEGIES.pop(name, None)
            SCORED_STRATEGIES.discard(name)


def test_score_cache_keeps_the_members(store):
    shas = add_images(store, 3)
    table = {s: [float(k), float(k) + 1.0] for k, s in enumerate(shas)}
    calls = []
    inner = _member_scorer(table)
    cached = ScoreCache(lambda images: calls.append(len(images)) or inner(images))
    images = [store.next_pair("r", "random", rng=random.Random(0)).a]
    for _ in range(2):
        means, stds, members = cached(images)
        np.testing.assert_allclose(members, np.array([table[images[0].sha256]]).T)
    assert calls == [1]
    cached.clear()
    assert len(cached(images)) == 3 and calls == [1, 1]


def test_pair_epig_matches_the_definition():
    rng = np.random.default_rng(0)
    pa, pt = rng.uniform(0.01, 0.99, (5, 7)), rng.uniform(0.01, 0.99, (5, 4))
    want = np.zeros(7)
    for c in range(7):
        for t in range(4):
            for yc in (0, 1):
                for yt in (0, 1):
                    qc = pa[:, c] if yc else 1 - pa[:, c]
                    qt = pt[:, t] if yt else 1 - pt[:, t]
                    joint = (qc * qt).mean()
                    want[c] += joint * np.log2(joint / (qc.mean() * qt.mean())) / 4
    np.testing.assert_allclose(pair_epig(pa, pt), want, atol=1e-9)
    # An answer every member predicts alike (here: the same p in every member) tells nothing about the others.
    assert pair_epig(np.full((5, 1), 0.3), pt)[0] == pytest.approx(0.0, abs=1e-9)


def test_epig_asks_what_informs_the_other_pairs_and_bald_what_is_disputed(store):
    shas = add_images(store, 8)
    # Six typical images on one axis whose direction the members dispute: one answer among them settles all 15
    # of their pairs. Two outliers far above, whose order members dispute more but which predicts nothing else.
    c = np.array([1.0, -1.0, 1.0, -1.0])
    table = {shas[i]: (c * (i + 1)).tolist() for i in range(6)}
    table[shas[6]], table[shas[7]] = [105.0, 105.0, 95.0, 95.0], [95.0, 95.0, 105.0, 105.0]
    assert key(store.next_pair("r", "bald", scorer=_member_scorer(table))) == {shas[6], shas[7]}
    assert key(store.next_pair("r", "epig", scorer=_member_scorer(table))) <= set(shas[:6])


def test_float32_members_give_finite_information_and_the_same_pair(store):
    from prefs.samplers import _entropy_bits

    # A float32 probability of exactly 1 (a pair ranked 20 logits apart) has zero entropy, not 0 * log 0 = nan.
    assert np.all(np.isfinite(_entropy_bits(np.array([1.0, 0.5, 0.0], dtype=np.float32))))
    shas = add_images(store, 5)
    table = {shas[0]: [0.0, 0.0, 0.0], shas[1]: [30.0, 30.0, 30.0], shas[2]: [-30.0, -30.0, -30.0],
             shas[3]: [1.0, -1.0, 0.5], shas[4]: [-1.0, 1.0, -0.5]}

    def scorer32(images):
        m = np.array([table[im.sha256] for im in images], dtype=np.float32).T
        return m.mean(0).tolist(), m.std(0).tolist(), m

    with np.errstate(all="raise"):  # no nan or divide-by-zero on the way
        p32 = store.next_pair("r", "bald", scorer=scorer32)
    assert key(p32) == key(store.next_pair("r", "bald", scorer=_member_scorer(table))) == {shas[3], shas[4]}
