"""Tiny random-weight Stable Diffusion parts, built in code, for tests and benchmarks (never downloaded).

The shapes are SD 1.x's (`tiny_pipeline`) and SDXL's (`tiny_sdxl_pipeline`), only narrower: the same
component classes, the 49,408-token CLIP vocabulary and an 8x VAE, so a tiny pipeline takes every code path
a real SD 1.5 or SDXL takes (save, load, single-file export, LoRA, micro-conditioning) in milliseconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

TINY_SIZE = 64  # pixels; 8x8 latents through the 8x VAE


def _seeded(seed: int):
    torch.manual_seed(seed)  # each part gets its own seed, so changing one part leaves the others as they were


def tiny_unet(seed: int = 0, cross_attention_dim: int = 32):
    """A ~1M-parameter `UNet2DConditionModel`: two levels (32, 64), cross-attention at the lower one."""
    from diffusers import UNet2DConditionModel

    _seeded(seed)
    return UNet2DConditionModel(
        sample_size=TINY_SIZE // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,  # 985k parameters; 2 would be SD's layout at 1.4M and ~1.5x slower
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_vae(seed: int = 1, scaling_factor: float = 0.18215):
    """A ~250k-parameter `AutoencoderKL` with SD's four levels (8x downsampling) and 4 latent channels.

    `scaling_factor` is SD 1.x's by default; SDXL's VAE has the same layout and 0.13025.
    """
    from diffusers import AutoencoderKL

    _seeded(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_SIZE,
        scaling_factor=scaling_factor,
    )


def tiny_text_encoder(seed: int = 2, hidden_size: int = 32):
    """A two-layer `CLIPTextModel` with the full 49,408-token vocabulary and 77 positions."""
    from transformers import CLIPTextConfig, CLIPTextModel

    _seeded(seed)
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=hidden_size,
        bos_token_id=49406,
        eos_token_id=49407,  # pooling looks for this id, as in SD 1.x's text encoder
        pad_token_id=49407,
    )
    return CLIPTextModel(config).eval()


def tiny_pipeline(seed: int = 0):
    """A random-weight `StableDiffusionPipeline` (~3M parameters, 64x64 images), DDIM, no safety checker.

    The same seed gives the same weights, so two calls build identical pipelines.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from rlft.models.tokenizer import clip_tokenizer, use_ftfy_tokenizer

    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",  # SD 1.x's noise schedule
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=tiny_unet(seed),
        vae=tiny_vae(seed + 1),
        text_encoder=tiny_text_encoder(seed + 2),
        tokenizer=clip_tokenizer(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return use_ftfy_tokenizer(pipe)


# -- SDXL ------------------------------------------------------------------------------------------------------

# SDXL conditions on two CLIP text towers side by side: ViT-L/14's (768 wide, no projection) and OpenCLIP
# ViT-bigG/14's (1280 wide, with a 1280-d projection whose pooled output joins the time embedding). The tiny
# ones keep that shape at 32 and 48 wide, unequal so that a mix-up of the two cannot pass a test.
TINY_SDXL_TEXT_WIDTHS = (32, 48)
TINY_SDXL_TIME_EMBED_DIM = 8  # per micro-conditioning number (SDXL: 256); six numbers: size, crop, target size
SDXL_SCHEDULER_CONFIG = {  # stabilityai/stable-diffusion-xl-base-1.0's scheduler_config.json
    "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "interpolation_type": "linear", "use_karras_sigmas": False,
    "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None,
    # not Euler's own settings, but kept in the config so that a DDIM made from it (rlft's training sampler)
    # is SDXL's: no sample clipping, alphas_cumprod[0] at the last step
    "clip_sample": False, "set_alpha_to_one": False, "sample_max_value": 1.0, "skip_prk_steps": True,
}


def tiny_sdxl_unet(seed: int = 0, *, layers_per_block: int = 1, transformer_layers: int = 1):
    """A ~1M-parameter SDXL-style `UNet2DConditionModel` (`addition_embed_type="text_time"`).

    The tiny SD 1.x UNet's two levels (32, 64) with SDXL's conditioning: cross-attention over both text
    encoders' states concatenated (32 + 48 wide), and the added embedding of the pooled text (48) and the six
    micro-conditioning numbers (6 x 8). `transformer_layers` > 1 stacks transformer blocks in the attention
    level, as SDXL does (2 and 10 there); `layers_per_block=2` is SDXL's own.
    """
    from diffusers import UNet2DConditionModel

    width_1, width_2 = TINY_SDXL_TEXT_WIDTHS
    _seeded(seed)
    return UNet2DConditionModel(
        sample_size=TINY_SIZE // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=layers_per_block,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),  # SDXL's first level has no attention either
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, transformer_layers),
        cross_attention_dim=width_1 + width_2,
        attention_head_dim=8,
        norm_num_groups=8,
        use_linear_projection=True,  # SDXL's (SD 1.x uses 1x1 convolutions)
        addition_embed_type="text_time",
        addition_time_embed_dim=TINY_SDXL_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=width_2 + 6 * TINY_SDXL_TIME_EMBED_DIM,
    )


def tiny_text_encoder_2(seed: int = 3, hidden_size: int = TINY_SDXL_TEXT_WIDTHS[1]):
    """A two-layer `CLIPTextModelWithProjection` (SDXL's second encoder: GELU, its own projection)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    _seeded(seed)
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=hidden_size,  # bigG projects 1280 -> 1280
        hidden_act="gelu",  # OpenCLIP's; the first encoder keeps OpenAI's quick_gelu
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=0,  # SDXL's second tokenizer pads with "!" (id 0), not <|endoftext|>
    )
    return CLIPTextModelWithProjection(config).eval()


def sdxl_tokenizer_2():
    """The CLIP tokenizer as SDXL's `tokenizer_2` is saved: the same ids, padding with "!"."""
    from rlft.models.tokenizer import clip_tokenizer

    tokenizer = clip_tokenizer()
    tokenizer.pad_token = "!"
    return tokenizer


def tiny_sdxl_pipeline(seed: int = 0, *, layers_per_block: int = 1, transformer_layers: int = 1):
    """A random-weight `StableDiffusionXLPipeline` (~5M parameters, 64x64 images), Euler as SDXL ships.

    Most of the parameters are the two encoders' 49,408-token embeddings. Built as diffusers' own SDXL tests build theirs (two CLIP text encoders, a text_time UNet, an 8x VAE),
    with the real vocabulary. The same seed gives the same weights.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from rlft.models.pipeline import use_ftfy_tokenizers
    from rlft.models.tokenizer import clip_tokenizer

    pipe = StableDiffusionXLPipeline(
        unet=tiny_sdxl_unet(seed, layers_per_block=layers_per_block, transformer_layers=transformer_layers),
        vae=tiny_vae(seed + 1, scaling_factor=0.13025),
        text_encoder=tiny_text_encoder(seed + 2, hidden_size=TINY_SDXL_TEXT_WIDTHS[0]),
        text_encoder_2=tiny_text_encoder_2(seed + 3),
        tokenizer=clip_tokenizer(),
        tokenizer_2=sdxl_tokenizer_2(),
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return use_ftfy_tokenizers(pipe)


TINY_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],  # OpenAI CLIP's normalisation
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    },
}


def tiny_clip_folder(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a 16-wide random open_clip model as a local folder (`open_clip_config.json` + safetensors).

    The layout is the one open_clip's hf-hub repos use, so `rlft.load_clip(path)` loads it as it would a
    real downloaded model.
    """
    import open_clip
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _seeded(seed)
    model = open_clip.CLIP(**TINY_CLIP_CONFIG["model_cfg"])
    (path / "open_clip_config.json").write_text(json.dumps(TINY_CLIP_CONFIG, indent=2) + "\n", encoding="utf-8")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "open_clip_model.safetensors"))
    return path
