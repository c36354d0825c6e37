#!/usr/bin/env bash
# How the shipped toy-world weights were made on a lent GPU machine (see rlft/assets/toy/MODEL_CARD.md).
# The same `rlft toy pretrain` runs on CPU; this wrapper only installs the pure-Python wheels that machine
# lacks, bounds the wall time, evaluates, and packs the result into $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_MININTERVAL=20
nvidia-smi -L
OUTDIR=/tmp/toy
python3 -m rlft toy pretrain --out $OUTDIR --device cuda --deadline-min "${DEADLINE_MIN:-7.2}" 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" | tail -40
cp $OUTDIR/*.json $OUT/ 2>/dev/null
python3 tools/device_eval.py $OUTDIR $OUT/metrics.json 2>&1 | tail -20
tar -C $OUTDIR -cf - clip pipeline clip.log.jsonl vae.log.jsonl unet.log.jsonl | split -b 15M - $OUT/toy.tar.part-
ls -la $OUT
