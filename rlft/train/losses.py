"""The three objectives as pure functions of tensors, so their values can be checked by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ppo_loss(log_prob, old_log_prob, advantages, clip_range: float, adv_clip_max: float):
    """DDPO's clipped surrogate for one timestep; returns (loss, info) with approx_kl and clip fraction.

    loss = mean(max(-A * r, -A * clip(r, 1 - eps, 1 + eps))), r = exp(log_prob - old_log_prob), A clipped.
    """
    adv = advantages.clamp(-adv_clip_max, adv_clip_max)
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        approx_kl = 0.5 * ((log_prob - old_log_prob) ** 2).mean()  # ddpo-pytorch's estimator
        clipfrac = ((ratio - 1.0).abs() > clip_range).float().mean()
    return loss, {"approx_kl": approx_kl, "clipfrac": clipfrac}


def rwr_weights(advantages, prompts: list[str], weighting: str = "exp", beta: float = 1.0, top_k: int = 1,
                max_weight: float = 20.0) -> torch.Tensor:
    """Per-sample weights: exp(A / beta) normalised to mean 1 and capped, or 1 for each prompt's top-k else 0."""
    adv = torch.as_tensor(advantages, dtype=torch.float64)
    if weighting == "exp":
        w = torch.exp((adv - adv.max()) / beta)  # shift for stability; the normalisation removes it
        w = w / w.mean()
        w = w.clamp(max=max_weight)
        return (w / w.mean()).float()
    if weighting == "topk":
        w = torch.zeros_like(adv)
        for prompt in dict.fromkeys(prompts):
            idx = torch.tensor([i for i, p in enumerate(prompts) if p == prompt])
            keep = idx[adv[idx].argsort(descending=True)[:top_k]]
            w[keep] = 1.0
        return (w * len(w) / w.sum()).float()
    raise ValueError(f"unknown weighting {weighting!r}")


def weighted_denoising_loss(pred, target, weights):
    """sum_i w_i * mean((pred_i - target_i)^2) / sum_i w_i: the standard loss, reweighted per sample."""
    return (weights * per_sample_mse(pred, target)).sum() / weights.sum().clamp_min(1e-12)


def advantage_denoising_loss(pred, target, weights):
    """mean_i w_i * mean((pred_i - target_i)^2) with signed weights (w - 1 for mean-1 weights): samples better
    than average are pulled closer, worse ones pushed away, and a batch of equal samples gives no gradient."""
    return (weights * per_sample_mse(pred, target)).mean()


def nft_denoising_loss(pred, old_pred, target, advantages, beta: float = 1.0, adv_clip_max: float = 5.0):
    """DiffusionNFT's negative-aware loss (Zheng et al. 2025) on noise predictions, per sample i:

        v+ = (1 - beta) old + beta pred,  v- = (1 + beta) old - beta pred,  r = clip(A, -c, c) / 2c + 1/2,
        loss_i = (c / beta) * (r mse(v+, target) + (1 - r) mse(v-, target)),  the batch mean returned.

    `old_pred` is the sampling policy's prediction at the same input (no gradient). The scale c / beta makes the
    gradient at pred = old equal `advantage_denoising_loss`'s with weights clip(A); unlike that loss, this one is
    bounded below in pred: each sample's minimum lies a step of (2r - 1) / beta x (target - old) from old."""
    old = old_pred.detach().float()
    pred = pred.float()
    r = (advantages.float().clamp(-adv_clip_max, adv_clip_max) / (2 * adv_clip_max) + 0.5).clamp(0.0, 1.0)
    positive = per_sample_mse((1 - beta) * old + beta * pred, target)
    negative = per_sample_mse((1 + beta) * old - beta * pred, target)
    return (adv_clip_max / beta * (r * positive + (1 - r) * negative)).mean()


def clipped_advantage_denoising_loss(pred, target, weights, ref_mse, clip_range: float):
    """`advantage_denoising_loss` inside a trust region around the reference model, as PPO clips its ratio: a
    sample stops contributing once its error has moved past (1 -/+ clip_range) x the reference's error at the
    same input in the direction its weight asks for (down for w > 0, up for w < 0). Pushing bad samples away is
    otherwise unbounded: the error of a sample can grow without limit, and the model with it."""
    mse = per_sample_mse(pred, target)
    ref = ref_mse.detach().float()
    active = torch.where(weights > 0, mse.detach() > (1 - clip_range) * ref, mse.detach() < (1 + clip_range) * ref)
    return (weights * mse * active).mean(), active.float().mean()


def dpo_loss(model_w, model_l, ref_w, ref_l, beta: float):
    """Diffusion-DPO: -log sigmoid(-beta/2 * ((e_w - e_w_ref) - (e_l - e_l_ref))), e = per-sample MSE.

    Returns (loss, info) with the implicit accuracy (how often the winner's error falls more than the loser's).
    """
    inside = -0.5 * beta * ((model_w - ref_w) - (model_l - ref_l))
    loss = -F.logsigmoid(inside).mean()
    with torch.no_grad():
        acc = (inside > 0).float().mean()
    return loss, {"implicit_acc": acc, "inside": inside.mean()}


def per_sample_mse(pred, target):
    """mean((pred - target)^2) over all but the batch dimension."""
    return ((pred.float() - target.float()) ** 2).mean(dim=tuple(range(1, pred.ndim)))
