#!/usr/bin/env bash
# CleanRL's single-file PPO + RND (cleanrl/ppo_rnd_envpool.py), run unmodified on the CPU at the settings
# of the CPU comparison in docs/benchmarks.md: Montezuma, 84x84, 16 envs x 128 steps, 4 epochs of 4
# minibatches, everything else the script's defaults except a one-rollout observation-normaliser warm-up.
# It lives in its own virtual environment (it needs gym 0.23, envpool and numpy 1.x), which reuses this
# machine's torch. Its SPS lines give the steady rate: SPS_k = 2048 k / t_k at update k.
#
#   bash scripts/peers/cleanrl_rnd.sh TOTAL_STEPS [DIR]     # DIR (default /tmp/cleanrl_rnd) holds venv and script
set -euo pipefail
TOTAL="${1:?usage: $0 TOTAL_STEPS [DIR]}"
DIR="${2:-/tmp/cleanrl_rnd}"
COMMIT=fe8d8a03c41a7ef5b523e2e354bd01c363e786bb
mkdir -p "$DIR"
if [[ ! -x "$DIR/venv/bin/python" ]]; then
  python3 -m venv --system-site-packages "$DIR/venv"
  "$DIR/venv/bin/pip" install -q envpool==0.8.4 gym==0.23.1 gymnasium==0.29.1 numpy==1.26.4 tyro==0.8.14 \
    dm-env==1.6 dm-tree==0.1.10 optree==0.20.0 rich==15.0.0 shtab==1.13.0 docstring_parser==0.18.0
fi
if [[ ! -f "$DIR/ppo_rnd_envpool.py" ]]; then
  curl -fsSL "https://raw.githubusercontent.com/vwxyzjn/cleanrl/$COMMIT/cleanrl/ppo_rnd_envpool.py" \
    -o "$DIR/ppo_rnd_envpool.py"
fi
cd "$DIR"
CUDA_VISIBLE_DEVICES="" PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning" "$DIR/venv/bin/python" \
  ppo_rnd_envpool.py --env-id MontezumaRevenge-v5 --num-envs 16 --num-steps 128 --update-epochs 4 \
  --num-minibatches 4 --total-timesteps "$TOTAL" --no-cuda --no-track --no-capture-video \
  --num-iterations-obs-norm-init 1
