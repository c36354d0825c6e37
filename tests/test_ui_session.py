"""The rating logic without a browser: pair stream, prefetch, votes, double clicks, stale pages, undo."""

from __future__ import annotations

import pytest
from prefs_util import count_strategy_parses
from ui_helpers import toy_pool

import prefs
from prefs.errors import UserError
from ui.session import RateSession


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def store():
    s = prefs.open_store(seed=0)
    toy_pool(s, prompts=4, per_prompt=3)
    yield s
    s.close()


def rows(store, include_undone=True):
    return list(store.judgements(include_undone=include_undone))


def session(store, rater="alice", **kw):
    clock = Clock()
    kw.setdefault("min_decision_ms", 250)
    return RateSession(store, rater, clock=clock, seed=1, **kw), clock


def test_vote_records_one_row_with_decision_time_and_moves_on(store):
    s, clock = session(store)
    v = s.start()
    first = v.shown
    assert first is not None and v.upcoming is not None  # the next pair is prepared before the vote
    prefetched = v.upcoming
    clock.t += 1.5
    v2 = s.vote(first.token, "left")
    assert v2.ok and v2.count == 1
    assert v2.shown.pair == prefetched and v2.shown.token != first.token
    [j] = rows(store)
    assert (j.image_a, j.image_b, j.outcome, j.shown_left) == (first.pair.a.sha256, first.pair.b.sha256, "a", "a")
    assert j.client_vote_id == first.token and j.decision_ms == 1500 and j.rater == "alice"
    assert j.strategy == first.pair.strategy


@pytest.mark.parametrize("side,outcome", [("left", "a"), ("right", "b"), ("tie", "tie"), ("both_bad", "both_bad"),
                                          ("skip", "skip")])
def test_each_side_maps_to_its_outcome(store, side, outcome):
    s, clock = session(store)
    tok = s.start().shown.token
    clock.t += 1
    s.vote(tok, side)
    assert [j.outcome for j in rows(store)] == [outcome]


def test_double_click_is_recorded_once(store):
    s, clock = session(store)
    tok = s.start().shown.token
    clock.t += 1
    s.vote(tok, "left")
    again = s.vote(tok, "left")  # the same token arrives again (second click, retry)
    assert not again.ok and "Already recorded" in again.message
    assert len(rows(store)) == 1 and again.count == 1


def test_vote_too_soon_after_the_pair_appeared_is_ignored(store):
    s, clock = session(store)
    v = s.start()
    clock.t += 1
    v = s.vote(v.shown.token, "left")
    clock.t += 0.05  # the second click of a double click lands on the new pair
    w = s.vote(v.shown.token, "right")
    assert not w.ok and "Ignored" in w.message and w.shown.token == v.shown.token
    assert len(rows(store)) == 1


def test_stale_token_and_restart_write_nothing(store):
    s, clock = session(store)
    s.start()
    clock.t += 1
    bad = s.vote("not-a-token", "left")
    assert not bad.ok and "no longer on screen" in bad.message and rows(store) == []
    fresh, clock2 = session(store)  # a new server process: no pair shown yet in this session
    clock2.t += 5
    v = fresh.vote("token-from-before-restart", "left")
    assert not v.ok and v.shown is not None and rows(store) == []
    assert "not recorded" in v.message and "New images" not in v.message


def test_vote_for_an_image_gone_from_the_pool_writes_nothing(store, monkeypatch):
    s, clock = session(store)
    tok = s.start().shown.token
    clock.t += 1

    def gone(*a, **k):
        raise prefs.NotFoundError("no image")

    monkeypatch.setattr(store, "record_judgement", gone)
    v = s.vote(tok, "left")
    assert not v.ok and "left the pool" in v.message and v.shown.token != tok


def test_invalid_side_is_a_user_error(store):
    s, clock = session(store)
    tok = s.start().shown.token
    clock.t += 1
    with pytest.raises(UserError):
        s.vote(tok, "left; drop table")


def test_undo_soft_deletes_and_shows_the_pair_again_as_shown(store):
    s, clock = session(store)
    first = s.start().shown
    clock.t += 1
    second = s.vote(first.token, "right").shown
    v = s.undo()
    assert v.ok and v.count == 0 and "right better" in v.message
    assert (v.shown.pair.a.sha256, v.shown.pair.b.sha256) == (first.pair.a.sha256, first.pair.b.sha256)
    assert [j.undone_at is not None for j in rows(store)] == [True]
    clock.t += 1
    after = s.vote(v.shown.token, "left")
    assert after.shown.pair == second.pair  # the pair that was on screen comes back next
    standing = rows(store, include_undone=False)
    assert [j.outcome for j in standing] == ["a"]
    assert s.undo().ok  # takes back the new vote
    nothing = s.undo()  # the first vote is already undone: nothing standing is left
    assert not nothing.ok and nothing.message == "Nothing to undo."


def test_two_raters_have_their_own_streams(store):
    a, ca = session(store, "alice")
    b, cb = session(store, "bob")
    ta, tb = a.start().shown.token, b.start().shown.token
    ca.t += 1
    cb.t += 1
    assert not b.vote(ta, "left").ok  # bob cannot vote on alice's pair
    a.vote(ta, "left")
    b.vote(tb, "right")
    assert sorted((j.rater, j.outcome) for j in rows(store)) == [("alice", "a"), ("bob", "b")]


def test_never_shows_a_pair_twice_and_ends_cleanly(store):
    s, clock = session(store)
    v = s.start()
    seen = set()
    while v.shown is not None:
        key = frozenset((v.shown.pair.a.sha256, v.shown.pair.b.sha256))
        assert key not in seen or v.shown.pair.repeat
        seen.add(key)
        clock.t += 1
        v = s.vote(v.shown.token, "tie")
    assert "Nothing left" in v.message and len(seen) == 12 * 11 // 2
    assert v.exhausted and v.tally.left_all == 0 and v.tally.judged == len(seen)


def test_an_exhausted_session_offers_new_images_and_counts_what_is_left(store):
    # A vote with nothing on screen claimed a restart; new images were never offered while the page stayed open.
    s, clock = session(store)
    v = s.start()
    assert v.tally.left_all == 12 * 11 // 2 and v.tally.left_same_prompt == 4 * 3 and v.tally.judged == 0
    while v.shown is not None:
        clock.t += 1
        v = s.vote(v.shown.token, "left")
        assert v.ok and v.saved == "left better"
    assert s.poll() is None  # nothing new: the page stays as it is
    clock.t += 1
    refused = s.vote("", "left")
    assert not refused.ok and "judged every pair" in refused.message and "restart" not in refused.message
    import random

    from rlft.toy.world import draw, random_scene

    store.add_image(draw(random_scene(random.Random(99)), seed=12345), prompt="new", seed=0, model="toy")  # 12 pairs
    v = s.poll()
    assert v is not None and v.shown is not None and "New images arrived" in v.message
    assert v.tally.left_all == 12 and v.tally.judged == 66
    clock.t += 1
    v = s.vote(v.shown.token, "right")
    assert v.ok and v.saved == "right better" and v.tally.left_all == 11

def test_prefetch_runs_in_the_background(store):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as ex:
        s, clock = session(store, executor=ex)
        v = s.start()
        for _ in range(10):
            clock.t += 1
            v = s.vote(v.shown.token, "left")
            assert v.ok
    assert len(rows(store)) == 10
    assert len({j.client_vote_id for j in rows(store)}) == 10


def test_pair_scorer_of_a_saved_reward_matches_the_models_own_scores():
    import numpy as np
    from reward_util import own_member_scores, train_small_reward

    import reward
    from ui.scoring import Scores

    train_small_reward()
    with prefs.open_store() as store:
        images = list(store.images())[:8]
        scores = Scores(store)
        means, stds, members = scores.pair_scorer()(images)
        own = own_member_scores(reward.load("r0001"), store, images)
        assert scores.rank(images)[1] == "reward r0001"
    assert members.shape == (2, 8) and min(stds) > 0
    np.testing.assert_allclose(members, own, atol=1e-4)
    np.testing.assert_allclose(means, own.mean(0), atol=1e-4)
    np.testing.assert_allclose(stds, own.std(0), atol=1e-4)


def test_the_strategy_is_parsed_once_per_session_not_per_pair(store, monkeypatch):
    parses = count_strategy_parses(monkeypatch)
    s, clock = session(store, strategy="random:0.5,same_prompt:0.5")
    view = s.start()
    for _ in range(12):
        clock.t += 1
        view = s.vote(view.shown.token, "left")
        assert view.ok
    assert len(parses) == 1 and len(rows(store)) == 12
    assert {j.strategy for j in rows(store)} <= {"random", "same_prompt"}
    mix = s.strategy
    assert session(store, "bob", strategy=mix)[0].strategy is mix and len(parses) == 1  # a parsed mix as it is
