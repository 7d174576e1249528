"""CPU time of the three recurrences along time at the learner's shapes: the Python loops they were against
common/rl/scan.py's parallel scan (V-trace's v_s, GAE's advantages, RND's reward filter), in alternating rounds.

    PYTHONPATH=$PWD python3 scripts/profile/recurrences.py [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from common.rl.scan import affine_scan


def loop_backward(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The loop V-trace and GAE ran: acc = a_t + b_t acc, from the last step back."""
    acc, out = torch.zeros_like(a[0]), torch.empty_like(a)
    for t in range(a.shape[0] - 1, -1, -1):
        acc = a[t] + b[t] * acc
        out[t] = acc
    return out


def loop_filter(r: torch.Tensor, state: torch.Tensor, gamma: float) -> torch.Tensor:
    """The loop the reward filter ran: acc = gamma acc + r_t, forward."""
    acc, out = state.clone(), torch.empty_like(r)
    for t in range(r.shape[0]):
        acc = acc * gamma + r[t]
        out[t] = acc
    return out


def per_call_us(fn, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for streams in (16, 128):
        a32 = torch.randn(128, streams)
        b32 = 0.99 * 0.95 * (torch.rand(128, streams) > 0.01).float()
        r64, s64 = torch.rand(128, streams, dtype=torch.float64), torch.rand(streams, dtype=torch.float64)
        g64 = torch.full_like(r64, 0.99)
        cases = {
            "vtrace/gae loop": lambda a32=a32, b32=b32: loop_backward(a32, b32),
            "vtrace/gae scan": lambda a32=a32, b32=b32: affine_scan(a32, b32),
            "filter loop": lambda r64=r64, s64=s64: loop_filter(r64, s64, 0.99),
            "filter scan": lambda r64=r64, g64=g64, s64=s64: affine_scan(r64, g64, s64, reverse=False),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(a.rounds):
            for k, fn in cases.items():
                times[k].append(per_call_us(fn, a.reps))
        for k, v in times.items():
            v.sort()
            print(f"T=128 B={streams:3d} {k:16s} median {v[len(v) // 2]:8.1f} us  (min {v[0]:.1f}, max {v[-1]:.1f})")


if __name__ == "__main__":
    main()
