"""Pairwise losses on reward differences: Bradley-Terry with ties as half wins, or Rao-Kupper ties.

Outcomes are coded as targets y = P(a wins): 1 for "a", 0 for "b", 0.5 for a tie. `both_bad` and `skip`
never reach these functions (they say nothing about which image is better; see `reward.data`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TIE_MODES = ("half", "rao-kupper")


def bt_loss(r_a: torch.Tensor, r_b: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean Bradley-Terry negative log-likelihood, -[y log s(d) + (1-y) log s(-d)], d = r_a - r_b.

    A tie (y = 0.5) counts as half a win each way, as `prefs.bt` and PickScore do.
    """
    losses = F.binary_cross_entropy_with_logits(r_a - r_b, y.to(r_a.dtype), reduction="none")
    return _mean(losses, weight)


def rao_kupper_probs(d: torch.Tensor, log_theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P(a wins), P(b wins), P(tie)) under Rao-Kupper with theta = exp(log_theta) >= 1.

    P(a > b) = pi_a / (pi_a + theta pi_b) = sigmoid(d - eta), eta = log theta; P(tie) is what remains.
    """
    eta = F.softplus(log_theta)  # eta >= 0, theta >= 1
    p_a, p_b = torch.sigmoid(d - eta), torch.sigmoid(-d - eta)
    return p_a, p_b, (1 - p_a - p_b).clamp_min(1e-12)


def rao_kupper_loss(r_a, r_b, y, log_theta, weight=None) -> torch.Tensor:
    """Mean Rao-Kupper negative log-likelihood; y in {1, 0, 0.5} (0.5 = an observed tie)."""
    d = r_a - r_b
    eta = F.softplus(log_theta)
    log_pa, log_pb = F.logsigmoid(d - eta), F.logsigmoid(-d - eta)
    log_tie = torch.log((1 - log_pa.exp() - log_pb.exp()).clamp_min(1e-12))
    y = y.to(d.dtype)
    nll = -torch.where(y == 1, log_pa, torch.where(y == 0, log_pb, log_tie))
    return _mean(nll, weight)


def _mean(losses: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return losses.mean()
    return (losses * weight).sum() / weight.sum().clamp_min(1e-12)
