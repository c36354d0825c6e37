"""The trainer: one object, a config, a pipeline and a reward function in; a LoRA run out.

`Trainer(pipe, config, prompts=..., reward_fn=...)` adds LoRA, prepares the model with accelerate and runs
`config.epochs` epochs of its algorithm (`rlft.train.algorithms`). The algorithms reach the model only through
its family's adapter (`trainer.adapter`, `rlft.models.adapters`), so each is written once for SD 1.x and SDXL; the
flow-matching families (SD3, FLUX) train with `grpo` (Flow-GRPO's SDE policy, `rlft.train.flow`), the UNet families
with the others. `trainer.unet` is the prepared denoiser: the UNet, or the flow models' transformer. Reward functions share ddpo-pytorch's
signature `fn(images [N,3,H,W] in [0,1], prompts, metadata) -> (scores [N], info)`, so tests pass a stub.
Every epoch's randomness derives from (seed, epoch, process), so resuming from a checkpoint at an epoch
boundary replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from prefs.errors import UserError
from rlft.models.adapters import Conditioning, adapter_for
from rlft.train import lora as lora_io
from rlft.train import tracking
from rlft.train.config import TrainConfig
from rlft.train.ddim import sample_with_logprob
from rlft.train.stats import PerPromptStatTracker

RewardFn = Callable[[torch.Tensor, list, dict], tuple]
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def epoch_seed(seed: int, epoch: int, process: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 7919 + process * 104_729) % (2**63)


def seed_everything(value: int) -> None:
    random.seed(value)
    np.random.seed(value % (2**32))
    torch.manual_seed(value)


class Trainer:
    """Fine-tune `pipe` toward a reward with LoRA. See the module docstring.

    Args:
        pipe: a diffusers `StableDiffusionPipeline` or `StableDiffusionXLPipeline`, frozen by the trainer; it samples
            with DDIM (another scheduler is swapped for DDIM on the same noise schedule). With `grpo`: a
            `StableDiffusion3Pipeline` or `FluxPipeline`, sampled with the flow's SDE on its own schedule.
        config: a `TrainConfig`.
        prompts: training prompts (ddpo, rwr); also the source of the fixed sample grid's prompts.
        reward_fn: the training reward (ddpo, rwr); optional for dpo (then only reported).
        heldout_fn: a reward not trained on (a held-out ensemble member), reported beside the training reward.
        judges: {name: reward fn} never trained on, scoring each epoch's sample grid (`judge/NAME` in the
            metrics, the trackers and `samples/grid.json`; epoch 0 is the base model).
        judgements: for dpo: (winner image, loser image, prompt) triples, or (winner, loser, winner's prompt,
            loser's prompt) for a pair of two prompts; images as PIL.
        extra_images: for rwr: (PIL image, caption) pairs of the person's top-rated images to mix in.
        run_dir: where checkpoints, metrics, grids and the LoRA go (None: nothing is written).
        accelerator: an `accelerate.Accelerator` (default: one built from the config).
        progress: tqdm bars on stderr.
        on_epoch: called with each epoch's metrics dict (the CLI prints a one-line summary).
        log_with: experiment trackers (`tensorboard`, `wandb`, ...; `rlft.train.tracking`) that get each epoch's
            metrics and sample grid as well; TensorBoard writes under `run_dir/logs`.
    """

    def __init__(self, pipe, config: TrainConfig, *, prompts: Sequence[str] = (), reward_fn: RewardFn | None = None,
                 heldout_fn: RewardFn | None = None, judgements: Sequence | None = None, extra_images: Sequence = (),
                 run_dir: str | Path | None = None, accelerator=None, progress: bool = False,
                 on_epoch: Callable[[dict], None] | None = None, provenance: dict | None = None,
                 log_with: Sequence[str] = (), judges: dict[str, RewardFn] | None = None):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        from rlft.train.algorithms import ALGORITHMS

        self.config = config
        self.prompts = [p for p in prompts]
        if config.algo in ("ddpo", "rwr", "grpo"):
            if not self.prompts:
                raise UserError("the prompt set is empty; give --prompts FILE (one prompt a line) or a named set")
            if reward_fn is None:
                raise UserError(f"{config.algo} needs a reward function (train one with `rlft reward train`)")
        if config.algo == "dpo" and not judgements:
            raise UserError("dpo needs stored judgements (a/b outcomes); rate some pairs first (`rlft ui` or `rlft simulate`)")
        self.reward_fn, self.heldout_fn = reward_fn, heldout_fn
        self.judges = dict(judges or {})
        self.reward_terms: dict[str, float] = {}  # a weighted sum's raw term means on the last scored batch
        self.judgements, self.extra_images = judgements, list(extra_images)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress, self.on_epoch, self.provenance = progress, on_epoch, provenance or {}
        self.log_with = tracking.check_trackers(log_with)
        if self.log_with and self.run_dir is None:
            raise UserError("logging to experiment trackers (log_with) needs a run folder (run_dir)")
        if self.log_with and accelerator is not None:
            raise UserError("give log_with or your own accelerator, not both (start its trackers yourself)")
        on_cpu = pipe.device.type == "cpu"  # follow the pipeline's device (e.g. --device cpu on a GPU machine)
        project = None if not self.log_with else ProjectConfiguration(
            project_dir=str(self.run_dir), logging_dir=str(self.run_dir / tracking.LOG_DIR))
        self.accelerator = accelerator or Accelerator(
            mixed_precision="no" if on_cpu else config.optim.mixed_precision, cpu=on_cpu,
            log_with=self.log_with or None, project_config=project,
        )
        self.pipe = pipe
        self.adapter = adapter_for(pipe)  # the model family's encode / predict / decode
        self.flow = self.adapter.info.flow
        if self.flow != (config.algo == "grpo"):
            title = self.adapter.info.title
            raise UserError(f"{title} models train with grpo (Flow-GRPO)" if self.flow else
                            f"grpo trains SD3 and FLUX models; {title} models train with ddpo, rwr or dpo")
        pipe.set_progress_bar_config(disable=True)
        from diffusers import DDIMScheduler

        if not self.flow and not isinstance(pipe.scheduler, DDIMScheduler):  # SDXL ships Euler; the policy's steps are DDIM's
            from rlft.models.schedulers import set_scheduler

            set_scheduler(pipe, "ddim")
        # The adapters' random initial weights follow the run's seed, not whatever the process drew before (loading a
        # reward model draws too): two runs with one seed, or a run and its resume, start from the same LoRA.
        seed_everything(epoch_seed(config.seed, 0))
        self.params = lora_io.add_lora(pipe, config.lora)
        for p in self.params:  # trainable weights in fp32 even when the frozen base runs in half precision
            p.data = p.data.float()
        denoiser = self.adapter.denoiser
        if config.optim.gradient_checkpointing:
            denoiser.enable_gradient_checkpointing()
        self.optimizer = torch.optim.AdamW(self.params, lr=config.optim.learning_rate,
                                           weight_decay=config.optim.weight_decay)
        self.unet, self.optimizer = self.accelerator.prepare(denoiser, self.optimizer)
        self.tracker = PerPromptStatTracker(config.ddpo.stat_buffer_size, config.ddpo.stat_min_count)
        self.algorithm = ALGORITHMS[config.algo](self)
        self.epoch = 0  # epochs completed

    # --- helpers the algorithms share -------------------------------------------------------------------
    @property
    def device(self):
        return self.accelerator.device

    @property
    def raw_unet(self):
        return self.accelerator.unwrap_model(self.unet)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the training samples: the model's own."""
        return self.adapter.image_size

    @contextlib.contextmanager
    def base_model(self):
        """The frozen base (adapters off, the text encoders' too), for the reference policy and the regulariser."""
        unet = self.raw_unet
        encoders = [getattr(self.pipe, name) for name in lora_io.trainable_parts(self.pipe, self.config.lora)[1:]]
        unet.disable_adapters()
        for te in encoders:
            te.disable_adapters()
        try:
            with torch.no_grad():
                yield unet
        finally:
            unet.enable_adapters()
            for te in encoders:
                te.enable_adapters()

    @staticmethod
    def conditioning(cond, negative=None) -> Conditioning:
        """`cond` itself when it is a `Conditioning`; SD 1.x's pair (text states `cond`, `negative`) made into one."""
        return cond if isinstance(cond, Conditioning) else Conditioning(cond, negative)

    def base_embed(self, prompts: list[str], guidance: float, cond, negative=None) -> Conditioning:
        """The frozen base's conditioning on `prompts`: `cond` itself unless the text encoders train, then the base
        encoders' (no grad). `cond` is a `Conditioning` (or SD 1.x's pair: `embeds`, `negative`)."""
        if not self.config.lora.train_text_encoder:
            return self.conditioning(cond, negative)
        with self.base_model():
            return self.embed(prompts, guidance)

    def autocast(self):
        return self.accelerator.autocast()

    def embed(self, prompts: list[str], guidance: float) -> Conditioning:
        """The conditioning on `prompts` at the training size (a negative half with CFG), as the pipeline encodes
        them; with grad when the text encoders train. Unpacks as SD 1.x's `(embeds, negative)` pair."""
        grad = self.config.lora.train_text_encoder
        with contextlib.nullcontext() if grad else torch.no_grad():
            return self.adapter.encode_prompt(prompts, guidance, size=self.image_size, device=self.device)

    def rewards(self, images, prompts) -> tuple[np.ndarray, np.ndarray | None]:
        """(training reward, held-out reward or None) for decoded images."""
        with torch.no_grad():
            scores, info = self.reward_fn(images, prompts, {})
            self.reward_terms = {k: float(np.mean(v)) for k, v in (info or {}).get("terms", {}).items()}
            held = None
            if self.heldout_fn is not None:
                held, _ = self.heldout_fn(images, prompts, {})
                held = np.asarray(torch.as_tensor(held).float().cpu())
        return np.asarray(torch.as_tensor(scores).float().cpu()), held

    def sample(self, prompts: list[str], seeds: list[int], unet=None):
        """Trajectories for `prompts`, one CPU generator per image (batch size cannot change samples); `unet`: the
        prepared (under several processes, DDP-wrapped) one by default."""
        cfg = self.config.sample
        trajs = []
        unet = unet if unet is not None else self.unet
        self.unet.eval()
        for start in range(0, len(prompts), cfg.batch_size):
            gens = [torch.Generator("cpu").manual_seed(s) for s in seeds[start : start + cfg.batch_size]]
            latents = self.adapter.noise(gens, self.image_size, self.device)
            if self.flow:
                from rlft.train.flow import sample_with_logprob as flow_sample

                gc = self.config.grpo
                with self.autocast():
                    trajs.append(flow_sample(self.pipe, prompts[start : start + cfg.batch_size], steps=cfg.steps,
                                             guidance=cfg.guidance, noise_level=gc.noise_level,
                                             window=gc.window(cfg.steps), generator=gens, latents=latents,
                                             transformer=unet, size=self.image_size))
                continue
            with self.autocast():
                trajs.append(sample_with_logprob(self.pipe, prompts[start : start + cfg.batch_size], steps=cfg.steps,
                                                 guidance=cfg.guidance, eta=cfg.eta, generator=gens, latents=latents,
                                                 unet=unet, size=self.image_size))
        return trajs

    @torch.no_grad()
    def decode(self, latents):
        with self.autocast():
            if self.flow:  # FLUX's packed latents need the image size
                return self.adapter.decode(latents.to(self.pipe.vae.dtype), self.image_size).float()
            return self.adapter.decode(latents.to(self.pipe.vae.dtype)).float()

    def optimizer_step(self) -> float:
        grad_norm = self.accelerator.clip_grad_norm_(self.params, self.config.optim.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm) if grad_norm is not None else float("nan")

    def epoch_prompts(self, rng: random.Random, n: int, per_prompt: int = 4) -> list[str]:
        """`n` prompts drawn with replacement, each repeated `per_prompt` times (peers for per-prompt stats)."""
        per_prompt = max(1, min(per_prompt, n))
        drawn = [rng.choice(self.prompts) for _ in range(-(-n // per_prompt))]
        return [p for p in drawn for _ in range(per_prompt)][:n]

    # --- the loop ---------------------------------------------------------------------------------------
    def train(self, resume: bool = False) -> list[dict]:
        """Run the remaining epochs; with `resume`, continue from the run folder's checkpoint first."""
        if resume:
            self.load_checkpoint()
        history = []
        from tqdm.auto import tqdm

        bar = None
        try:
            if self.log_with:
                tracking.start(self.accelerator, self.config.to_dict(), self.run_dir, self.epoch if resume else None)
            if not resume and self.run_dir is not None and self.accelerator.is_main_process:
                base = self._write_grid(0)
                if self.log_with and base:
                    tracking.log_metrics(self.accelerator, base, 0)
            bar = tqdm(total=self.config.epochs, initial=self.epoch, desc=f"train {self.config.algo}", unit="epoch",
                       disable=not self.progress or not self.accelerator.is_main_process, dynamic_ncols=True)
            while self.epoch < self.config.epochs:
                metrics = self.run_epoch()
                history.append(metrics)
                bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            if self.log_with:
                tracking.finish(self.accelerator)
        return history

    def run_epoch(self) -> dict:
        """One epoch: sample (or draw pairs), train, then log, grid and checkpoint."""
        epoch = self.epoch + 1
        seed_everything(epoch_seed(self.config.seed, epoch, self.accelerator.process_index))
        start = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.reward_terms = {}
        metrics = self.algorithm.epoch(epoch)
        metrics.update({f"reward/{k}": v for k, v in self.reward_terms.items()})  # a weighted sum's terms, raw
        self.epoch = epoch
        metrics = {"epoch": epoch, "algo": self.config.algo, **{k: _num(v) for k, v in metrics.items()},
                   "lr": self.optimizer.param_groups[0]["lr"], "wall_s": round(time.perf_counter() - start, 3)}
        if torch.cuda.is_available():
            metrics["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        if self.run_dir is not None and self.accelerator.is_main_process:
            metrics.update(self._write_grid(epoch))
            self._append_metrics(metrics)
            if self.log_with:
                tracking.log_metrics(self.accelerator, metrics, epoch)
            if epoch % self.config.checkpoint_every == 0 or epoch == self.config.epochs:
                self.save_checkpoint()
        if self.on_epoch is not None and self.accelerator.is_main_process:
            self.on_epoch(metrics)
        return metrics

    # --- outputs ----------------------------------------------------------------------------------------
    def grid_items(self) -> tuple[list[str], list[int]]:
        cfg = self.config.sample
        prompts = self.prompts or sorted({p for j in self.judgements or [] for p in j[2:4]})
        prompts = prompts[: cfg.grid_prompts]
        return [p for p in prompts for _ in range(cfg.grid_seeds)], [s for _ in prompts for s in range(cfg.grid_seeds)]

    def _write_grid(self, epoch: int) -> dict:
        """The same prompts and seeds every epoch, one row per prompt: `samples/epoch_NNNN.png`; returns its scores
        (`grid_reward`, a weighted sum's `grid_reward/TERM`, `judge/NAME`), also kept per epoch in `grid.json`."""
        from PIL import Image

        from prefs.atomic import atomic_path, write_json

        prompts, seeds = self.grid_items()
        if not prompts:
            return {}
        state = torch.random.get_rng_state()
        # Fixed seeds, apart from training seeds; through the unwrapped UNet: only the main process draws the grid,
        # and a DDP wrapper's forward may talk to the other processes.
        trajs = self.sample(prompts, [1_000_000 + s for s in seeds], unet=self.raw_unet)
        torch.random.set_rng_state(state)
        images = torch.cat([self.decode(t.final) for t in trajs])
        cols = self.config.sample.grid_seeds
        rows = len(prompts) // cols
        h, w = images.shape[-2:]
        arr = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        canvas = np.zeros((rows * h, cols * w, 3), np.uint8)
        for i, a in enumerate(arr):
            canvas[(i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] = a
        path = self.run_dir / "samples" / f"epoch_{epoch:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Image.fromarray(canvas).save(tmp, format="PNG")
        scores = {}
        if self.reward_fn is not None:
            train_scores = self.rewards(images, prompts)[0]
            if self.reward_terms:  # a weighted sum: its normalised total says nothing of the grid; its terms do
                scores.update({f"grid_reward/{k}": round(v, 5) for k, v in self.reward_terms.items()})
            else:
                scores["grid_reward"] = round(float(train_scores.mean()), 5)
        with torch.no_grad():
            for name, fn in self.judges.items():
                scores[f"judge/{name}"] = round(float(torch.as_tensor(fn(images, prompts, {})[0]).float().mean()), 5)
        if self.log_with:
            caption = f"epoch {epoch}" + "".join(f"  {k} {v:.4g}" for k, v in scores.items())
            tracking.log_grid(self.accelerator, canvas, epoch, caption=caption)
        grid_path = self.run_dir / "samples" / "grid.json"
        grid = json.loads(grid_path.read_text(encoding="utf-8")) if epoch and grid_path.is_file() else {}
        grid.update({"rows": prompts[::cols], "seeds": seeds[:cols]})
        grid.setdefault("scores", {})[str(epoch)] = scores  # per epoch: the grid's reward and judges' means
        write_json(grid_path, grid)
        return scores

    def _append_metrics(self, metrics: dict) -> None:
        import os

        with open(self.run_dir / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def lora_state(self) -> dict:
        return lora_io.peft_state(self.pipe, self.config.lora)

    def save_checkpoint(self) -> None:
        """Atomically write the checkpoint (adapters, optimizer, tracker, epoch) and export the LoRA."""
        from prefs.atomic import atomic_path

        state = {
            "epoch": self.epoch,
            "family": self.adapter.family,  # what the LoRA fits: `rlft export-lora` writes that family's layout
            "config": self.config.to_dict(),
            "lora": self.lora_state(),
            "optimizer": self.optimizer.state_dict(),
            "tracker": self.tracker.state_dict(),
            "algorithm": self.algorithm.state_dict(),
        }
        with atomic_path(self.run_dir / CHECKPOINT) as tmp:
            torch.save(state, tmp)
        self.export()

    def export(self) -> None:
        """The LoRA as `lora/` (diffusers) and `lora_kohya.safetensors` (kohya / A1111), in the model family's layout
        (SD3: diffusers only)."""
        state = self.lora_state()
        family = self.adapter.family
        lora_io.save_diffusers(state, self.config.lora, self.run_dir / "lora", family=family)
        meta = {"rlft_run": self.run_dir.name, "rlft_epoch": str(self.epoch),
                "ss_sd_model_name": str(self.provenance.get("model", ""))}
        if family != "sd3":
            lora_io.save_kohya(state, self.config.lora, self.run_dir / "lora_kohya.safetensors", meta, family=family)

    def load_checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT if self.run_dir is not None else None
        if path is None or not path.is_file():
            raise UserError(f"run {self.run_dir} has no checkpoint to resume from; start it again without --resume")
        state = torch.load(path, map_location="cpu", weights_only=False)
        family = state.get("family", self.adapter.family)  # checkpoints from before families were recorded: SD 1.x
        if family != self.adapter.family:
            from rlft.models.families import FAMILIES

            raise UserError(f"run {self.run_dir.name} trains a {FAMILIES[family].title} model, but this one is "
                            f"{self.adapter.info.title}; resume it on its own model")
        lora_io.load_peft_state(self.pipe, state["lora"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.tracker.load_state_dict(state["tracker"])
        self.algorithm.load_state_dict(state.get("algorithm", {}))
        self.epoch = state["epoch"]
        metrics = self.run_dir / METRICS
        if metrics.is_file() and self.accelerator.is_main_process:  # drop the epochs after the checkpoint: redone
            lines = [l for l in metrics.read_text(encoding="utf-8").splitlines() if l.strip()]
            keep = [l for l in lines if json.loads(l)["epoch"] <= self.epoch]
            from prefs.atomic import write_bytes

            write_bytes(metrics, ("\n".join(keep) + "\n" if keep else "").encode())


def _num(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().float().mean().item()
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float):
        return None if not np.isfinite(v) else round(v, 6)
    return v
