#!/usr/bin/env bash
# Stage 1b on a lent GPU: LiT fine-tuning of the shipped toy CLIP's image tower (text tower frozen, so the
# pipeline's text encoder is unchanged), then the SD 1.5-size DDPO memory benchmark.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_MININTERVAL=20
nvidia-smi -L
python3 - <<'PY' 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" | tail -8
import time, torch
from pathlib import Path
from rlft.toy.pretrain import PretrainConfig, WorldData, finetune_vision, load_clip_folder
cfg = PretrainConfig()
cfg.vision.steps = 600
t = time.time()
data = WorldData(cfg.dataset_size, cfg.seed)
clip = load_clip_folder(Path("rlft/assets/toy/clip"), "cuda")
finetune_vision(cfg, data, clip, Path("/tmp/vis"), torch.device("cuda"), deadline=time.time() + float("${VISION_S:-170}"))
print("vision stage", round(time.time() - t, 1), "s")
PY
cp /tmp/vis/clip/* /tmp/vis/clip_vision.log.jsonl $OUT/ 2>/dev/null  # evaluated afterwards by bench/bench_toy.py
[ -f bench/gpu_sd15_ddpo.py ] && timeout "${SD15_S:-150}" python3 bench/gpu_sd15_ddpo.py $OUT/gpu_sd15_ddpo.json 2>&1 | tail -15
ls -la $OUT
