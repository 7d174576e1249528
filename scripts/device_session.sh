#!/usr/bin/env bash
# The whole GPU check in one command that ends within BUDGET seconds (default 570):
#   1. the GPU-marked tests; if the learner's fail it stops there, leaving the GPU machine's time for a fix and
#      a second run (if only the actors' fails, it goes on without step 3);
#   2. bench.py --actors ACTORS --learner-gpu 0 --seconds SECONDS: the end-to-end async part first (the headline
#      figure, archived before anything else can cut it), then the other parts;
#   3. the same with the actors' policy step on the GPU (actor_device=cuda), the actor parts and e2e_async only;
#   4. the learner alone under fp32, bf16 autocast and bf16 + torch.compile (scripts/profile/learner_variants.py);
#   5. the sync and async Montezuma runs side by side (scripts/device_learning.sh), ACTORS/2 actors each, for
#      the time left.
# Everything goes into one archive, $OUT/device_session.tgz (OUT defaults to /tmp/out), rewritten after each
# step: a run stopped at a time limit still leaves the steps it finished, in the one file to copy back.
# Usage: bash scripts/device_session.sh [BUDGET] [ACTORS] [SECONDS]          (defaults: 570 15 20)
# The machine needs no network: the packages a bare GPU image lacks are installed from .whl/, copied in
# beside the repo (scripts/fetch_device_wheels.sh makes it). Under an outer wall-clock limit, give it at
# least BUDGET + 20 seconds.
# A dry run on the CPU (CONFIG and GPU are passed on to device_learning.sh too):
#   CONFIG=configs/smoke.yaml GPU=-1 OUT=/tmp/out bash scripts/device_session.sh 400 1 3
# The rehearsal every CI run makes (tests/test_device_scripts.py): every step at toy size on the CPU, the CUDA
# parts skipped, the wheel install checked for well-formed flags and skipped where the packages import:
#   REHEARSAL=1 OUT=/tmp/out bash scripts/device_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
rehearsal=${REHEARSAL:-0}
if [ "$rehearsal" = 1 ]; then export CONFIG=${CONFIG:-configs/smoke.yaml} GPU=-1; fi
config=${CONFIG:-configs/montezuma.yaml}; t0=$(date +%s); budget=${1:-570}; actors=${2:-15}; secs=${3:-20}
if [ "$rehearsal" = 1 ]; then budget=${1:-300}; actors=${2:-1}; secs=${3:-1}; fi
gpu=${GPU:-0}  # -1: a CPU dry run
final=${OUT:-/tmp/out}; work=/tmp/device_session; rm -rf "$work"; mkdir -p "$work" "$final"
pack() { tar czf "$final/device_session.tgz" -C "$work" .; echo "[$(( $(date +%s) - t0 )) s] $1"; }
left() { echo $(( budget - ($(date +%s) - t0) )); }
# seconds a step may take: what is left but RESERVE, at most MAX, at least 1 (timeout 0 would mean no limit)
secs_left_but() { local s=$(( $(left) - $1 )) max=${2:-86400}; (( s > max )) && s=$max; (( s < 1 )) && s=1; echo $s; }
source scripts/device_env.sh
{ nvidia-smi; lscpu | grep -i "model name"; nproc; git log -1 --format=%H 2>/dev/null
  python3 -c "import torch, ale_py, numpy; print('torch', torch.__version__, 'ale_py', ale_py.__version__, 'numpy', numpy.__version__)"
} >"$work/machine.txt" 2>&1
# the learner's GPU tests gate everything; the actors' GPU test gates only the GPU-actor bench (step 3)
actor_test=tests/test_gpu.py::test_actor_policy_step_on_cuda
timeout -k 10 150 python3 -m pytest -q -m gpu tests --deselect "$actor_test" >"$work/gpu_tests.log" 2>&1; rc=$?
timeout -k 10 60 python3 -m pytest -q -m gpu "$actor_test" >"$work/gpu_actor_test.log" 2>&1; actor_rc=$?
pack "gpu tests rc=$rc, actor test rc=$actor_rc"; tail -3 "$work/gpu_tests.log"; tail -3 "$work/gpu_actor_test.log"
if [ $rc -ne 0 ]; then tail -60 "$work/gpu_tests.log"; exit 1; fi
if [ $actor_rc -ne 0 ]; then tail -40 "$work/gpu_actor_test.log"; fi
# the bench may take all but 280 s on a GPU (200 s in a CPU dry run, which has no GPU-actor bench): the GPU-actor
# bench (120 s at most), the variants (120 s at most) and the learning step decide with what is left
reserve=$(( gpu >= 0 ? 280 : 200 )); [ "$rehearsal" = 1 ] && reserve=60
PYTHONUNBUFFERED=1 timeout -s TERM -k 20 $(secs_left_but $reserve) python3 bench.py --config "$config" --actors "$actors" \
  --learner-gpu "$gpu" --seconds "$secs" --skip actors_total,learner,e2e_sync --json "$work/bench_async.json" 2>&1 \
  | grep -v "Sending Reset" >"$work/bench_async.log"
pack "bench, end to end async"; tail -12 "$work/bench_async.log"
PYTHONUNBUFFERED=1 timeout -s TERM -k 20 $(secs_left_but $reserve) python3 bench.py --config "$config" --actors "$actors" \
  --learner-gpu "$gpu" --seconds "$secs" --skip e2e_async --json "$work/bench_gpu.json" 2>&1 | grep -v "Sending Reset" >"$work/bench.log"
pack "bench, the other parts"; tail -25 "$work/bench.log"
if [ "$gpu" -ge 0 ] && [ $actor_rc -eq 0 ]; then  # a CPU dry run has no GPU to put the actors' policy on
  PYTHONUNBUFFERED=1 timeout -s TERM -k 20 $(secs_left_but 160 120) python3 bench.py \
    --config "$config" --actors "$actors" --learner-gpu "$gpu" --seconds "$(( secs * 3 / 4 ))" \
    --skip learner,e2e_sync --json "$work/bench_gpu_actor_cuda.json" actor_device=cuda 2>&1 \
    | grep -v "Sending Reset" >"$work/bench_actor_cuda.log"
  pack "bench, actors' policy on the GPU"; tail -16 "$work/bench_actor_cuda.log"
fi
PYTHONUNBUFFERED=1 timeout -s TERM -k 10 $(secs_left_but 40 120) python3 scripts/profile/learner_variants.py --config "$config" --seconds $(( rehearsal == 1 ? 1 : 6 )) \
  --json "$work/learner_variants.json" >"$work/learner_variants.log" 2>&1
pack "learner variants"; tail -4 "$work/learner_variants.log"
minutes=$(python3 -c "print(round(($(left) - 60) / 60, 2))")
least=$([ "$rehearsal" = 1 ] && echo 0.3 || echo 1.5)
if python3 -c "import sys; sys.exit(0 if $minutes >= $least else 1)"; then
  OUT="$work/learning" bash scripts/device_learning.sh "$minutes" $(( actors > 1 ? actors / 2 : 1 )) >"$work/learning.log" 2>&1
  pack "learning ($minutes min)"; cat "$work/learning/learning.md" 2>/dev/null | tail -30
else
  echo "no time left for the learning runs ($minutes min)"
fi
