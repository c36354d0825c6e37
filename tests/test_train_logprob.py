"""The DDIM log-probability code: independent Normal, replayed trajectories, agreement with diffusers."""

from __future__ import annotations

import pytest
import torch

from rlft.models.tiny import tiny_pipeline
from rlft.train.ddim import ddim_step_with_logprob, recompute_log_prob, sample_with_logprob

PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def pipe():
    p = tiny_pipeline(0)
    p.scheduler.set_timesteps(4)
    return p


def _independent_posterior(scheduler, eps, t, x, eta):
    # DDIM eq. 12 of Song et al., written from the paper in float64, not from diffusers or our module.
    a = scheduler.alphas_cumprod.double()
    t = int(t)
    prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    a_t = a[t]
    a_prev = a[prev] if prev >= 0 else scheduler.final_alpha_cumprod.double()
    sigma = eta * torch.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    x0 = (x.double() - torch.sqrt(1 - a_t) * eps.double()) / torch.sqrt(a_t)
    mean = torch.sqrt(a_prev) * x0 + torch.sqrt(1 - a_prev - sigma**2) * eps.double()
    return mean, sigma


@pytest.mark.parametrize("step", [0, 3])
def test_log_prob_matches_torch_normal(pipe, step):
    sched = pipe.scheduler
    t = sched.timesteps[step]
    g = torch.Generator().manual_seed(step)
    x = torch.randn(3, 4, 8, 8, generator=g)
    eps = torch.randn(3, 4, 8, 8, generator=g)
    out = ddim_step_with_logprob(sched, eps, t, x, eta=1.0, generator=g)
    mean, sigma = _independent_posterior(sched, eps, t, x, 1.0)
    expected = torch.distributions.Normal(mean, sigma).log_prob(out.prev_sample.double()).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.mean.double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.std.double(), sigma, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.log_prob.double(), expected, rtol=1e-5, atol=1e-4)


def test_given_prev_sample_is_scored_not_resampled(pipe):
    sched = pipe.scheduler
    t = sched.timesteps[1]
    x, eps, given = torch.randn(3, 2, 4, 8, 8).unbind(0)
    out = ddim_step_with_logprob(sched, eps, t, x, eta=1.0, prev_sample=given)
    assert torch.equal(out.prev_sample, given)
    mean, sigma = _independent_posterior(sched, eps, t, x, 1.0)
    expected = torch.distributions.Normal(mean, sigma).log_prob(given.double()).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.log_prob.double(), expected, rtol=1e-5, atol=1e-4)


def test_recomputed_log_probs_reproduce_sampled_ones(pipe):
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    traj = sample_with_logprob(pipe, PROMPTS, steps=4, guidance=3.0, eta=1.0, generator=gens)
    assert traj.log_probs.shape == (2, 4) and traj.latents.shape == (2, 4, 4, 8, 8)
    with torch.no_grad():
        for k in range(4):
            again = recompute_log_prob(pipe, pipe.unet, traj, k, guidance=3.0, eta=1.0)
            ratio = torch.exp(again.log_prob - traj.log_probs[:, k])
            assert torch.equal(again.log_prob, traj.log_probs[:, k])  # exactly: importance ratio 1 before any update
            assert torch.equal(ratio, torch.ones(2))


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_same_final_latents_as_plain_pipeline(pipe, guidance):
    gens = [torch.Generator().manual_seed(7 + i) for i in range(2)]
    traj = sample_with_logprob(pipe, PROMPTS, steps=4, guidance=guidance, eta=1.0, generator=gens)
    gens = [torch.Generator().manual_seed(7 + i) for i in range(2)]
    with torch.no_grad():
        plain = pipe(PROMPTS, num_inference_steps=4, guidance_scale=guidance, eta=1.0, generator=gens, output_type="latent").images
    assert torch.equal(traj.final, plain)


def test_last_step_is_finite_and_ddpo_pytorch_s_under_set_alpha_to_one():
    # A DDIM scheduler made from many Euler / DPM++ configs has set_alpha_to_one=True: diffusers' last step then has
    # alpha_prev = 1 and std 0, and the Gaussian log-prob was NaN. ddpo-pytorch clamps the previous timestep to 0
    # (alpha_prev = alphas_cumprod[0]): the same numbers here, written from its formula in float64.
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=True, steps_offset=1)
    sched.set_timesteps(4)
    assert float(sched.final_alpha_cumprod) == 1.0
    t = sched.timesteps[-1]
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 3, 4, 8, 8, generator=g).unbind(0)
    out = ddim_step_with_logprob(sched, eps, t, x, eta=1.0, generator=g)
    assert torch.isfinite(out.log_prob).all() and float(out.std) > 0

    a = sched.alphas_cumprod.double()
    prev = max(int(t) - sched.config.num_train_timesteps // sched.num_inference_steps, 0)  # ddpo-pytorch's clamp
    a_t, a_prev = a[int(t)], a[prev]
    sigma = torch.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    x0 = (x.double() - torch.sqrt(1 - a_t) * eps.double()) / torch.sqrt(a_t)
    mean = torch.sqrt(a_prev) * x0 + torch.sqrt(1 - a_prev - sigma**2) * eps.double()
    expected = torch.distributions.Normal(mean, sigma).log_prob(out.prev_sample.double()).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.std.double(), sigma, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.log_prob.double(), expected, rtol=1e-5, atol=1e-4)
    again = ddim_step_with_logprob(sched, eps, t, x, eta=1.0, prev_sample=out.prev_sample)
    assert torch.equal(again.log_prob, out.log_prob)  # replayed exactly: importance ratio 1

