"""Peak memory and throughput of DDPO on a full SD 1.5-architecture model with random weights (no download).

    python bench/gpu_sd15_ddpo.py bench/results/gpu_sd15_ddpo.json            # on a GPU: 512x512, bf16
    python bench/gpu_sd15_ddpo.py /tmp/smoke.json --tiny                      # CPU smoke test, tiny parts
    python bench/gpu_sd15_ddpo.py bench/results/cpu_sd15_ddpo.json --samples 2 --sample-batch 2 --train-batch 1 --steps 2
                                                                              # CPU, full size, fp32: peak RSS

Builds SD 1.5's UNet, VAE and text encoder from their published configs (written out below), adds LoRA
rank 4 on the attention projections with gradient checkpointing, and runs the real trainer (`rlft.train`)
for a warm-up epoch and a measured one: sampling with log-probs (DDIM eta 1, CFG), a stub reward, and
DDPO updates over every recorded timestep. Reports peak GPU memory of the DDPO epoch (target < 10 GB),
sampling images/s and training samples/s. Needs only torch, diffusers, peft, accelerate, transformers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406,
                 eos_token_id=49407, pad_token_id=49407)


def build_pipeline(tiny: bool, device: str, dtype):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from rlft.models.tiny import tiny_pipeline
    from rlft.models.tokenizer import clip_tokenizer, use_ftfy_tokenizer

    if tiny:
        pipe = tiny_pipeline(0)
    else:
        torch.manual_seed(0)
        pipe = StableDiffusionPipeline(
            unet=UNet2DConditionModel(**SD15_UNET), vae=AutoencoderKL(**SD15_VAE),
            text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT)), tokenizer=clip_tokenizer(),
            scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                    set_alpha_to_one=False, steps_offset=1),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        use_ftfy_tokenizer(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", help="where to write the JSON result")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test with the tiny random pipeline")
    ap.add_argument("--samples", type=int, default=8, help="images sampled per epoch")
    ap.add_argument("--sample-batch", type=int, default=8)
    ap.add_argument("--train-batch", type=int, default=2, help="samples per gradient micro-batch (x2 through the UNet for CFG)")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps (ddpo-pytorch uses 50; time scales linearly)")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--precision", default="bf16", choices=["no", "fp16", "bf16"])
    args = ap.parse_args()

    import torch

    from rlft.train.config import TrainConfig
    from rlft.train.trainer import Trainer

    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.precision) if cuda else None
    t0 = time.perf_counter()
    pipe = build_pipeline(args.tiny, device, half or torch.float32)
    build_s = time.perf_counter() - t0
    n_unet = sum(p.numel() for p in pipe.unet.parameters())
    config = TrainConfig.sd(
        epochs=2, checkpoint_every=100, heldout_member=False,
        sample={"steps": args.steps if not args.tiny else 2, "batch_size": args.sample_batch, "samples_per_epoch": args.samples,
                "guidance": 5.0},
        lora={"rank": args.rank, "alpha": float(args.rank)},
        optim={"train_batch_size": args.train_batch, "gradient_accumulation_steps": 1, "mixed_precision": args.precision if cuda else "no",
               "gradient_checkpointing": True},
    )

    def stub_reward(images, prompts, metadata):  # brightness: cheap, and differentiable like a CLIP reward
        return images.mean(dim=(1, 2, 3)), {}

    trainer = Trainer(pipe, config, prompts=["a photo of a cat", "a painting of a city at night"], reward_fn=stub_reward)
    n_lora = sum(p.numel() for p in trainer.params)

    def timed_epoch():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        prompts = ["a photo of a cat"] * args.samples
        trainer.sample(prompts, list(range(args.samples)))
        if cuda:
            torch.cuda.synchronize()
        sample_s = time.perf_counter() - t
        sample_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        metrics = trainer.run_epoch()  # samples again, then trains: the DDPO step whose memory is the target
        if cuda:
            torch.cuda.synchronize()
        epoch_s = time.perf_counter() - t
        return sample_s, sample_peak, epoch_s, (torch.cuda.max_memory_allocated() / 2**30 if cuda else None), metrics

    timed_epoch()  # warm-up (kernels, allocator)
    sample_s, sample_peak, epoch_s, epoch_peak, metrics = timed_epoch()
    train_s = max(epoch_s - sample_s, 1e-9)
    result = {
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()})",
        "tiny": args.tiny, "resolution": pipe.unet.config.sample_size * pipe.vae_scale_factor,
        "unet_params_m": round(n_unet / 1e6, 1), "lora_params_m": round(n_lora / 1e6, 3), "lora_rank": args.rank,
        "precision": args.precision if cuda else "fp32", "gradient_checkpointing": True,
        "ddim_steps": config.sample.steps, "cfg": config.sample.guidance, "samples": args.samples,
        "train_batch": args.train_batch,
        "peak_mem_gb_sampling": None if sample_peak is None else round(sample_peak, 2),
        "peak_mem_gb_ddpo_epoch": None if epoch_peak is None else round(epoch_peak, 2),
        "target_peak_mem_gb": 10.0,
        "meets_target": None if epoch_peak is None else epoch_peak < 10.0,
        "sampling_images_per_s": round(args.samples / sample_s, 3),
        "training_samples_per_s": round(args.samples / train_s, 3),
        "epoch_images_per_s": round(args.samples / epoch_s, 3),
        "epoch_s": round(epoch_s, 2), "build_s": round(build_s, 1),
        "loss": metrics.get("loss"), "clipfrac": metrics.get("clipfrac"),
        # on CPU there is no allocator peak: the process's peak resident memory (fp32 weights, build and both
        # epochs included) stands in, an upper bound on what the same step holds, not the GPU target's number
        "peak_rss_gb_process": None if cuda else round(_peak_rss_gb(), 2),
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
