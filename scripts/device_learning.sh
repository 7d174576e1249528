#!/usr/bin/env bash
# On a GPU machine: the synchronous (max_policy_lag=0) and the asynchronous (max_policy_lag=1, V-trace) run
# of configs/montezuma.yaml side by side, sharing the GPU and the cores, for MINUTES of wall time each; then
# the table of return and rooms against agent steps, over the steps both runs reached (scripts/compare_runs.py).
# Side by side, both see the same machine for the same time.
# Usage: bash scripts/device_learning.sh [MINUTES] [ACTORS_EACH]      (defaults: 7 minutes, 7 actors each)
# The machine needs no network: the packages a bare GPU image lacks are installed from .whl/, copied in
# beside the repo (scripts/fetch_device_wheels.sh makes it). With the install and the clean stop it ends
# within MINUTES + 1.5 minutes.
# Everything it keeps is under $OUT (default /tmp/out): learning.md, each run's metrics.csv, episodes.jsonl and log.
# A dry run on a CPU machine where the packages are installed (the wheels are then not used):
#   CONFIG=configs/smoke.yaml GPU=-1 OUT=/tmp/out bash scripts/device_learning.sh 1 1
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/device_env.sh
out=${OUT:-/tmp/out}; mkdir -p "$out"
minutes=${1:-7}; actors=${2:-7}
runs=/tmp/learning_runs; rm -rf "$runs"
for lag in 0 1; do
  # SIGTERM makes launch.py finish its update, checkpoint and stop its actors; -k kills it if that hangs.
  # --foreground: one TERM to launch.py only (a second one would interrupt its clean stop)
  PYTHONUNBUFFERED=1 timeout --foreground -s TERM -k 30 "${minutes}m" python3 launch.py --config "${CONFIG:-configs/montezuma.yaml}" \
    --actors "$actors" --learner-gpu "${GPU:-0}" \
    --run-dir "$runs/lag$lag" max_policy_lag=$lag >"$out/lag${lag}_launch.log" 2>&1 &
done
wait
for lag in 0 1; do
  cp "$runs/lag$lag/metrics.csv" "$out/lag${lag}_metrics.csv"
  cp "$runs/lag$lag/episodes.jsonl" "$out/lag${lag}_episodes.jsonl"
done
python3 scripts/compare_runs.py "$runs/lag0" "$runs/lag1" --labels sync,async --markdown "$out/learning.md"
