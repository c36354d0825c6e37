#!/usr/bin/env bash
# The benchmarks that need a GPU, run on the machine this script runs on: peak GPU memory and throughput of a
# DDPO epoch on an SD 1.5-size model (bench/gpu_sd15_ddpo.py), and peak GPU memory of a ddpo and a dpo step and
# sampling images/s on an SDXL-base-size model at 1024 px (bench/gpu_sdxl.py), and scoring images/s of the built-in
# rewards pickscore and hpsv2 at batch 32, 512 px, bf16 (bench/gpu_rewards.py); random weights built from the
# models' published configs, nothing is downloaded. The CPU benchmarks are `make bench`.
#
#   tools/gpu_bench.sh                       # -> bench/results/gpu_sd15_ddpo.json, gpu_sdxl.json, gpu_rewards.json
#   tools/gpu_bench.sh /tmp/results          # -> /tmp/results/gpu_sd15_ddpo.json, ...
#   PYTHON=python3 GPU_BENCH_TIMEOUT=600 tools/gpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
DEST=${1:-bench/results}

"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to torch: tools/gpu_bench.sh needs one")'
command -v nvidia-smi >/dev/null && nvidia-smi -L
mkdir -p "$DEST"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
timeout "${GPU_BENCH_TIMEOUT:-900}" "$PYTHON" bench/gpu_sd15_ddpo.py "$DEST/gpu_sd15_ddpo.json"
echo "wrote $DEST/gpu_sd15_ddpo.json"
timeout "${GPU_BENCH_TIMEOUT:-900}" "$PYTHON" bench/gpu_sdxl.py "$DEST/gpu_sdxl.json"
echo "wrote $DEST/gpu_sdxl.json"
timeout "${GPU_BENCH_TIMEOUT:-900}" "$PYTHON" bench/gpu_rewards.py "$DEST/gpu_rewards.json"
echo "wrote $DEST/gpu_rewards.json"
