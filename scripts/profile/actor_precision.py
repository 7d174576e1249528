"""The actors' policy step (``sample_actions``: forward, softmax, sample) in fp32 and under bf16 autocast, on
one thread as an actor runs it, in alternating rounds so both see the same machine: samples/s of each and
the per-round median of their ratio, at each batch size (an actor's batch is its number of envs).

  python3 scripts/profile/actor_precision.py --rounds 10 --batches 8,16 --json /tmp/actor_precision.json
  python3 scripts/profile/actor_precision.py --batches 8 ImageHeight=44 ImageWidth=44   # config key=value pairs
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from actors.rollout import sample_actions
from common.config import load_config
from learner.synthetic import policy_step_inputs

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def samples_per_s(policy, obs, gen: torch.Generator, dtype: torch.dtype | None, seconds: float) -> float:
    """Policy steps on ``obs`` [K, S, H, W] for ``seconds``; K samples per step."""
    sample_actions(policy, obs, gen, dtype)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sample_actions(policy, obs, gen, dtype)
        n += 1
    return n * obs.shape[0] / (time.perf_counter() - t0)


def measure(batch: int, rounds: int, seconds: float, overrides: dict[str, str]) -> dict:
    """Alternating rounds of fp32 and bf16 at one batch size, with the shapes of the default config and
    ``overrides``."""
    policy, obs = policy_step_inputs(load_config(overrides=overrides), batch)
    gen = torch.Generator().manual_seed(0)
    rates: dict[str, list[float]] = {k: [] for k in DTYPES}
    for r in range(rounds):
        for name, dtype in DTYPES.items():
            rates[name].append(samples_per_s(policy, obs, gen, dtype, seconds))
        print(f"batch {batch} round {r} " + " ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True)
    ratio = statistics.median(b / f for b, f in zip(rates["bf16"], rates["fp32"], strict=True))
    return {
        "samples_per_s_median": {k: round(statistics.median(v), 1) for k, v in rates.items()},
        "bf16_over_fp32_per_round_median": round(ratio, 3),
        "bf16_faster_in_rounds": sum(b > f for b, f in zip(rates["bf16"], rates["fp32"], strict=True)),
        "rounds": rounds,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batches", default="8,16", help="comma-separated batch sizes")
    p.add_argument("--seconds", type=float, default=1.0, help="per precision per round")
    p.add_argument("--json", default=None)
    p.add_argument("overrides", nargs="*", help="config key=value pairs (the frame size, say)")
    args = p.parse_args()
    torch.set_num_threads(1)
    overrides = dict(kv.split("=", 1) for kv in args.overrides)
    out = {f"batch_{b}": measure(int(b), args.rounds, args.seconds, overrides) for b in args.batches.split(",")}
    for name, r in out.items():
        rates = ", ".join(f"{k} {v:,.0f}" for k, v in r["samples_per_s_median"].items())
        faster = f"bf16 faster in {r['bf16_faster_in_rounds']} of {r['rounds']} rounds"
        print(f"{name}: samples/s {rates}; bf16 / fp32 {r['bf16_over_fp32_per_round_median']}; {faster}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
