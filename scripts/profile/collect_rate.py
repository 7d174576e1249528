"""Steps/s of the collector alone (K envs, smoke config) for SECONDS: for A/B runs under different settings.

python scripts/profile/collect_rate.py 4 5
ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python scripts/profile/collect_rate.py 4 5
"""

import sys
import time
from pathlib import Path

import torch

from actors.rollout import build_collector
from common.config import load_config

torch.set_num_threads(1)
cfg = load_config(str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"), {"NumWorkers": int(sys.argv[1])})
col = build_collector(cfg, 0, 1)
col.collect()
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < float(sys.argv[2]):
    b, _ = col.collect()
    n += b["actions"].size
print(round(n / (time.perf_counter() - t0)))
