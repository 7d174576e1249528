"""Several learner ranks: torch.distributed's process groups, and what the ranks agree on through them.

A run of R learner ranks trains as the RND release does over MPI: each rank owns ``NumWorkers`` env
streams and their actors and updates on its own batch; DistributedDataParallel averages the gradients
before the clip and the optimizer step (``RNDAgent.distribute``), so every rank holds the same weights
after every update. What must stay global is merged here: the observation and intrinsic-reward moments
(``gather_moments``), the non-finite check (``flags``), the metrics row and the episode records that
rank 0 logs, and each rank's own part of a checkpoint.

The ranks find each other through torch's env:// rendezvous (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT, as torchrun sets them). Gradients go over NCCL on GPUs and gloo on CPUs; all
the rest over a gloo group on the CPU. The rendezvous store carries three small things: each rank's
heartbeat (a counter a thread bumps every second), the per-update readiness count (a rank that waits
for its actors is not yet in a collective, so nobody times out on a slow batch), and a stop key (a
Ctrl-C on one rank stops every rank at the same update). A rank whose heartbeat stops, or a
collective that fails, ends every other rank with ``RankLost`` naming the lost rank.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from common.rl.normalize import RunningMeanStd

BEAT_S = 1.0  # how often each rank bumps its heartbeat counter
POLL_S = 0.05  # how often a rank waiting for the others reads the readiness count
DIAGNOSE_S = 4.0  # after a failed collective: how long to watch the heartbeats to name the lost rank
MAX_RANKS = 1024


class RankLost(RuntimeError):
    """Another learner rank died, its host went away, or a collective failed; one line says which."""


class RankEnvError(ValueError):
    """Malformed rendezvous variables; one line names the variable."""


@dataclass(frozen=True)
class RankEnv:
    """A learner rank as the env:// variables describe it."""

    rank: int
    world: int
    local_rank: int


def rank_env(environ: Mapping[str, str] = os.environ) -> RankEnv | None:
    """This process's learner rank from torchrun's variables; None when WORLD_SIZE is unset or 1."""
    if int(_env_int(environ, "WORLD_SIZE", 1)) <= 1:
        return None
    world = _env_int(environ, "WORLD_SIZE", 1)
    rank = _env_int(environ, "RANK", None)
    local = _env_int(environ, "LOCAL_RANK", 0)
    if world > MAX_RANKS or not 0 <= rank < world or not 0 <= local < world:
        raise RankEnvError(f"RANK={rank}, LOCAL_RANK={local}, WORLD_SIZE={world}: need 0 <= ranks < WORLD_SIZE")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not environ.get(var):
            raise RankEnvError(f"{var} is not set: every learner rank needs MASTER_ADDR and MASTER_PORT")
    return RankEnv(rank, world, local)


def _env_int(environ: Mapping[str, str], name: str, default: int | None) -> int:
    text = environ.get(name)
    if text is None or text == "":
        if default is None:
            raise RankEnvError(f"{name} is not set (WORLD_SIZE > 1 needs RANK, MASTER_ADDR and MASTER_PORT)")
        return default
    try:
        return int(text)
    except ValueError:
        raise RankEnvError(f"{name}={text!r} is not an integer") from None


class Dist:
    """This rank's view of the run's learner ranks (the ``RankSync`` an agent uses, and the learner's
    agreement per update). Every method but ``peer_stopped`` is collective: all ranks call it in the
    same order."""

    def __init__(self, env: RankEnv, device: torch.device, timeout_s: float):
        self.rank, self.world, self.local_rank = env.rank, env.world, env.local_rank
        self.timeout_s = timeout_s
        timeout = timedelta(seconds=timeout_s)
        store, _, _ = next(dist.rendezvous("env://", rank=env.rank, world_size=env.world, timeout=timeout))
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL's communicator of this rank on its own GPU, not on GPU 0
        dist.init_process_group(
            backend, store=dist.PrefixStore("pg", store), rank=env.rank, world_size=env.world, timeout=timeout
        )
        self.ctrl = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
        self.store = dist.PrefixStore("fast-rnd", store)
        self._beats: dict[int, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._beater = threading.Thread(target=self._beat, name="rank-heartbeat", daemon=True)
        self._beater.start()

    # ---- liveness ------------------------------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.wait(BEAT_S):
            try:
                self.store.add(f"beat/{self.rank}", 1)
            except Exception:  # the store is gone with rank 0: the main thread will say so
                return

    def check_peers(self) -> None:
        """Raise RankLost if a rank's heartbeat has not moved for ``timeout_s``, or the store (held by
        rank 0) no longer answers."""
        now = time.monotonic()
        for r in range(self.world):
            beat = self._read(f"beat/{r}")
            last = self._beats.get(r)
            if last is None or last[0] != beat:
                self._beats[r] = (beat, now)
            elif now - last[1] > self.timeout_s:
                raise RankLost(f"learner rank {r} stopped answering ({now - last[1]:.0f} s without a heartbeat)")

    def _read(self, key: str) -> int:
        try:
            return int(self.store.add(key, 0))
        except Exception:
            if self.rank == 0:
                raise
            raise RankLost("learner rank 0 is gone (the rendezvous store it held no longer answers)") from None

    def lost_ranks(self) -> str:
        """After a failed collective: watch the heartbeats for DIAGNOSE_S and name the ranks that did not beat."""
        try:
            first = {r: self._read(f"beat/{r}") for r in range(self.world)}
            time.sleep(DIAGNOSE_S)
            gone = [r for r in range(self.world) if self._read(f"beat/{r}") == first[r]]
        except RankLost as e:
            return str(e)
        if gone:
            return f"learner rank {', '.join(map(str, gone))} is gone (no heartbeat for {DIAGNOSE_S:.0f} s)"
        return "a collective with the other learner ranks failed, and every rank still beats"

    def _collective(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except RuntimeError as e:  # gloo and NCCL report a dead peer or a timeout as RuntimeError kinds
            raise RankLost(self.lost_ranks()) from e

    # ---- agreeing on each update ------------------------------------------------------------------
    def peer_stopped(self) -> bool:
        """Whether some rank asked every rank to stop (not collective)."""
        return bool(self._read("stop-asked"))

    def agree_to_go(self, update: int, stop: bool, wait: Callable[[], bool]) -> bool:
        """Called once per update by every rank once its batch is ready (``stop``: or once it wants to
        stop). Waits until every rank is ready, calling ``wait()`` meanwhile (the learner's idle work; it
        returns True once this rank wants to stop) and watching the heartbeats; then returns True if every
        rank goes on with the update, False if they all stop here."""
        if stop:
            self.store.add("stop-asked", 1)
        key = f"ready/{update}"
        self.store.add(key, 1)
        next_check = 0.0
        while self._read(key) < self.world:
            if not stop and wait():
                stop = True
                self.store.add("stop-asked", 1)
            if time.monotonic() > next_check:
                self.check_peers()
                next_check = time.monotonic() + BEAT_S
            time.sleep(POLL_S)
        return not any(self.flags(stop or self.peer_stopped()))

    # ---- collectives (the RankSync of an agent) -----------------------------------------------------
    def flags(self, flag: bool) -> list[bool]:
        """Every rank's ``flag``, in rank order."""
        out = [torch.zeros(1, dtype=torch.uint8) for _ in range(self.world)]
        self._collective(lambda: dist.all_gather(out, torch.tensor([int(flag)], dtype=torch.uint8), group=self.ctrl))
        return [bool(t.item()) for t in out]

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` summed over the ranks, as float64 on the CPU; the same on every rank."""
        y = x.detach().to("cpu", torch.float64).clone()
        self._collective(lambda: dist.all_reduce(y, group=self.ctrl))
        return y

    def gather(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``x`` (one shape and dtype on all ranks), in rank order, on the CPU."""
        y = x.detach().cpu().contiguous()
        out = [torch.empty_like(y) for _ in range(self.world)]
        self._collective(lambda: dist.all_gather(out, y, group=self.ctrl))
        return out

    def gather_moments(self, rms: RunningMeanStd) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """Every rank's (mean, var, count) of ``rms``, in rank order; the same list on every rank."""
        n, shape = rms.mean.numel(), rms.mean.shape
        packed = torch.cat([rms.mean.reshape(-1).cpu(), rms.var.reshape(-1).cpu(), rms.count.reshape(1).cpu()])
        return [(p[:n].view(shape), p[n : 2 * n].view(shape), float(p[-1])) for p in self.gather(packed.double())]

    def gather_json(self, obj: Any) -> list[Any]:
        """Every rank's JSON-able ``obj``, in rank order (plain JSON bytes: nothing is unpickled)."""
        data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)
        sizes = [int(s) for s in self.gather(torch.tensor([data.numel()], dtype=torch.int64))]
        padded = torch.zeros(max(sizes), dtype=torch.uint8)
        padded[: data.numel()] = data
        return [json.loads(bytes(p[:k].tolist())) for p, k in zip(self.gather(padded), sizes, strict=True)]

    def close(self, clean: bool) -> None:
        """Stop the heartbeat; after a clean end, leave the process group in order. The heartbeat
        thread is joined first: one still inside a store call while the group is torn down, or while
        the interpreter exits, can abort the process from C++."""
        self._stop.set()
        self._beater.join(timeout=2 * BEAT_S)
        if clean and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except RuntimeError:
                pass


def rank_ports(base: int, local_rank: int) -> tuple[int, int]:
    """The (segments, weights) ports of the rank with ``local_rank`` on its host: ``--bind``'s PORT + 2
    local_rank and the port after it, so the ranks of one host never share a port."""
    return base + 2 * local_rank, base + 2 * local_rank + 1
