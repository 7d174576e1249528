#!/usr/bin/env bash
# One device call: install the carried wheels, run the GPU-marked tests, then bench.py on the GPU.
# Usage (device tool): carry [".whl"], command "bash scripts/device_check.sh [ACTORS] [SECONDS]".
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/device_env.sh
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python3 -m pytest -q -m gpu tests 2>&1 | tee "$out/gpu_tests.log"
PYTHONUNBUFFERED=1 python3 bench.py --actors "${1:-15}" --learner-gpu 0 --seconds "${2:-30}" \
  --json "$out/bench_h100.json" 2>&1 | grep -v "Sending Reset" | tee "$out/bench.log"
