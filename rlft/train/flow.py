"""Flow matching as a stochastic policy: Flow-GRPO's SDE sampler with every step's Gaussian log-probability.

A rectified-flow model (SD3, FLUX) samples with the deterministic ODE dx = v dt, from t = 1 (noise) to 0
(data); x_t = (1 - t) x_0 + t eps, and the model's velocity is v = E[eps - x_0 | x_t]. The ODE has no
log-probability to train on. Flow-GRPO (Liu et al. 2025, "Flow-GRPO: Training Flow Matching Models via Online
RL", eq. 9) samples instead from the reverse-time SDE with the same marginals p_t:

    dx = [v + sigma_t^2 / (2t) (x + (1 - t) v)] dt + sigma_t dw,    sigma_t = a sqrt(t / (1 - t)),

where (x + (1 - t) v) / t = -t * score, since the score of x_t is -E[eps | x_t] / t and E[eps | x_t] = x + (1 - t) v.
Its Euler-Maruyama step from sigma to sigma_next (dt = sigma_next - sigma < 0) is a Gaussian

    x_next ~ N(x (1 + sigma_t^2 dt / (2 sigma)) + v (1 + sigma_t^2 (1 - sigma) / (2 sigma)) dt, sigma_t^2 |dt|),

written here as Flow-GRPO's `sde_step_with_logprob` writes it (the same float operations): at t = 1, where
sigma_t is infinite, it takes the schedule's second sigma in the denominator, as Flow-GRPO does. `a` is the noise
level (Flow-GRPO: 0.7); a = 0 is the plain Euler ODE step of `FlowMatchEulerDiscreteScheduler`, bit for bit.

`sample_with_logprob` is the pipeline's loop through the model adapter (the same prompt encoding, initial
latents and schedule), recording a `FlowTrajectory`; with `window=(start, stop)` only those steps are SDE steps,
recorded and trained, the others ODE steps (Flow-GRPO-Fast, Li et al. 2025 "MixGRPO" slide such a window over
training). `recompute_log_prob` replays a recorded step under the current weights (the importance ratio).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prefs.errors import UserError
from rlft.models.adapters import Conditioning, FlowAdapter, adapter_for

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
NOISE_LEVEL = 0.7  # Flow-GRPO's a


@dataclass
class FlowStepOutput:
    prev_sample: torch.Tensor  # x at sigma_next, sampled or given
    log_prob: torch.Tensor  # [N]: mean over dimensions of log N(prev_sample; mean, std^2); 0 for a deterministic step
    mean: torch.Tensor  # the Gaussian's mean
    std: torch.Tensor  # its std, sigma_t sqrt(|dt|) (per sample: [N, 1, ...])


def _column(value, like: torch.Tensor) -> torch.Tensor:
    """A scalar or per-sample [N] value as [N, 1, ...] (float32, on `like`'s device) to broadcast over a sample."""
    value = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    return value.reshape(-1, *([1] * (like.ndim - 1))) if value.ndim else value


def sde_std(sigma: torch.Tensor, sigma_max: float, noise_level: float) -> torch.Tensor:
    """Flow-GRPO's sigma_t = a sqrt(t / (1 - t)), with `sigma_max` (the schedule's second sigma) for t in the
    denominator where t = 1."""
    return torch.sqrt(sigma / (1 - torch.where(sigma == 1, torch.as_tensor(sigma_max, dtype=sigma.dtype), sigma))) * noise_level


def flow_sde_step(velocity: torch.Tensor, sample: torch.Tensor, sigma, sigma_next, *, noise_level: float = NOISE_LEVEL,
                  sigma_max: float, prev_sample: torch.Tensor | None = None, generator=None) -> FlowStepOutput:
    """One step of the flow's SDE from `sigma` to `sigma_next` (scalars or one per sample); draws the next sample
    (diffusers' `randn_tensor`, so a list of generators draws per sample) unless `prev_sample` is given.

    Computed in float32 as `FlowMatchEulerDiscreteScheduler.step` computes its ODE step; the result is cast back to
    the velocity's dtype as the scheduler does. `noise_level` 0 is that ODE step, with log-prob 0.
    """
    from diffusers.utils.torch_utils import randn_tensor

    if noise_level < 0 or not math.isfinite(noise_level):
        raise UserError(f"the SDE noise level must be a finite number >= 0, got {noise_level}")
    x = sample.to(torch.float32)
    v = velocity.to(torch.float32)
    sigma, sigma_next = _column(sigma, x), _column(sigma_next, x)
    dt = sigma_next - sigma
    std_t = sde_std(sigma, sigma_max, noise_level)
    mean = x * (1 + std_t**2 / (2 * sigma) * dt) + v * (1 + std_t**2 * (1 - sigma) / (2 * sigma)) * dt
    std = std_t * torch.sqrt(-dt)
    if noise_level == 0:
        prev = mean if prev_sample is None else prev_sample.to(torch.float32)
        return FlowStepOutput(prev.to(velocity.dtype), torch.zeros(x.shape[0], device=x.device), mean, std)
    if prev_sample is None:
        noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        prev_sample = (mean + std * noise).to(velocity.dtype)
    residual = prev_sample.detach().to(torch.float32) - mean
    log_prob = -(residual**2) / (2 * std**2) - torch.log(std) - LOG_SQRT_2PI
    return FlowStepOutput(prev_sample, log_prob.mean(dim=tuple(range(1, log_prob.ndim))), mean, std)


@dataclass
class FlowTrajectory:
    """What SDE sampling recorded. `steps` are the schedule indices of the recorded (SDE) steps; latents[:, k] is
    x before step `steps[k]`, next_latents[:, k] after it (FLUX: packed latents)."""

    prompts: list[str]
    cond: Conditioning  # what the transformer was conditioned on (text states, pooled text, FLUX's position ids)
    sigmas: torch.Tensor  # [T + 1]: the schedule, ending at 0
    timesteps: torch.Tensor  # [T]: the transformer's timestep inputs (sigma * 1000)
    steps: torch.Tensor  # [W]: indices into timesteps of the recorded steps
    latents: torch.Tensor  # [N, W, ...]
    next_latents: torch.Tensor  # [N, W, ...]
    log_probs: torch.Tensor  # [N, W]
    final: torch.Tensor  # [N, ...]: the final latents
    noise_level: float
    size: tuple[int, int]  # (height, width) in pixels: FLUX's packed latents need it to decode

    def index(self, idx) -> FlowTrajectory:
        """The trajectories of the samples at `idx` (an index tensor)."""
        return FlowTrajectory([self.prompts[i] for i in idx.tolist()], self.cond.index(idx), self.sigmas,
                              self.timesteps, self.steps, self.latents[idx], self.next_latents[idx],
                              self.log_probs[idx], self.final[idx], self.noise_level, self.size)

    @staticmethod
    def cat(parts: list[FlowTrajectory]) -> FlowTrajectory:
        """The samples of `parts` (sampled on the same schedule, window and size), one batch after the other."""
        first = parts[0]
        for p in parts[1:]:
            if not (torch.equal(p.sigmas, first.sigmas) and torch.equal(p.steps, first.steps) and p.size == first.size):
                raise ValueError("trajectories of different schedules, windows or sizes cannot be joined")
        return FlowTrajectory(sum((p.prompts for p in parts), []), Conditioning.cat([p.cond for p in parts]),
                              first.sigmas, first.timesteps, first.steps, torch.cat([p.latents for p in parts]),
                              torch.cat([p.next_latents for p in parts]), torch.cat([p.log_probs for p in parts]),
                              torch.cat([p.final for p in parts]), first.noise_level, first.size)


def window_steps(steps: int, window: tuple[int, int] | None) -> range:
    """The schedule indices `window` = (start, stop) selects of `steps` steps (None: all); UserError when it is
    empty or outside the schedule."""
    if window is None:
        return range(steps)
    start, stop = window
    if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop <= steps):
        raise UserError(f"the trained steps {start}..{stop} must satisfy 0 <= start < stop <= {steps} (the sampling steps)")
    return range(start, stop)


def _flow_adapter(pipe) -> FlowAdapter:
    adapter = adapter_for(pipe)
    if not isinstance(adapter, FlowAdapter):
        raise UserError(f"the flow SDE samples flow-matching models (SD3, FLUX); this model is {adapter.info.title}")
    return adapter


@torch.no_grad()
def sample_with_logprob(pipe, prompts: list[str], *, steps: int, guidance: float, noise_level: float = NOISE_LEVEL,
                        window: tuple[int, int] | None = None, generator=None, latents=None,
                        negative_prompt: str | None = None, transformer=None,
                        size: tuple[int, int] | None = None) -> FlowTrajectory:
    """Sample with the flow's SDE on the steps of `window` (default: all) and its ODE elsewhere, recording the
    SDE steps; returns a `FlowTrajectory`.

    The pipeline's own prompt encoding, initial latents (from `generator`: one, or a list of one per prompt) and
    schedule, through the model adapter; `transformer` overrides `pipe.transformer` (a wrapped model); `size`
    (height, width) is the model's own by default.
    """
    adapter = _flow_adapter(pipe)
    transformer = transformer or pipe.transformer
    device = pipe._execution_device
    size = tuple(size or adapter.image_size)
    trained = window_steps(steps, window)
    cond = adapter.encode_prompt(prompts, guidance, negative_prompt, size=size, device=device)
    timesteps = adapter.set_timesteps(steps, size, device)
    sigmas = pipe.scheduler.sigmas.to(device)
    sigma_max = sigmas[1].item()
    x = adapter.prepare_latents(len(prompts), generator, size=size, latents=latents, dtype=cond.embeds.dtype, device=device)
    all_x, all_next, all_lp = [], [], []
    for i, t in enumerate(timesteps):
        v = adapter.predict_velocity(transformer, x, t, cond, guidance)
        level = noise_level if i in trained else 0.0
        out = flow_sde_step(v, x, sigmas[i], sigmas[i + 1], noise_level=level, sigma_max=sigma_max, generator=generator)
        if i in trained:
            all_x.append(x)
            all_next.append(out.prev_sample)
            all_lp.append(out.log_prob)
        x = out.prev_sample
    return FlowTrajectory(list(prompts), cond, sigmas, timesteps, torch.tensor(list(trained), device=device),
                          torch.stack(all_x, 1), torch.stack(all_next, 1), torch.stack(all_lp, 1), x,
                          noise_level, size)


def recompute_log_prob(pipe, transformer, traj: FlowTrajectory, k: int, guidance: float,
                       cond: Conditioning | None = None) -> FlowStepOutput:
    """The current policy's log-probability of the k-th recorded step of `traj` (with grad), conditioned on `cond`
    (default: the trajectory's own)."""
    adapter = _flow_adapter(pipe)
    cond = traj.cond if cond is None else cond
    i = int(traj.steps[k])
    x = traj.latents[:, k]
    v = adapter.predict_velocity(transformer, x, traj.timesteps[i], cond, guidance)
    return flow_sde_step(v, x, traj.sigmas[i], traj.sigmas[i + 1], noise_level=traj.noise_level,
                         sigma_max=traj.sigmas[1].item(), prev_sample=traj.next_latents[:, k])


def decode(pipe, traj: FlowTrajectory) -> torch.Tensor:
    """The trajectory's final images, N x 3 x H x W in [0, 1] (differentiable)."""
    return _flow_adapter(pipe).decode(traj.final, traj.size)
