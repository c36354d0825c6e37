"""Group-relative steering: GRPO advantages, advantage-weighted matching (rwr's default), DiffusionNFT's loss, and
ddpo's group option, on hand-computed cases and the tiny pipeline."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from train_helpers import PROMPTS, redness, tiny_config

from rlft.models.tiny import tiny_pipeline
from rlft.train import losses
from rlft.train.ddim import predict_noise
from rlft.train.stats import group_advantages
from rlft.train.trainer import Trainer

torch.set_num_threads(2)


def test_group_advantages_by_hand():
    adv = group_advantages(["a", "b", "a", "a", "b", "c"], [1.0, 5.0, 2.0, 3.0, 5.0, 7.0])
    # a: mean 2, population std sqrt(2/3); b: two equal rewards; c: a group of one
    s = math.sqrt(2 / 3)
    assert adv.tolist() == pytest.approx([-1 / s, 0.0, 0.0, 1 / s, 0.0, 0.0], rel=1e-5)
    assert group_advantages(["a", "a"], [0.0, 1.0]).tolist() == pytest.approx([-1.0, 1.0], rel=1e-5)


def test_nft_loss_by_hand_and_its_gradient_on_policy_is_awms():
    target = torch.zeros(2, 1, 1, 2)
    old = torch.tensor([[1.0, 1.0], [2.0, 0.0]]).view(2, 1, 1, 2)
    pred = torch.tensor([[2.0, 0.0], [2.0, 2.0]]).view(2, 1, 1, 2).requires_grad_()
    adv = torch.tensor([5.0, -2.5])  # r = 1 and r = 0.25 with c = 5
    loss = losses.nft_denoising_loss(pred, old, target, adv, beta=0.5, adv_clip_max=5.0)
    # sample 0: v+ = 0.5 old + 0.5 pred = (1.5, 0.5) -> mse 1.25; r = 1, so only v+ counts
    # sample 1: v+ = (2, 1) -> mse 2.5; v- = 1.5 old - 0.5 pred = (2, -1) -> mse 2.5; 0.25 * 2.5 + 0.75 * 2.5 = 2.5
    # each times c / beta = 10; mean of 12.5 and 25
    assert loss.item() == pytest.approx((12.5 + 25.0) / 2)
    # at pred = old (the sampling policy, before any step) its gradient is the advantage-weighted loss's
    at_old = old.clone().requires_grad_()
    losses.nft_denoising_loss(at_old, old, target, adv, beta=0.5).backward()
    awm = old.clone().requires_grad_()
    losses.advantage_denoising_loss(awm, target, adv).backward()
    torch.testing.assert_close(at_old.grad, awm.grad)
    # and, unlike that loss, it has a minimum: a step of (2r - 1) / beta x (target - old) from old
    best = old + ((2 * torch.tensor([1.0, 0.25]) - 1) / 0.5).view(2, 1, 1, 1) * (target - old)
    best.requires_grad_()
    losses.nft_denoising_loss(best, old, target, adv, beta=0.5).backward()
    assert best.grad.abs().max().item() < 1e-6


def test_awm_loss_exact_value_on_a_hand_computed_group():
    # two samples of one prompt at a shared noise draw, rewards 1 and 0: advantages +1 and -1
    adv = torch.as_tensor(group_advantages(["p", "p"], [1.0, 0.0]), dtype=torch.float32)
    pred = torch.tensor([[0.5, 0.5], [1.0, -1.0]]).view(2, 1, 1, 2)
    noise = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(2, 1, 1, 2)
    # errors: sample 0 mean(0.25, 0.25) = 0.25; sample 1 mean(1, 4) = 2.5 -> (0.25 - 2.5) / 2
    assert losses.advantage_denoising_loss(pred, noise, adv).item() == pytest.approx(-1.125, rel=1e-5)


def denoising_errors(tr, x0, noise, steps, prompt):
    """Per-sample error of the policy's (guided) noise prediction at fixed noise and timesteps."""
    guidance = tr.config.sample.guidance
    with torch.no_grad():
        embeds, negative = tr.embed([prompt] * len(x0), guidance)
        noisy = tr.pipe.scheduler.add_noise(x0, noise, steps)
        return losses.per_sample_mse(predict_noise(tr.raw_unet, noisy, steps, embeds, negative, guidance), noise)


@pytest.mark.parametrize("weighting", ["advantage", "nft"])
@pytest.mark.parametrize("preferred", [0, 1])
def test_one_update_raises_the_preferred_samples_likelihood_and_lowers_the_others(weighting, preferred):
    # One optimizer step (AdamW, as trained) from four micro-batches, each the group of the two samples at one shared
    # noise draw and timestep; the likelihood is read as the denoising error averaged over those same draws. (At a
    # single draw the step's common part, which moves both errors alike, can outweigh the contrast: one noise level
    # alone says little about a sample's likelihood.)
    prompt = PROMPTS[0]
    tr = Trainer(tiny_pipeline(0), tiny_config("rwr", epochs=1, kl_weight=0.0, rwr={"weighting": weighting},
                                               optim={"learning_rate": 1e-3, "inner_epochs": 4, "gradient_accumulation_steps": 4}),
                 prompts=PROMPTS, reward_fn=redness, heldout_fn=None)
    x0 = tr.sample([prompt, prompt], [11, 12])[0].final  # two fixed samples of the model's own
    rewards = np.array([1.0, 0.0] if preferred == 0 else [0.0, 1.0])  # the reward prefers one of them
    tr.algorithm.collect = lambda epoch: ([SimpleNamespace(final=x0)], [prompt, prompt], rewards, None)
    drawn, before, real = [], [], tr.algorithm.denoise_inputs

    def spy(*args):
        out = real(*args)
        drawn.append(out)
        before.append(denoising_errors(tr, x0, out[1], out[2], prompt))  # the step comes after the fourth micro-batch
        return out

    tr.algorithm.denoise_inputs = spy
    m = tr.train()[0]
    assert len(drawn) == 4 and m["grad_norm"] is not None
    for _, noise, t in drawn:  # the group's two samples share their noise and timestep
        assert torch.equal(noise[0], noise[1]) and t[0] == t[1]
    assert len({int(t[0]) for _, _, t in drawn}) == 4
    after = torch.stack([denoising_errors(tr, x0, noise, t, prompt) for _, noise, t in drawn]).mean(0)
    before = torch.stack(before).mean(0)
    worse = 1 - preferred
    assert after[preferred] < before[preferred] and after[worse] > before[worse]


def by_hand(drawn, rewards) -> np.ndarray:
    """GRPO advantages written out: each prompt's rewards minus their mean, over their population std."""
    r = np.asarray(rewards, dtype=np.float64)
    out = np.empty(len(r))
    for p in set(drawn):
        idx = [i for i, q in enumerate(drawn) if q == p]
        out[idx] = (r[idx] - r[idx].mean()) / (r[idx].std() + 1e-6)
    return out


def test_rwr_weights_are_the_group_advantages_of_the_epoch(monkeypatch):
    import rlft.train.algorithms as algorithms

    seen, real = [], losses.advantage_denoising_loss
    monkeypatch.setattr(algorithms.losses, "advantage_denoising_loss",
                        lambda pred, target, w: (seen.append(w.detach().clone()), real(pred, target, w))[1])
    rewards = [3.0, 1.0, 2.0, 4.0, 4.0, 4.0]
    tr = Trainer(tiny_pipeline(0), tiny_config("rwr", epochs=1, sample={"samples_per_epoch": 6, "images_per_prompt": 3},
                                               optim={"train_batch_size": 6}),
                 prompts=PROMPTS, reward_fn=lambda im, p, m: (torch.tensor(rewards), {}), heldout_fn=None)
    drawn, real_prompts = [], tr.epoch_prompts
    tr.epoch_prompts = lambda *a: (out := real_prompts(*a), drawn.extend(out))[0]
    tr.train()
    expected = by_hand(drawn, rewards)
    # in one micro-batch (groups in shuffled order); a group of equal rewards (advantage 0) carries no gradient and
    # is left out
    assert len(seen) == 1
    assert sorted(seen[0].tolist()) == pytest.approx(sorted(a for a in expected if a != 0), rel=1e-5)


def test_nft_reads_the_sampling_weights_after_a_step_and_restores_the_current_ones():
    tr = Trainer(tiny_pipeline(0), tiny_config("rwr", epochs=1, lora={"init_std": 0.05}, rwr={"weighting": "nft"}),
                 prompts=PROMPTS, reward_fn=redness, heldout_fn=None)
    algo = tr.algorithm
    algo.old = [p.detach().clone() for p in tr.params]
    h, w = (side // tr.pipe.vae_scale_factor for side in tr.image_size)
    x = torch.randn(2, tr.pipe.unet.config.in_channels, h, w, generator=torch.Generator().manual_seed(0))
    steps = torch.tensor([500, 500])
    embeds, negative = tr.embed(PROMPTS, 3.0)
    with torch.no_grad():
        sampling = predict_noise(tr.raw_unet, x, steps, embeds, negative, 3.0)
        for p in tr.params:  # an optimizer step
            p.add_(0.1)
    now = [p.detach().clone() for p in tr.params]
    old = algo.old_prediction(x, steps, PROMPTS, embeds, negative, 3.0)
    torch.testing.assert_close(old, sampling, rtol=0, atol=0)
    assert all(torch.equal(p, n) for p, n in zip(tr.params, now, strict=True))  # the current weights are back
    with torch.no_grad():
        assert not torch.allclose(predict_noise(tr.raw_unet, x, steps, embeds, negative, 3.0), sampling)


def test_ddpo_group_advantages_replace_the_running_stats(monkeypatch):
    import rlft.train.algorithms as algorithms

    rewards = [3.0, 1.0, 2.0, 4.0, 4.0, 6.0]
    seen, real = [], losses.ppo_loss
    monkeypatch.setattr(algorithms.losses, "ppo_loss", lambda lp, old, adv, *a: (seen.append(adv.clone()), real(lp, old, adv, *a))[1])

    def run(group):
        seen.clear()
        tr = Trainer(tiny_pipeline(0), tiny_config("ddpo", epochs=1, sample={"samples_per_epoch": 6, "images_per_prompt": 3},
                                                   optim={"train_batch_size": 6}, ddpo={"group_advantages": group}),
                     prompts=PROMPTS, reward_fn=lambda im, p, m: (torch.tensor(rewards), {}), heldout_fn=None)
        drawn, real_prompts = [], tr.epoch_prompts
        tr.epoch_prompts = lambda *a: (out := real_prompts(*a), drawn.extend(out))[0]
        tr.train()
        return drawn, tr

    drawn, tr = run(True)
    assert seen and sorted(seen[0].tolist()) == pytest.approx(sorted(by_hand(drawn, rewards)), rel=1e-5)  # shuffled
    assert tr.tracker.stats == {}  # the running stats are not used
    _, tr = run(False)  # the default: the stat tracker (below min_count rewards per prompt: the epoch's mean/std)
    r = np.array(rewards)
    assert sorted(seen[0].tolist()) == pytest.approx(sorted((r - r.mean()) / (r.std() + 1e-6)), rel=1e-5)
    assert tr.tracker.stats
