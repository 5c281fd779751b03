#!/usr/bin/env bash
# The GPU checks of issue 13 in one short run, for a machine with a CUDA device and a
# CUDA build of torch (this project's CI and development box have neither):
#   1. the gpu-marked tests (CUDA scores against CPU, CUDA graphs against eager, bf16
#      within its tolerance, pinned host buffers);
#   2. scoring throughput of the paper model against the GPU's own matmul bound, fp32 and
#      bf16 (target >= 500,000 windows/s in bf16 on an H100/H200-class GPU);
#   3. replay throughput on the GPU (target >= 125,000 readings/s).
# Figures go to $OUT (default .run/gpu) as JSON, one file per benchmark.
# About 5 minutes; run it from the repository root with the project's environment active.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-.run/gpu}"
mkdir -p "$OUT"
python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

echo "== gpu-marked tests"
python -m pytest -m gpu tests -q -p no:cacheprovider 2>&1 | tee "$OUT/tests.txt"

echo "== scoring: paper model, fp32 and bf16, against the GPU's bound"
python scripts/bench_scoring.py --device cuda --json "$OUT/scoring_fp32.json"
python scripts/bench_scoring.py --device cuda --precision bf16 --json "$OUT/scoring_bf16.json"

echo "== replay on the GPU (paper model)"
python scripts/bench_replay.py --only model --device cuda --precision bf16 \
  --turbines 8 --paper-days 2 --json "$OUT/replay_bf16.json"
