"""Shared fixtures of the test suite (the repo root is on sys.path through pytest's pythonpath setting)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from common.config import Config, load_config
from common.rl.networks import NUM_ACTIONS
from common.wire import SegmentSpec, encode
from learner.batch import Batch, Segment, assemble

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")


@pytest.fixture
def small_cfg() -> Callable[..., Config]:
    """A factory of configs/smoke.yaml shrunk for in-process learner tests: 2 envs of 8-step segments,
    10-step episodes, the smallest frames the networks take; keyword arguments override any key."""

    def make(**kw) -> Config:
        base = {
            "NumWorkers": 2,
            "RolloutSteps": 8,
            "NumInitSteps": 4,
            "BatchSize": 8,
            "EpochSteps": 2,
            "MaxStepsPerEpisode": 10,
            "ImageHeight": 44,
            "ImageWidth": 44,
            "NumEpochs": 100,
        }
        return load_config(REPO / "configs" / "smoke.yaml", {**base, **kw})

    return make


class FakeSub:
    """A SUB socket stand-in for an actor's ``WeightsReceiver``: hands over queued messages."""

    def __init__(self) -> None:
        self.queue: list[list[bytes]] = []

    def poll(self, timeout_ms: int, flags: int = 0) -> int:
        return 1 if self.queue else 0

    def recv_multipart(self) -> list[bytes]:
        return [bytes(f) for f in self.queue.pop(0)]


def encode_weights(
    policy: torch.nn.Module, version: int, learner_run: int, retired: list | tuple = (), warmup_steps: int = 0
) -> list[bytes]:
    """A weights message of ``policy``'s parameters, as the learner's ``publish_weights`` lays it out
    (without shape_keys, which a receiver built without them does not check)."""
    arrays = {k: v.numpy() for k, v in policy.state_dict().items()}
    return encode(
        "weights",
        {
            "version": version,
            "warmup_steps": warmup_steps,
            "learner_run": learner_run,
            "retired": [list(t) for t in retired],
        },
        arrays,
    )


@pytest.fixture
def fake_sub() -> FakeSub:
    """An empty stand-in SUB socket."""
    return FakeSub()


@pytest.fixture
def weights_frames() -> Callable[..., list[bytes]]:
    """``encode_weights``: (policy, version, learner_run, retired=(), warmup_steps=0) -> frames."""
    return encode_weights


class SameBatches:
    """A ``BatchSource`` that hands out a batch of the same segments every time it is asked."""

    def __init__(self, segments: list[Segment], frame_stack: int) -> None:
        self.segments, self.frame_stack = segments, frame_stack

    def next_batch(self, version: int, timeout: float) -> tuple[Batch, list[Segment]]:
        return assemble(self.segments, self.frame_stack), self.segments


@pytest.fixture
def same_batches() -> Callable[[list[Segment], int], SameBatches]:
    """``SameBatches``: (segments, frame_stack) -> a batch source that never runs dry."""
    return SameBatches


@pytest.fixture
def socketless_io() -> Callable[..., tuple]:
    """(cfg, version) -> (a LearnerIO with no sockets at learner ``version``, its rejections, its drops):
    the I/O thread's admission and batch forming, driven in process."""
    from learner.learner_io import LearnerIO

    def make(cfg: Config, version: int) -> tuple[LearnerIO, list, list]:
        spec = SegmentSpec.from_config(cfg, NUM_ACTIONS)
        rejected, dropped = [], []
        io = LearnerIO(
            None,
            None,
            spec,
            spec.num_streams,
            spec.frame_stack,
            cfg.max_policy_lag,
            pin=False,
            on_reject=rejected.append,
            on_stale=dropped.extend,
            version=version,
        )
        return io, rejected, dropped

    return make


def learner_role_args(bind: str, run_dir: Path, total_steps: int, *extra: str) -> list[str]:
    """The arguments after the interpreter of a ``launch.py --role learner`` on the CPU with smoke.yaml,
    bound at ``bind``; ``extra`` (flags, overrides) goes last."""
    return [
        "launch.py",
        "--role",
        "learner",
        "--config",
        SMOKE,
        "--bind",
        bind,
        "--learner-gpu",
        "-1",
        "--run-dir",
        str(run_dir),
        "--total-steps",
        str(total_steps),
        *extra,
    ]


def actors_role_args(learner: str, actors: int, *extra: str) -> list[str]:
    """The arguments after the interpreter of a ``launch.py --role actors`` with smoke.yaml, ``actors``
    actors connecting to ``learner``; ``extra`` (flags, overrides) goes last."""
    return ["launch.py", "--role", "actors", "--config", SMOKE, "--learner", learner, "--actors", str(actors), *extra]


@pytest.fixture(scope="session")  # session: module-scoped fixtures start roles too
def learner_role_cmd() -> Callable[..., list[str]]:
    """``learner_role_args``: (bind, run_dir, total_steps, *extra) -> the arguments after the interpreter."""
    return learner_role_args


@pytest.fixture(scope="session")
def actors_role_cmd() -> Callable[..., list[str]]:
    """``actors_role_args``: (learner, actors, *extra) -> the arguments after the interpreter."""
    return actors_role_args


def bare_actors_role_args(learner: str, actors: int, *extra: str) -> list[str]:
    """``actors_role_args`` without ``--config``: the actors take the learner's config from its weights."""
    return ["launch.py", "--role", "actors", "--learner", learner, "--actors", str(actors), *extra]


@pytest.fixture(scope="session")
def bare_actors_role_cmd() -> Callable[..., list[str]]:
    """``bare_actors_role_args``: (learner, actors, *extra) -> the arguments after the interpreter."""
    return bare_actors_role_args


@dataclass
class Measured:
    """How a child process ended: its exit code (None if it was killed here), its peak resident memory
    (the kernel's ru_maxrss of that child alone), its wall time, its output, and why it was killed."""

    rc: int | None
    peak_rss: int
    wall_s: float
    stdout: str
    stderr: str
    killed: str | None


# Runs the command and waits for it from a small process of its own: a child forked from this large
# test process would count this process's pages in its ru_maxrss.
_MEASURE = """
import json, os, subprocess, sys, time
result, timeout_s, kill_rss = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[4:])
why = None
while True:
    pid, status, usage = os.wait4(p.pid, os.WNOHANG)
    if pid:
        break
    try:
        rss = int(next(ln for ln in open(f"/proc/{p.pid}/status") if ln.startswith("VmRSS:")).split()[1]) * 1024
    except (OSError, StopIteration):
        rss = 0
    if why is None and rss > kill_rss:
        why = f"resident memory past {kill_rss >> 20} MiB"
    elif why is None and time.monotonic() - t0 > timeout_s:
        why = f"still running after {timeout_s:.0f} s"
    if why is not None:
        p.kill()
    time.sleep(0.01)
rc = os.waitstatus_to_exitcode(status)
wall = time.monotonic() - t0
with open(result, "w") as f:
    json.dump({"rc": rc, "rss": usage.ru_maxrss * 1024, "wall": wall, "why": why}, f)
"""


def run_measured(args: list[str], timeout_s: float = 60.0, kill_rss: int = 1 << 30) -> Measured:
    """``args`` under this interpreter in the repo root; killed past ``timeout_s`` or ``kill_rss`` bytes
    of resident memory (so that a regression fails a test rather than exhausting the machine)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, err, result = (Path(tmp) / n for n in ("out", "err", "result.json"))
        with open(out, "w") as o, open(err, "w") as e:  # files, not pipes: nothing blocks
            cmd = [sys.executable, "-c", _MEASURE, str(result), str(timeout_s), str(kill_rss), sys.executable, *args]
            subprocess.run(cmd, cwd=REPO, stdout=o, stderr=e, timeout=timeout_s + 60, check=True)
        r = json.loads(result.read_text())
        rc = None if r["why"] else r["rc"]
        return Measured(rc, r["rss"], r["wall"], out.read_text(), err.read_text(), r["why"])


@pytest.fixture(scope="session")
def measured_run() -> Callable[..., Measured]:
    """``run_measured``: (args, timeout_s=60, kill_rss=1 GiB) -> Measured."""
    return run_measured


def actor_processes(addr: str) -> list[int]:
    """The pids of the actor processes (``python -m actors.main``) sending to ``addr``, in order."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"actors.main" in cmd and addr.encode() in cmd:
                pids.append(int(d.name))
    return sorted(pids)


@pytest.fixture(scope="session")
def actor_pids() -> Callable[[str], list[int]]:
    """``actor_processes``: addr -> the pids of the actor processes sending there."""
    return actor_processes
