#!/usr/bin/env bash
# Learning per agent step and per wall second, three runs at equal settings on Breakout, 84x84 frames:
# ours asynchronous (max_policy_lag=1, V-trace), ours synchronous (max_policy_lag=0), and CleanRL's
# ppo_rnd_envpool.py, unmodified, given by its path (it is never copied into this repo; scripts/peers/cleanrl_rnd.sh
# shows its venv). The runs go one after another (each has the machine to itself, as far as it is ours), or with
# PARALLEL=1 side by side (all three see the same machine at the same time: on a machine shared with other work,
# the fairer per-second comparison); then scripts/compare_runs.py tabulates return per agent-step bin and per
# wall-second bin into OUT/per_step.md and OUT/per_second.md.
#
#   bash scripts/peers/learning_vs_cleanrl.sh CLEANRL_PY TOTAL_STEPS [OUT]     (OUT default /tmp/learning_vs_cleanrl)
#
# Environment: ENVS (16) env streams, ACTORS (1) actor processes, GPU (-1: the CPU; on a GPU machine 0),
# CLEANRL_PYTHON (the python that runs CleanRL: /tmp/cleanrl_rnd/venv/bin/python), SEED (1), RUNS (async,sync,cleanrl:
# which to run), MINUTES (each run stops after this many minutes, default no limit).
#
# The settings, CleanRL's defaults mapped onto our keys (each side's name):
#   envs x rollout       ENVS x 128                 NumWorkers / --num-envs, RolloutSteps / --num-steps 128
#   epochs, minibatches  4, 4                       EpochSteps=4, BatchSize=ENVS*128/4 / --update-epochs, --num-minibatches
#   learning rate        1e-4, constant             LearningRate / --learning-rate, --no-anneal-lr
#   discounts            0.999 ext, 0.99 int        ExtRewardDiscount, IntRewardDiscount / --gamma, --int-gamma
#   GAE lambda           0.95                       PPOAdvLambda / --gae-lambda
#   PPO clip             0.1                        PPORewardEps / --clip-coef
#   entropy              0.001                      PPOEntropyCoeff / --ent-coef
#   value weight         0.5 * (0.5 squared error)  value_coeff=0.5 (ours is 0.5 * squared error) / --vf-coef 0.5
#   advantage            standardised per minibatch normalize_advantages=True (ours: per batch) / --norm-adv
#   gradient clip        0.5                        ClipGradNorm / --max-grad-norm
#   coefficients         ext 2, int 1               ExtCoeff, IntCoeff / --ext-coef, --int-coef
#   predictor share      0.25                       RNDUpdateProportion / --update-proportion
#   sticky actions       0.25                       StickyActionProb / envpool repeat_action_probability (in the script)
#   episode cap          27,000 agent steps         MaxStepsPerEpisode / envpool's max_episode_steps default
#   normaliser warm-up   128 random steps per env   NumInitSteps / --num-iterations-obs-norm-init 1
# What cannot be matched without changing either program:
#   - CleanRL ends an episode at each lost life for its value targets (envpool episodic_life=True), ours at game
#     over only; both report the whole game's raw score.
#   - CleanRL plays Breakout's 4 actions, ours the full 18-action set; envpool adds up to 30 no-op starts, ours none.
#   - CleanRL clips its value loss (clip_vloss), ours does not; CleanRL standardises advantages per minibatch.
#   - Rewards: envpool takes the sign, ours clamps to [-1, 1]: the same for Breakout's rewards (1 to 7 points).
set -euo pipefail
cd "$(dirname "$0")/../.."
CLEANRL_PY="$(realpath "${1:?usage: $0 CLEANRL_PY TOTAL_STEPS [OUT]}")"
TOTAL="${2:?usage: $0 CLEANRL_PY TOTAL_STEPS [OUT]}"
OUT="${3:-/tmp/learning_vs_cleanrl}"
ENVS=${ENVS:-16}; ACTORS=${ACTORS:-1}; GPU=${GPU:--1}; SEED=${SEED:-1}; RUNS=${RUNS:-async,sync,cleanrl}
CLEANRL_PYTHON=${CLEANRL_PYTHON:-/tmp/cleanrl_rnd/venv/bin/python}
limit=(); [[ -n "${MINUTES:-}" ]] && limit=(timeout --foreground -s TERM -k 60 "${MINUTES}m")
mkdir -p "$OUT"
ours=(NumWorkers="$ENVS" RolloutSteps=128 EpochSteps=4 BatchSize=$(( ENVS * 128 / 4 )) LearningRate=0.0001
      ExtRewardDiscount=0.999 IntRewardDiscount=0.99 PPOAdvLambda=0.95 PPORewardEps=0.1 PPOEntropyCoeff=0.001
      value_coeff=0.5 normalize_advantages=True ClipGradNorm=0.5 ExtCoeff=2.0 IntCoeff=1.0 RNDUpdateProportion=0.25
      UseStickyAction=True StickyActionProb=0.25 MaxStepsPerEpisode=27000 NumInitSteps=128 ImageHeight=84
      ImageWidth=84 EnvName=BreakoutNoFrameskip-v4 seed="$SEED")
run_ours() {  # $1 label, $2 max_policy_lag
  rm -rf "$OUT/$1"
  echo "[$(date -u +%T)] ours $1 start"
  PYTHONUNBUFFERED=1 ${limit[@]+"${limit[@]}"} python3 launch.py --config configs/montezuma.yaml --actors "$ACTORS" \
    --learner-gpu "$GPU" --run-dir "$OUT/$1" --total-steps "$TOTAL" "${ours[@]}" max_policy_lag="$2" \
    >"$OUT/$1.log" 2>&1 || echo "ours $1 exited $?"
}
run_cleanrl() {
  rm -rf "$OUT/cleanrl"; mkdir -p "$OUT/cleanrl"
  echo "[$(date -u +%T)] cleanrl start"
  local cuda=(--no-cuda); [[ "$GPU" -ge 0 ]] && cuda=(--cuda)
  (cd "$OUT/cleanrl" && PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::UserWarning" ${limit[@]+"${limit[@]}"} \
    "$CLEANRL_PYTHON" "$CLEANRL_PY" --env-id Breakout-v5 --seed "$SEED" --num-envs "$ENVS" --num-steps 128 \
    --update-epochs 4 --num-minibatches 4 --learning-rate 0.0001 --no-anneal-lr --gamma 0.999 --int-gamma 0.99 \
    --gae-lambda 0.95 --clip-coef 0.1 --ent-coef 0.001 --vf-coef 0.5 --max-grad-norm 0.5 --ext-coef 2.0 \
    --int-coef 1.0 --update-proportion 0.25 --num-iterations-obs-norm-init 1 --total-timesteps "$TOTAL" \
    "${cuda[@]}" --no-track --no-capture-video >"$OUT/cleanrl.log" 2>&1) || echo "cleanrl exited $?"
}
bg=""; [[ "${PARALLEL:-0}" == 1 ]] && bg="&"
[[ ",$RUNS," == *,async,* ]] && eval "run_ours async 1 $bg"
[[ ",$RUNS," == *,sync,* ]] && eval "run_ours sync 0 $bg"
[[ ",$RUNS," == *,cleanrl,* ]] && eval "run_cleanrl $bg"
wait
echo "[$(date -u +%T)] runs done"
dirs=(); labels=()
for r in async sync cleanrl; do
  [[ -d "$OUT/$r" ]] && { dirs+=("$OUT/$r"); labels+=("$r"); }
done
lab=$(IFS=,; echo "${labels[*]}")
python3 scripts/compare_runs.py "${dirs[@]}" --labels "$lab" --bins 6 --markdown "$OUT/per_step.md" || true
python3 scripts/compare_runs.py "${dirs[@]}" --labels "$lab" --bins 6 --axis time --markdown "$OUT/per_second.md" || true
