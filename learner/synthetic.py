"""Synthetic inputs of the configured shape, for measurements and tests: random segments that the
learner's update trains on, and a fresh policy with a random observation batch for the actor's policy
step. Pure tensors and arrays: no sockets, no processes."""

from __future__ import annotations

import numpy as np

from actors.rollout import env_split
from common.config import Config
from common.rl.networks import NUM_ACTIONS, PolicyNet
from learner.batch import Segment


def synthetic_segments(cfg: Config, rng: np.random.Generator) -> list[Segment]:
    """One segment of all ``NumWorkers`` envs x ``RolloutSteps`` steps drawn from ``rng``: uint8 frames
    [T+1, K, H, W] and context [S-1, K, H, W], uniform actions, rare rewards (1%) and terminations (0.2%)."""
    t, h, w = cfg.RolloutSteps, cfg.ImageHeight, cfg.ImageWidth
    k = cfg.NumWorkers
    arrays: dict[str, np.ndarray] = {
        "frames": rng.integers(0, 255, (t + 1, k, h, w), dtype=np.uint8),
        "context": rng.integers(0, 255, (cfg.FrameStack - 1, k, h, w), dtype=np.uint8),
        "actions": rng.integers(0, 18, (t, k), dtype=np.uint8),
        "behaviour_logp": np.full((t, k), -np.log(18), np.float32),
        "rewards": (rng.random((t, k)) < 0.01).astype(np.float32),
        "terminated": (rng.random((t, k)) < 0.002).astype(np.uint8),
        "truncated": np.zeros((t, k), np.uint8),
        "trunc_value": np.zeros((t, k), np.float32),
    }
    return [Segment(actor=0, version=0, streams=env_split(k, 1, 0), arrays=arrays, episodes=[])]


def policy_step_inputs(cfg: Config, batch: int, device: str = "cpu") -> tuple[PolicyNet, np.ndarray]:
    """A fresh actor policy (eval mode, on ``device``) and a fixed random uint8 obs batch [batch, S, H, W]
    (seed 0): what every policy-step measurement feeds it (bench.py, scripts/profile/)."""
    policy = PolicyNet(NUM_ACTIONS, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth).eval().to(device)
    obs = np.random.default_rng(0).integers(
        0, 255, (batch, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth), dtype=np.uint8
    )
    return policy, obs
