"""The learner alone at R ranks: each rank updates on its own synthetic batch of the configured shape, with
its gradients averaged over the ranks as in training, for a given time. Started as one process per rank
with the env:// variables (``bench.py --learner-ranks``); rank 0 writes what it measured as JSON.

    python -m learner.rank_bench --config configs/smoke.yaml --seconds 10 --out r.json   # one rank per process
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from common.config import load_config
from common.rl.networks import NUM_ACTIONS
from common.runtime import init_torch_runtime
from learner.agent import RNDAgent
from learner.batch import Segment, assemble
from learner.distributed import Dist, rank_env
from learner.synthetic import synthetic_segments


def measure(agent: RNDAgent, dist: Dist | None, segments: list[Segment], seconds: float) -> tuple[int, float]:
    """Updates done and seconds taken: one warm-up update, then updates until rank 0 has spent ``seconds``
    (every rank stops at the same update: one flag all-gather per update)."""
    pin = agent.device.type == "cuda"
    agent.update(assemble(segments, agent.cfg.FrameStack, pin=pin).to(agent.device))
    if dist is not None:
        dist.flags(True)  # start together
    n, t0 = 0, time.perf_counter()
    while True:
        agent.update(assemble(segments, agent.cfg.FrameStack, pin=pin).to(agent.device))
        n += 1
        if agent.device.type == "cuda":
            torch.cuda.synchronize()
        done = time.perf_counter() - t0 >= seconds
        if done if dist is None else dist.flags(done)[0]:
            return n, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--out", required=True, help="rank 0 writes its figures here (JSON)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    env = rank_env(os.environ)
    rank = env.rank if env is not None else 0
    runtime = init_torch_runtime(cfg, a.device, "learner", threads=a.threads)
    agent = RNDAgent(cfg, NUM_ACTIONS, a.device, runtime)
    dist = Dist(env, runtime.device, 120.0) if env is not None else None
    if dist is not None:
        agent.distribute(dist)
    updates, secs = measure(agent, dist, synthetic_segments(cfg, np.random.default_rng(rank)), a.seconds)
    world = dist.world if dist is not None else 1
    if rank == 0:
        steps = updates * cfg.NumWorkers * cfg.RolloutSteps * world
        result = {"ranks": world, "updates": updates, "seconds": secs, "samples_per_s": steps / secs}
        with open(a.out, "w") as f:
            json.dump(result, f)
    if dist is not None:
        dist.close(clean=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
