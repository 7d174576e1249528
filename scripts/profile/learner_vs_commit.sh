#!/usr/bin/env bash
# The learner's update at this checkout against the same update at an earlier commit, in alternating
# processes (one code version per process), each timed by scripts/profile/learner_cpu.py at the CPU
# comparison's settings. Each arm is "LABEL=TREE:VARIANT", TREE being "here" or "then" (the commit's tree,
# checked out as a git worktree); any further key=value pairs go to every run as config overrides.
#
#   bash scripts/profile/learner_vs_commit.sh bdab275 3 then_fp32=then:fp32 fp32=here:fp32 bf16=here:bf16
#   bash scripts/profile/learner_vs_commit.sh HEAD 3 heap=here:bf16 no_heap=here:bf16,learner_heap_pad_mb=0
#
# An arm's VARIANT may carry config overrides of its own after commas. Writes OUT/<label>_<rep>.json and
# prints each arm's per-update median in each repetition, then the median over repetitions of each arm's
# ratio to the first arm's time (OUT defaults to /tmp/learner_vs_commit).
set -euo pipefail
commit=$1 reps=$2
shift 2
here=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/learner_vs_commit}
then_tree=$(mktemp -d /tmp/learner_then.XXXXXX)
git -C "$here" worktree add -q --detach "$then_tree" "$commit"
trap 'git -C "$here" worktree remove --force "$then_tree"' EXIT
mkdir -p "$out"
arms=() overrides=()
for a in "$@"; do
  if [[ $a == *=here:* || $a == *=then:* ]]; then arms+=("$a"); else overrides+=("$a"); fi
done
for rep in $(seq 1 "$reps"); do
  for arm in "${arms[@]}"; do
    label=${arm%%=*} spec=${arm#*=}
    tree=${spec%%:*} variant_and_keys=${spec#*:}
    IFS=, read -r -a parts <<< "$variant_and_keys"
    root=$here
    [[ $tree == then ]] && root=$then_tree
    # run from outside both trees, so the chosen tree's packages are the ones imported
    (cd /tmp && PYTHONPATH=$root python3 "$here/scripts/profile/learner_cpu.py" --rounds 3 --variants "${parts[0]}" \
      --json "$out/${label}_$rep.json" "${overrides[@]}" "${parts[@]:1}" > "$out/${label}_$rep.log" 2>&1)
  done
done
python3 - "$out" "$reps" "${arms[@]}" <<'PY'
import json, statistics, sys
out, reps, arms = sys.argv[1], int(sys.argv[2]), [a.split("=", 1)[0] for a in sys.argv[3:]]
def update_s(label, rep):
    d = json.load(open(f"{out}/{label}_{rep}.json"))
    return next(iter(d["variants"].values()))["update_s_median"]
t = {a: [update_s(a, r) for r in range(1, reps + 1)] for a in arms}
for a in arms:
    ratio = statistics.median(x / y for x, y in zip(t[arms[0]], t[a]))
    print(f"{a:16s} update_s per rep {' '.join(f'{x:.3f}' for x in t[a])}  {arms[0]} / {a}: {ratio:.3f}")
PY
