"""Scoring throughput of the built-in rewards `pickscore` and `hpsv2` on full-size models with random weights (no
download).

    python bench/gpu_rewards.py bench/results/gpu_rewards.json    # on a CUDA GPU: batch 32, 512 px, bf16 (tools/gpu_bench.sh)
    python bench/gpu_rewards.py /tmp/smoke.json --dry-run          # CPU smoke test of this script on tiny configs

Builds PickScore v1's transformers `CLIPModel` (CLIP ViT-H/14: laion/CLIP-ViT-H-14-laion2B-s32B-b79K's config,
written out below) and HPS v2.1's open_clip `ViT-H-14` from their configs, casts them to bf16 and scores batches
of 512 x 512 images in [0, 1] with prompts through `reward.builtins` (`PickScore.score`, `HPSv2.score`: the
differentiable tensor preprocessing to 224 px, both towers, the scores) under `torch.no_grad`. Reports images per
second (median of the timed batches) and peak GPU memory per reward. Without CUDA it refuses in one line (exit 2)
unless `--dry-run`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# laion/CLIP-ViT-H-14-laion2B-s32B-b79K config.json (PickScore v1 fine-tunes it; same architecture)
PICKSCORE_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                      num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", bos_token_id=49406,
                      eos_token_id=49407, pad_token_id=1)
PICKSCORE_VISION = dict(image_size=224, patch_size=14, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                        num_attention_heads=16, hidden_act="gelu")
PICKSCORE_PROJECTION = 1024
TINY_TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
TINY_VISION = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                   num_attention_heads=2)
TINY_HPS = "tiny-ViT-H-14-bench"
PROMPTS = ["a photo of a cat on a sofa", "a watercolour of a lighthouse at dusk", "an astronaut riding a horse",
           "a bowl of ramen, studio lighting"]


def build_pickscore(dry: bool, device: str, dtype):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from reward.builtins import PickScore
    from reward.clip import OPENAI_MEAN, OPENAI_STD
    from rlft.models.tokenizer import plain_clip_tokenizer

    text, vision = (TINY_TEXT, TINY_VISION) if dry else (PICKSCORE_TEXT, PICKSCORE_VISION)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16 if dry else PICKSCORE_PROJECTION)
    torch.manual_seed(0)
    model = CLIPModel(config).to(device, dtype)
    size = vision["image_size"]
    processor = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                                 image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD)),
                              plain_clip_tokenizer())
    return PickScore("pickscore", model, processor, "random weights (CLIP ViT-H/14 config)", "in memory", None, device)


def build_hpsv2(dry: bool, device: str, dtype):
    import open_clip
    import torch

    from reward.builtins import HPSv2

    arch = "ViT-H-14"
    if dry:
        import tempfile

        cfg = json.loads((open_clip.factory._MODEL_CONFIG_PATHS[0] / "ViT-H-14.json").read_text())
        cfg["embed_dim"] = 16
        cfg["vision_cfg"].update(image_size=28, layers=2, width=32, head_width=16, patch_size=14)
        cfg["text_cfg"].update(width=32, heads=2, layers=2)
        path = Path(tempfile.mkdtemp()) / f"{TINY_HPS}.json"
        path.write_text(json.dumps(cfg))
        open_clip.add_model_config(path)
        arch = TINY_HPS
    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None, device=device).to(dtype)
    return HPSv2("hpsv2", model, open_clip.get_tokenizer(arch), arch, "random weights", None, device)


def measure(reward, batch: int, size: int, iters: int, warmup: int, device: str) -> dict:
    import torch

    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    cuda = device.startswith("cuda")
    times = []
    with torch.no_grad():
        for i in range(warmup + iters):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            scores = reward.score(x, prompts)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in reward.model.parameters())
    out = {"params": params, "batch": batch, "size": size, "iters": iters, "median_batch_s": statistics.median(times),
           "images_per_s": batch / statistics.median(times), "score_mean": float(scores.float().mean()),
           "finite": bool(torch.isfinite(scores).all())}
    if cuda:
        out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="bench/results/gpu_rewards.json", help="Where the JSON goes.")
    parser.add_argument("--dry-run", action="store_true", help="Tiny configs on the CPU: a smoke test of this script.")
    parser.add_argument("--batch", type=int, default=None, help="Images per batch [32; dry run 2].")
    parser.add_argument("--size", type=int, default=None, help="Image side in pixels [512; dry run 64].")
    parser.add_argument("--iters", type=int, default=None, help="Timed batches [20; dry run 1].")
    parser.add_argument("--rewards", default="pickscore,hpsv2", help="Comma-separated: pickscore, hpsv2.")
    args = parser.parse_args(argv)
    import torch

    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("bench/gpu_rewards.py needs a CUDA GPU (or --dry-run for the CPU smoke test)", file=sys.stderr)
        return 2
    device, dtype = ("cpu", torch.float32) if dry else ("cuda", torch.bfloat16)
    batch, size = args.batch or (2 if dry else 32), args.size or (64 if dry else 512)
    iters, warmup = args.iters or (1 if dry else 20), 1 if dry else 3
    builders = {"pickscore": build_pickscore, "hpsv2": build_hpsv2}
    names = [n.strip() for n in args.rewards.split(",") if n.strip()]
    unknown = [n for n in names if n not in builders]
    if unknown:
        print(f"unknown reward {unknown[0]!r}; choose from {', '.join(builders)}", file=sys.stderr)
        return 2
    results = {}
    for name in names:
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        reward = builders[name](dry, device, dtype)
        results[name] = measure(reward, batch, size, iters, warmup, device)
        print(f"{name}: {results[name]['images_per_s']:.1f} images/s at batch {batch}, {size} px"
              + (f", peak {results[name]['peak_mem_gb']} GB" if "peak_mem_gb" in results[name] else ""))
        del reward
    report = {"what": "built-in reward scoring throughput (random weights, full-size configs)" if not dry
              else "dry run on tiny configs (CPU)", "dtype": str(dtype).removeprefix("torch."), "device": device,
              "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "torch": torch.__version__,
              "python": platform.python_version(), "rewards": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
