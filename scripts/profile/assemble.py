"""CPU time of learner/batch.py assemble at the learner's shapes (16 segments of 8 streams x 128 steps,
84x84 frames, 4 stacked), against the previous two-copy concatenation, in alternating rounds.

    PYTHONPATH=$PWD python3 scripts/profile/assemble.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from test_assemble_once import concat_assemble, random_segments  # noqa: E402

from learner.batch import assemble  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    segs = random_segments(4, [8] * 16, t=128, hw=84)
    cases = {"concatenate": lambda: concat_assemble(segs, 4), "one copy": lambda: assemble(segs, 4)}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(a.rounds):
        for k, fn in cases.items():
            fn()
            t0 = time.perf_counter()
            for _ in range(5):
                fn()
            times[k].append((time.perf_counter() - t0) / 5 * 1e3)
    for k, v in times.items():
        v.sort()
        print(f"{k:12s} median {v[len(v) // 2]:7.1f} ms  (min {v[0]:.1f}, max {v[-1]:.1f})")


if __name__ == "__main__":
    main()
