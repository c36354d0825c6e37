"""Benchmark the shipped toy world against the toy-world issue's targets; writes bench/results/toy.json.

    .venv/bin/python bench/bench_toy.py [--n 200] [--no-pretrain-estimate] [--grid docs/toy-samples.png]
    .venv/bin/python bench/bench_toy.py --assets /work/pretrain-cpu --out bench/results/toy-cpu.json   # a pretrain run

`--assets DIR` judges the `clip/` and `pipeline/` of a `rlft toy pretrain --out DIR` folder instead of the
shipped ones; when that run was made on a CPU its `timings.json` is reported as the measured wall time.

Measures: the toy CLIP's zero-shot accuracy on drawn world images; prompt adherence of generated images on
200 held-out captions (pixel checker + CLIP zero-shot shape); the wall time of 8 images at 20 DDIM steps
with CFG; the shipped size; and an estimate of CPU pretraining time from measured seconds per step.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {
    "generation.background": 0.90,
    "generation.color": 0.85,
    "generation.size": 0.70,
    "generation.position": 0.70,
    "generation.shape": 0.60,
    "clip_zero_shot.color": 0.95,
    "clip_zero_shot.shape": 0.85,
}


def sample_grid(pipe, dest: Path, guidance: float) -> None:
    from PIL import Image, ImageDraw

    prompts = [
        "a large red circle on a blue background",
        "a small yellow star on a black background at the top",
        "a medium green triangle on a white background on the left",
        "a large purple ring on an orange background",
        "a medium blue square on a yellow background at the bottom",
        "a small white circle on a purple background on the right",
    ]
    n, scale, label_w = 6, 2, 420
    cell = 64 * scale
    grid = Image.new("RGB", (label_w + n * cell, len(prompts) * cell), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, p in enumerate(prompts):
        gens = [torch.Generator("cpu").manual_seed(s) for s in range(n)]
        imgs = pipe([p] * n, num_inference_steps=20, guidance_scale=guidance, generator=gens).images
        draw.text((8, r * cell + cell // 2 - 6), p, fill=(0, 0, 0))
        for c, im in enumerate(imgs):
            grid.paste(im.resize((cell, cell), Image.Resampling.NEAREST), (label_w + c * cell, r * cell))
    dest.parent.mkdir(parents=True, exist_ok=True)
    grid.save(dest)


def seconds_per_step(n_steps: int = 3) -> dict:
    """CPU seconds per training step of each pretraining stage at the shipped batch sizes."""
    import tempfile

    from rlft.toy.convert import text_model_from_open_clip
    from rlft.toy.pretrain import (
        PretrainConfig,
        WorldData,
        finetune_vision,
        load_clip_folder,
        train_clip,
        train_unet,
        train_vae,
    )

    cfg = PretrainConfig()
    data = WorldData(2048, 0)
    out = {}
    dev = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("clip", "vision", "vae", "unet"):
            c = PretrainConfig()
            getattr(c, name).stop_at = n_steps
            getattr(c, name).steps = getattr(cfg, name).steps
            t = time.perf_counter()
            if name == "clip":
                train_clip(c, data, Path(tmp) / name, dev)
            elif name == "vision":
                finetune_vision(c, data, load_clip_folder(ROOT / "rlft" / "assets" / "toy" / "clip"), Path(tmp) / name, dev)
            elif name == "vae":
                vae = train_vae(c, data, Path(tmp) / name, dev)
            else:
                te = text_model_from_open_clip(load_clip_folder(ROOT / "rlft" / "assets" / "toy" / "clip"))
                train_unet(c, data, te, vae, Path(tmp) / name, dev)
            out[name] = (time.perf_counter() - t) / n_steps
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--no-pretrain-estimate", action="store_true")
    ap.add_argument("--grid", default=str(ROOT / "docs" / "toy-samples.png"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "toy.json"))
    ap.add_argument("--assets", default=str(ROOT / "rlft" / "assets" / "toy"), help="folder with clip/ and pipeline/")
    args = ap.parse_args()
    assets = Path(args.assets)

    from rlft.models.clip import load_clip
    from rlft.models.pipeline import load_pipeline
    from rlft.toy import evaluate
    from rlft.toy.pretrain import PretrainConfig

    t = time.perf_counter()
    pipe = load_pipeline(str(assets / "pipeline"), device="cpu")
    load_s = time.perf_counter() - t
    pipe.set_progress_bar_config(disable=True)
    clip, _, tok = load_clip(str(assets / "clip"))
    zs = evaluate.ZeroShot(clip, tok)

    result: dict = {"assets": str(assets), "device": "cpu", "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    result["clip_zero_shot"] = evaluate.clip_zero_shot(zs, n=1000)
    print("clip zero-shot", result["clip_zero_shot"], flush=True)
    t = time.perf_counter()
    result["generation"], _ = evaluate.generation_adherence(pipe, zs, n=args.n, guidance=args.guidance)
    result["generation_settings"] = {"n": args.n, "steps": 20, "guidance": args.guidance, "scheduler": "DDIM", "seeds": f"0..{args.n - 1}"}
    print("generation", result["generation"], f"{time.perf_counter() - t:.0f}s", flush=True)
    result["time_8_images_20_steps_cfg_s"] = evaluate.time_generation(pipe, 8, 20, args.guidance)
    result["pipeline_load_s"] = load_s
    shipped = [assets / "clip", assets / "pipeline"] + [assets / n for n in ("MODEL_CARD.md", "pretrain_config.json", "timings.json", "logs")]
    result["shipped_bytes"] = sum(p.stat().st_size for d in shipped if d.exists() for p in ([d] if d.is_file() else d.rglob("*")) if p.is_file())
    sample_grid(pipe, Path(args.grid), args.guidance)

    timings = json.loads((assets / "timings.json").read_text()) if (assets / "timings.json").exists() else {}
    if timings.get("device") == "cpu":
        stage_s = {k: v for k, v in timings.items() if k.endswith("_s")}
        result["cpu_pretrain_measured"] = {"preset": timings.get("preset"), "stage_seconds": stage_s,
                                           "hours": sum(stage_s.values()) / 3600, "target_hours": 3.0}
        print("cpu pretraining, measured", result["cpu_pretrain_measured"], flush=True)
    elif not args.no_pretrain_estimate:
        sps = seconds_per_step()
        cfg = PretrainConfig()
        steps = {"clip": cfg.clip.stop_at, "vision": cfg.vision.stop_at or cfg.vision.steps, "vae": cfg.vae.stop_at, "unet": cfg.unet.stop_at}
        est = {k: sps[k] * steps[k] for k in sps}
        result["cpu_pretrain_estimate"] = {
            "seconds_per_step": sps,
            "steps": steps,
            "estimated_hours": sum(est.values()) / 3600,
            "target_hours": 3.0,
        }
        print("cpu pretraining estimate", result["cpu_pretrain_estimate"], flush=True)

    checks = {}
    for key, target in TARGETS.items():
        group, attr = key.split(".")
        checks[key] = {"target": target, "measured": result[group][attr], "met": result[group][attr] >= target}
    checks["time_8_images_20_steps_cfg_s"] = {"target": 3.0, "measured": result["time_8_images_20_steps_cfg_s"], "met": result["time_8_images_20_steps_cfg_s"] < 3.0}
    if "cpu_pretrain_measured" in result:
        h = result["cpu_pretrain_measured"]["hours"]
        checks["cpu_pretrain_hours"] = {"target": 3.0, "measured": h, "met": h <= 3.0}
    checks["shipped_bytes"] = {"target": 40_000_000, "measured": result["shipped_bytes"], "met": result["shipped_bytes"] <= 40_000_000}
    result["checks"] = checks
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for k, v in checks.items():
        print(f"{'ok  ' if v['met'] else 'MISS'} {k}: {v['measured']:.4g} (target {v['target']})")


if __name__ == "__main__":
    main()
