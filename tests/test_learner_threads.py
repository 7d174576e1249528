"""common/runtime.py learner_threads: the learner's torch threads from the cores its actors leave."""

from __future__ import annotations

import torch

from common.runtime import MIN_CORES_FOR_LEARNER_THREADS, init_torch_runtime, learner_threads


def test_local_learner_takes_the_cores_the_actors_leave() -> None:
    assert learner_threads(16, 15, local=True) == 1
    assert learner_threads(16, 12, local=True) == 4
    assert learner_threads(16, 20, local=True) == 1  # more actors than cores: still one thread


def test_torch_default_elsewhere() -> None:
    assert learner_threads(16, 15, local=False) is None  # learner role: its actors are on other hosts
    assert learner_threads(MIN_CORES_FOR_LEARNER_THREADS - 1, 1, local=True) is None  # small machines
    assert learner_threads(None, 1, local=True) is None


def test_init_applies_the_count(small_cfg) -> None:
    before = torch.get_num_threads()
    try:
        init_torch_runtime(small_cfg(), "cpu", "actor", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
