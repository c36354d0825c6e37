"""Fit an ensemble of reward heads to pairwise judgements on cached embeddings (full-batch, seconds).

Each step evaluates every head once per image (not once per judgement side), then gathers the two sides of
each pair: 100k judgements over 10k images cost 10k head evaluations a step.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from prefs.errors import UserError
from reward.heads import HEADS, TOKEN_HEADS, build_head
from reward.loss import TIE_MODES, bt_loss, rao_kupper_loss


@dataclasses.dataclass
class FitConfig:
    """How heads are fitted."""

    head: str = "mlp"  # mlp | linear (a LAION prior replaces it with the LAION architecture); mlp fits non-linear tastes (e.g. "centred")
    ensemble: int = 5  # heads on bootstrap resamples; their spread is the reward's uncertainty
    prompt: bool = False  # condition on the prompt's text embedding
    ties: str = "half"  # half: a tie is half a win each way; rao-kupper: a fitted tie parameter
    l2: float = 1.0  # Gaussian prior precision on weights (standardised features; toward the prior for LAION): loss + l2 |w|^2 / n
    steps: int = 200  # full-batch optimiser steps (linear heads converge well before)
    lr: float = 0.05  # Adam step size
    hidden: int = 128  # MLP width
    seed: int = 0

    def __post_init__(self):
        if self.head not in HEADS:
            raise UserError(f"unknown head {self.head!r}; valid: {', '.join(HEADS)}")
        if not isinstance(self.ensemble, int) or self.ensemble < 1:
            raise UserError(f"--ensemble must be a whole number >= 1, got {self.ensemble!r}")
        if self.ties not in TIE_MODES:
            raise UserError(f"unknown tie model {self.ties!r}; valid: {', '.join(TIE_MODES)}")
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            raise UserError(f"l2 must be >= 0, got {self.l2}")
        if not isinstance(self.steps, int) or self.steps < 0:  # 0: a LAION prior as it is, only centred
            raise UserError(f"--steps must be a whole number >= 0, got {self.steps!r}")


@dataclasses.dataclass
class FitResult:
    heads: list[torch.nn.Module]
    log_theta: torch.Tensor | None  # Rao-Kupper tie parameter (shared), when ties="rao-kupper"
    train_loss: list[float]


class _PairDiff(torch.autograd.Function):
    """d = r[ia] - r[ib], with a bincount backward: autograd's scatter-add for a gather is ~10x slower on CPU."""

    @staticmethod
    def forward(ctx, r, ia, ib):
        ctx.save_for_backward(ia, ib)
        ctx.n = r.shape[0]
        return r[ia] - r[ib]

    @staticmethod
    def backward(ctx, g):
        ia, ib = ctx.saved_tensors
        g = g.contiguous()
        grad = torch.bincount(ia, weights=g, minlength=ctx.n) - torch.bincount(ib, weights=g, minlength=ctx.n)
        return grad.to(g.dtype), None, None


def pair_diff(r: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
    """r[ia] - r[ib] (fast backward)."""
    return _PairDiff.apply(r, ia, ib)


def fit_ensemble(x: np.ndarray, ia: np.ndarray, ib: np.ndarray, y: np.ndarray, config: FitConfig,
                 t: np.ndarray | None = None, prior=None, prior_scores: np.ndarray | None = None,
                 prior_weight: float | None = None, prior_start: float = 1.0) -> FitResult:
    """Fit `config.ensemble` heads to judgements (ia[k] vs ib[k], target y[k] = P(a wins)).

    `x`: N x D image embeddings (N x (1 + L) x D token features for the `patch` head); `t`: N x D prompt
    embeddings (each image's own prompt) for prompt-conditioned heads; `prior`: a `reward.laion.LaionHead` to start from. With K > 1 members each sees a bootstrap
    resample of the judgements (Poisson(1) weights); a single head sees them all.

    `prior_scores` (N): a prior's scores of the images (`reward.prior`); each member is then
    `reward.heads.PriorResidualHead`: w * prior + a personal head whose output layer starts at 0, w fixed at
    `prior_weight`, or learnt from `prior_start` when that is None (a Gaussian prior on w around it, of standard
    deviation |prior_start|).
    """
    if len(ia) == 0:
        raise UserError("no usable judgements to fit (a, b and tie outcomes count; skip and both_bad do not)")
    if (config.head in TOKEN_HEADS) != (np.ndim(x) == 3):
        raise UserError(f"the {config.head} head reads " + ("patch tokens (N x (1 + L) x D features from a "
                        "reward.tower.Tower)" if config.head in TOKEN_HEADS else "N x D embeddings") +
                        f", got features of shape {np.shape(x)}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    X = torch.as_tensor(x, dtype=torch.float32)
    T = torch.as_tensor(t, dtype=torch.float32) if (t is not None and config.prompt) else None
    IA, IB = torch.as_tensor(ia, dtype=torch.long), torch.as_tensor(ib, dtype=torch.long)
    Y = torch.as_tensor(y, dtype=torch.float32)
    S = None if prior_scores is None else torch.as_tensor(np.asarray(prior_scores), dtype=torch.float32).reshape(-1)
    used = torch.unique(torch.cat([IA, IB]))
    if S is not None and len(S) != len(X):
        raise ValueError(f"{len(S)} prior scores for {len(X)} images")
    heads, losses, log_theta = [], [], None
    for _k in range(config.ensemble):
        if prior is not None:
            import copy

            from reward.heads import LaionPriorHead

            head = LaionPriorHead(copy.deepcopy(prior.layers), getattr(prior, "path", None))
        else:
            head = build_head(config.head, X.shape[-1], config.prompt, hidden=config.hidden)
        if S is not None:
            from reward.heads import PriorResidualHead

            last = head.net[-1] if isinstance(head.net, torch.nn.Sequential) else head.net
            torch.nn.init.zeros_(last.weight)  # the personal part starts at 0: the reward starts as the prior
            torch.nn.init.zeros_(last.bias)
            head = PriorResidualHead(head, prior_start if prior_weight is None else prior_weight,
                                     learn_weight=prior_weight is None, scale=1 / max(abs(prior_start), 1e-6))
        head.set_standardisation(X[used], None if T is None else T[used])
        w = torch.as_tensor(rng.poisson(1.0, len(ia)), dtype=torch.float32) if config.ensemble > 1 else None
        lt = torch.zeros((), requires_grad=True) if config.ties == "rao-kupper" else None
        params = list(head.parameters()) + ([lt] if lt is not None else [])
        opt = torch.optim.Adam(params, lr=config.lr if prior is None else config.lr * 0.02)

        def objective(head=head, w=w, lt=lt):  # bound now: called only within this member's fit
            d = pair_diff(head(X, T) if S is None else head(X, T, S), IA, IB)
            zero = torch.zeros((), dtype=d.dtype)
            loss = bt_loss(d, zero, Y, w) if lt is None else rao_kupper_loss(d, zero, Y, lt, w)
            total = loss + config.l2 * head.penalty() / len(ia)  # a Gaussian prior: fades as judgements grow
            if S is not None:
                total = total + head.weight_penalty() / len(ia)
            return loss, total

        head.train()
        for _ in range(config.steps):
            opt.zero_grad(set_to_none=True)
            loss, total = objective()
            total.backward()
            opt.step()
        head.eval()
        if config.steps == 0:
            with torch.no_grad():
                loss, _ = objective()
        with torch.no_grad():
            r = head(X[used], None if T is None else T[used], *(() if S is None else (S[used],)))
            head.offset.copy_(r.mean() + head.offset)
        heads.append(head)
        losses.append(float(loss.detach()))
        if lt is not None:
            log_theta = lt.detach() if log_theta is None else log_theta + lt.detach()
    if log_theta is not None:
        log_theta = log_theta / config.ensemble
    return FitResult(heads, log_theta, losses)
