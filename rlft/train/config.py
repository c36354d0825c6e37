"""Training configuration: one dataclass per concern, nested, each field documented and validated.

`TrainConfig.toy()` holds the defaults for the toy world (finish within 20 minutes on a 2-core CPU);
`TrainConfig.sd()` those for a real Stable Diffusion model, following ddpo-pytorch (`config/base.py`) and
the Diffusion-DPO paper; `TrainConfig.sdxl()` those for an SDXL model. `from_dict` / `to_dict` round-trip through the run's `config.json`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from prefs.errors import UserError

ALGORITHMS = ("ddpo", "rwr", "dpo", "grpo")  # grpo: Flow-GRPO, for SD3 and FLUX models
# Per-algorithm toy defaults laid over TrainConfig()'s; see TrainConfig.toy for the measurements behind them.
TOY_ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    # one optimizer step per epoch (32 samples in 4 micro-batches of 8): every update is on-policy
    # and it trains the first (noisiest) half of each trajectory's steps, where colour, size and place are decided
    "ddpo": {"kl_weight": 0.05, "optim": {"learning_rate": 3e-3, "gradient_accumulation_steps": 4},
             "ddpo": {"timestep_choice": "first"}},
    # kl-weight 1.0: faster or less regularised advantage-weighted matching chased the reward and lost adherence (rwr-awm)
    "rwr": {"kl_weight": 1.0},
}
MIXED_PRECISION = ("no", "fp16", "bf16")


def _positive_int(owner: str, name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{owner}{name} must be a whole number >= 1, got {value!r}")


def _finite(owner: str, name: str, value, low: float | None = None, high: float | None = None, low_open=False,
            high_open=False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" if low is not None else "finite"
        if high is not None:
            bound += f" and below {high}" if high_open else f" and <= {high}"
        raise UserError(f"{owner}{name} must be a number {bound}, got {value!r}")


@dataclass
class SampleConfig:
    """How training samples are drawn (DDIM at eta=1 with classifier-free guidance)."""

    steps: int = 10  # DDIM steps per sample; 10 keeps a toy epoch short, ddpo-pytorch uses 50 on SD
    guidance: float = 3.0  # CFG scale used both when sampling and when recomputing log-probs (toy's best is 3)
    eta: float = 1.0  # DDIM eta; 1 makes every step a proper Gaussian policy step (DDPO needs eta > 0)
    batch_size: int = 8  # images per sampling forward pass (speed/memory only, never the samples)
    samples_per_epoch: int = 32  # images drawn per epoch, across all processes
    images_per_prompt: int = 4  # G: each drawn prompt is sampled this often per epoch, a group of peers for group advantages, top-k and shared noise
    grid_prompts: int = 4  # prompts in the fixed-seed sample grid written each epoch
    grid_seeds: int = 4  # seeds per grid prompt

    def __post_init__(self):
        for name in ("steps", "batch_size", "samples_per_epoch", "images_per_prompt", "grid_prompts", "grid_seeds"):
            _positive_int("sample.", name, getattr(self, name))
        _finite("sample.", "guidance", self.guidance, 0.0)
        _finite("sample.", "eta", self.eta, 0.0, 1.0, low_open=True)


@dataclass
class LoRAConfig:
    """The LoRA adapter added (through peft) to the UNet's attention projections."""

    rank: int = 4  # ddpo-pytorch's rank; enough to steer style and content
    alpha: float = 4.0  # scale = alpha / rank; alpha == rank keeps the update's scale rank-independent
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")  # attention projections, as diffusers' LoRA scripts
    train_text_encoder: bool = False  # also adapt the text encoder's attention (q/k/v/out_proj)
    init_std: float | None = None  # None: peft's default (B = 0, so the adapter starts as the identity)

    def __post_init__(self):
        _positive_int("lora.", "rank", self.rank)
        _finite("lora.", "alpha", self.alpha, 0.0, low_open=True)
        self.target_modules = tuple(self.target_modules)
        if not self.target_modules:
            raise UserError("lora.target_modules must name at least one module")


@dataclass
class OptimConfig:
    """AdamW on the LoRA parameters, through accelerate."""

    learning_rate: float = 1e-3  # toy rwr/dpo; toy ddpo takes 3e-3 (TOY_ALGO_DEFAULTS); ddpo-pytorch uses 3e-4 on SD (the sd() value)
    weight_decay: float = 1e-4  # ddpo-pytorch's AdamW weight decay
    max_grad_norm: float = 1.0  # clip gradients; the PPO objective's gradients are spiky
    train_batch_size: int = 8  # samples per gradient micro-batch
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    inner_epochs: int = 1  # passes over each epoch's samples (PPO's K)
    mixed_precision: str = "no"  # no | fp16 | bf16 (GPU); CPU runs in fp32
    gradient_checkpointing: bool = False  # trade compute for memory on the UNet (GPU)

    def __post_init__(self):
        _finite("optim.", "learning_rate", self.learning_rate, 0.0, low_open=True)
        _finite("optim.", "weight_decay", self.weight_decay, 0.0)
        _finite("optim.", "max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        for name in ("train_batch_size", "gradient_accumulation_steps", "inner_epochs"):
            _positive_int("optim.", name, getattr(self, name))
        if self.mixed_precision not in MIXED_PRECISION:
            raise UserError(f"optim.mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}")


@dataclass
class DDPOConfig:
    """DDPO with importance sampling and PPO clipping (Black et al. 2023)."""

    clip_range: float = 1e-4  # PPO ratio clip; tiny because log-probs are per-dimension means (ddpo-pytorch)
    adv_clip_max: float = 5.0  # advantages are clipped to [-5, 5] (ddpo-pytorch)
    timestep_fraction: float = 0.5  # fraction of each trajectory's steps trained on (random subset); halves a toy epoch; sd(): 1
    timestep_choice: str = "random"  # random: a fresh random subset per micro-batch (ddpo-pytorch); first: the earliest, noisiest steps
    discount: float = 1.0  # step k (0 = first, noisiest) weighs discount**k, mean 1 over the trained steps (Yang et al. 2024); 1 = plain DDPO
    per_prompt_stats: bool = True  # normalise rewards per prompt (running mean/std) rather than per batch
    stat_buffer_size: int = 32  # rewards remembered per prompt
    stat_min_count: int = 8  # below this many, a prompt uses the batch's mean/std instead of its own
    group_advantages: bool = False  # GRPO: normalise each reward within its prompt's group of this epoch (sample.images_per_prompt samples) instead; overrides per_prompt_stats

    def __post_init__(self):
        _finite("ddpo.", "clip_range", self.clip_range, 0.0, low_open=True)
        _finite("ddpo.", "adv_clip_max", self.adv_clip_max, 0.0, low_open=True)
        _finite("ddpo.", "timestep_fraction", self.timestep_fraction, 0.0, 1.0, low_open=True)
        if self.timestep_choice not in ("random", "first"):
            raise UserError(f"ddpo.timestep_choice must be random or first, got {self.timestep_choice!r}")
        _finite("ddpo.", "discount", self.discount, 0.0, 1.0, low_open=True)
        _positive_int("ddpo.", "stat_buffer_size", self.stat_buffer_size)
        _positive_int("ddpo.", "stat_min_count", self.stat_min_count)
        for name in ("per_prompt_stats", "group_advantages"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"ddpo.{name} must be true or false, got {getattr(self, name)!r}")


@dataclass
class GRPOConfig:
    """Flow-GRPO (Liu et al. 2025) for flow-matching models (SD3, FLUX): the flow's SDE as the policy
    (`rlft.train.flow`), rewards normalised within each prompt's group of `sample.images_per_prompt` samples,
    PPO-clipped ratios per SDE step and `kl_weight` times the KL to the base model's step."""

    noise_level: float = 0.7  # the SDE's a in sigma_t = a sqrt(t / (1 - t)) (Flow-GRPO's)
    window_start: int = 0  # the first sampling step that is an SDE step, recorded and trained
    window_size: int = 0  # how many steps from window_start are (Flow-GRPO-Fast, MixGRPO); 0: every step to the last
    clip_range: float = 1e-4  # PPO ratio clip (Flow-GRPO's; log-probs are per-dimension means)
    adv_clip_max: float = 5.0  # advantages are clipped to [-5, 5]

    def __post_init__(self):
        _finite("grpo.", "noise_level", self.noise_level, 0.0, low_open=True)
        _finite("grpo.", "clip_range", self.clip_range, 0.0, low_open=True)
        _finite("grpo.", "adv_clip_max", self.adv_clip_max, 0.0, low_open=True)
        for name in ("window_start", "window_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UserError(f"grpo.{name} must be a whole number >= 0, got {value!r}")

    def window(self, steps: int) -> tuple[int, int]:
        """(start, stop) of the trained steps among `steps` sampling steps."""
        return self.window_start, steps if self.window_size == 0 else self.window_start + self.window_size


RWR_WEIGHTINGS = ("advantage", "nft", "exp", "topk")


@dataclass
class RWRConfig:
    """Reward-weighted denoising on the model's own samples.

    The default is advantage-weighted matching (AWM, Xue et al. 2025): each prompt's group of samples is scored,
    the rewards are normalised within the group (GRPO), and every sample's ordinary denoising loss, at a noise draw
    and timestep its group shares, is weighted by its advantage. `nft` is DiffusionNFT's negative-aware form of the
    same (Zheng et al. 2025); `exp` reward-weighted regression (Lee et al. 2023); `topk` RAFT (Dong et al. 2023).
    """

    weighting: str = "advantage"  # advantage (AWM) | nft (DiffusionNFT) | exp: exp(advantage / beta) | topk: each prompt's top_k samples (RAFT)
    group_advantages: bool = True  # normalise rewards within each prompt's group of this epoch (GRPO); false: ddpo's running per-prompt stats (ddpo.per_prompt_stats)
    adv_clip_max: float = 5.0  # advantage and nft: advantages clipped to [-c, c] (as ddpo); nft maps them to r = A / 2c + 1/2 in [0, 1]
    nft_beta: float = 1.0  # nft: the implicit policies v+- = v_old +- beta (v_theta - v_old); the loss is bounded in v_theta, its minimum a step of |A| / (c beta) toward (or away from) the target
    beta: float = 0.5  # exp: temperature of the weights (on normalised advantages); lower is greedier
    top_k: int = 1  # topk: samples kept per prompt per epoch
    max_weight: float = 20.0  # exp: cap on a single sample's normalised weight, so one lucky sample cannot dominate
    mix_top_rated: int = 0  # add this many of the person's top-rated pool images (with captions) per epoch
    mix_weight: float = 1.0  # weight (advantage, for advantage and nft) of each mixed-in rated image
    guided_loss: bool = True  # fit the CFG-combined noise prediction (at sample.guidance), the policy that drew the samples
    baseline: bool = True  # exp and topk: weights minus their mean (1), so equally good samples give no gradient (advantages are centred already)
    min_timestep: float = 0.0  # train on noise levels t >= min_timestep * T only (0: all, as Lee et al.; 0.5: the noisier half)
    shared_noise: bool = True  # one noise draw and timestep per prompt's group, trained in one micro-batch, so the weights compare the samples rather than their noise draws
    clip_range: float = 0.0  # > 0 (advantage, or exp/topk with baseline): a sample stops contributing once its error is past (1 -/+ clip_range) x the base's at the same input

    def __post_init__(self):
        if self.weighting not in RWR_WEIGHTINGS:
            raise UserError(f"rwr.weighting must be one of {', '.join(RWR_WEIGHTINGS)}, got {self.weighting!r}")
        _finite("rwr.", "adv_clip_max", self.adv_clip_max, 0.0, low_open=True)
        _finite("rwr.", "nft_beta", self.nft_beta, 0.0, low_open=True)
        _finite("rwr.", "beta", self.beta, 0.0, low_open=True)
        _positive_int("rwr.", "top_k", self.top_k)
        _finite("rwr.", "max_weight", self.max_weight, 0.0, low_open=True)
        if not isinstance(self.mix_top_rated, int) or self.mix_top_rated < 0:
            raise UserError(f"rwr.mix_top_rated must be a whole number >= 0, got {self.mix_top_rated!r}")
        _finite("rwr.", "mix_weight", self.mix_weight, 0.0)
        _finite("rwr.", "min_timestep", self.min_timestep, 0.0, 1.0, high_open=True)
        _finite("rwr.", "clip_range", self.clip_range, 0.0, 1.0, high_open=True)
        for name in ("guided_loss", "baseline", "shared_noise", "group_advantages"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"rwr.{name} must be true or false, got {getattr(self, name)!r}")
        if self.clip_range > 0 and self.weighting == "nft":
            raise UserError("rwr.clip_range is for the signed loss; nft bounds its own: set rwr.clip_range = 0 or another rwr.weighting")
        if self.clip_range > 0 and self.weighting in ("exp", "topk") and not self.baseline:
            raise UserError("rwr.clip_range bounds the signed (baseline) loss: set rwr.baseline = true or rwr.clip_range = 0")

    @property
    def signed(self) -> bool:
        """Whether the weights are centred (advantages, or exp/topk weights minus their mean)."""
        return self.weighting in ("advantage", "nft") or self.baseline


@dataclass
class DPOConfig:
    """Diffusion-DPO on the stored pairwise judgements against the frozen base (Wallace et al. 2023)."""

    beta: float = 5000.0  # KL strength beta_dpo: the paper's, for SD 1.5 and SDXL alike (the authors' launchers/sd15.sh and sdxl.sh), and the toy world's (TrainConfig.toy)
    pairs_per_epoch: int = 64  # judgements (winner, loser) drawn per epoch
    min_timestep: float = 0.0  # train on noise levels t >= min_timestep * T only (0: all, as the paper)

    def __post_init__(self):
        _finite("dpo.", "beta", self.beta, 0.0, low_open=True)
        _finite("dpo.", "min_timestep", self.min_timestep, 0.0, 1.0, high_open=True)
        _positive_int("dpo.", "pairs_per_epoch", self.pairs_per_epoch)


@dataclass
class TrainConfig:
    """Everything a training run needs besides the model, reward and prompts (which are named, not configured)."""

    algo: str = "ddpo"  # ddpo | rwr | dpo (SD 1.x, SDXL) | grpo (SD3, FLUX)
    epochs: int = 60  # sample-then-train rounds; toy, 1 thread: ~7 s (dpo), ~12 s (rwr), ~15 s (ddpo) each, inside 20 min
    seed: int = 0  # every epoch's randomness derives from (seed, epoch): resume is exact
    kl_weight: float = 0.0  # regulariser weight: ||eps_lora - eps_base||^2 at the training inputs (guided for rwr), KL per DDIM step for ddpo
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always checkpoints)
    heldout_member: bool = True  # keep one reward-ensemble member out of the training reward, to report it
    sample: SampleConfig = field(default_factory=SampleConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ddpo: DDPOConfig = field(default_factory=DDPOConfig)
    rwr: RWRConfig = field(default_factory=RWRConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)

    def __post_init__(self):
        if self.algo not in ALGORITHMS:
            raise UserError(f"algo must be one of: {', '.join(ALGORITHMS)}, got {self.algo!r}")
        _positive_int("", "epochs", self.epochs)
        _positive_int("", "checkpoint_every", self.checkpoint_every)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"seed must be a whole number >= 0, got {self.seed!r}")
        _finite("", "kl_weight", self.kl_weight, 0.0)
        for name, cls in _SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _build(cls, value, f"{name}."))

    @classmethod
    def toy(cls, **overrides) -> TrainConfig:
        """Defaults for the toy world on a 2-core CPU (the 20-minute budget), per algorithm (`TOY_ALGO_DEFAULTS`);
        anything in `overrides` wins. Each default's reason, with the experiment behind it (docs/experiments.md):

        - `ddpo` takes one optimizer step per epoch at lr 3e-3: later PPO-clipped steps find most ratios outside
          the tiny clip range and learn nothing (ddpo-one-step).
        - `ddpo` trains the first, noisiest half of each trajectory's steps, where colour, size and place are
          decided, at kl-weight 0.05, which keeps prompt adherence within the 5-point bound (ddpo-first-steps).
        - `rwr` fits the guided prediction (`rwr.guided_loss`), the policy that drew the samples, because fitting
          the conditional one distils the guidance and drifts each epoch (rwr-guided-loss).
        - `rwr` centres its weights (`rwr.baseline`), so samples as good as their peers give no gradient and the
          model does not drift toward its own output where the reward is silent (rwr-centred-weights).
        - `rwr` keeps lr 1e-3 at kl-weight 1.0: lower weights lost adherence or collapsed (rwr-warm-fixed-rater); with
          advantage-weighted matching, lr 3e-3 at kl-weight 0.1 chased the reward, lost up to 45 points of adherence
          and steered `centered` the wrong way (rwr-awm).
        - `rwr` is advantage-weighted matching (`rwr.weighting = advantage`): rewards normalised within each
          prompt's group of `sample.images_per_prompt` samples, which share a noise draw and timestep
          (`rwr.shared_noise`), so the weights compare the samples, not their noise (rwr-awm).
        - `optim.inner_epochs > 1`, `rwr.clip_range` and `min_timestep` stay off: none was better on balance across
          oracles and seeds (rwr-clip-range-seeds, min-timestep-half).
        - `dpo` uses the paper's beta of 5000: 100% on `bright` without adherence loss, where 2000 reached 72.9%
          (dpo-beta-5000)."""
        algo = overrides.get("algo", cls.algo)
        base = from_dict(TOY_ALGO_DEFAULTS.get(algo, {}), base=cls(algo=algo)) if algo in ALGORITHMS else cls()
        return from_dict(overrides, base=base)

    @classmethod
    def sd(cls, **overrides) -> TrainConfig:
        """Defaults for a real SD model on a GPU, after ddpo-pytorch's base config and Diffusion-DPO."""
        base = cls(
            epochs=100,
            sample=SampleConfig(steps=50, guidance=5.0, batch_size=8, samples_per_epoch=256),
            optim=OptimConfig(learning_rate=3e-4, train_batch_size=4, gradient_accumulation_steps=4, inner_epochs=1,
                              mixed_precision="bf16", gradient_checkpointing=True),
            ddpo=DDPOConfig(timestep_fraction=1.0),
            rwr=RWRConfig(beta=1.0),
            dpo=DPOConfig(pairs_per_epoch=512),
        )
        return from_dict(overrides, base=base)

    @classmethod
    def sdxl(cls, **overrides) -> TrainConfig:
        """Defaults for an SDXL model on a GPU: `sd()`'s at the model's own 1024 px, with micro-batches of one sample
        (two UNet passes under CFG; bench/gpu_sdxl.py measures a ddpo and a dpo step against a 24 GB card)
        accumulated to sd()'s 16 samples per optimizer step, four images per sampling batch (the VAE decodes each
        batch at 1024 px), and Diffusion-DPO's beta of 5000, which its authors used for SDXL as for SD 1.5
        (launchers/sdxl.sh); their other SDXL settings (2048 pairs per step, lr 1e-8 per pair, Adafactor) are for
        training the whole UNet, not a LoRA."""
        base = cls.sd(sample={"batch_size": 4}, optim={"train_batch_size": 1, "gradient_accumulation_steps": 16},
                      dpo={"beta": 5000.0})
        return from_dict(overrides, base=base)

    @classmethod
    def flow(cls, **overrides) -> TrainConfig:
        """Defaults for an SD3 or FLUX model on a GPU with grpo, after Flow-GRPO's SD3 LoRA runs: 10 sampling steps
        (its training steps; images for people use 28-40), CFG 4.5 (FLUX: its distilled guidance 3.5 is set with
        --guidance), groups of 8 images per prompt, lr 3e-4, clip 1e-4, KL weight 0.04, bf16 and gradient
        checkpointing, micro-batches of 2 accumulated to 16 samples per optimizer step."""
        base = cls.sd(algo="grpo", kl_weight=0.04, sample={"steps": 10, "guidance": 4.5, "batch_size": 8,
                                                           "samples_per_epoch": 64, "images_per_prompt": 8},
                      optim={"train_batch_size": 2, "gradient_accumulation_steps": 8})
        return from_dict(overrides, base=base)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return json_ready(dataclasses.asdict(self))


_SECTIONS = {"sample": SampleConfig, "lora": LoRAConfig, "optim": OptimConfig, "ddpo": DDPOConfig, "rwr": RWRConfig,
             "dpo": DPOConfig, "grpo": GRPOConfig}


def json_ready(obj):
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def _build(cls, values: dict, prefix: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        key = f"{prefix}{unknown[0]}"
        hint = f" ({REMOVED_FIELDS[key]})" if key in REMOVED_FIELDS else ""
        raise UserError(f"unknown config field {key}{hint}; {cls.__name__} has: {', '.join(sorted(names))}")
    return cls(**values)


# Fields added after runs were already being written, with the behaviour of the code before them: a run
# saved without the field resumes as it started.
LEGACY_FIELDS: dict[tuple[str, str], Any] = {("rwr", "guided_loss"): False, ("rwr", "baseline"): False,
                                             ("ddpo", "timestep_choice"): "random", ("rwr", "group_advantages"): False}
# Fields older runs saved that rlft no longer has (none of them changed a result), with what to use instead.
REMOVED_FIELDS: dict[str, str] = {"dpo.rater": "never read; `rlft train --rater NAME` picks whose judgements dpo trains on"}


def without_removed(values: dict, unset_only: bool = False) -> dict:
    """`values` (a saved config) without `REMOVED_FIELDS`; with `unset_only`, only those left at None (a value
    that was set stays, to be refused as an unknown field)."""
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for key in REMOVED_FIELDS:
        section, _, name = key.partition(".")
        if isinstance(values.get(section), dict) and name in values[section]:
            if not unset_only or values[section][name] is None:
                del values[section][name]
    return values


def from_saved(values: dict) -> TrainConfig:
    """The config of a saved run (`config.json` or a checkpoint), older runs included (`LEGACY_FIELDS`,
    `REMOVED_FIELDS`)."""
    values = without_removed(values)
    for (section, name), old in LEGACY_FIELDS.items():
        if isinstance(values.get(section), dict):
            values[section].setdefault(name, old)
    return from_dict(values)


def from_dict(values: dict, base: TrainConfig | None = None) -> TrainConfig:
    """A config from a (possibly partial, possibly nested) dict laid over `base` (default: `TrainConfig()`, the
    toy defaults of ddpo and dpo; `TrainConfig.toy(algo=...)` adds the per-algorithm ones).

    Nested sections may be given as dicts (`{"ddpo": {"clip_range": 2e-4}}`) or as dotted keys
    (`{"ddpo.clip_range": 2e-4}`). Unknown fields raise UserError naming the valid ones.
    """
    merged = (base or TrainConfig()).to_dict()
    typed = {}  # top-level name -> the key as given (`nope.x`), for the error
    for key, value in values.items():
        if "." in key:
            section, _, name = key.partition(".")
            typed.setdefault(section, key)
            value, key = {name: value}, section
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise UserError(f"config section {key} must be a mapping, got {value!r}")
            if key not in merged:
                merged[key] = {}
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    top = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(merged) - top)
    if unknown:
        raise UserError(f"unknown config field {typed.get(unknown[0], unknown[0])}; valid: {', '.join(sorted(top))}")
    return TrainConfig(**merged)


def diff(a: TrainConfig, b: TrainConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted names of the fields where `a` and `b` differ (for resume's config check)."""
    out = []

    def walk(x, y, prefix):
        for k in sorted(set(x) | set(y)):
            name = prefix + k
            if name in ignore:
                continue
            if isinstance(x.get(k), dict) and isinstance(y.get(k), dict):
                walk(x[k], y[k], name + ".")
            elif x.get(k) != y.get(k):
                out.append(f"{name} ({x.get(k)!r} -> {y.get(k)!r})")

    walk(a.to_dict(), b.to_dict(), "")
    return out
