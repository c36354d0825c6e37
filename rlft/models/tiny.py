"""Tiny random-weight Stable Diffusion parts, built in code, for tests and benchmarks (never downloaded).

The shapes are SD 1.x's (`tiny_pipeline`), SDXL's (`tiny_sdxl_pipeline`), SD3's (`tiny_sd3_pipeline`) and
FLUX's (`tiny_flux_pipeline`), only narrower: the same component classes, the 49,408-token CLIP vocabulary and
an 8x VAE, so a tiny pipeline takes every code path a real model of its family takes (save, load, single-file
export, LoRA, micro-conditioning, latent packing) in milliseconds.
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


def tiny_vae(seed: int = 1, scaling_factor: float = 0.18215, *, latent_channels: int = 4,
             shift_factor: float | None = None):
    """A ~250k-parameter `AutoencoderKL` with SD's four levels (8x downsampling) and 4 latent channels.

    `scaling_factor` is SD 1.x's by default; SDXL's VAE has the same layout and 0.13025. SD3's and FLUX's have
    16 latent channels, a `shift_factor` and no quant convolutions.
    """
    from diffusers import AutoencoderKL

    flow = shift_factor is not None
    _seeded(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=TINY_SIZE,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=not flow,
        use_post_quant_conv=not flow,
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


# -- SD3 and FLUX ------------------------------------------------------------------------------------------------

# SD3 conditions its MMDiT on CLIP ViT-L/14 and OpenCLIP bigG/14 (both with projection: penultimate states side by
# side, 768 + 1280, zero-padded to T5's 4096 and joined by T5-XXL's states along the sequence; the pooled text is
# both projections, 2048) and, optionally, T5-XXL. FLUX reads T5-XXL's states (4096) and CLIP ViT-L's pooled
# output (768), and embeds its distilled guidance scale. The tiny ones keep every width unequal.
TINY_SD3_TEXT_WIDTHS = (32, 48)
TINY_SD3_T5_WIDTH = 96  # wider than the two CLIPs side by side (80), as T5-XXL's 4096 is wider than 2048
TINY_FLUX_WIDTHS = (32, 48)  # CLIP, T5
SD3_SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0}  # stabilityai/stable-diffusion-3-medium-diffusers
FLUX_SCHEDULER_CONFIG = {  # black-forest-labs/FLUX.1-dev: the shift grows with the image's token count
    "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
    "base_image_seq_len": 256, "max_image_seq_len": 4096,
}
SD3_VAE = {"scaling_factor": 1.5305, "shift_factor": 0.0609}
FLUX_VAE = {"scaling_factor": 0.3611, "shift_factor": 0.1159}
FLOW_LATENT_CHANNELS = 16


def t5_tokenizer():
    """A SentencePiece-style (Unigram) `T5Tokenizer` built in code: no model file, no download.

    T5's own 32k-piece vocabulary comes only as a trained `spiece.model`, which is not shipped with any installed
    package. This tokenizer has T5's special tokens at T5's ids (`<pad>` 0, `</s>` 1, `<unk>` 2) and, as pieces,
    every printable ASCII character with and without the word-start mark `▁`: every ASCII prompt splits into
    word-initial and inner characters, other characters are `<unk>`. It is a real `tokenizers` Unigram model with
    T5's normaliser and pre-tokeniser, so it saves, loads and pads as T5's does; only its pieces are shorter.
    """
    import string

    from transformers import T5Tokenizer

    chars = [c for c in string.printable if not c.isspace()]
    # Unigram picks the segmentation of highest total score: word-start pieces beat a bare `▁` plus a character.
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + c, -3.0) for c in chars] + [(c, -4.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def tiny_t5_encoder(seed: int, width: int, vocab_size: int):
    """A one-layer `T5EncoderModel` (T5 v1.1's gated GELU, as T5-XXL), `width` wide."""
    from transformers import T5Config, T5EncoderModel

    _seeded(seed)
    config = T5Config(vocab_size=vocab_size, d_model=width, d_kv=8, d_ff=2 * width, num_layers=1, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=32,
                      feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(config).eval()


def tiny_sd3_transformer(seed: int = 0, *, num_layers: int = 2):
    """A ~100k-parameter `SD3Transformer2DModel`: 2x2 patches of 16-channel latents, 4 heads of 8."""
    from diffusers import SD3Transformer2DModel

    _seeded(seed)
    return SD3Transformer2DModel(
        sample_size=TINY_SIZE // 8, patch_size=2, in_channels=FLOW_LATENT_CHANNELS, out_channels=FLOW_LATENT_CHANNELS,
        num_layers=num_layers, attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
        joint_attention_dim=TINY_SD3_T5_WIDTH, pooled_projection_dim=sum(TINY_SD3_TEXT_WIDTHS),
        pos_embed_max_size=32,  # up to 512 px (SD3: 96, 1536 px)
    )


def tiny_sd3_pipeline(seed: int = 0, *, t5: bool = True):
    """A random-weight `StableDiffusion3Pipeline` (64x64 images), FlowMatchEulerDiscreteScheduler as SD3 ships.

    Built as diffusers' own SD3 tests build theirs (two `CLIPTextModelWithProjection`, a T5 encoder, an MMDiT,
    a 16-channel VAE with a shift), with the real CLIP vocabulary and `t5_tokenizer()`. `t5=False` leaves
    `text_encoder_3` out, as SD3 allows (its states are then zeros). The same seed gives the same weights.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from rlft.models.pipeline import use_ftfy_tokenizers
    from rlft.models.tokenizer import clip_tokenizer

    width_1, width_2 = TINY_SD3_TEXT_WIDTHS
    tokenizer_3 = t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(seed),
        vae=tiny_vae(seed + 1, latent_channels=FLOW_LATENT_CHANNELS, **SD3_VAE),
        text_encoder=tiny_text_encoder_2(seed + 2, hidden_size=width_1),
        text_encoder_2=tiny_text_encoder_2(seed + 3, hidden_size=width_2),
        text_encoder_3=tiny_t5_encoder(seed + 4, TINY_SD3_T5_WIDTH, len(tokenizer_3)) if t5 else None,
        tokenizer=clip_tokenizer(),
        tokenizer_2=sdxl_tokenizer_2(),
        tokenizer_3=tokenizer_3 if t5 else None,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER_CONFIG),
    )
    pipe.set_progress_bar_config(disable=True)
    return use_ftfy_tokenizers(pipe)


def tiny_flux_transformer(seed: int = 0, *, guidance_embeds: bool = True):
    """A ~150k-parameter `FluxTransformer2DModel`: one double- and one single-stream block, 2 heads of 16,
    rotary axes (4, 6, 6); `guidance_embeds` as FLUX.1-dev (distilled guidance), off as FLUX.1-schnell."""
    from diffusers import FluxTransformer2DModel

    clip_width, t5_width = TINY_FLUX_WIDTHS
    _seeded(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4 * FLOW_LATENT_CHANNELS, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=t5_width, pooled_projection_dim=clip_width,
        guidance_embeds=guidance_embeds, axes_dims_rope=(4, 6, 6),
    )


def tiny_flux_pipeline(seed: int = 0, *, guidance_embeds: bool = True):
    """A random-weight `FluxPipeline` (64x64 images): CLIP + T5 text encoders, 2x2-packed 16-channel latents,
    FLUX.1-dev's shifted flow-matching schedule. Built as diffusers' FLUX tests build theirs, offline (the CLIP
    vocabulary, `t5_tokenizer()`). The same seed gives the same weights."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from rlft.models.pipeline import use_ftfy_tokenizers
    from rlft.models.tokenizer import clip_tokenizer

    clip_width, t5_width = TINY_FLUX_WIDTHS
    tokenizer_2 = t5_tokenizer()
    pipe = FluxPipeline(
        transformer=tiny_flux_transformer(seed, guidance_embeds=guidance_embeds),
        vae=tiny_vae(seed + 1, latent_channels=FLOW_LATENT_CHANNELS, **FLUX_VAE),
        text_encoder=tiny_text_encoder(seed + 2, hidden_size=clip_width),
        text_encoder_2=tiny_t5_encoder(seed + 3, t5_width, len(tokenizer_2)),
        tokenizer=clip_tokenizer(),
        tokenizer_2=tokenizer_2,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER_CONFIG),
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
