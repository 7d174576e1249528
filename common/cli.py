"""What the entry points (launch.py, bench.py) share on their command lines: the one-line usage error,
the learner's device from ``--learner-gpu``, and the default number of actor processes."""

from __future__ import annotations

import os

from common.config import Config


class UsageError(Exception):
    """A bad command line or environment: printed as one line, exit code 2."""


def resolve_device(gpu: int | None) -> str:
    """``--learner-gpu``: None = GPU 0 where CUDA is available, else the CPU; < 0 = the CPU; UsageError
    for a GPU this machine lacks."""
    import torch

    if gpu is None:
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if gpu < 0:
        return "cpu"
    if not torch.cuda.is_available():
        raise UsageError(f"--learner-gpu {gpu}: no CUDA device is available here; use --learner-gpu -1 for the CPU")
    if gpu >= torch.cuda.device_count():
        raise UsageError(f"--learner-gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s)")
    return f"cuda:{gpu}"


def default_actors(cfg: Config) -> int:
    """One actor process per core beyond the learner's, at most one per env."""
    return max(1, min(cfg.NumWorkers, (os.cpu_count() or 2) - 1))
