"""What the entry points (launch.py, bench.py) share on their command lines: the one-line usage error,
the learner's device from ``--learner-gpu``, the default number of actor processes, and address checks."""

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


def default_actors(cfg: Config | None) -> int:
    """One actor process per core beyond the learner's, at most one per env (without a config: NumWorkers
    is not known yet)."""
    return max(1, min(cfg.NumWorkers if cfg is not None else 1 << 30, (os.cpu_count() or 2) - 1))


def check_address(addr: str, flag: str) -> None:
    """A tcp://HOST:PORT or ipc:// address given as ``flag``; UsageError otherwise."""
    from common.transport import addr_is_ipc, parse_tcp

    if addr_is_ipc(addr):
        return
    try:
        parse_tcp(addr)
    except ValueError as e:
        raise UsageError(f"{flag}: {e}") from None
