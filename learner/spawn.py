"""One host, several learner ranks: ``launch.py --learner-gpus 0,1`` or ``--learner-ranks R``.

The launcher starts one ``launch.py`` process per rank with the env:// variables torchrun would set
(MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK), each with its share of the actors, its GPU
(or the CPU) and the same run dir and base port; it forwards Ctrl-C and SIGTERM to every rank once per
signal, and exits with the first non-zero code of a rank (0 when all ended cleanly). A rank that dies
ends the others by itself (``learner/distributed.py``); the launcher only stops ranks that outlive
that by a margin.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.cli import UsageError, default_actors, resolve_device
from common.config import Config, dump_yaml
from learner.distributed import Dist, RankEnv

# flags the launcher decides per rank: they are not passed on as given
PER_RANK_FLAGS = ("--learner-gpus", "--learner-ranks", "--actors", "--run-dir", "--bind", "--learner-gpu")
OUTLIVE_S = 30.0  # how long past dist_timeout_s a rank may outlive a dead one before it is stopped


def split_actors(n: int, ranks: int) -> list[int]:
    """``n`` actor processes over ``ranks`` learner ranks, as evenly as possible (each rank at least one)."""
    base, extra = divmod(n, ranks)
    return [max(1, base + (r < extra)) for r in range(ranks)]


def strip_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``argv`` without ``flags`` and their values (``--flag value`` or ``--flag=value``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in flags:
            skip = True
            continue
        if a.split("=", 1)[0] in flags and "=" in a:
            continue
        out.append(a)
    return out


def free_port_block(n: int, host: str = "127.0.0.1", tries: int = 50) -> int:
    """A port p such that p .. p+n-1 can all be bound on ``host`` now."""
    for _ in range(tries):
        with socket.socket() as s:
            s.bind((host, 0))
            base = s.getsockname()[1]
        if base + n < 65536 and all(_bindable(host, base + i) for i in range(n)):
            return base
    raise OSError(f"no block of {n} free ports on {host}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def rank_environ(rank: int, world: int, master_port: int) -> dict[str, str]:
    """The env:// variables of one rank on this host, as torchrun sets them."""
    return {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(master_port),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world),
    }


def rank_commands(
    launch_py: Path, argv: list[str], devices: list[int | None], actors: int, run_dir: Path, bind: str
) -> list[list[str]]:
    """One command line per rank: ``argv`` less the per-rank flags, plus this rank's GPU (-1: the CPU;
    None: the rank's own choice, GPU LOCAL_RANK where there is one), actors, the run dir and the base
    address."""
    rest = strip_flags(argv, PER_RANK_FLAGS)
    shares = split_actors(actors, len(devices))
    return [
        [sys.executable, str(launch_py), *rest, *(["--learner-gpu", str(gpu)] if gpu is not None else [])]
        + ["--actors", str(n), "--run-dir", str(run_dir), "--bind", bind]
        for gpu, n in zip(devices, shares, strict=True)
    ]


def run_ranks(commands: list[list[str]], cwd: Path, dist_timeout_s: float) -> int:
    """Start the ranks, forward signals, wait; the first non-zero exit code of a rank, else 0."""
    world = len(commands)
    master_port = free_port_block(1)
    procs = [
        subprocess.Popen(cmd, cwd=cwd, env=rank_environ(r, world, master_port), start_new_session=True)
        for r, cmd in enumerate(commands)
    ]

    def forward(signum, frame):  # noqa: ARG001
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _wait(procs, dist_timeout_s + OUTLIVE_S)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _wait(procs: list[subprocess.Popen], outlive_s: float) -> int:
    first_bad: int | None = None
    deadline: float | None = None
    while any(p.poll() is None for p in procs):
        for p in procs:
            if p.returncode not in (None, 0) and first_bad is None:
                first_bad = p.returncode
                deadline = time.monotonic() + outlive_s
        if deadline is not None and time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.2)
    codes = [p.returncode for p in procs]
    return first_bad if first_bad is not None else next((c for c in codes if c), 0)


def rank_bind(base: str, local_rank: int) -> str:
    """The address a rank binds: ``--bind``'s host, with PORT + 2 local_rank (its weights go out on the
    port after). ipc addresses get the local rank as a suffix."""
    from common.transport import addr_is_ipc, parse_tcp

    if addr_is_ipc(base):
        return f"{base}.{local_rank}" if local_rank else base
    host, port = parse_tcp(base)
    return f"tcp://{host}:{port + 2 * local_rank}"


def rank_gpu(learner_gpu: int | None, learner_gpus: list[int] | None, local_rank: int) -> int | None:
    """A rank's device: ``--learner-gpu`` if given (-1: the CPU), else its entry of ``--learner-gpus``, else
    None (GPU LOCAL_RANK where there is one, as torchrun's ranks expect)."""
    if learner_gpu is not None:
        return learner_gpu
    if learner_gpus:
        return learner_gpus[local_rank % len(learner_gpus)]
    return None


def parse_gpus(text: str) -> list[int]:
    """'0,1' -> [0, 1]; ValueError with one line otherwise."""
    try:
        gpus = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--learner-gpus {text!r}: expected a comma-separated list of GPU indexes") from None
    if not gpus or any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise ValueError(f"--learner-gpus {text!r}: expected distinct GPU indexes >= 0")
    return list(gpus)


def rank_device(args: argparse.Namespace, env: RankEnv | None) -> str:
    """This learner's device: ``--learner-gpu``, or its rank's GPU (``learner/spawn.py`` ``rank_gpu``)."""
    if env is None:
        return resolve_device(args.learner_gpu)
    try:
        gpus = parse_gpus(args.learner_gpus) if args.learner_gpus else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    gpu = rank_gpu(args.learner_gpu, gpus, env.local_rank)
    if gpu is None:
        import torch

        gpu = env.local_rank if torch.cuda.is_available() else -1
    return resolve_device(gpu)


def join_ranks(env: RankEnv, device: str, cfg: Config) -> Dist:
    """Rendezvous with the other learner ranks (torch's env:// variables); one line if that fails."""
    import torch

    try:
        return Dist(env, torch.device(device), cfg.dist_timeout_s)
    except (RuntimeError, ValueError) as e:  # torch's DistNetworkError/DistStoreError are RuntimeErrors
        first = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise UsageError(f"learner rank {env.rank}: cannot join the other ranks: {first[:200]}") from None


def private_config(cfg: Config) -> Path:
    """A config file for the actors of a learner rank that does not write the run dir."""
    path = Path(tempfile.mkdtemp(prefix="rnd-rank-")) / "config.yaml"
    path.write_text(dump_yaml(cfg))
    return path


def wants_ranks(args: argparse.Namespace) -> bool:
    """Several learner ranks asked for on this host, and this process is not one of them yet."""
    if os.environ.get("WORLD_SIZE") not in (None, "", "1"):
        return False
    if args.learner_ranks is not None and args.learner_ranks < 1:
        raise UsageError(f"--learner-ranks {args.learner_ranks}: must be >= 1")
    return bool(args.learner_gpus) or (args.learner_ranks or 1) > 1


def launch_ranks(
    args: argparse.Namespace,
    argv: list[str],
    cfg: Config,
    resume: dict | None,
    run_dir: Path,
    launch_py: Path,
    default_bind: str | None,
) -> int:
    """Check the rank flags, then run one ``launch_py`` per rank (``run_ranks``); ``default_bind`` None:
    free loopback ports (local mode)."""
    devices = rank_devices(args)
    ranks = len(devices)
    if resume is not None:
        from learner.ranks import check_world

        check_world(resume, ranks)
    base = args.bind or default_bind or f"tcp://127.0.0.1:{free_port_block(2 * ranks)}"
    local = args.role == "local"
    actors = (args.actors or default_actors(cfg)) if local else ranks
    cmds = rank_commands(launch_py, argv, devices, max(actors, ranks), run_dir, base)
    if not local:  # a learner role's actors run elsewhere
        cmds = [c[: c.index("--actors")] + c[c.index("--actors") + 2 :] for c in cmds]
    return run_ranks(cmds, launch_py.parent, cfg.dist_timeout_s)


def rank_devices(args: argparse.Namespace) -> list[int | None]:
    """Each rank's GPU (-1: the CPU; None: GPU LOCAL_RANK where there is one, else the CPU) from
    --learner-gpus / --learner-ranks / --learner-gpu; UsageError."""
    try:
        gpus = parse_gpus(args.learner_gpus) if args.learner_gpus else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    if gpus is None:
        return [args.learner_gpu] * args.learner_ranks
    if args.learner_gpu is not None and args.learner_gpu < 0:
        raise UsageError("--learner-gpus and --learner-gpu -1 exclude each other")
    if args.learner_ranks is not None and args.learner_ranks != len(gpus):
        raise UsageError(f"--learner-ranks {args.learner_ranks} but {len(gpus)} GPUs in --learner-gpus")
    for g in gpus:
        resolve_device(g)
    return list(gpus)
