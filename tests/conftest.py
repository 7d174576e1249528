"""Shared fixtures of the test suite (the repo root is on sys.path through pytest's pythonpath setting)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from common.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_cfg() -> Callable[..., Config]:
    """A factory of configs/smoke.yaml shrunk for in-process learner tests: 2 envs of 8-step segments,
    10-step episodes, the smallest frames the networks take; keyword arguments override any key."""
    def make(**kw) -> Config:
        base = {"NumWorkers": 2, "RolloutSteps": 8, "NumInitSteps": 4, "BatchSize": 8, "EpochSteps": 2,
                "MaxStepsPerEpisode": 10, "ImageHeight": 44, "ImageWidth": 44, "NumEpochs": 100}
        return load_config(REPO / "configs" / "smoke.yaml", {**base, **kw})
    return make
