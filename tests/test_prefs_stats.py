"""`Store.stats()`: counts, tie rate, self-consistency and the Bradley-Terry ranking, on hand-made data."""

from __future__ import annotations

import numpy as np
import pytest
from prefs_util import add_images

import prefs
from prefs.stats import Columns, bt_score_table, self_consistency


@pytest.fixture
def store():
    with prefs.open_store(seed=0) as s:
        yield s


def test_empty_store_stats(store):
    s = store.stats()
    assert s["images"] == 0 and s["judgements"] == 0 and s["tie_rate"] is None
    assert s["by_outcome"] == {"a": 0, "b": 0, "tie": 0, "both_bad": 0, "skip": 0}
    assert s["raters"] == {} and s["ranking"] == [] and s["self_consistency"] == {"agreement": None, "count": 0}


def test_counts_tie_rate_and_ranking(store):
    x, y, z, w = add_images(store, 4)
    store.record_judgement(x, y, "a", rater="ann")
    store.record_judgement(y, x, "b", rater="ann")  # x wins again, sides swapped
    store.record_judgement(x, z, "a", rater="bob")
    store.record_judgement(y, z, "tie", rater="bob")
    store.record_judgement(z, w, "skip", rater="bob")
    store.record_judgement(y, w, "both_bad", rater="bob")
    store.record_judgement(z, w, "a", rater="bob")
    store.undo_last("bob")
    store.mark_broken(w)
    s = store.stats(top=3)
    assert s["images"] == 4 and s["broken_images"] == 1
    assert s["judgements"] == 6 and s["undone"] == 1
    assert s["by_outcome"] == {"a": 2, "b": 1, "tie": 1, "both_bad": 1, "skip": 1}
    assert s["raters"] == {"ann": 2, "bob": 4}
    assert s["tie_rate"] == pytest.approx(1 / 4)
    assert [r["sha256"] for r in s["ranking"]] == [x, z, y]  # z lost once, y twice; they tied
    top = s["ranking"][0]
    assert (top["wins"], top["losses"], top["ties"]) == (3, 0, 0)
    assert s["ranked_images"] == 3  # w only has skip/both_bad judgements: no score
    assert s["ranking"][2]["ties"] == 1 and s["ranking"][2]["losses"] == 2


def test_self_consistency_counts_repeats_against_the_first_judgement(store):
    x, y, z = add_images(store, 3)
    store.record_judgement(x, y, "a", rater="r")  # x > y
    store.record_judgement(y, x, "b", rater="r")  # x > y again: agrees
    store.record_judgement(x, y, "b", rater="r")  # y > x: disagrees
    store.record_judgement(x, z, "tie", rater="r")
    store.record_judgement(z, x, "tie", rater="r")  # tie again: agrees
    store.record_judgement(x, y, "b", rater="other")  # another rater's first judgement: not a repeat
    store.record_judgement(y, z, "skip", rater="r")
    store.record_judgement(y, z, "a", rater="r")  # skips don't count as a first judgement
    s = store.stats()["self_consistency"]
    assert s == {"agreement": pytest.approx(2 / 3), "count": 3}
    assert store.stats(rater="other")["self_consistency"]["count"] == 0


def test_fit_scores_and_score_table(store):
    shas = add_images(store, 4)
    for k in range(3):
        for _ in range(k + 1):
            store.record_judgement(shas[k + 1], shas[k], "a", rater="r", client_vote_id=None)
    scores = store.fit_scores()
    assert sorted(scores, key=scores.get) == shas
    table = bt_score_table(store.engine)
    means, stds = table([store.get_image(s) for s in shas])
    assert np.argsort(means).tolist() == [0, 1, 2, 3]
    assert stds[0] == pytest.approx(1 / np.sqrt(2))  # one judgement


def record_mixed_votes(store):
    """The judgements of the two tests above, in one store."""
    x, y, z, w = add_images(store, 4)
    for a, b, outcome, rater in [(x, y, "a", "ann"), (y, x, "b", "ann"), (x, y, "b", "ann"), (x, z, "a", "bob"),
                                 (y, z, "tie", "bob"), (z, x, "tie", "bob"), (z, w, "skip", "bob"),
                                 (y, w, "both_bad", "bob"), (z, w, "a", "bob"), (x, y, "b", "cy")]:
        store.record_judgement(a, b, outcome, rater=rater)
    store.undo_last("cy")


def test_stats_are_the_same_on_postgresql(tmp_path, pg_url):
    # SQLite reads the columns through group_concat, PostgreSQL through plain rows: same figures.
    results = []
    for url in (f"sqlite:///{tmp_path / 'p.sqlite'}", pg_url):
        with prefs.open_store(url, home=tmp_path / url.split(":")[0]) as s:
            record_mixed_votes(s)
            results.append((s.stats(top=4), s.stats(rater="bob"), s.fit_scores()))
    (lite_all, lite_bob, lite_scores), (pg_all, pg_bob, pg_scores) = results
    assert lite_all == pg_all and lite_bob == pg_bob
    assert lite_all["judgements"] == 9 and lite_all["self_consistency"]["count"] == 3
    assert lite_scores == pytest.approx(pg_scores)


def test_self_consistency_without_a_packed_key():
    # Image ids too large to pack (rater, pair) into one 63-bit key take the lexsort path: same answer.
    a = np.array([1, 2, 1, 1, 3, 1])
    b = np.array([2, 1, 2, 3, 1, 2])
    outcome = np.array([0, 1, 1, 2, 2, 0])
    rater = np.array([0, 0, 0, 0, 0, 1])
    small = self_consistency(Columns(a, b, outcome, rater))
    big = self_consistency(Columns(a * 2**40, b * 2**40, outcome, rater))
    assert small == big == (pytest.approx(2 / 3), 3)


def test_stats_cli_imports_neither_scipy_nor_alembic(rlft_home):
    # Start-up is a third of `rlft prefs stats` at a million judgements: keep the slow imports off its path.
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys\nfrom click.testing import CliRunner\nfrom rlft.cli import main\n"
            "assert CliRunner().invoke(main, ['prefs', 'stats']).exit_code == 0\n"  # creates the database
            "for m in [m for m in sys.modules if m.startswith(('prefs', 'alembic', 'scipy'))]: del sys.modules[m]\n"
            "r = CliRunner().invoke(main, ['prefs', 'stats', '--json'])\nassert r.exit_code == 0, r.output\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'alembic', 'torch'}))")
    env = {**os.environ, "RLFT_HOME": str(rlft_home), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("RLFT_DB", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
