"""Peak GPU memory of one ddpo step and one dpo step, and sampling throughput, on a full SDXL-base-size model with
random weights (no download).

    python bench/gpu_sdxl.py bench/results/gpu_sdxl.json          # on a CUDA GPU: 1024x1024, bf16 (tools/gpu_bench.sh)
    python bench/gpu_sdxl.py /tmp/smoke.json --tiny               # CPU smoke test of this script on the tiny SDXL

Builds SDXL base 1.0's UNet (2.6B parameters), VAE and both text encoders (CLIP ViT-L/14's and OpenCLIP
ViT-bigG/14's text towers) from their published configs (written out below), adds LoRA rank 4 on the UNet's
attention projections, turns on gradient checkpointing and bf16 autocast, and runs the real trainer
(`rlft.train`): sampling with log-probs (DDIM eta 1, CFG 5, the model's 1024 px and micro-conditioning), a stub
reward, ddpo steps (micro-batches of one sample, every recorded timestep: two UNet passes under CFG, forward
and backward), then one dpo step on 1024 px judged pairs (winner and loser, model and frozen reference). Reports
the peak GPU memory of each step (target: a ddpo step under 24 GB, so it fits one consumer card) and the images
per second of sampling with log-probs. Without CUDA it refuses in one line (exit 2) unless `--tiny`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# stabilityai/stable-diffusion-xl-base-1.0: unet/, vae/, text_encoder/, text_encoder_2/ config.json
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024,
    scaling_factor=0.13025, force_upcast=True,
)
SDXL_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406,
                 eos_token_id=49407, pad_token_id=49407)
SDXL_TEXT_2 = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                   max_position_embeddings=77, hidden_act="gelu", projection_dim=1280, bos_token_id=49406,
                   eos_token_id=49407, pad_token_id=0)
TARGET_GB = 24.0
PROMPTS = ["a photo of a cat", "a painting of a city at night"]


def build_pipeline(tiny: bool, device: str, dtype):
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from rlft.models.pipeline import use_ftfy_tokenizers
    from rlft.models.tiny import SDXL_SCHEDULER_CONFIG, sdxl_tokenizer_2, tiny_sdxl_pipeline
    from rlft.models.tokenizer import clip_tokenizer

    if tiny:
        return tiny_sdxl_pipeline(0).to(device, dtype)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in the run's precision on the GPU: no fp32 copy of 3.5B parameters
    try:
        with torch.device(device):
            parts = dict(unet=UNet2DConditionModel(**SDXL_UNET), vae=AutoencoderKL(**SDXL_VAE),
                         text_encoder=CLIPTextModel(CLIPTextConfig(**SDXL_TEXT)),
                         text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2)))
    finally:
        torch.set_default_dtype(previous)
    pipe = StableDiffusionXLPipeline(**parts, tokenizer=clip_tokenizer(), tokenizer_2=sdxl_tokenizer_2(),
                                     scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
                                     add_watermarker=False)
    use_ftfy_tokenizers(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def params_m(module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="where to write the JSON result")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test with the tiny SDXL pipeline")
    ap.add_argument("--samples", type=int, default=4, help="images sampled (with log-probs) per timed sampling run")
    ap.add_argument("--sample-batch", type=int, default=4)
    ap.add_argument("--train-batch", type=int, default=1, help="samples (ddpo) or pairs (dpo) per micro-batch")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps (the sd presets use 50; time scales linearly)")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--precision", default="bf16", choices=["fp16", "bf16"])
    args = ap.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("bench/gpu_sdxl.py needs a CUDA GPU (torch sees none); --tiny runs the script on the CPU as a smoke test",
              file=sys.stderr)
        sys.exit(2)
    from PIL import Image

    from rlft.train.algorithms import DPO
    from rlft.train.config import TrainConfig, from_dict
    from rlft.train.trainer import Trainer

    cuda = cuda and not args.tiny
    device = "cuda" if cuda else "cpu"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.precision] if cuda else torch.float32
    t0 = time.perf_counter()
    pipe = build_pipeline(args.tiny, device, dtype)
    build_s = time.perf_counter() - t0
    steps = args.steps if not args.tiny else 2
    config = TrainConfig.sdxl(
        algo="ddpo", epochs=100, checkpoint_every=100, heldout_member=False,
        # two micro-batches of one prompt: advantages of +-1, so the step's loss and gradient are not zero
        sample={"steps": steps, "batch_size": args.sample_batch, "samples_per_epoch": 2 * args.train_batch,
                "images_per_prompt": 2 * args.train_batch, "guidance": 5.0},
        lora={"rank": args.rank, "alpha": float(args.rank)},
        optim={"train_batch_size": args.train_batch, "gradient_accumulation_steps": 1,
               "mixed_precision": args.precision if cuda else "no", "gradient_checkpointing": True},
        dpo={"pairs_per_epoch": args.train_batch},
    )

    def stub_reward(images, prompts, metadata):  # brightness: cheap; the CLIP reward's memory is not the point
        return images.mean(dim=(1, 2, 3)), {}

    trainer = Trainer(pipe, config, prompts=PROMPTS, reward_fn=stub_reward)
    height, width = trainer.image_size

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def reset():
        sync()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak() -> float | None:
        sync()
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None

    # sampling with log-probs (and decoding), after a warm-up
    trainer.sample(PROMPTS[:1], [0])
    reset()
    t = time.perf_counter()
    trajs = trainer.sample([PROMPTS[i % 2] for i in range(args.samples)], list(range(args.samples)))
    sync()
    sample_s = time.perf_counter() - t
    sample_peak = peak()
    reset()
    t = time.perf_counter()
    for tr in trajs:
        trainer.decode(tr.final)
    sync()
    decode_s = time.perf_counter() - t
    decode_peak = peak()
    del trajs

    # one ddpo step: the epoch samples its micro-batch (peak recorded apart), then trains on every timestep
    collect, seen = trainer.algorithm.collect, {}

    def collect_then_reset(epoch):
        out = collect(epoch)
        seen["collect_peak"] = peak()
        reset()
        return out

    trainer.algorithm.collect = collect_then_reset
    reset()
    t = time.perf_counter()
    ddpo = trainer.run_epoch()
    sync()
    ddpo_s = time.perf_counter() - t
    ddpo_peak = peak()

    # one dpo step on judged pairs at the model's size (the same trainer and LoRA, another algorithm)
    rng = torch.Generator().manual_seed(0)
    noise = lambda: Image.fromarray((torch.rand(height, width, 3, generator=rng) * 255).byte().numpy())  # noqa: E731
    trainer.judgements = [(noise(), noise(), PROMPTS[i % 2]) for i in range(args.train_batch)]
    trainer.config = from_dict({"algo": "dpo"}, base=config)
    trainer.algorithm = DPO(trainer)
    reset()
    t = time.perf_counter()
    dpo = trainer.run_epoch()
    sync()
    dpo_s = time.perf_counter() - t
    dpo_peak = peak()

    result = {
        "benchmark": "gpu_sdxl",
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()}), tiny smoke test",
        "tiny": args.tiny, "resolution": [height, width],
        "params_m": {name: params_m(getattr(pipe, name)) for name in ("unet", "vae", "text_encoder", "text_encoder_2")},
        "lora_params_m": round(sum(p.numel() for p in trainer.params) / 1e6, 3), "lora_rank": args.rank,
        "precision": args.precision if cuda else "fp32", "gradient_checkpointing": True,
        "ddim_steps": steps, "cfg": config.sample.guidance, "samples": args.samples, "sample_batch": args.sample_batch,
        "train_batch": args.train_batch,
        "peak_mem_gb": {"sampling_with_logprobs": sample_peak, "decode": decode_peak,
                        "ddpo_sampling": seen.get("collect_peak"), "ddpo_step": ddpo_peak, "dpo_step": dpo_peak},
        "target_peak_mem_gb_ddpo_step": TARGET_GB,
        "meets_target": None if ddpo_peak is None else ddpo_peak < TARGET_GB,
        "sampling_images_per_s": round(args.samples / sample_s, 4),
        "seconds": {"build": round(build_s, 1), "sampling": round(sample_s, 2), "decode": round(decode_s, 2),
                    "ddpo_epoch": round(ddpo_s, 2), "dpo_epoch": round(dpo_s, 2)},
        "ddpo": {k: ddpo.get(k) for k in ("loss", "clipfrac", "grad_norm")},
        "dpo": {k: dpo.get(k) for k in ("loss", "implicit_acc", "grad_norm")},
        "torch": torch.__version__, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "tools/gpu_bench.sh (python bench/gpu_sdxl.py bench/results/gpu_sdxl.json)",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
