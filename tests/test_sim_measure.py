"""Headroom captured H and its bootstrap interval (rlft.sim.measure), and the benchmark's use of them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from rlft.sim.measure import headroom, headroom_from_counts, headroom_interval, pair_stats

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "bench" / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pair_stats_counts_ties_half_and_the_ceiling_by_hand():
    # pairs: win, win, tie (both at the best), loss, tie (below the best)
    u_b = [0.0, 1.0, 3.0, 2.0, 1.0]
    u_t = [1.0, 3.0, 3.0, 1.0, 1.0]
    s = pair_stats(u_b, u_t)
    assert (s["wins"], s["ties"], s["losses"]) == (2, 2, 1)
    assert s["win_rate"] == pytest.approx((2 + 0.5 * 2) / 5)
    assert s["win_rate_decisive"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["win_rate_ceiling"] == pytest.approx((4 * 1.0 + 0.5) / 5)  # one base image is already at the best (3)


def test_headroom_is_zero_at_the_base_one_at_the_ceiling_and_undefined_without_headroom():
    assert headroom(0.5, 0.8) == 0.0
    assert headroom(0.8, 0.8) == pytest.approx(1.0)
    assert headroom(0.65, 0.8) == pytest.approx(0.5)
    assert headroom(0.4, 0.9) == pytest.approx(-0.25)
    assert headroom(0.5, 0.5) is None  # every base image already at the best: nothing to capture
    # the warm/ddpo row: 17 wins, 29 ties, 2 losses, ceiling 0.8438
    assert headroom_from_counts(17, 29, 2, 0.8438) == pytest.approx((0.65625 - 0.5) / 0.3438)
    with pytest.raises(ValueError):
        headroom_from_counts(0, 0, 0, 1.0)


def test_the_interval_s_point_is_pair_stats_h_and_it_is_deterministic_with_a_seed():
    rng = np.random.default_rng(3)
    u_b = rng.integers(0, 4, 48).astype(float)
    u_t = np.clip(u_b + rng.integers(-1, 3, 48), 0, 4).astype(float)
    s = pair_stats(u_b, u_t)
    a = headroom_interval(u_b, u_t, seed=7)
    assert a["headroom"] == pytest.approx(headroom(s["win_rate"], s["win_rate_ceiling"]), abs=1e-3)  # ceiling rounded
    assert a == headroom_interval(u_b, u_t, seed=7)
    assert a["ci"] != headroom_interval(u_b, u_t, seed=8)["ci"]
    lo, hi = a["ci"]
    assert lo < a["headroom"] < hi and a["resamples_used"] == a["resamples"] == 2000


def test_all_ties_give_h_zero_with_a_zero_width_interval():
    u = np.linspace(0, 1, 48)  # tuned == base on every pair, base below the best on most
    out = headroom_interval(u, u.copy(), seed=0)
    assert out["headroom"] == 0.0 and out["ci"] == [0.0, 0.0]


def test_a_ceiling_of_one_half_leaves_h_and_its_interval_undefined():
    u_b = np.full(20, 3.0)  # every base image at the best utility seen
    u_t = np.array([3.0] * 15 + [0.0] * 5)
    assert pair_stats(u_b, u_t)["win_rate_ceiling"] == 0.5
    out = headroom_interval(u_b, u_t, seed=0)
    assert out["headroom"] is None and out["ci"] is None and out["resamples_used"] == 0


def test_resamples_without_headroom_are_left_out_and_counted():
    u_b = np.array([3.0] * 47 + [0.0])  # one base image below the best: a resample without it has no headroom
    u_t = np.array([3.0] * 48)
    out = headroom_interval(u_b, u_t, seed=0, resamples=500)
    assert out["headroom"] == pytest.approx(1.0)
    assert 250 < out["resamples_used"] < 500  # about 1 - 1/e of them hold that pair
    assert out["ci"] == [1.0, 1.0]  # where H is defined the tuned model is at the ceiling


def test_several_seeds_are_resampled_jointly_and_averaged():
    rng = np.random.default_rng(0)
    u_b = rng.normal(size=48)
    good, bad = u_b + 1.0, u_b - 1.0  # one seed wins every pair, the other loses every pair
    out = headroom_interval(u_b, [good, bad], seed=0)
    h_good, h_bad = (headroom_interval(u_b, t, seed=0)["headroom"] for t in (good, bad))
    assert out["headroom"] == pytest.approx((h_good + h_bad) / 2)
    with pytest.raises(ValueError):
        headroom_interval(u_b, [good[:10]])


def test_the_benchmark_adds_h_to_stored_rows_from_their_counts_without_an_interval():
    bench = _bench()
    row = {"win_rate": 0.6562, "wins": 17, "ties": 29, "losses": 2, "win_rate_ceiling": 0.8438}
    bench.add_headroom(row)
    assert row["headroom"] == pytest.approx(0.4545, abs=1e-4) and row["headroom_ci95"] is None
    assert "not available" in row["headroom_note"]
    kept = {"headroom": 0.9, "headroom_ci95": [0.8, 1.0], "win_rate": 0.9, "win_rate_ceiling": 1.0}
    assert bench.add_headroom(dict(kept)) == kept  # a row measured with H stays as measured
    assert set(bench.OPEN) >= {"warm+big", "cool+centered"}
    assert bench.OPEN["warm+big"] == {"color", "size"} and bench.OPEN["cool+centered"] == {"color", "position"}


def test_the_benchmark_s_readme_rows_show_h_per_oracle_in_order():
    bench = _bench()
    data = {"quality": {"warm": {"ddpo": {"win_rate": 0.6562, "wins": 17, "ties": 29, "losses": 2,
                                          "win_rate_ceiling": 0.8438, "adherence_mean_drop_points": 0.83}},
                        "warm+big": {"ddpo": {"headroom": 0.8, "headroom_ci95": [0.7, 0.9], "train_seeds": [0, 1],
                                              "headroom_by_seed": [0.75, 0.85], "headroom_spread": 0.1,
                                              "adherence_mean_drop_points": 1.0, "win_rate": 0.9}}}}
    rows = bench.table_rows(data)
    assert len(rows) == 1 and rows[0].startswith("| steering, `ddpo` (toy defaults): headroom captured H | >= 0.7 | 0.45 / - / ")
    assert "**0.80** (0.70 to 0.90; seeds 0.75 / 0.85) / -;" in rows[0]


def test_the_benchmark_s_rounds_row_shows_h_after_each_round_and_bolds_a_met_target():
    bench = _bench()
    arm = {"1x300": {"rounds": 1, "judgements_per_round": 300, "headroom_by_round": [0.6]},
           "3x100": {"rounds": 3, "judgements_per_round": 100, "headroom_by_round": [0.2, 0.5, 0.7]}}
    rows = bench.table_rows({"loop": {"big": {"ddpo": {**arm, "target_met": True, "oracle": "big"}}}})
    assert rows == ["| rounds: 3 x 100 judgements capture at least the H of 1 x 300 (H after each round) | every oracle | "
                    "**big ddpo: 1x300 0.60, 3x100 0.20 -> 0.50 -> 0.70** | "
                    "`python bench/bench_train.py loop --oracle O --algo A --pool-per-prompt 8 --test-prompts 12 --seeds 4 "
                    "--adherence-n 48 --threads 1` |"]
