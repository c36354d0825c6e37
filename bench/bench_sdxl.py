"""Benchmark: the tiny SDXL pipeline's generation and training epochs beside the tiny SD 1.x pipeline's, on the CPU
it runs on.

Both are built in code with the same UNet levels (32, 64 channels, one ResNet per level) at 64x64 pixels, so
the ratio of their times is the cost of SDXL's plumbing: a second text encoder, micro-conditioning and the added
embedding. Each is timed end to end (`rlft.models.generate.generate`: prompts to PNG files, DDIM, CFG on), in
parts through the model adapter (prompt encoding, one guided UNet call), and as one training epoch of each
algorithm (`Trainer.run_epoch`: ddpo, rwr and dpo with the toy world's settings, a brightness reward, 8 samples of
10 DDIM steps or 8 judged pairs, LoRA on the UNet). Runs are interleaved and repeated, and the fastest of each is
kept: on a shared CPU the minimum is the least disturbed measurement. Writes bench/results/sdxl.json.

    .venv/bin/python bench/bench_sdxl.py [--images 16] [--steps 20] [--repeats 5] [--epoch-repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = ["a red circle on a blue background", "a green square in the top left corner"]


def params(module) -> int:
    return sum(p.numel() for p in module.parameters())


EPOCH = {"sample": {"steps": 10, "samples_per_epoch": 8, "batch_size": 8, "images_per_prompt": 4},
         "optim": {"train_batch_size": 8}, "dpo": {"pairs_per_epoch": 8}}


def time_epochs(builders: dict, repeats: int) -> dict:
    """The fastest of `repeats` training epochs (after one warm-up) of each algorithm on each pipeline, interleaved."""
    import torch
    from PIL import Image

    from rlft.train.config import TrainConfig
    from rlft.train.trainer import Trainer

    def brightness(images, prompts, metadata):
        return images.mean(dim=(1, 2, 3)), {}

    colours = [(230, 30, 30), (30, 30, 230), (30, 200, 30), (220, 220, 40)]
    pairs = [(Image.new("RGB", (64, 64), colours[i % 4]), Image.new("RGB", (64, 64), colours[(i + 1) % 4]), PROMPTS[i % 2])
             for i in range(8)]
    times: dict = {}
    for algo in ("ddpo", "rwr", "dpo"):
        trainers = {name: Trainer(build(seed=0), TrainConfig.toy(algo=algo, epochs=10_000, **EPOCH), prompts=PROMPTS,
                                  reward_fn=brightness, judgements=pairs) for name, build in builders.items()}
        for tr in trainers.values():
            tr.run_epoch()  # warm-up
        times[algo] = {name: [] for name in trainers}
        for _ in range(repeats):
            for name, tr in trainers.items():
                t = time.perf_counter()
                tr.run_epoch()
                times[algo][name].append(time.perf_counter() - t)
        del trainers
        torch.manual_seed(0)
    return {algo: {name: min(v) for name, v in per.items()} for algo, per in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16, help="images per timed generate run")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each (the fastest is kept)")
    ap.add_argument("--epoch-repeats", type=int, default=3, help="timed training epochs of each algorithm and model")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: least disturbed by neighbours)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sdxl.json"))
    args = ap.parse_args()

    import torch

    from rlft import load_pipeline
    from rlft.models.adapters import adapter_for
    from rlft.models.generate import generate
    from rlft.models.pipeline import quiet_libraries
    from rlft.models.tiny import tiny_pipeline, tiny_sdxl_pipeline

    quiet_libraries()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    builders = {"sd1": tiny_pipeline, "sdxl": tiny_sdxl_pipeline}
    sizes, pipes, load_s = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="rlft-bench-sdxl-") as tmp:
        tmp = Path(tmp)
        for name, build in builders.items():
            pipe = build(seed=0)
            sizes[name] = {part: params(getattr(pipe, part)) for part in ("unet", "vae", "text_encoder", "text_encoder_2")
                           if getattr(pipe, part, None) is not None}
            pipe.save_pretrained(tmp / name)
            t = time.perf_counter()
            pipes[name] = load_pipeline(tmp / name, device="cpu", scheduler="ddim")
            load_s[name] = time.perf_counter() - t
            generate(pipes[name], ["warm up"], n=2, seed=0, steps=2, batch_size=2, out_dir=tmp / "warm", progress=False)

        n = max(1, args.images // len(PROMPTS))
        end_to_end = {name: [] for name in pipes}
        encode = {name: [] for name in pipes}
        unet_call = {name: [] for name in pipes}
        for r in range(args.repeats):
            for name, pipe in pipes.items():  # interleaved, so a busy moment hits both alike
                t = time.perf_counter()
                records = generate(pipe, PROMPTS, n=n, seed=1, steps=args.steps, guidance=7.5,
                                   batch_size=args.batch_size, out_dir=tmp / f"{name}-{r}", progress=False)
                end_to_end[name].append((time.perf_counter() - t) / len(records))
                adapter = adapter_for(pipe)
                prompts = PROMPTS * (args.batch_size // len(PROMPTS))
                with torch.inference_mode():
                    t = time.perf_counter()
                    cond = adapter.encode_prompt(prompts, 7.5, None)
                    encode[name].append(time.perf_counter() - t)
                    x = torch.randn(len(prompts), 4, 8, 8, generator=torch.Generator().manual_seed(0))
                    t = time.perf_counter()
                    for _ in range(10):
                        adapter.predict_noise(pipe.unet, x, torch.tensor(500), cond, 7.5)
                    unet_call[name].append((time.perf_counter() - t) / 10)

    epochs = time_epochs(builders, args.epoch_repeats)

    def best(values):
        return min(values)

    per_image = {name: best(v) for name, v in end_to_end.items()}
    result = {
        "benchmark": "sdxl",
        "setup": {
            "models": {"sd1": "rlft.models.tiny.tiny_pipeline", "sdxl": "rlft.models.tiny.tiny_sdxl_pipeline"},
            "params": sizes, "size": "64x64", "steps": args.steps, "scheduler": "DDIM", "cfg_scale": 7.5,
            "batch_size": args.batch_size, "images_per_run": n * len(PROMPTS), "repeats": args.repeats,
            "threads": args.threads, "statistic": "fastest of the repeats", "png_written": True,
        },
        "machine": {
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "load_s": {name: round(v, 3) for name, v in load_s.items()},
        "generate": {
            "seconds_per_image": {name: round(v, 4) for name, v in per_image.items()},
            "images_per_s": {name: round(1 / v, 2) for name, v in per_image.items()},
            "ratio_sdxl_over_sd1": round(per_image["sdxl"] / per_image["sd1"], 3),
        },
        "parts_ms": {
            "encode_prompt_batch": {name: round(best(v) * 1000, 2) for name, v in encode.items()},
            "guided_unet_call_batch": {name: round(best(v) * 1000, 2) for name, v in unet_call.items()},
            "ratio_sdxl_over_sd1": {
                "encode_prompt": round(best(encode["sdxl"]) / best(encode["sd1"]), 3),
                "guided_unet_call": round(best(unet_call["sdxl"]) / best(unet_call["sd1"]), 3),
            },
        },
        "train_epoch": {
            "setup": {**EPOCH, "config": "TrainConfig.toy(algo=...)", "reward": "mean brightness (no CLIP)",
                      "dpo_pairs": "8 pairs of 64x64 images", "repeats": args.epoch_repeats, "warm_up_epochs": 1,
                      "statistic": "fastest of the repeats"},
            "seconds": {algo: {name: round(v, 3) for name, v in per.items()} for algo, per in epochs.items()},
            "ratio_sdxl_over_sd1": {algo: round(per["sdxl"] / per["sd1"], 3) for algo, per in epochs.items()},
        },
        "gpu": {
            "measured": False,
            "why": "no GPU was available; bench/gpu_sdxl.py (run by tools/gpu_bench.sh) measures a ddpo and a dpo step's "
                   "peak memory and sampling images/s on an SDXL-base-size model at 1024 px, bf16, LoRA rank 4, "
                   "gradient checkpointing, into bench/results/gpu_sdxl.json",
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    from prefs.atomic import write_json

    write_json(args.out, result)
    g = result["generate"]
    print(f"wrote {args.out}: SD 1.x {g['images_per_s']['sd1']} img/s, SDXL {g['images_per_s']['sdxl']} img/s, "
          f"SDXL / SD 1.x time {g['ratio_sdxl_over_sd1']}; training epoch SDXL / SD 1.x time "
          f"{result['train_epoch']['ratio_sdxl_over_sd1']}", file=sys.stderr)


if __name__ == "__main__":
    main()
