"""The collector alone (no process, no sockets) against its two single-core limits, measured before and after.

python scripts/profile/actor_prof.py K [SECONDS]     # K envs, smoke config; prints steps/s and per-step phases
"""

import sys
import time
from pathlib import Path

import torch

import bench
from actors.rollout import build_collector
from common.config import load_config

torch.set_num_threads(1)
K = int(sys.argv[1])
secs = float(sys.argv[2]) if len(sys.argv) > 2 else 8
cfg = load_config(str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"), {"NumWorkers": K})
ale = bench.bench_ale(cfg, secs / 2)
inf = bench.bench_infer(cfg, K, secs / 2)
col = build_collector(cfg, 0, 1)
col.collect()
col.timings.split()
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < secs:
    b, _ = col.collect()
    n += b["actions"].size
dt = time.perf_counter() - t0
sp = col.timings.split()
ale2 = bench.bench_ale(cfg, secs / 2)
inf2 = bench.bench_infer(cfg, K, secs / 2)
ceil = 1 / (1 / ((ale + ale2) / 2) + 1 / ((inf + inf2) / 2))
print(
    f"K={K} ale {ale:.0f}/{ale2:.0f} infer {inf:.0f}/{inf2:.0f} ceiling {ceil:.0f} collect {n / dt:.0f} "
    f"ratio {n / dt / ceil:.2f}"
)
print(
    f"  per step: infer {sp['infer'] / n * 1e6:.0f} us (iso {1e6 / ((inf + inf2) / 2):.0f}), "
    f"env {sp['env'] / n * 1e6:.0f} us (iso {1e6 / ((ale + ale2) / 2):.0f}), "
    f"other {(dt - sum(sp.values())) / n * 1e6:.0f} us"
)
