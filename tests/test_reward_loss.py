"""Bradley-Terry and Rao-Kupper losses on hand-computed cases, the metrics, and that fitting learns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reward import evaluate
from reward.fit import FitConfig, fit_ensemble, pair_diff
from reward.loss import bt_loss, rao_kupper_loss, rao_kupper_probs


def t(*v):
    return torch.tensor(v, dtype=torch.float64)


def test_bt_loss_hand_computed():
    ln3 = math.log(3)  # sigmoid(ln 3) = 3/4
    assert bt_loss(t(0.0), t(0.0), t(1.0)).item() == pytest.approx(math.log(2))
    assert bt_loss(t(ln3), t(0.0), t(1.0)).item() == pytest.approx(-math.log(0.75))
    assert bt_loss(t(ln3), t(0.0), t(0.0)).item() == pytest.approx(-math.log(0.25))
    # a tie is half a win each way
    assert bt_loss(t(ln3), t(0.0), t(0.5)).item() == pytest.approx(-(0.5 * math.log(0.75) + 0.5 * math.log(0.25)))
    # weights: the mean is weighted
    got = bt_loss(t(ln3, ln3), t(0.0, 0.0), t(1.0, 0.0), weight=t(3.0, 1.0)).item()
    assert got == pytest.approx((3 * -math.log(0.75) + -math.log(0.25)) / 4)


def test_tie_loss_is_minimised_at_equal_utilities():
    d = torch.zeros((), requires_grad=True)
    bt_loss(d, torch.zeros(()), torch.tensor(0.5)).backward()
    assert d.grad.item() == pytest.approx(0.0)


def test_rao_kupper_hand_computed():
    # theta = 2 (eta = ln 2), equal utilities: P(a) = 1 / (1 + 2) = 1/3 each, P(tie) = 1/3
    log_theta = torch.tensor(math.log(math.exp(math.log(2)) - 1), dtype=torch.float64)  # softplus^-1(ln 2)
    pa, pb, pt = rao_kupper_probs(t(0.0), log_theta)
    assert pa.item() == pytest.approx(1 / 3) and pb.item() == pytest.approx(1 / 3) and pt.item() == pytest.approx(1 / 3)
    # pi_a = 3, pi_b = 1, theta = 2: P(a) = 3 / (3 + 2) = 0.6, P(b) = 1 / (1 + 6) = 1/7
    pa, pb, pt = rao_kupper_probs(t(math.log(3)), log_theta)
    assert pa.item() == pytest.approx(0.6) and pb.item() == pytest.approx(1 / 7)
    assert pt.item() == pytest.approx(1 - 0.6 - 1 / 7)
    loss = rao_kupper_loss(t(math.log(3), math.log(3), math.log(3)), t(0, 0, 0), t(1.0, 0.0, 0.5), log_theta)
    assert loss.item() == pytest.approx(-(math.log(0.6) + math.log(1 / 7) + math.log(1 - 0.6 - 1 / 7)) / 3)


def test_pair_diff_gradient_matches_autograd():
    r = torch.randn(6, requires_grad=True, dtype=torch.float64)
    ia, ib = torch.tensor([0, 1, 1, 5]), torch.tensor([2, 0, 3, 1])
    torch.autograd.gradcheck(lambda x: pair_diff(x, ia, ib), (r,))


def test_metrics_hand_computed():
    p = np.array([0.9, 0.2, 0.7, 0.5])
    y = np.array([1.0, 1.0, 0.5, 0.0])
    assert evaluate.credit(p, y).tolist() == [1.0, 0.0, 0.5, 0.5]  # tie label and an undecided model: half
    assert evaluate.accuracy(p, y) == pytest.approx(0.5)
    ll = -(np.log(0.9) + np.log(0.2) + 0.5 * np.log(0.7) + 0.5 * np.log(0.3) + np.log(0.5)) / 4
    assert evaluate.log_loss(p, y) == pytest.approx(ll)
    # calibrated predictions: ECE near 0; overconfident ones: large
    rng = np.random.default_rng(0)
    q = rng.uniform(0.5, 1, 20000)
    assert evaluate.ece(q, (rng.random(20000) < q).astype(float)) < 0.02
    assert evaluate.ece(np.full(1000, 0.99), np.r_[np.ones(500), np.zeros(500)]) == pytest.approx(0.49)
    lo, hi = evaluate.bootstrap_ci(np.r_[np.ones(80), np.zeros(20)])
    assert lo < 0.8 < hi and hi - lo < 0.2


@pytest.mark.parametrize("ties", ["half", "rao-kupper"])
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_fit_recovers_a_preference_direction_with_ties(head, ties):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    u = x[:, 0] * 3
    ia, ib = rng.integers(0, 60, 600), rng.integers(0, 60, 600)
    ia, ib = ia[ia != ib], ib[ia != ib]
    d = u[ia] - u[ib]
    y = np.where(np.abs(d) < 0.5, 0.5, (d > 0).astype(float)).astype(np.float32)  # close calls are ties
    fit = fit_ensemble(x, ia, ib, y, FitConfig(head=head, ties=ties, ensemble=2, steps=150))
    s = fit.heads[0](torch.as_tensor(x)).detach().numpy()
    assert np.corrcoef(s, u)[0, 1] > 0.9
    assert abs(s.mean()) < 1e-4  # centred on the training pool
    assert (fit.log_theta is not None) == (ties == "rao-kupper")


def test_fit_bad_config():
    from prefs.errors import UserError

    with pytest.raises(UserError, match="valid: linear, mlp"):
        FitConfig(head="transformer")
    with pytest.raises(UserError, match="no usable judgements"):
        fit_ensemble(np.zeros((2, 3), np.float32), np.array([], int), np.array([], int), np.array([], np.float32), FitConfig())
