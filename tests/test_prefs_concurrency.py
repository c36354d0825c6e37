"""Concurrent raters lose no vote (SQLite and PostgreSQL), and the PostgreSQL path works end to end."""

from __future__ import annotations

import threading

import pytest
from prefs_util import add_images

import prefs

THREADS, VOTES = 8, 500


def hammer(store, shas):
    """8 threads x 500 votes, each thread its own rater, plus a retried (duplicate) vote every 50."""
    errors = []

    def worker(t):
        try:
            for k in range(VOTES):
                a, b = shas[(t + k) % len(shas)], shas[(t + 3 * k + 1) % len(shas)]
                if a == b:
                    b = shas[(shas.index(a) + 1) % len(shas)]
                vote = f"t{t}-v{k}"
                store.record_judgement(a, b, "ab"[k % 2], rater=f"rater{t % 3}", client_vote_id=vote)
                if k % 50 == 0:  # a client retry: must not add a row
                    store.record_judgement(a, b, "ab"[k % 2], rater=f"rater{t % 3}", client_vote_id=vote)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:3]
    votes = {j.client_vote_id for j in store.judgements()}
    assert votes == {f"t{t}-v{k}" for t in range(THREADS) for k in range(VOTES)}
    stats = store.stats(top=0)
    assert stats["judgements"] == THREADS * VOTES
    assert sum(im.n_judgements for im in store.images()) == 2 * THREADS * VOTES


@pytest.mark.slow
def test_concurrent_votes_sqlite():
    with prefs.open_store() as store:
        hammer(store, add_images(store, 40))


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_votes_postgres(pg_url):  # noqa: F811
    with prefs.open_store(pg_url) as store:
        hammer(store, add_images(store, 40))


@pytest.mark.postgres
def test_postgres_end_to_end(pg_url):  # noqa: F811
    with prefs.open_store(pg_url, seed=0) as store:
        shas = add_images(store, 6, prompts=2)
        pair = store.next_pair("alice")
        assert pair.a.prompt == pair.b.prompt
        j = store.record_judgement(pair.a, pair.b, "tie", rater="alice", client_vote_id="v1", decision_ms=10)
        assert store.record_judgement(pair.a, pair.b, "tie", rater="alice", client_vote_id="v1") == j
        store.record_judgement(shas[0], shas[1], "a", rater="alice")
        assert store.undo_last("alice").image_a == shas[0]
        s = store.stats()
        assert (s["judgements"], s["undone"], s["by_outcome"]["tie"], s["raters"]) == (1, 1, 1, {"alice": 1})
        with pytest.raises(prefs.UserError, match="invalid outcome"):
            store.record_judgement(shas[0], shas[1], "left", rater="alice")
        assert [x.client_vote_id for x in store.judgements(include_undone=True)][0] == "v1"
        assert pair.a.created_at.tzinfo is not None


def two_sessions_of_one_rater(store, rounds: int = 20):
    """Two sessions of rater "ann" pick their next pair at the same moment and then both vote on it: each
    round the two pick from the same state with equal seeds, so they are offered the same pair, the race
    that lets a pair be judged twice (picking and voting are separate transactions)."""
    import random

    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def session(k):
        rng = random.Random(0)
        try:
            for r in range(rounds):
                pair = store.next_pair("ann", "random", rng=rng)
                barrier.wait(timeout=30)
                store.record_judgement(pair.a, pair.b, "ab"[r % 2], rater="ann", strategy=pair.strategy,
                                       client_vote_id=f"s{k}-{r}")
                barrier.wait(timeout=30)
        except BaseException as e:  # surfaced below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=session, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:3]


def assert_next_pair_promise_kept(store, votes: int):
    from collections import Counter

    standing = list(store.judgements(rater="ann"))
    assert len(standing) == votes  # every vote kept: it is what the person said
    first_times = Counter(frozenset((j.image_a, j.image_b)) for j in standing if j.strategy != "repeat")
    assert max(first_times.values()) == 1, [n for n in first_times.values() if n > 1]
    judged = {frozenset((j.image_a, j.image_b)) for j in standing}
    assert sum(j.strategy == "repeat" for j in standing) == votes - len(judged)  # the second of each pair
    assert store.stats()["self_consistency"]["count"] == votes - len(judged)


def test_one_rater_in_two_sessions_never_judges_a_pair_twice_as_new_sqlite():
    with prefs.open_store() as store:
        add_images(store, 12)
        two_sessions_of_one_rater(store)
        assert_next_pair_promise_kept(store, 40)


@pytest.mark.postgres
def test_one_rater_in_two_sessions_never_judges_a_pair_twice_as_new_postgres(pg_url):  # noqa: F811
    with prefs.open_store(pg_url) as store:
        add_images(store, 12)
        two_sessions_of_one_rater(store)
        assert_next_pair_promise_kept(store, 40)


def free_running_sessions(store, votes: int = 150):
    """Two sessions of rater "ann" picking and voting as fast as they can, unsynchronised."""
    errors: list[BaseException] = []

    def session(k):
        import random

        rng = random.Random(k)
        try:
            for r in range(votes):
                pair = store.next_pair("ann", "balanced", rng=rng)
                store.record_judgement(pair.a, pair.b, "a", rater="ann", strategy=pair.strategy,
                                       client_vote_id=f"f{k}-{r}")
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=session, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:3]


@pytest.mark.slow
def test_free_running_sessions_of_one_rater_keep_the_promise_sqlite():
    with prefs.open_store() as store:
        add_images(store, 40)
        free_running_sessions(store)
        assert_next_pair_promise_kept(store, 300)


@pytest.mark.postgres
@pytest.mark.slow
def test_free_running_sessions_of_one_rater_keep_the_promise_postgres(pg_url):  # noqa: F811
    with prefs.open_store(pg_url) as store:
        add_images(store, 40)
        free_running_sessions(store)
        assert_next_pair_promise_kept(store, 300)
