#!/usr/bin/env bash
# On a lent GPU: the SD 1.5-size DDPO memory benchmark (random weights built from the SD 1.5 UNet config).
# Carry `.whl` (py3.12 wheels of diffusers, open_clip_torch, ftfy, ... for the device's python).
#   SD15_S=300 tools/device_sd15.sh     -> $OUT/gpu_sd15_ddpo.json, copied to bench/results/ afterwards
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_MININTERVAL=20
nvidia-smi -L
timeout "${SD15_S:-300}" python3 bench/gpu_sd15_ddpo.py $OUT/gpu_sd15_ddpo.json 2>&1 | tail -15
ls -la $OUT
