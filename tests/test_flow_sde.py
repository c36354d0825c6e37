"""Flow-GRPO's SDE step with log-probs: the ODE at noise level 0, exact log-prob replay, the right marginals on
Gaussian data with an analytic velocity, and the window of trained steps; on tiny SD3 and FLUX pipelines."""

from __future__ import annotations

import math

import pytest
import torch

from prefs.errors import UserError
from rlft.models.adapters import adapter_for
from rlft.models.tiny import tiny_flux_pipeline, tiny_pipeline, tiny_sd3_pipeline
from rlft.train.flow import (
    FlowTrajectory,
    decode,
    flow_sde_step,
    recompute_log_prob,
    sample_with_logprob,
    sde_std,
    window_steps,
)

PROMPTS = ["a red circle", "a blue square"]
STEPS = 4


@pytest.fixture(scope="module", params=["sd3", "flux"])
def pipe(request):
    return tiny_sd3_pipeline(seed=0) if request.param == "sd3" else tiny_flux_pipeline(seed=0)


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def guidance_of(pipe):
    return 4.0 if type(pipe).__name__ == "StableDiffusion3Pipeline" else 3.5


# -- the step --------------------------------------------------------------------------------------------------

def test_step_is_flow_grpos_gaussian():
    torch.manual_seed(0)
    x, v = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigma, sigma_next, a = 0.6, 0.45, 0.7
    out = flow_sde_step(v, x, sigma, sigma_next, noise_level=a, sigma_max=0.95, generator=torch.Generator().manual_seed(1))
    std_t = a * math.sqrt(sigma / (1 - sigma))
    dt = sigma_next - sigma
    # the drift v + sigma_t^2 / (2t) (x + (1 - t) v), an Euler-Maruyama step of -dt
    mean = x + (v + std_t**2 / (2 * sigma) * (x + (1 - sigma) * v)) * dt
    torch.testing.assert_close(out.mean, mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.std, torch.tensor(std_t * math.sqrt(-dt)))
    normal = torch.distributions.Normal(mean.double(), std_t * math.sqrt(-dt))
    expected = normal.log_prob(out.prev_sample.double()).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.log_prob.double(), expected, rtol=1e-5, atol=1e-5)
    again = flow_sde_step(v, x, sigma, sigma_next, noise_level=a, sigma_max=0.95, prev_sample=out.prev_sample)
    assert torch.equal(again.log_prob, out.log_prob) and torch.equal(again.prev_sample, out.prev_sample)
    # at t = 1 sigma_t would be infinite: the schedule's second sigma stands in the denominator
    assert sde_std(torch.tensor(1.0), 0.95, a) == pytest.approx(a * math.sqrt(1 / 0.05), rel=1e-5)
    # per-sample sigmas broadcast over each sample
    per = flow_sde_step(v, x, torch.full((3,), sigma), torch.full((3,), sigma_next), noise_level=a, sigma_max=0.95,
                        prev_sample=out.prev_sample)
    torch.testing.assert_close(per.log_prob, out.log_prob)
    with pytest.raises(UserError, match="noise level"):
        flow_sde_step(v, x, sigma, sigma_next, noise_level=-0.1, sigma_max=0.95)


def test_noise_level_zero_is_the_schedulers_euler_step_bit_for_bit():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(5)
    torch.manual_seed(0)
    x = torch.randn(2, 16, 4, 4)
    ode = x.clone()
    for i, t in enumerate(scheduler.timesteps):
        v = torch.sin(3 * x) - x * i  # any velocity
        out = flow_sde_step(v, x, scheduler.sigmas[i], scheduler.sigmas[i + 1], noise_level=0.0,
                            sigma_max=scheduler.sigmas[1].item())
        ode = scheduler.step(torch.sin(3 * ode) - ode * i, t, ode, return_dict=False)[0]
        x = out.prev_sample
        assert torch.equal(x, ode) and (out.log_prob == 0).all()


# -- Gaussian data: the velocity is closed-form ------------------------------------------------------------------

MU, S = 1.5, 0.5  # data N(MU, S^2) per coordinate


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[eps - x0 | x_t = x] for x0 ~ N(MU, S^2), x_t = (1 - t) x0 + t eps: x_t is Gaussian with mean (1 - t) MU
    and variance V = (1 - t)^2 S^2 + t^2; Cov(x_t, eps) = t, Cov(x_t, x0) = (1 - t) S^2."""
    var = (1 - t) ** 2 * S**2 + t**2
    return (t - (1 - t) * S**2) * (x - (1 - t) * MU) / var - MU


def sample_gaussian(n, steps, noise_level, seed, *, drift=True):
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    for i in range(steps):
        v = gaussian_velocity(x, sigmas[i])
        if drift:
            x = flow_sde_step(v, x, sigmas[i], sigmas[i + 1], noise_level=noise_level, sigma_max=sigmas[1].item(),
                              generator=g).prev_sample.double()
        else:  # the ODE's step plus the same noise, without the score correction: the wrong marginals
            std = sde_std(sigmas[i].float(), sigmas[1].item(), noise_level).double() * torch.sqrt(sigmas[i] - sigmas[i + 1])
            x = x + (sigmas[i + 1] - sigmas[i]) * v + std * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x


@pytest.mark.parametrize("noise_level", [0.0, 0.7, 1.0])
def test_sde_samples_the_data_distribution(noise_level):
    n, steps = 4000, 60
    x = sample_gaussian(n, steps, noise_level, seed=0).flatten()  # 16,000 draws
    se_mean = S / math.sqrt(x.numel())
    se_var = S**2 * math.sqrt(2 / (x.numel() - 1))
    assert abs(x.mean().item() - MU) < 4 * se_mean + 0.01, x.mean()
    assert abs(x.var().item() - S**2) < 4 * se_var + 0.01, x.var()


def test_the_gaussian_check_catches_a_wrong_drift():
    x = sample_gaussian(4000, 60, 0.7, seed=0, drift=False).flatten()
    assert abs(x.var().item() - S**2) > 0.1  # noise without the score term inflates the variance


# -- on the pipelines --------------------------------------------------------------------------------------------

def test_noise_level_zero_reproduces_the_pipelines_output(pipe):
    guidance = guidance_of(pipe)
    traj = sample_with_logprob(pipe, PROMPTS, steps=STEPS, guidance=guidance, noise_level=0.0, generator=gens(0, 1))
    ref = pipe(PROMPTS, num_inference_steps=STEPS, guidance_scale=guidance, height=64, width=64, generator=gens(0, 1),
               output_type="latent").images
    assert torch.equal(traj.final, ref)
    images = pipe(PROMPTS, num_inference_steps=STEPS, guidance_scale=guidance, height=64, width=64,
                  generator=gens(0, 1), output_type="pt").images
    with torch.no_grad():
        assert torch.equal(decode(pipe, traj), images)


def test_recomputed_log_probs_equal_the_sampled_ones_exactly(pipe):
    guidance = guidance_of(pipe)
    traj = sample_with_logprob(pipe, PROMPTS, steps=STEPS, guidance=guidance, generator=gens(0, 1))
    assert traj.log_probs.shape == (2, STEPS) and torch.isfinite(traj.log_probs).all()
    assert traj.steps.tolist() == list(range(STEPS)) and traj.latents.shape[1] == STEPS
    assert torch.equal(traj.latents[:, 1:], traj.next_latents[:, :-1]) and torch.equal(traj.next_latents[:, -1], traj.final)
    for k in range(STEPS):
        out = recompute_log_prob(pipe, pipe.transformer, traj, k, guidance)
        assert torch.equal(out.log_prob, traj.log_probs[:, k])  # ratio exactly 1 before any update
        assert torch.exp(out.log_prob - traj.log_probs[:, k]).eq(1).all()
    # the log-probs follow the weights: nudging the transformer moves them
    other = tiny_sd3_pipeline(seed=1) if type(pipe).__name__ == "StableDiffusion3Pipeline" else tiny_flux_pipeline(seed=1)
    moved = recompute_log_prob(pipe, other.transformer, traj, 1, guidance)
    assert not torch.equal(moved.log_prob, traj.log_probs[:, 1])
    # the noise is drawn per sample: the same seed alone gives the same trajectory
    alone = sample_with_logprob(pipe, PROMPTS[1:], steps=STEPS, guidance=guidance, generator=gens(1))
    torch.testing.assert_close(alone.final[0], traj.final[1], rtol=0, atol=1e-5)
    # and the SDE moves away from the ODE
    ode = sample_with_logprob(pipe, PROMPTS, steps=STEPS, guidance=guidance, noise_level=0.0, generator=gens(0, 1))
    assert (ode.final - traj.final).abs().max() > 0.1


def test_recompute_has_gradients_for_the_transformer(pipe):
    guidance = guidance_of(pipe)
    traj = sample_with_logprob(pipe, PROMPTS[:1], steps=2, guidance=guidance, generator=gens(0))
    pipe.transformer.zero_grad()
    recompute_log_prob(pipe, pipe.transformer, traj, 0, guidance).log_prob.sum().backward()
    grads = [p.grad for p in pipe.transformer.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    pipe.transformer.zero_grad(set_to_none=True)


def test_a_window_records_and_randomises_only_its_steps(pipe):
    guidance = guidance_of(pipe)
    full_ode = sample_with_logprob(pipe, PROMPTS, steps=STEPS, guidance=guidance, noise_level=0.0, generator=gens(0, 1))
    traj = sample_with_logprob(pipe, PROMPTS, steps=STEPS, guidance=guidance, window=(1, 3), generator=gens(0, 1))
    assert traj.steps.tolist() == [1, 2] and traj.latents.shape[1] == 2 and traj.log_probs.shape == (2, 2)
    # before the window the sampler is the ODE: step 1 starts where the ODE's step 1 starts
    assert torch.equal(traj.latents[:, 0], full_ode.latents[:, 1])
    assert not torch.equal(traj.next_latents[:, 0], full_ode.next_latents[:, 1])  # inside: noise
    for k in range(2):
        assert torch.equal(recompute_log_prob(pipe, pipe.transformer, traj, k, guidance).log_prob, traj.log_probs[:, k])
    # after the window: an ODE step from the window's end
    adapter = adapter_for(pipe)
    with torch.no_grad():
        v = adapter.predict_velocity(pipe.transformer, traj.next_latents[:, 1], traj.timesteps[3], traj.cond, guidance)
    last = flow_sde_step(v, traj.next_latents[:, 1], traj.sigmas[3], traj.sigmas[4], noise_level=0.0,
                         sigma_max=traj.sigmas[1].item()).prev_sample
    assert torch.equal(last, traj.final)


def test_window_bounds_and_joining():
    assert list(window_steps(10, None)) == list(range(10))
    assert list(window_steps(10, (0, 2))) == [0, 1] and list(window_steps(10, (7, 10))) == [7, 8, 9]
    for bad in ((3, 3), (-1, 2), (5, 11), (4, 2)):
        with pytest.raises(UserError, match="trained steps"):
            window_steps(10, bad)


def test_trajectories_index_and_join(pipe):
    guidance = guidance_of(pipe)
    a = sample_with_logprob(pipe, PROMPTS, steps=2, guidance=guidance, generator=gens(0, 1))
    b = sample_with_logprob(pipe, PROMPTS[:1], steps=2, guidance=guidance, generator=gens(2))
    joined = FlowTrajectory.cat([a, b])
    assert joined.prompts == PROMPTS + PROMPTS[:1] and joined.final.shape[0] == 3
    picked = joined.index(torch.tensor([2, 0]))
    assert torch.equal(picked.final, torch.stack([b.final[0], a.final[0]]))
    assert torch.equal(picked.cond.embeds[0], b.cond.embeds[0])
    windowed = sample_with_logprob(pipe, PROMPTS[:1], steps=2, guidance=guidance, window=(1, 2), generator=gens(2))
    with pytest.raises(ValueError, match="windows"):
        FlowTrajectory.cat([a, windowed])


def test_unet_models_are_refused():
    with pytest.raises(UserError, match="flow-matching models"):
        sample_with_logprob(tiny_pipeline(), ["x"], steps=2, guidance=1.0)
