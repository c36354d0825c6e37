"""Pretrain the toy world's models from a seed: CLIP -> text-tower conversion -> VAE -> UNet -> pipeline.

Each stage trains a real architecture of the field (an open_clip CLIP, diffusers' AutoencoderKL and
UNet2DConditionModel) on procedurally drawn world images, checkpoints atomically every few hundred steps,
and resumes from its last checkpoint when run again with the same output folder. A finished stage is
skipped. The last stage assembles a diffusers StableDiffusionPipeline and an open_clip folder, the
layout `load_pipeline("toy")` and `load_clip("toy")` read.

Order matters: the UNet is conditioned on the CLIP's frozen text tower, so the CLIP must first learn
every attribute the world varies (position included: hard-negative captions that differ in one word
force that), or the UNet cannot follow words its text encoder cannot tell apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from prefs.atomic import atomic_path, write_json
from prefs.errors import UserError
from rlft.toy import world

# --------------------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass
class ClipConfig:
    embed_dim: int = 64  # joint space; small because the world has only five attributes
    image_width: int = 128  # ViT width; patch 8 on 64 px gives an 8x8 grid of tokens
    image_layers: int = 4
    patch_size: int = 8
    text_width: int = 96  # also the UNet's cross-attention width (ViT-L/14's is 768); 96 keeps the shipped files < 40 MB
    text_layers: int = 4
    text_heads: int = 3
    context_length: int = 32  # trained length (captions are < 30 tokens); saved extended to 77, SD's length
    steps: int = 4000
    batch_size: int = 512
    hard_negatives: int = 2  # extra captions per image, each with one attribute changed (position first)
    stop_at: int | None = 434  # end here on the schedule planned for `steps`: where both recipes (gpu and cpu) stop
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 200


@dataclasses.dataclass
class VisionConfig:
    """Stage 1b: LiT-style ("locked text") fine-tuning of the CLIP's image tower alone.

    The text tower (and so the pipeline's text encoder) stays bit-for-bit what stage 1 made; only the image
    side gets more steps, sharpening zero-shot shape recognition (the reward model's backbone).
    """

    steps: int = 600  # both recipes run all 600 (on a 2-core CPU: 961 s for the shipped weights)
    batch_size: int = 256
    hard_negatives: int = 2
    lr: float = 3e-4
    warmup: int = 50
    stop_at: int | None = None


@dataclasses.dataclass
class VaeConfig:
    block_out_channels: tuple = (32, 64, 128)  # three blocks: 64 px -> 16x16 latents (factor 4)
    layers_per_block: int = 1
    latent_channels: int = 4  # as SD's VAE
    norm_num_groups: int = 8  # >= 4 channels per group; 1 per group blocks colour learning
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    stop_at: int | None = 1565  # the gpu recipe's last VAE step (the cpu preset runs its full 1,000 on crops)
    kl_weight: float = 1e-6
    foreground_weight: float = 5.0  # the shape is a small share of pixels but all of what matters
    crop: int | None = None  # train on random crops of this side (the VAE is convolutional): 4x cheaper at 32
    warmup: int = 100


@dataclasses.dataclass
class UnetConfig:
    block_out_channels: tuple = (32, 64, 128)  # 4.2M params: one CFG step for 8 images ~90 ms on 2 CPU cores
    layers_per_block: int = 1
    attention_head_dim: int = 32
    norm_num_groups: int = 8  # 4+ channels per group
    steps: int = 10000
    batch_size: int = 256
    lr: float = 5e-4
    warmup: int = 300
    caption_dropout: float = 0.1  # empty caption 10% of the time, so classifier-free guidance works
    min_snr_gamma: float = 5.0  # Min-SNR loss weighting (Hang et al. 2023): faster, steadier convergence
    ema_decay: float = 0.999
    stop_at: int | None = 1566  # the last UNet step of both recipes
    cache_latents: bool = False  # encode the training set once (posterior mean and std) instead of every step


@dataclasses.dataclass
class PretrainConfig:
    seed: int = 0
    dataset_size: int = 60000  # distinct drawn training images; captions are re-sampled every epoch
    clip: ClipConfig = dataclasses.field(default_factory=ClipConfig)
    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    vae: VaeConfig = dataclasses.field(default_factory=VaeConfig)
    unet: UnetConfig = dataclasses.field(default_factory=UnetConfig)
    checkpoint_every: int = 500
    checkpoint_minutes: float = 5.0  # also checkpoint after this much wall time (a slow CPU loses little to a kill)
    scale: float = 1.0  # multiplies every step count (0.01 for a smoke run)
    preset: str = "gpu"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "PretrainConfig":
        if name not in PRESETS:
            raise UserError(f"unknown pretraining preset {name!r}; choose from {', '.join(PRESETS)}")
        return cls(preset=name, **{**PRESETS[name](), **overrides})


def _cpu_preset() -> dict:
    """The schedule of the shipped weights: the `gpu` recipe made to fit 3 hours on a 2-core CPU
    (measured: 2.59 h, `rlft/assets/toy/timings.json`; experiment toy-cpu-recipe in docs/experiments.md).

    The CLIP stages are the gpu recipe's (stage 1 cut at step 434 of a 4,000-step schedule, learning rate
    still near its peak: a full cosine schedule over 450 steps ended at loss 2.04 instead of 1.73 and
    never learned position words, zero-shot 21% = chance). The UNet is the gpu recipe's too, but trains on
    the VAE posteriors of the training set encoded once (the same sample distribution, 3.1 s instead of
    4.6 s per step). The VAE trains on random 32 px crops (it is convolutional; 1.6 s instead of 15 s per
    step at batch 128) for a full 1,000-step cosine schedule.

    Measured seconds per step on a 2-core CPU: CLIP at batch 512 3.4 s; image tower at 256 1.6 s; VAE at
    128 crops 1.6 s; UNet at 256 on cached latents 3.1 s; encoding the 60,000 training images 7 minutes.
    """
    return {"vae": VaeConfig(steps=1000, crop=32, stop_at=None), "unet": UnetConfig(cache_latents=True)}


# `cpu`: the schedule of the shipped weights, within 3 hours on a 2-core CPU (the CLI's default on a CPU);
# `gpu`: the schedule of the first weights (the VAE on whole images, the UNet encoding every batch afresh:
# minutes on a GPU, about 9 hours on a 2-core CPU), PretrainConfig()'s defaults and the CLI's default on a GPU.
PRESETS = {"gpu": dict, "cpu": _cpu_preset}


# --------------------------------------------------------------------------------------------------------
# Data


class WorldData:
    """A fixed set of drawn training images with their scenes; captions are drawn fresh per use."""

    def __init__(self, size: int, seed: int):
        rng = random.Random(seed)
        self.scenes: list[world.Scene] = []
        imgs = np.empty((size, world.IMAGE_SIZE, world.IMAGE_SIZE, 3), dtype=np.uint8)
        for i in tqdm(range(size), desc="drawing world", leave=False, mininterval=2):
            scene = world.random_scene(rng)
            self.scenes.append(scene)
            imgs[i] = world.to_array(world.draw(scene, rng.randrange(1 << 31)))
        self.images = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()  # uint8 N,3,H,W
        self.rng = random.Random(seed + 1)

    def batch(self, n: int, gen: torch.Generator):
        idx = torch.randint(0, len(self.scenes), (n,), generator=gen)
        return idx, self.images[idx].float() / 127.5 - 1.0

    def captions(self, idx, hard_negatives: int = 0, dropout: float = 0.0):
        """One caption per index, plus `hard_negatives` perturbed captions per index (flattened after)."""
        pos, neg = [], []
        for i in idx.tolist():
            scene = self.scenes[i]
            plan = world.random_plan(self.rng)
            pos.append("" if dropout and self.rng.random() < dropout else world.caption(scene, plan))
            mentioned = [a for a in world.ATTRIBUTES if a in plan.mention]
            for k in range(hard_negatives):
                if k == 0 and "position" in mentioned:
                    attr = "position"
                else:
                    choices = mentioned + (["swap"] if {"color", "background"} <= set(mentioned) else [])
                    attr = self.rng.choice(choices)
                neg.append(world.caption(world.perturb(scene, attr, self.rng), plan))
        return pos, neg


def training_tokenizer():
    """A plain (Rust) CLIPTokenizer: world captions are ASCII, so ftfy normalisation is a no-op there."""
    from rlft.models.tokenizer import plain_clip_tokenizer

    return plain_clip_tokenizer()


def tokenize(tokenizer, texts: list[str], length: int = 77) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids


# --------------------------------------------------------------------------------------------------------
# Checkpointing


def save_ckpt(path: Path, **state) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_ckpt(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def _stop(stop_at: int | None, scale: float) -> int | None:
    return None if stop_at is None else max(1, int(stop_at * scale))


def cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class Stage:
    """Shared loop plumbing: resume, LR schedule, progress bar, periodic atomic checkpoints, a log."""

    def __init__(self, name: str, out: Path, total: int, every: int, device: torch.device, deadline: float | None = None, stop_at: int | None = None, every_minutes: float | None = None):
        self.name, self.out, self.total, self.every, self.device = name, out, total, every, device
        self.every_s = None if every_minutes is None else 60.0 * every_minutes
        self.stop_at = stop_at
        self.deadline = deadline
        self.stopped_at: int | None = None
        self.ckpt = out / f"{name}.ckpt"
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / f"{name}.log.jsonl", "a")
        self.t0 = self.last_save = time.time()
        self.elapsed_before = 0.0  # wall time of earlier runs up to their last checkpoint (work after it is redone)

    def resume(self, ck: dict) -> int:
        """Take the step and the wall time so far from a checkpoint; return the step to continue from."""
        self.elapsed_before = float(ck.get("elapsed", 0.0))
        return int(ck["step"])

    def elapsed(self) -> float:
        """Wall seconds this stage has taken, over every run that led here."""
        return self.elapsed_before + time.time() - self.t0

    def due(self, step: int) -> bool:
        """Checkpoint after `step`? Every `every` steps, and whenever `every_minutes` of wall time have passed."""
        return (step + 1) % self.every == 0 or (self.every_s is not None and time.time() - self.last_save >= self.every_s)

    def save(self, step: int, **state) -> None:
        """Write the checkpoint after `step`, with the stage's clock so far."""
        save_ckpt(self.ckpt, step=step + 1, elapsed=self.elapsed(), **state)
        self.last_save = time.time()

    def loop(self, start: int):
        bar = tqdm(range(start, self.total), desc=self.name, initial=start, total=self.total, mininterval=5)
        for step in bar:
            if self.stop_at is not None and step >= self.stop_at:
                break
            if self.deadline is not None and time.time() > self.deadline:
                # A wall-clock guard (--deadline-min); runs without a deadline always finish every step.
                self.stopped_at = step
                break
            yield step, bar
        bar.close()
        self.log.close()
        write_json(self.out / f"{self.name}.elapsed.json", {"elapsed_s": round(self.elapsed(), 1), "step": self.stopped_at or min(self.total, self.stop_at or self.total)})

    def report_early_stop(self) -> None:
        if self.stopped_at is not None:
            self.log = open(self.out / f"{self.name}.log.jsonl", "a")
            self.record(self.stopped_at, stopped_early=1)
            self.log.close()
            write_json(self.out / f"{self.name}_stopped_early.json", {"step": self.stopped_at, "planned": self.total})

    def record(self, step: int, **metrics) -> None:
        metrics = {k: round(float(v), 5) for k, v in metrics.items()}
        self.log.write(json.dumps({"step": step, "time": round(time.time() - self.t0, 1), **metrics}) + "\n")
        self.log.flush()


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


# --------------------------------------------------------------------------------------------------------
# Stage 1: CLIP


SD_CONTEXT = 77  # the SD tokenizer's length: the shipped CLIP and text encoder take 77 tokens


def clip_model_cfg(c: ClipConfig, context_length: int | None = None) -> dict:
    return {
        "embed_dim": c.embed_dim,
        "vision_cfg": {"image_size": world.IMAGE_SIZE, "layers": c.image_layers, "width": c.image_width, "patch_size": c.patch_size, "head_width": 32},
        "text_cfg": {"context_length": context_length or c.context_length, "vocab_size": 49408, "width": c.text_width, "heads": c.text_heads, "layers": c.text_layers},
    }


# The toy world's images are flat colours: normalise with mean/std 0.5 (i.e. to [-1, 1]), as the VAE sees them.
CLIP_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "resize_mode": "shortest"}


def train_clip(cfg: PretrainConfig, data: WorldData, out: Path, device: torch.device, deadline: float | None = None):
    import open_clip

    c = cfg.clip
    steps = max(1, int(c.steps * cfg.scale))
    torch.manual_seed(cfg.seed)
    model = open_clip.model.CLIP(**clip_model_cfg(c)).to(device)
    tok = training_tokenizer()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=c.lr, betas=(0.9, 0.98), eps=1e-6)
    stage = Stage("clip", out, steps, cfg.checkpoint_every, device, deadline, _stop(c.stop_at, cfg.scale), cfg.checkpoint_minutes)
    gen = torch.Generator().manual_seed(cfg.seed + 11)
    start = 0
    if (ck := load_ckpt(stage.ckpt)) is not None:
        model.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), gen.set_state(ck["gen"])
        data.rng.setstate(ck["data_rng"])
        start = stage.resume(ck)
    model.train()
    for step, bar in stage.loop(start):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, c.warmup, c.lr)
        idx, images = data.batch(c.batch_size, gen)
        pos, neg = data.captions(idx, c.hard_negatives)
        texts = tokenize(tok, pos + neg, c.context_length).to(device)
        images = images.to(device)
        with autocast(device):
            img_f = F.normalize(model.encode_image(images), dim=-1)
            txt_f = F.normalize(model.encode_text(texts), dim=-1)
            scale = model.logit_scale.exp().clamp(max=100)
            b = images.shape[0]
            logits = scale * img_f.float() @ txt_f.float().T  # b x (b + b*K): positives first, then negatives
            labels = torch.arange(b, device=device)
            # image -> text over all captions (hard negatives included); text -> image over positives only
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, :b].T, labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            with torch.no_grad():
                acc = (logits.argmax(1) == labels).float().mean()
            stage.record(step, loss=loss.item(), acc=acc.item(), scale=scale.item())
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc.item():.2f}")
        if stage.due(step):
            stage.save(step, model=model.state_dict(), opt=opt.state_dict(), gen=gen.get_state(), data_rng=data.rng.getstate())
    stage.report_early_stop()
    model = extend_context(model.eval(), c)
    save_clip_folder(model, c, out / "clip")
    return model


def finetune_vision(cfg: PretrainConfig, data: WorldData, clip, out: Path, device: torch.device, deadline: float | None = None):
    """Train only `clip.visual` against the frozen text tower (and frozen logit scale); save the CLIP."""
    v = cfg.vision
    steps = max(1, int(v.steps * cfg.scale))
    torch.manual_seed(cfg.seed + 3)
    clip = clip.to(device)
    clip.requires_grad_(False)
    clip.visual.requires_grad_(True)
    params = [p for p in clip.visual.parameters()]
    opt = torch.optim.AdamW(params, lr=v.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)
    tok = training_tokenizer()
    stage = Stage("clip_vision", out, steps, cfg.checkpoint_every, device, deadline, _stop(v.stop_at, cfg.scale), cfg.checkpoint_minutes)
    gen = torch.Generator().manual_seed(cfg.seed + 14)
    data.rng = random.Random(cfg.seed + 101)  # own caption stream: the stage reproduces on its own
    start = 0
    if (ck := load_ckpt(stage.ckpt)) is not None:
        clip.visual.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), gen.set_state(ck["gen"])
        data.rng.setstate(ck["data_rng"])
        start = stage.resume(ck)
    clip.eval()
    clip.visual.train()
    scale = clip.logit_scale.exp().clamp(max=100).detach()
    for step, bar in stage.loop(start):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, v.warmup, v.lr)
        idx, images = data.batch(v.batch_size, gen)
        pos, neg = data.captions(idx, v.hard_negatives)
        with torch.no_grad(), autocast(device):
            txt_f = F.normalize(clip.encode_text(tokenize(tok, pos + neg, SD_CONTEXT).to(device)).float(), dim=-1)
        with autocast(device):
            img_f = F.normalize(clip.encode_image(images.to(device)).float(), dim=-1)
        logits = scale * img_f @ txt_f.T
        labels = torch.arange(images.shape[0], device=device)
        loss = F.cross_entropy(logits, labels)  # image -> text over positives and hard negatives
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            acc = (logits.argmax(1) == labels).float().mean()
            stage.record(step, loss=loss.item(), acc=acc.item())
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc.item():.2f}")
        if stage.due(step):
            stage.save(step, model=clip.visual.state_dict(), opt=opt.state_dict(), gen=gen.get_state(), data_rng=data.rng.getstate())
    stage.report_early_stop()
    clip.eval().requires_grad_(False)
    save_clip_folder(clip, cfg.clip, out / "clip")
    write_json(out / "clip" / "vision_finetuned.json", {"steps": stage.stopped_at or steps})
    return clip


def extend_context(model, c: ClipConfig, length: int = SD_CONTEXT):
    """The same CLIP taking `length` tokens: new positions repeat the last trained positional embedding.

    Text is causal and pooled at the first end-of-text token, so features of captions shorter than the
    trained length are unchanged; only padding positions beyond it see the copied embedding.
    """
    import open_clip

    if model.positional_embedding.shape[0] == length:
        return model
    big = open_clip.model.CLIP(**clip_model_cfg(c, length))
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    pe = sd["positional_embedding"]
    sd["positional_embedding"] = torch.cat([pe, pe[-1:].expand(length - pe.shape[0], -1)])
    big.load_state_dict(sd)
    return big.eval()


def save_clip_folder(model, c: ClipConfig, folder: Path) -> None:
    """Write the open_clip hf-hub folder layout: open_clip_config.json + open_clip_model.safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    n_ctx = model.positional_embedding.shape[0]
    cfg = {"model_cfg": clip_model_cfg(c, n_ctx), "preprocess_cfg": {"image_size": world.IMAGE_SIZE, **CLIP_PREPROCESS}}
    write_json(folder / "open_clip_config.json", cfg)
    state = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(folder / "open_clip_model.safetensors") as tmp:
        save_file(state, str(tmp))


def load_clip_folder(folder: Path, device="cpu"):
    import open_clip
    from safetensors.torch import load_file

    cfg = json.loads((folder / "open_clip_config.json").read_text())
    model = open_clip.model.CLIP(**cfg["model_cfg"])
    model.load_state_dict({k: v.float() for k, v in load_file(str(folder / "open_clip_model.safetensors")).items()})
    return model.to(device).eval()


# --------------------------------------------------------------------------------------------------------
# Stage 2: VAE


def build_vae(v: VaeConfig):
    from diffusers import AutoencoderKL

    n = len(v.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(v.block_out_channels),
        layers_per_block=v.layers_per_block,
        latent_channels=v.latent_channels,
        norm_num_groups=v.norm_num_groups,
        sample_size=world.IMAGE_SIZE,
        scaling_factor=1.0,  # per-channel standardisation is folded into the weights after training
    )


def random_crops(tensors, side: int, gen: torch.Generator):
    """The same random `side` x `side` window of each image, cut from every tensor (N, C, H, W) given."""
    n, _, h, wd = tensors[0].shape
    ys = torch.randint(0, h - side + 1, (n,), generator=gen).tolist()
    xs = torch.randint(0, wd - side + 1, (n,), generator=gen).tolist()
    return tuple(torch.stack([t[i, :, y : y + side, x : x + side] for i, (y, x) in enumerate(zip(ys, xs, strict=False))]) for t in tensors)


def train_vae(cfg: PretrainConfig, data: WorldData, out: Path, device: torch.device, deadline: float | None = None):
    v = cfg.vae
    steps = max(1, int(v.steps * cfg.scale))
    torch.manual_seed(cfg.seed + 1)
    vae = build_vae(v).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=v.lr, weight_decay=0.0)
    stage = Stage("vae", out, steps, cfg.checkpoint_every, device, deadline, _stop(v.stop_at, cfg.scale), cfg.checkpoint_minutes)
    gen = torch.Generator().manual_seed(cfg.seed + 12)
    start = 0
    if (ck := load_ckpt(stage.ckpt)) is not None:
        vae.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), gen.set_state(ck["gen"])
        if "rng" in ck:  # the posterior sample's generator (the global one, as diffusers draws it)
            torch.set_rng_state(ck["rng"])
        start = stage.resume(ck)
    vae.train()
    for step, bar in stage.loop(start):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, v.warmup, v.lr)
        _, x = data.batch(v.batch_size, gen)
        # Weight pixels unlike the border colour (the shape) more: it is what every check looks at.
        border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2).median(dim=2).values
        fg = ((x - border[:, :, None, None]).abs().sum(1, keepdim=True) > 0.3).float()
        w = 1 + (v.foreground_weight - 1) * fg
        if v.crop:
            x, w = random_crops((x, w), v.crop, gen)
        x, w = x.to(device), w.to(device)
        with autocast(device):
            post = vae.encode(x).latent_dist
            z = post.sample()
            rec = vae.decode(z).sample.float()
        rec_loss = (w * ((rec - x) ** 2 + 0.5 * (rec - x).abs())).mean()
        kl = post.kl().mean() / x[0].numel()
        loss = rec_loss + v.kl_weight * kl * x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            stage.record(step, loss=loss.item(), rec=rec_loss.item(), kl=kl.item())
            bar.set_postfix(rec=f"{rec_loss.item():.4f}")
        if stage.due(step):
            stage.save(step, model=vae.state_dict(), opt=opt.state_dict(), gen=gen.get_state(), rng=torch.get_rng_state())
    stage.report_early_stop()
    vae.eval()
    standardize_latents(vae, data, device)
    vae.save_pretrained(out / "vae")
    return vae


@torch.no_grad()
def standardize_latents(vae, data: WorldData, device, n: int = 2048) -> None:
    """Fold per-channel latent mean/std into quant_conv/post_quant_conv so latents are ~N(0, 1).

    The stock pipeline then works with scaling_factor 1.0, and the UNet sees unit-variance latents,
    as SD's scaling factor 0.18215 arranges for its VAE.
    """
    gen = torch.Generator().manual_seed(123)
    _, x = data.batch(n, gen)
    zs = torch.cat([vae.encode(x[i : i + 256].to(device)).latent_dist.mean for i in range(0, n, 256)])
    mu = zs.mean(dim=(0, 2, 3))
    sd = zs.std(dim=(0, 2, 3))
    c = mu.numel()
    q, pq = vae.quant_conv, vae.post_quant_conv
    # quant_conv outputs [mean (c channels), logvar (c channels)].
    q.weight[:c] /= sd[:, None, None, None]
    q.bias[:c] = (q.bias[:c] - mu) / sd
    q.bias[c:] -= 2 * torch.log(sd)
    # post_quant_conv's input z = z' * sd + mu.
    pq.bias += (pq.weight.sum(dim=(2, 3)) @ mu) if pq.weight.shape[2:] == (1, 1) else 0
    pq.weight *= sd[None, :, None, None]


# --------------------------------------------------------------------------------------------------------
# Stage 3: UNet


def build_unet(u: UnetConfig, cross_attention_dim: int, latent_size: int, latent_channels: int):
    from diffusers import UNet2DConditionModel

    n = len(u.block_out_channels)
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        # Cross-attention at 8x8 and 4x4 only: at 16x16 it doubled CPU sampling time for no gain in
        # following position words (an 8x8 grid places a shape at five positions well enough).
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        block_out_channels=tuple(u.block_out_channels),
        layers_per_block=u.layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=u.attention_head_dim,
        norm_num_groups=u.norm_num_groups,
    )


def noise_scheduler():
    """SD 1.x's training noise schedule (scaled-linear betas, 1,000 steps, epsilon prediction)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, clip_sample=False, prediction_type="epsilon")


def vae_fingerprint(vae) -> str:
    """sha256 of the VAE encoder's weights: what a latent cache was made from."""
    h = hashlib.sha256()
    for name, t in sorted(vae.state_dict().items()):
        if name.startswith(("encoder.", "quant_conv.")):
            h.update(name.encode())
            h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def encode_dataset(vae, data: WorldData, device, path: Path, batch: int = 256):
    """(mean, std) of the VAE posterior of every training image, computed once and kept at `path`.

    The cache names the encoder weights it came from: a VAE retrained in the same folder re-encodes."""
    key = f"{vae_fingerprint(vae)}:{len(data.images)}"
    if path.exists():
        cached = torch.load(path, map_location="cpu")
        if isinstance(cached, dict) and cached.get("key") == key:
            return cached["mean"], cached["std"]
    means, stds = [], []
    for i in tqdm(range(0, len(data.images), batch), desc="encoding latents", mininterval=5):
        dist = vae.encode((data.images[i : i + batch].float() / 127.5 - 1.0).to(device)).latent_dist
        means.append(dist.mean.cpu())
        stds.append(dist.std.cpu())
    mean, std = torch.cat(means), torch.cat(stds)
    with atomic_path(path) as tmp:
        torch.save({"key": key, "mean": mean, "std": std}, tmp)
    return mean, std


def train_unet(cfg: PretrainConfig, data: WorldData, text_encoder, vae, out: Path, device: torch.device, deadline: float | None = None):
    from diffusers.training_utils import EMAModel

    u = cfg.unet
    steps = max(1, int(u.steps * cfg.scale))
    torch.manual_seed(cfg.seed + 2)
    latent_size = world.IMAGE_SIZE // 2 ** (len(cfg.vae.block_out_channels) - 1)
    unet = build_unet(u, text_encoder.config.hidden_size, latent_size, cfg.vae.latent_channels).to(device)
    ema = EMAModel(unet.parameters(), decay=u.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=u.lr, weight_decay=1e-2)
    sched = noise_scheduler()
    alphas = sched.alphas_cumprod.to(device)
    tok = training_tokenizer()
    text_encoder.to(device).eval().requires_grad_(False)
    vae.to(device).eval().requires_grad_(False)
    stage = Stage("unet", out, steps, cfg.checkpoint_every, device, deadline, _stop(u.stop_at, cfg.scale), cfg.checkpoint_minutes)
    gen = torch.Generator().manual_seed(cfg.seed + 13)
    start = 0
    if (ck := load_ckpt(stage.ckpt)) is not None:
        unet.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), ema.load_state_dict(ck["ema"]), gen.set_state(ck["gen"])
        data.rng.setstate(ck["data_rng"])
        start = stage.resume(ck)
    ema.to(device)
    cached = encode_dataset(vae, data, device, out / "latents.pt") if u.cache_latents else None
    unet.train()
    for step, bar in stage.loop(start):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, u.warmup, u.lr)
        idx, x = data.batch(u.batch_size, gen)
        caps, _ = data.captions(idx, 0, dropout=u.caption_dropout)
        with torch.no_grad():
            ids = tokenize(tok, caps).to(device)
            cond = text_encoder(ids)[0]
            if cached is None:
                latents = vae.encode(x.to(device)).latent_dist.sample()
            else:  # the same posterior sample, drawn from the cached mean and std
                mean, std = cached[0][idx].float(), cached[1][idx].float()
                latents = (mean + std * torch.randn(mean.shape, generator=gen)).to(device)
            latents = latents * vae.config.scaling_factor
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=gen).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen).to(device)
        noisy = sched.add_noise(latents, noise, t)
        with autocast(device):
            pred = unet(noisy, t, encoder_hidden_states=cond).sample.float()
        snr = alphas[t] / (1 - alphas[t])
        weight = torch.clamp(snr, max=u.min_snr_gamma) / snr  # Min-SNR-gamma for epsilon prediction
        loss = (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.step(unet.parameters())
        if step % 50 == 0 or step == steps - 1:
            stage.record(step, loss=loss.item(), lr=opt.param_groups[0]["lr"])
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if stage.due(step):
            stage.save(step, model=unet.state_dict(), opt=opt.state_dict(), ema=ema.state_dict(), gen=gen.get_state(), data_rng=data.rng.getstate())
    ema.copy_to(unet.parameters())
    stage.report_early_stop()
    unet.eval()
    unet.save_pretrained(out / "unet")
    return unet


# --------------------------------------------------------------------------------------------------------
# Assembly


def ddim_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    )


RECOMMENDED_SAMPLING = {"guidance": 3.0, "steps": 20}  # measured best on the first toy weights (CFG 2 and 5 were worse)


def assemble(unet, vae, text_encoder, dest: Path, dtype=torch.float16) -> Path:
    """Save a diffusers StableDiffusionPipeline folder (no safety checker) with fp16 safetensors weights, and
    rlft's recommended sampling settings beside it."""
    from diffusers import StableDiffusionPipeline

    from rlft.models.pipeline import RECOMMENDED_FILE

    # A plain CLIPTokenizer, so the folder loads in plain diffusers with no rlft installed.
    tokenizer = training_tokenizer()
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=ddim_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.to(dtype=dtype)
    pipe.save_pretrained(dest, safe_serialization=True)
    for config in Path(dest).glob("*/config.json"):
        data = json.loads(config.read_text())
        data.pop("_name_or_path", None)  # a checkpoint folder's name means nothing elsewhere
        if "dtype" in data or "torch_dtype" in data:
            # transformers loads a model in its saved dtype (fp16 here) while diffusers loads the UNet and VAE in
            # fp32, so a plain `from_pretrained(folder)` would fail on mixed dtypes: every part loads in fp32.
            data.pop("torch_dtype", None)
            data["dtype"] = "float32"
        write_json(config, data)
    write_json(Path(dest) / RECOMMENDED_FILE, RECOMMENDED_SAMPLING)
    return dest


def pretrain_device(device: str | None = None) -> torch.device:
    """The device `pretrain` runs on: the one named, else CUDA when present, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def pretrain(out: str | os.PathLike, cfg: PretrainConfig | None = None, device: str | None = None, stages=("clip", "vae", "unet", "assemble"), deadline: float | None = None) -> Path:
    """Run (or resume) every stage into `out`; return the folder holding `clip/` and `pipeline/`."""
    from rlft.toy.convert import text_model_from_open_clip

    cfg = cfg or PretrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = pretrain_device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    write_json(out / "pretrain_config.json", cfg.to_dict())
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
    t0 = time.time()
    # With a wall-clock deadline (--deadline-min), each stage must end by its share of it.
    stage_deadline = {k: None if deadline is None else t0 + f * (deadline - t0) for k, f in (("clip", 0.3), ("clip_vision", 0.4), ("vae", 0.55), ("unet", 1.0))}
    data = WorldData(cfg.dataset_size, cfg.seed)
    timings.setdefault("data_s", round(time.time() - t0, 1))  # a resumed run's reload is not the run's cost
    timings["preset"] = cfg.preset

    def timed(name, fn):
        result = fn()
        # The stage's own clock (written when its loop ends) counts earlier interrupted runs up to their
        # last checkpoint; add what followed the loop (saving, the VAE's latent standardisation).
        marker = out / f"{name}.elapsed.json"
        loop_s = json.loads(marker.read_text())["elapsed_s"]
        timings[name + "_s"] = round(loop_s + max(0.0, time.time() - marker.stat().st_mtime), 1)
        write_json(out / "timings.json", timings)
        return result

    if (out / "clip" / "open_clip_model.safetensors").exists():
        clip = load_clip_folder(out / "clip", dev)
    else:
        clip = timed("clip", lambda: train_clip(cfg, data, out, dev, stage_deadline["clip"]))
    if cfg.vision.steps > 0 and not (out / "clip" / "vision_finetuned.json").exists():
        clip = timed("clip_vision", lambda: finetune_vision(cfg, data, clip, out, dev, stage_deadline["clip_vision"]))
    text_encoder = text_model_from_open_clip(clip.cpu()).to(dev)
    if "vae" not in stages:
        return out
    from diffusers import AutoencoderKL, UNet2DConditionModel

    vae = AutoencoderKL.from_pretrained(out / "vae").to(dev) if (out / "vae" / "config.json").exists() else timed("vae", lambda: train_vae(cfg, data, out, dev, stage_deadline["vae"]))
    if "unet" not in stages:
        return out
    unet = UNet2DConditionModel.from_pretrained(out / "unet").to(dev) if (out / "unet" / "config.json").exists() else timed("unet", lambda: train_unet(cfg, data, text_encoder, vae, out, dev, stage_deadline["unet"]))
    if "assemble" in stages:
        assemble(unet.cpu(), vae.cpu(), text_encoder.cpu(), out / "pipeline")
        save_clip_folder(clip.cpu(), cfg.clip, out / "clip")
    timings["device"] = str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    write_json(out / "timings.json", timings)
    return out
