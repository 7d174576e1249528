"""The learner's update alone (bench_parts.bench_learner) on the paper's batch, under each precision and with or
without torch.compile, in one process: the effect of bf16 autocast and of compiling, on one GPU.
The JSON is rewritten after each variant, so a run stopped by a time limit keeps what it measured.

  python scripts/profile/learner_variants.py --seconds 10 --json learner_variants.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from bench_parts import bench_learner
from common.config import load_config

REPO = Path(__file__).resolve().parents[2]

VARIANTS = (("fp32", False), ("auto", False), ("auto", True))  # auto = bf16 autocast on CUDA


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "montezuma.yaml"))
    p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--json", required=True)
    args = p.parse_args()
    out: dict = {"device": args.device, "config": args.config, "seconds": args.seconds, "variants": []}
    for precision, compiled in VARIANTS:
        cfg = load_config(args.config, {"learner_precision": precision, "learner_compile": compiled})
        t0 = time.perf_counter()
        res = bench_learner(cfg, args.device, args.seconds)
        row = {
            "learner_precision": precision,
            "learner_compile": compiled,
            **res,
            "wall_s_with_warmup": time.perf_counter() - t0,
        }
        out["variants"].append(row)
        print(json.dumps(row), flush=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
