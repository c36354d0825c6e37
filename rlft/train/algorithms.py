"""The algorithms behind one interface: `Algorithm(trainer).epoch(n) -> metrics`: ddpo, rwr and dpo for the UNet
families (SD 1.x, SDXL), grpo (Flow-GRPO) for the flow-matching ones (SD3, FLUX).

Each epoch draws its own data (samples for ddpo/rwr, judgement pairs for dpo) with randomness seeded by
the trainer from (seed, epoch), then takes gradient steps on the trainer's LoRA parameters.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch

from rlft.train import losses
from rlft.train.ddim import recompute_log_prob
from rlft.train.judged import JudgedLatents, encode_pairs_at_own_size
from rlft.train.stats import group_advantages


class Algorithm:
    """Base: holds the trainer; subclasses implement `epoch`."""

    name = ""

    def __init__(self, trainer):
        self.t = trainer
        self.cfg = trainer.config

    def epoch(self, epoch: int) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # shared pieces -------------------------------------------------------------------------------------
    def collect(self, epoch: int):
        """Sample this process's share of the epoch; returns (trajectory list, prompts, rewards, held-out)."""
        t, acc = self.t, self.t.accelerator
        n = max(1, self.cfg.sample.samples_per_epoch // acc.num_processes)
        rng = random.Random(f"{self.cfg.seed}:{epoch}:{acc.process_index}")
        prompts = t.epoch_prompts(rng, n, self.cfg.sample.images_per_prompt)
        seeds = [rng.randrange(2**62) for _ in prompts]
        trajs = t.sample(prompts, seeds)
        images = torch.cat([t.decode(tr.final) for tr in trajs])
        rewards, held = t.rewards(images, prompts)
        return trajs, prompts, rewards, held

    def gather(self, prompts, rewards, held):
        """All processes' prompts and rewards (the stat tracker sees the whole epoch)."""
        acc = self.t.accelerator
        if acc.num_processes == 1:
            return prompts, rewards, held
        from accelerate.utils import gather_object

        all_prompts = gather_object(list(prompts))
        all_rewards = acc.gather(torch.as_tensor(rewards, device=acc.device)).cpu().numpy()
        all_held = None if held is None else acc.gather(torch.as_tensor(held, device=acc.device)).cpu().numpy()
        return all_prompts, all_rewards, all_held

    def advantages(self, prompts, rewards, held, group: bool = False):
        """This process's advantages and the epoch's reward metrics. With `group`, each reward is normalised within
        its prompt's group of this epoch (`group_advantages`, GRPO); else per prompt over the stat tracker's running
        buffer (`ddpo.per_prompt_stats`) or over the whole epoch."""
        all_prompts, all_rewards, all_held = self.gather(prompts, rewards, held)
        if group:
            adv = group_advantages(all_prompts, all_rewards)
        elif self.cfg.ddpo.per_prompt_stats:
            adv = self.t.tracker.update(all_prompts, all_rewards)
        else:
            adv = (all_rewards - all_rewards.mean()) / (all_rewards.std() + 1e-6)
        n, k = len(prompts), self.t.accelerator.process_index
        metrics = {"reward_mean": float(np.mean(all_rewards)), "reward_std": float(np.std(all_rewards)),
                   "heldout_reward_mean": None if all_held is None else float(np.mean(all_held)),
                   "samples": len(all_rewards)}
        return adv[k * n : (k + 1) * n], metrics

    def base_prediction(self, noisy, steps, prompts, cond, negative=None, guidance: float = 1.0):
        """The frozen base's noise prediction from the same latents and timesteps, with the base's conditioning on
        `prompts` (`Trainer.base_embed`: `cond` itself unless the text encoders train). `cond`: a `Conditioning`, or
        SD 1.x's text states with `negative`."""
        cond = self.t.base_embed(prompts, guidance, cond, negative)
        with self.t.base_model() as base, self.t.autocast():
            return self.t.adapter.predict_noise(base, noisy, steps, cond, guidance)

    def minibatches(self, n: int, gen: torch.Generator, stats: dict, shuffle: bool = True, groups=None):
        """Index batches over `inner_epochs` passes; steps the optimizer every `gradient_accumulation_steps`.

        With `groups` (a group id per sample), the groups are shuffled instead of the samples and a micro-batch
        holds whole groups, as many as fit in `train_batch_size` (a larger group is split into full batches).

        Under several processes every backward pass all-reduces gradients, so all processes must take as many
        micro-batches. rwr's can differ (it groups each process's own samples by prompt): the processes agree on
        the count before the first one, and a process with fewer repeats its last batch while `self.padding` is
        true; the caller scales that loss by 0."""
        cfg = self.cfg.optim
        acc = self.t.accelerator
        self.t.unet.train()
        self.padding = False

        def passes():  # without groups each sample is a group of one: plain shuffled batches
            for _ in range(cfg.inner_epochs):
                yield from group_batches(range(n) if groups is None else groups, cfg.train_batch_size, gen if shuffle else None)

        plan, real = passes(), None
        if acc.num_processes > 1:
            plan = list(plan)
            real = len(plan)
            most = int(acc.gather(torch.tensor([real], device=acc.device)).max())
            plan += plan[-1:] * (most - real)
        micro = 0
        for batch in plan:
            self.padding = real is not None and micro >= real
            yield batch
            micro += 1
            if micro % cfg.gradient_accumulation_steps == 0:
                stats["grad_norm"].append(self.t.optimizer_step())
        self.padding = False
        if micro % cfg.gradient_accumulation_steps:
            stats["grad_norm"].append(self.t.optimizer_step())

    def denoise_inputs(self, x0, generator, min_timestep: float = 0.0, groups=None):
        """Random timesteps (uniform on [min_timestep * T, T)) and noise for the denoising loss on clean latents `x0`;
        with `groups` (a group id per row), rows of one group share their timestep and noise."""
        sched = self.t.pipe.scheduler
        total = sched.config.num_train_timesteps
        low = min(int(round(min_timestep * total)), total - 1)
        groups = range(len(x0)) if groups is None else groups  # without groups every row draws its own
        ids = {g: k for k, g in enumerate(dict.fromkeys(groups))}
        row = torch.tensor([ids[g] for g in groups])
        steps = torch.randint(low, total, (len(ids),), generator=generator)[row].to(x0.device)
        noise = torch.randn((len(ids), *x0.shape[1:]), generator=generator)[row].to(x0.device, x0.dtype)
        return sched.add_noise(x0, noise, steps), noise, steps


class DDPO(Algorithm):
    """DDPO-IS: PPO-clipped importance-sampling updates over the recorded denoising steps."""

    name = "ddpo"

    def epoch(self, epoch: int) -> dict:
        t, cfg = self.t, self.cfg
        trajs, prompts, rewards, held = self.collect(epoch)
        adv, metrics = self.advantages(prompts, rewards, held, group=cfg.ddpo.group_advantages)
        from rlft.train.ddim import Trajectory

        traj = Trajectory.cat(trajs)
        adv = torch.as_tensor(adv, dtype=torch.float32, device=t.device)
        n_steps = traj.latents.shape[1]
        n_train = max(1, int(round(n_steps * cfg.ddpo.timestep_fraction)))
        gen = torch.Generator().manual_seed(epoch)
        stats = {"loss": [], "approx_kl": [], "clipfrac": [], "kl": [], "grad_norm": []}
        accum = cfg.optim.gradient_accumulation_steps
        for idx in self.minibatches(len(adv), gen, stats):
            sub = traj.index(idx)
            steps = torch.randperm(n_steps, generator=gen)[:n_train].sort().values  # drawn either way: same `gen` stream
            if cfg.ddpo.timestep_choice == "first":
                steps = torch.arange(n_train)
            step_w = cfg.ddpo.discount ** steps.double()
            step_w = (step_w / step_w.mean()).tolist()  # mean 1: the loss keeps plain DDPO's scale
            ref_sub = sub  # the base policy's view of the trajectory: the base text encoders' conditioning
            if cfg.kl_weight > 0:
                ref_sub = dataclasses.replace(sub, cond=t.base_embed(sub.prompts, cfg.sample.guidance, sub.cond))
            for k, wk in zip(steps.tolist(), step_w, strict=False):
                if cfg.lora.train_text_encoder:  # a fresh text-encoder graph for each step's backward
                    sub.cond = t.embed(sub.prompts, cfg.sample.guidance)
                with t.autocast():
                    out = recompute_log_prob(t.pipe, t.unet, sub, k, cfg.sample.guidance, cfg.sample.eta)
                loss, info = losses.ppo_loss(out.log_prob.float(), sub.log_probs[:, k].float(), adv[idx],
                                             cfg.ddpo.clip_range, cfg.ddpo.adv_clip_max)
                if cfg.kl_weight > 0:
                    # KL between the two Gaussian steps (same std): ||mean - mean_base||^2 / (2 std^2)
                    with t.base_model() as base, t.autocast():
                        ref = recompute_log_prob(t.pipe, base, ref_sub, k, cfg.sample.guidance, cfg.sample.eta)
                    kl = (((out.mean.float() - ref.mean.float()) ** 2) / (2 * out.std.float() ** 2)).mean()
                    loss = loss + cfg.kl_weight * kl
                    stats["kl"].append(kl.item())
                t.accelerator.backward(loss * wk / (n_train * accum))
                stats["loss"].append(loss.item())
                stats["approx_kl"].append(info["approx_kl"].item())
                stats["clipfrac"].append(info["clipfrac"].item())
        return {**metrics, **{k: (float(np.mean(v)) if v else None) for k, v in stats.items()}}


class RWR(Algorithm):
    """Reward-weighted denoising on the model's own samples (`RWRConfig`): advantage-weighted matching by default,
    DiffusionNFT's negative-aware loss, reward-weighted regression (exp weights) or RAFT (top-k)."""

    name = "rwr"

    def __init__(self, trainer):
        super().__init__(trainer)
        self.extra = None  # (latents, prompts) of mixed-in top-rated images, encoded once
        self.old = None  # nft: the LoRA weights that drew this epoch's samples

    def _extra(self):
        if self.extra is None and self.t.extra_images and self.cfg.rwr.mix_top_rated:
            items = self.t.extra_images[: self.cfg.rwr.mix_top_rated]
            self.extra = (encode_images(self.t, [im for im, _ in items]), [p for _, p in items])
        return self.extra

    def weights(self, adv, prompts) -> tuple[torch.Tensor, dict]:
        """Per-sample weights of the own samples, and metrics on them: the clipped advantages themselves (advantage,
        nft), or exp / top-k weights, centred with `rwr.baseline`."""
        rc = self.cfg.rwr
        if rc.weighting in ("advantage", "nft"):
            w = torch.as_tensor(adv, dtype=torch.float32).clamp(-rc.adv_clip_max, rc.adv_clip_max)
            return w, {"adv_abs_mean": float(w.abs().mean())}
        w = losses.rwr_weights(adv, prompts, rc.weighting, rc.beta, rc.top_k, rc.max_weight)
        ess = float(w.sum() ** 2 / (w**2).sum())  # of the own samples' weights
        return (w - 1.0 if rc.baseline else w), {"effective_samples": ess}

    def old_prediction(self, noisy, steps, prompts, cond, negative=None, guidance: float = 1.0):
        """nft: the prediction of the weights that drew this epoch's samples (`self.old`) at the same inputs (with
        their text encoders' conditioning when those train too). `cond`: a `Conditioning`, or SD 1.x's text states
        with `negative`."""
        t = self.t
        with torch.no_grad():
            now = [p.detach().clone() for p in t.params]
            for p, o in zip(t.params, self.old, strict=True):
                p.copy_(o)
            try:
                cond = t.embed(prompts, guidance) if self.cfg.lora.train_text_encoder else t.conditioning(cond, negative)
                with t.autocast():
                    return t.adapter.predict_noise(t.raw_unet, noisy, steps, cond, guidance)
            finally:
                for p, n in zip(t.params, now, strict=True):
                    p.copy_(n)

    def epoch(self, epoch: int) -> dict:
        t, cfg = self.t, self.cfg
        rc = cfg.rwr
        trajs, prompts, rewards, held = self.collect(epoch)
        adv, metrics = self.advantages(prompts, rewards, held, group=rc.group_advantages)
        w, info = self.weights(adv, prompts)
        metrics.update(info)
        x0 = torch.cat([tr.final for tr in trajs])
        all_prompts = list(prompts)
        extra = self._extra()
        if extra is not None:  # mixed-in rated images keep their positive weight
            x0 = torch.cat([x0, extra[0]])
            all_prompts += extra[1]
            w = torch.cat([w, torch.full((len(extra[1]),), float(rc.mix_weight))])
        # a prompt's own samples form a group; each mixed-in rated image is a group of its own
        groups = list(prompts) + [("rated", i) for i in range(len(all_prompts) - len(prompts))]
        # weight 0 (top-k's left-out samples, a group of equal rewards) gives no gradient: skip its compute (one
        # process; under several, every process keeps its samples, so none is left without a batch while the others
        # all-reduce). nft keeps them: its loss at r = 1/2 still holds the model near the sampling policy.
        drop = t.accelerator.num_processes == 1 and rc.weighting != "nft"
        keep = (w != 0).nonzero().flatten() if drop else torch.arange(len(w))
        x0, w = x0[keep], w[keep].to(t.device)
        all_prompts = [all_prompts[i] for i in keep.tolist()]
        groups = [groups[i] for i in keep.tolist()] if rc.shared_noise else None
        if rc.weighting == "nft":
            self.old = [p.detach().clone() for p in t.params]
        gen = torch.Generator().manual_seed(epoch)
        stats = {"loss": [], "kl": [], "grad_norm": [], "active_frac": []}
        padded = 0  # micro-batches repeated at zero loss (several processes only)
        accum = cfg.optim.gradient_accumulation_steps
        guidance = cfg.sample.guidance if rc.guided_loss else 1.0  # the guided prediction, as sampling uses it
        for idx in self.minibatches(len(x0), gen, stats, groups=groups):
            # shared noise: a group's samples are denoised from the same noise at the same timestep, so the
            # weighted loss compares the samples themselves rather than their noise draws (Diffusion-DPO's pairing)
            batch_groups = None if groups is None else [groups[i] for i in idx.tolist()]
            noisy, noise, steps = self.denoise_inputs(x0[idx], gen, rc.min_timestep, batch_groups)
            batch_prompts = [all_prompts[i] for i in idx.tolist()]
            cond = t.embed(batch_prompts, guidance)
            old = None  # nft, once this epoch took an optimizer step: the sampling weights' prediction, read before the
            if rc.weighting == "nft" and stats["grad_norm"]:  # forward pass whose graph holds the current weights
                old = self.old_prediction(noisy, steps, batch_prompts, cond, guidance=guidance)
            with t.autocast():
                eps = t.adapter.predict_noise(t.unet, noisy, steps, cond, guidance)
            clip = rc.clip_range  # > 0 only with signed weights: RWRConfig refuses it otherwise
            ref = None
            if cfg.kl_weight > 0 or clip > 0:
                ref = self.base_prediction(noisy, steps, batch_prompts, cond, guidance=guidance)
            if rc.weighting == "nft":
                # until this epoch's first optimizer step the weights are still those that drew the samples
                old = eps.detach() if old is None else old
                loss = losses.nft_denoising_loss(eps, old, noise, w[idx], rc.nft_beta, rc.adv_clip_max)
            elif clip > 0:
                ref_mse = losses.per_sample_mse(ref, noise)
                loss, active = losses.clipped_advantage_denoising_loss(eps, noise, w[idx], ref_mse, clip)
                if not self.padding:
                    stats["active_frac"].append(active.item())
            elif rc.signed:
                loss = losses.advantage_denoising_loss(eps, noise, w[idx])
            else:
                loss = losses.weighted_denoising_loss(eps, noise, w[idx])
            if cfg.kl_weight > 0:  # ||eps - eps_base||^2 at the training inputs
                reg = losses.per_sample_mse(eps, ref).mean()
                loss = loss + cfg.kl_weight * reg
                if not self.padding:
                    stats["kl"].append(reg.item())
            if self.padding:  # only keeps this process in step with the others' all-reduces
                padded += 1
                loss = loss * 0.0
            else:
                stats["loss"].append(loss.item())
            t.accelerator.backward(loss / accum)
        self.old = None
        if t.accelerator.num_processes > 1:  # over all processes
            metrics["padded_batches"] = int(t.accelerator.gather(torch.tensor([padded], device=t.device)).sum())
        return {**metrics, **{k: (float(np.mean(v)) if v else None) for k, v in stats.items()}}


class DPO(Algorithm):
    """Diffusion-DPO on stored judgements, the frozen base as reference.

    A judgement is (winner, loser, prompt), or (winner, loser, winner's prompt, loser's prompt) when the two
    images were made from different prompts (pairs `random` or `uncertain` selection picks across the pool):
    each image is then noised and scored under its own prompt. That is a heuristic beyond the paper, whose
    derivation needs one prompt per pair: the implicit reward beta log(pi/pi_ref) + beta log Z(c) loses its
    log Z(c) term only when both images share c, so across prompts a per-prompt offset remains in the loss.
    Conditioning the loser on the winner's prompt instead would teach the model not to draw an image of
    another subject, which it already does not. Same-prompt pairs (the store's default selection) are the
    paper's case; on the toy `centered` home, active cross-prompt pairs steered worse (docs/train.md).
    """

    name = "dpo"

    def __init__(self, trainer):
        super().__init__(trainer)
        j = trainer.judgements
        self.prompts = [x[2] for x in j]
        self.lose_prompts = [x[3] if len(x) > 3 else x[2] for x in j]
        if trainer.adapter.size_conditioned:  # SDXL: each pair at its own size, told to the UNet (rlft.train.judged)
            self.pairs = encode_pairs_at_own_size(trainer, [(x[0], x[1]) for x in j])
        else:
            self.pairs = JudgedLatents(encode_images(trainer, [x[0] for x in j]), encode_images(trainer, [x[1] for x in j]))

    def epoch(self, epoch: int) -> dict:
        t, cfg = self.t, self.cfg
        acc = t.accelerator
        rng = random.Random(f"{cfg.seed}:{epoch}:{acc.process_index}")
        n = max(1, cfg.dpo.pairs_per_epoch // acc.num_processes)
        pick = torch.tensor([rng.randrange(len(self.prompts)) for _ in range(n)])
        gen = torch.Generator().manual_seed(epoch)
        stats = {"loss": [], "implicit_acc": [], "kl": [], "grad_norm": []}
        accum = cfg.optim.gradient_accumulation_steps
        for batch in self.minibatches(n, gen, stats, shuffle=False):
            idx = pick[batch]
            # pairs of one size share a UNet call; a micro-batch of several sizes (SDXL's buckets) takes one per size
            parts = [self.errors(sub, gen) for sub in self.pairs.size_groups(idx)]
            model_w, model_l, ref_w, ref_l, gap = (torch.cat(e) for e in zip(*parts, strict=True))
            loss, info = losses.dpo_loss(model_w, model_l, ref_w, ref_l, cfg.dpo.beta)
            if cfg.kl_weight > 0:
                reg = gap.mean()
                loss = loss + cfg.kl_weight * reg
                stats["kl"].append(reg.item())
            t.accelerator.backward(loss / accum)
            stats["loss"].append(loss.item())
            stats["implicit_acc"].append(info["implicit_acc"].item())
        out = {"pairs": n * acc.num_processes, **{k: (float(np.mean(v)) if v else None) for k, v in stats.items()}}
        return out

    def errors(self, idx, gen):
        """The model's and the frozen reference's per-image denoising errors on the judgements `idx` (of one size):
        (model winners, model losers, reference winners, reference losers, ||eps - eps_ref||^2 per image). Winner
        and loser share noise and timestep, as the paper; each image is conditioned on its own prompt (and, on
        SDXL, its own size and crop)."""
        t, cfg = self.t, self.cfg
        xw, xl, geometry = self.pairs.batch(idx, t.device)
        noisy_w, noise, steps = self.denoise_inputs(xw, gen, cfg.dpo.min_timestep)
        noisy_l = t.pipe.scheduler.add_noise(xl, noise, steps)  # same noise and timestep, as the paper
        ids = idx.tolist()
        both_prompts = [self.prompts[i] for i in ids] + [self.lose_prompts[i] for i in ids]
        cond = t.embed(both_prompts, 1.0)
        base_cond = t.base_embed(both_prompts, 1.0, cond)
        if geometry is not None:
            cond, base_cond = t.adapter.with_sizes(cond, geometry), t.adapter.with_sizes(base_cond, geometry)
        noisy = torch.cat([noisy_w, noisy_l])
        both_t = torch.cat([steps, steps])
        with t.autocast():
            eps = t.adapter.predict_noise(t.unet, noisy, both_t, cond, 1.0)
        with t.base_model() as base, t.autocast():
            ref = t.adapter.predict_noise(base, noisy, both_t, base_cond, 1.0)
        target = torch.cat([noise, noise])
        model_err = losses.per_sample_mse(eps, target).chunk(2)
        ref_err = losses.per_sample_mse(ref, target).chunk(2)
        return (*model_err, *ref_err, losses.per_sample_mse(eps, ref))


def group_batches(groups, batch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Micro-batches of sample indices that keep each group (equal ids in `groups`) together: groups in random
    order (`generator`) or first-seen order (None), packed whole while they fit in `batch_size`; a group larger
    than `batch_size` is split into full batches of its own."""
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    ids = list(members)
    if generator is not None:
        ids = [ids[j] for j in torch.randperm(len(ids), generator=generator).tolist()]
    batches, current = [], []
    for g in ids:
        idx = members[g]
        if len(current) + len(idx) > batch_size and current:
            batches.append(current)
            current = []
        while len(idx) > batch_size:
            batches.append(idx[:batch_size])
            idx = idx[batch_size:]
        current = current + idx
    if current:
        batches.append(current)
    return [torch.tensor(b) for b in batches]


class GRPO(Algorithm):
    """Flow-GRPO (Liu et al. 2025) on SD3 and FLUX: each drawn prompt is sampled `sample.images_per_prompt` times
    with the flow's SDE (`rlft.train.flow`; `grpo.window_*` picks the SDE steps, the others are ODE steps), rewards
    are normalised within each prompt's group, and every recorded step takes a PPO-clipped importance-ratio loss,
    plus `kl_weight` times the KL between the policy's and the base model's Gaussian step (the same std:
    ||mean - mean_base||^2 / (2 std^2) per dimension)."""

    name = "grpo"

    def epoch(self, epoch: int) -> dict:
        from rlft.train.flow import FlowTrajectory
        from rlft.train.flow import recompute_log_prob as flow_log_prob

        t, cfg = self.t, self.cfg
        gc, guidance = cfg.grpo, cfg.sample.guidance
        trajs, prompts, rewards, held = self.collect(epoch)
        adv, metrics = self.advantages(prompts, rewards, held, group=True)
        traj = FlowTrajectory.cat(trajs)
        adv = torch.as_tensor(adv, dtype=torch.float32, device=t.device)
        n_steps = traj.latents.shape[1]
        gen = torch.Generator().manual_seed(epoch)
        stats = {"loss": [], "approx_kl": [], "clipfrac": [], "kl": [], "grad_norm": []}
        accum = cfg.optim.gradient_accumulation_steps
        for idx in self.minibatches(len(adv), gen, stats):
            sub = traj.index(idx)
            ref_sub = sub
            if cfg.kl_weight > 0:
                ref_sub = dataclasses.replace(sub, cond=t.base_embed(sub.prompts, guidance, sub.cond))
            for k in range(n_steps):
                if cfg.lora.train_text_encoder:  # a fresh text-encoder graph for each step's backward
                    sub.cond = t.embed(sub.prompts, guidance)
                with t.autocast():
                    out = flow_log_prob(t.pipe, t.unet, sub, k, guidance)
                loss, info = losses.ppo_loss(out.log_prob.float(), sub.log_probs[:, k].float(), adv[idx],
                                             gc.clip_range, gc.adv_clip_max)
                if cfg.kl_weight > 0:
                    with t.base_model() as base, t.autocast():
                        ref = flow_log_prob(t.pipe, base, ref_sub, k, guidance)
                    kl = (((out.mean.float() - ref.mean.float()) ** 2) / (2 * out.std.float() ** 2)).mean()
                    loss = loss + cfg.kl_weight * kl
                    stats["kl"].append(kl.item())
                t.accelerator.backward(loss / (n_steps * accum))
                stats["loss"].append(loss.item())
                stats["approx_kl"].append(info["approx_kl"].item())
                stats["clipfrac"].append(info["clipfrac"].item())
        return {**metrics, "trained_steps": n_steps, **{k: (float(np.mean(v)) if v else None) for k, v in stats.items()}}


@torch.no_grad()
def encode_images(trainer, images) -> torch.Tensor:
    """PIL images -> VAE latents (mean of the posterior, scaled) at the model's resolution, on CPU."""
    pipe = trainer.pipe
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    arr = np.stack([np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1
    out = []
    for i in range(0, len(x), 16):
        chunk = x[i : i + 16].to(trainer.device, pipe.vae.dtype)
        out.append((pipe.vae.encode(chunk).latent_dist.mean * pipe.vae.config.scaling_factor).float().cpu())
    return torch.cat(out)


ALGORITHMS = {"ddpo": DDPO, "rwr": RWR, "dpo": DPO, "grpo": GRPO}
