"""Quick quality read-out after a lent-machine pretraining run (the full benchmark is bench/bench_toy.py)."""

import json
import os
import sys
import time
from pathlib import Path

import open_clip
import torch
from diffusers import StableDiffusionPipeline

from rlft.toy import evaluate
from rlft.toy.pretrain import load_clip_folder

folder, dest = Path(sys.argv[1]), Path(sys.argv[2])
dev = "cuda" if torch.cuda.is_available() else "cpu"
pipe = StableDiffusionPipeline.from_pretrained(folder / "pipeline", dtype=torch.float32).to(dev)
pipe.set_progress_bar_config(disable=True)
zs = evaluate.ZeroShot(load_clip_folder(folder / "clip", dev), open_clip.tokenizer.SimpleTokenizer(context_length=77), dev)
result = {"clip_zero_shot": evaluate.clip_zero_shot(zs)}
N = int(sys.argv[3]) if len(sys.argv) > 3 else 200
for g in [float(x) for x in os.environ.get("GUIDANCES", "2,3,5").split(",")]:
    t = time.time()
    result[f"generation_cfg{g}"] = evaluate.generation_adherence(pipe, zs, n=N, guidance=g)[0]
    print(g, result[f"generation_cfg{g}"], round(time.time() - t, 1), flush=True)
print(json.dumps(result, indent=1))
dest.write_text(json.dumps(result, indent=1))
