"""DDIM (eta > 0) as a stochastic policy: every step's Gaussian log-probability of the chosen x_{t-1}.

`ddim_step_with_logprob` is diffusers' `DDIMScheduler.step` written out (epsilon prediction), returning the
posterior mean and std as well, so the log-probability of any given `prev_sample` can be recomputed after
the weights change (DDPO's importance ratio). `sample_with_logprob` is the pipeline's `__call__` with that
step, driven through the model adapter (`rlft.models.adapters`: SD 1.x, SDXL with its `added_cond_kwargs`):
same prompt encoding, same initial latents, same noise draws from the same generators, so with the same
generator it ends on the same latents as the plain pipeline (tested) whenever the scheduler's
`set_alpha_to_one` is off; with it on, the last step is ddpo-pytorch's (see `ddim_posterior`), not diffusers'.
A `Trajectory` keeps the `Conditioning` it was sampled under, so `recompute_log_prob` replays each step
exactly as it was drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlft.models.adapters import Conditioning, adapter_for

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class StepOutput:
    prev_sample: torch.Tensor  # x_{t-1}, sampled or given
    log_prob: torch.Tensor  # [N]: mean over dimensions of log N(x_{t-1}; mean, std^2), as ddpo-pytorch
    mean: torch.Tensor  # the posterior mean the policy samples around
    std: torch.Tensor  # scalar std of the step (eta * DDIM's sigma_t)


def _prev_timestep(scheduler, timestep: int) -> int:
    return timestep - scheduler.config.num_train_timesteps // scheduler.num_inference_steps


def ddim_posterior(scheduler, model_output: torch.Tensor, timestep: int, sample: torch.Tensor, eta: float):
    """DDIM's mean and std of x_{t-1} given x_t and the predicted noise (epsilon prediction)."""
    if scheduler.config.prediction_type != "epsilon":
        raise ValueError(f"only epsilon-prediction models are supported, this one predicts {scheduler.config.prediction_type}")
    if scheduler.config.thresholding or scheduler.config.clip_sample:
        raise ValueError("DDIM with thresholding or sample clipping is not a Gaussian policy; disable them")
    t = int(timestep)
    # The last step's previous timestep is negative. DDIMScheduler.step then takes `final_alpha_cumprod`, which is
    # 1 under `set_alpha_to_one=True` (many Euler/DPM++ configs carry it): std 0, and a Gaussian log-prob of 0/0.
    # ddpo-pytorch clamps the previous timestep to 0 instead, so alpha_prev = alphas_cumprod[0] and every step
    # stays a proper Gaussian; so do we. With `set_alpha_to_one=False` (SD 1.x, the toy world) the two agree.
    prev_t = max(_prev_timestep(scheduler, t), 0)
    # The same float32 operations, in the same order, as DDIMScheduler.step: bit-identical samples.
    alpha_t = scheduler.alphas_cumprod[t]
    alpha_prev = scheduler.alphas_cumprod[prev_t]
    beta_t = 1 - alpha_t
    variance = ((1 - alpha_prev) / beta_t) * (1 - alpha_t / alpha_prev)
    std = (eta * variance ** 0.5).to(device=sample.device, dtype=sample.dtype)
    alpha_t, alpha_prev, beta_t = (a.to(sample.device) for a in (alpha_t, alpha_prev, beta_t))
    pred_x0 = (sample - beta_t ** 0.5 * model_output) / alpha_t ** 0.5
    direction = (1 - alpha_prev - std**2) ** 0.5 * model_output
    mean = alpha_prev ** 0.5 * pred_x0 + direction
    return mean, std


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-sample mean over dimensions of log N(x; mean, std^2)."""
    lp = -((x.detach() - mean) ** 2) / (2 * std**2) - torch.log(std) - LOG_SQRT_2PI
    return lp.mean(dim=tuple(range(1, lp.ndim)))


def ddim_step_with_logprob(scheduler, model_output, timestep, sample, eta: float = 1.0, prev_sample=None, generator=None) -> StepOutput:
    """One DDIM step; draws x_{t-1} (with diffusers' `randn_tensor`, as `DDIMScheduler.step` does) unless given."""
    from diffusers.utils.torch_utils import randn_tensor

    mean, std = ddim_posterior(scheduler, model_output, timestep, sample, eta)
    if prev_sample is None:
        noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype)
        prev_sample = mean + std * noise
    # log-probs in fp32 even under bf16/fp16 autocast: PPO clips ratios at 1 +- 1e-4
    return StepOutput(prev_sample, gaussian_log_prob(prev_sample.float(), mean.float(), std.float()), mean, std)


@dataclass
class Trajectory:
    """What sampling recorded: latents[:, k] is x before step k, next_latents[:, k] after it."""

    prompts: list[str]
    cond: Conditioning  # what the UNet was conditioned on (text states, SDXL's added conditioning, CFG's negative half)
    timesteps: torch.Tensor  # [T]
    latents: torch.Tensor  # [N, T, C, H, W]
    next_latents: torch.Tensor  # [N, T, C, H, W]
    log_probs: torch.Tensor  # [N, T]
    final: torch.Tensor  # [N, C, H, W] final latents

    def index(self, idx) -> Trajectory:
        """The trajectories of the samples at `idx`."""
        return Trajectory([self.prompts[i] for i in idx.tolist()], self.cond.index(idx), self.timesteps,
                          self.latents[idx], self.next_latents[idx], self.log_probs[idx], self.final[idx])

    @staticmethod
    def cat(parts: list[Trajectory]) -> Trajectory:
        """The samples of `parts` (sampled with the same timesteps), one batch after the other."""
        return Trajectory(sum((p.prompts for p in parts), []), Conditioning.cat([p.cond for p in parts]),
                          parts[0].timesteps, torch.cat([p.latents for p in parts]),
                          torch.cat([p.next_latents for p in parts]), torch.cat([p.log_probs for p in parts]),
                          torch.cat([p.final for p in parts]))


def encode_prompts(pipe, prompts: list[str], guidance: float, negative_prompt: str | None = None, device=None):
    """(prompt_embeds, negative_embeds or None) exactly as an SD 1.x pipeline encodes them (the adapter's
    `encode_prompt` is the same for SD 1.x, and the only way for SDXL)."""
    device = device or pipe._execution_device
    cfg = guidance > 1.0
    neg = [negative_prompt] * len(prompts) if negative_prompt else None
    pos, negative = pipe.encode_prompt(prompts, device, 1, cfg, neg)
    return pos, (negative if cfg else None)


def predict_noise(unet, latents, t, prompt_embeds, negative_embeds, guidance: float):
    """The UNet's (guided) noise prediction for SD 1.x's bare text states; CFG as the pipeline does it (one batched
    call). `t` is one timestep or one per latent. `ModelAdapter.predict_noise` takes any family's `Conditioning`."""
    if negative_embeds is None:
        return unet(latents, t, encoder_hidden_states=prompt_embeds).sample
    both_t = torch.cat([t, t]) if torch.is_tensor(t) and t.ndim else t
    both = unet(torch.cat([latents, latents]), both_t, encoder_hidden_states=torch.cat([negative_embeds, prompt_embeds])).sample
    uncond, text = both.chunk(2)
    return uncond + guidance * (text - uncond)


@torch.no_grad()
def sample_with_logprob(pipe, prompts: list[str], *, steps: int, guidance: float, eta: float = 1.0, generator=None,
                        latents=None, negative_prompt: str | None = None, unet=None,
                        size: tuple[int, int] | None = None) -> Trajectory:
    """Sample with DDIM, recording each step's latents and log-probability; returns a `Trajectory`.

    `generator` may be one `torch.Generator` or a list (one per prompt), as for the pipeline. `unet`
    overrides `pipe.unet` (e.g. accelerate's wrapped model). `size` (height, width): the model's own by default.
    """
    adapter = adapter_for(pipe)
    unet = unet or pipe.unet
    device = pipe._execution_device
    cond = adapter.encode_prompt(prompts, guidance, negative_prompt, size=size, device=device)
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    x = adapter.prepare_latents(len(prompts), generator, size=size, latents=latents, dtype=cond.embeds.dtype, device=device)
    all_x, all_next, all_lp = [], [], []
    for t in timesteps:
        eps = adapter.predict_noise(unet, scheduler.scale_model_input(x, t), t, cond, guidance)
        out = ddim_step_with_logprob(scheduler, eps, t, x, eta, generator=generator)
        all_x.append(x)
        all_next.append(out.prev_sample)
        all_lp.append(out.log_prob)
        x = out.prev_sample
    return Trajectory(list(prompts), cond, timesteps, torch.stack(all_x, 1), torch.stack(all_next, 1),
                      torch.stack(all_lp, 1), x)


def decode(pipe, latents: torch.Tensor) -> torch.Tensor:
    """Latents to images as float N x 3 x H x W in [0, 1] (differentiable); `ModelAdapter.decode` for any family."""
    return adapter_for(pipe).decode(latents)


def recompute_log_prob(pipe, unet, traj: Trajectory, step: int, guidance: float, eta: float,
                       cond: Conditioning | None = None) -> StepOutput:
    """The current policy's log-probability of the recorded step `step` of `traj` (with grad), conditioned on
    `cond` (default: the trajectory's own)."""
    cond = traj.cond if cond is None else cond
    t = traj.timesteps[step]
    x = traj.latents[:, step]
    eps = adapter_for(pipe).predict_noise(unet, pipe.scheduler.scale_model_input(x, t), t, cond, guidance)
    return ddim_step_with_logprob(pipe.scheduler, eps, t, x, eta, prev_sample=traj.next_latents[:, step])
