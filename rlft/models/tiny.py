"""Tiny random-weight Stable Diffusion parts, built in code, for tests and benchmarks (never downloaded).

The shapes are SD 1.x's, only narrower: the same component classes, the 49,408-token CLIP vocabulary and
an 8x VAE, so a tiny pipeline takes every code path a real SD 1.5 takes (save, load, single-file export,
LoRA) in milliseconds.
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


def tiny_vae(seed: int = 1):
    """A ~250k-parameter `AutoencoderKL` with SD's four levels (8x downsampling) and 4 latent channels."""
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
