"""One update of a learner rank on a synthetic batch, and the same update as one rank would make it on
every rank's batch at once: the equivalence test's inputs, built so that the comparison is exact.

Run as a learner rank (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set): ``python tests/dist_update.py OUT``
writes the rank's networks and normalisers after its update to OUT.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.config import Config, load_config  # noqa: E402
from common.rl.networks import NUM_ACTIONS  # noqa: E402
from learner.agent import RNDAgent  # noqa: E402
from learner.batch import Batch, Segment, assemble  # noqa: E402
from learner.minibatch import MinibatchPlan, plan_minibatches  # noqa: E402

STREAMS, STEPS, MINIBATCH, EPOCHS = 4, 16, 16, 2


def rank_config(streams: int = STREAMS, minibatch: int = MINIBATCH) -> Config:
    return load_config(
        REPO / "configs" / "smoke.yaml",
        {
            "NumWorkers": streams,
            "RolloutSteps": STEPS,
            "BatchSize": minibatch,
            "EpochSteps": EPOCHS,
            "ImageHeight": 44,
            "ImageWidth": 44,
            "learner_precision": "fp32",
        },
    )


def rank_segment(rank: int, cfg: Config) -> Segment:
    """Rank ``rank``'s batch: one segment of its own STREAMS streams, with episode ends and rewards."""
    rng = np.random.default_rng(100 + rank)
    t, k, h, w = STEPS, STREAMS, cfg.ImageHeight, cfg.ImageWidth
    arrays = {
        "frames": rng.integers(0, 255, (t + 1, k, h, w), dtype=np.uint8),
        "context": rng.integers(0, 255, (cfg.FrameStack - 1, k, h, w), dtype=np.uint8),
        "actions": rng.integers(0, 18, (t, k), dtype=np.uint8),
        "behaviour_logp": rng.uniform(-4.0, -1.0, (t, k)).astype(np.float32),
        "rewards": (rng.random((t, k)) < 0.1).astype(np.float32),
        "terminated": (rng.random((t, k)) < 0.05).astype(np.uint8),
        "truncated": np.zeros((t, k), np.uint8),
        "trunc_value": np.zeros((t, k), np.float32),
    }
    return Segment(0, 0, list(range(k)), arrays, [])


def rank_plan(rank: int) -> MinibatchPlan:
    n = STEPS * STREAMS
    return plan_minibatches(n, n // MINIBATCH, EPOCHS, 0.25, torch.Generator().manual_seed(7 + rank))


def combined_batch(world: int, cfg: Config) -> Batch:
    """Every rank's segment side by side: rank r's stream b is column r * STREAMS + b."""
    segs = []
    for r in range(world):
        s = rank_segment(r, cfg)
        segs.append(Segment(r, 0, [r * STREAMS + b for b in s.streams], s.arrays, []))
    return assemble(segs, cfg.FrameStack)


def combined_plan(world: int) -> MinibatchPlan:
    """Each step's minibatch is the union of the ranks' minibatches, mapped into the combined batch's
    flat positions (t * world * STREAMS + column), and so is its predictor subset."""
    plans = [rank_plan(r) for r in range(world)]
    samples, predictor = [], []
    for j in range(len(plans[0].samples)):
        idx, sub, offset = [], [], 0
        for r, p in enumerate(plans):
            t, b = p.samples[j] // STREAMS, p.samples[j] % STREAMS
            idx.append(t * world * STREAMS + r * STREAMS + b)
            sub.append(p.predictor[j] + offset)
            offset += p.samples[j].shape[0]
        samples.append(torch.cat(idx))
        predictor.append(torch.cat(sub))
    return MinibatchPlan(samples, predictor)


def prepared_agent(cfg: Config) -> RNDAgent:
    """An agent whose observation normaliser holds the same warm-up on every rank."""
    agent = RNDAgent(cfg, NUM_ACTIONS)
    frames = torch.from_numpy(np.random.default_rng(5).integers(0, 255, (64, 44, 44), dtype=np.uint8))
    agent.obs_rms.update(frames)
    return agent


def snapshot(agent: RNDAgent) -> dict[str, torch.Tensor]:
    out = {f"policy.{k}": v for k, v in agent.policy.state_dict().items()}
    out.update({f"rnd.{k}": v for k, v in agent.rnd.state_dict().items()})
    out.update({f"obs_rms.{k}": v for k, v in agent.obs_rms.state_dict().items()})
    out.update({f"reward_rms.{k}": v for k, v in agent.reward_rms.state_dict().items()})
    return {k: v.detach().cpu().clone() for k, v in out.items()}


def main(out: str) -> None:
    import os

    from learner.distributed import Dist, rank_env
    from learner.ranks import shared_checksum

    env = rank_env(os.environ)
    cfg = rank_config()
    agent = prepared_agent(cfg)
    dist = Dist(env, torch.device("cpu"), 60.0)
    agent.distribute(dist)
    batch = assemble([rank_segment(env.rank, cfg)], cfg.FrameStack)
    agent.update(batch, rank_plan(env.rank))
    torch.save({"state": snapshot(agent), "checksum": shared_checksum(agent)}, out)
    dist.close(clean=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])
