"""The learner's update on the CPU, variant against variant in alternating rounds (one update of each per
round, so all see the same machine), with the phase split of each: the scoring pass (policy on every
observation), the intrinsic-reward pass (RND on every next frame) and the PPO epochs, and the minor page
faults of each update.

Variants: fp32 and bf16 (autocast of the policy trunk) as the learner runs them on the CPU (the layout of
``common.runtime.conv_layout``: channels-last for fp32, the default layout for the bf16 policy, RND
channels-last); the same with every network and input in one layout (``_nchw``: the default, ``_cl``:
channels-last); bf16 with torch.compile of the policy trunk and RND (``bf16_compile``, compiled before
the first round); and bf16 with the RND predictor's training step under bf16 too (``bf16_rnd16``,
``rnd_train_precision: bf16``). Settings default to the CPU comparison's: Montezuma, 84x84, 16 envs x 128
steps, 4 epochs of 4 minibatches.

  python3 scripts/profile/learner_cpu.py --rounds 5 --json /tmp/learner_cpu.json
  python3 scripts/profile/learner_cpu.py --variants fp32,bf16,bf16_compile --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from common.config import load_config
from learner.agent import RNDAgent

try:  # this tree's layout; an earlier commit's tree (learner_vs_commit.sh) has none of these modules
    from common.rl.networks import NUM_ACTIONS
    from common.runtime import init_torch_runtime
except ImportError:
    from common.networks import NUM_ACTIONS

    init_torch_runtime = None  # that tree's agent sets the process up itself
try:
    from learner.synthetic import synthetic_segments
except ImportError:  # an earlier commit's tree keeps it in bench.py
    from bench import synthetic_segments
from learner.batch import Batch, assemble

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {"NumWorkers": 16, "RolloutSteps": 128, "BatchSize": 512, "EpochSteps": 4}
VARIANTS = ("fp32", "bf16", "fp32_nchw", "bf16_cl", "bf16_compile", "bf16_rnd16")
LAYOUTS = {"nchw": torch.contiguous_format, "cl": torch.channels_last}


def build(variant: str, overrides: dict) -> RNDAgent:
    precision = variant.split("_")[0]
    cfg = load_config(
        REPO / "configs" / "montezuma.yaml",
        {
            **SETTINGS,
            **overrides,
            "learner_precision": precision,
            "learner_compile": variant.endswith("compile"),
            **({"rnd_train_precision": "bf16"} if variant.endswith("rnd16") else {}),  # a key older trees lack
        },
    )
    if init_torch_runtime is not None:
        init_torch_runtime(cfg, "cpu", "learner")  # the learner process's heap setting, as launch.py makes it
    agent = RNDAgent(cfg, NUM_ACTIONS)
    layout = LAYOUTS.get(variant.split("_")[-1])
    if layout is not None:
        agent.policy_format = agent.rnd_format = layout
        agent.policy.to(memory_format=layout)
        agent.rnd.to(memory_format=layout)
    return agent


class PhaseClock:
    """Wall seconds of the agent's scoring and intrinsic-reward passes, by wrapping those methods."""

    def __init__(self, agent: RNDAgent):
        self.seconds = {"score": 0.0, "intrinsic": 0.0}
        for name, key in (("score", "score"), ("intrinsic_rewards", "intrinsic")):
            setattr(agent, name, self._timed(getattr(agent, name), key))

    def _timed(self, fn: Callable, key: str) -> Callable:
        def run(*a, **kw):
            t = time.perf_counter()
            out = fn(*a, **kw)
            self.seconds[key] += time.perf_counter() - t
            return out

        return run


def one_update(agent: RNDAgent, clock: PhaseClock, batch: Batch) -> dict[str, float]:
    before = dict(clock.seconds)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    agent.update(batch)
    total = time.perf_counter() - t
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    score, intr = (clock.seconds[k] - before[k] for k in ("score", "intrinsic"))
    return {
        "update_s": total,
        "score_s": score,
        "intrinsic_s": intr,
        "epochs_s": total - score - intr,
        "minor_faults": faults,  # pages the kernel mapped in during the update (its allocations' cost)
    }


def summarise(rows: list[dict[str, float]], samples: int) -> dict:
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {
        **{f"{k}_median": round(v, 4) for k, v in med.items()},
        "update_s_min": round(min(r["update_s"] for r in rows), 4),
        "samples_per_s_median": round(samples / med["update_s"], 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS[:4]), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", default=None)
    p.add_argument("overrides", nargs="*", help="config key=value pairs")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    overrides = dict(kv.split("=", 1) for kv in args.overrides)
    names = args.variants.split(",")
    agents = {v: build(v, overrides) for v in names}
    clocks = {v: PhaseClock(a) for v, a in agents.items()}
    cfg = next(iter(agents.values())).cfg
    batch = assemble(synthetic_segments(cfg, np.random.default_rng(0)), cfg.FrameStack)
    for v in names:  # warm-up: allocations, oneDNN kernels, compiling
        agents[v].update(batch)
    rows: dict[str, list] = {v: [] for v in names}
    for r in range(args.rounds):
        for v in names:
            rows[v].append(one_update(agents[v], clocks[v], batch))
            parts = (f"{k} {x:.3f}" if isinstance(x, float) else f"{k} {x}" for k, x in rows[v][-1].items())
            print(f"round {r} {v:20s} " + " ".join(parts), flush=True)
    samples = batch.T * batch.B
    ratios = {
        v: round(
            statistics.median(a["update_s"] / b["update_s"] for a, b in zip(rows[names[0]], rows[v], strict=True)), 3
        )
        for v in names[1:]
    }
    out = {
        "threads": args.threads,
        "settings": {**SETTINGS, **overrides},
        "rounds": args.rounds,
        "variants": {v: summarise(rows[v], samples) for v in names},
        f"speedup_over_{names[0]}_per_round_median": ratios,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
