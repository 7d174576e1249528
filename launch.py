#!/usr/bin/env python3
"""Train RND on Montezuma's Revenge: the one entry point.

python launch.py                                   # configs/montezuma.yaml, GPU 0 if any, 1 actor per spare core
python launch.py --config configs/smoke.yaml --actors 2 --learner-gpu -1
python launch.py keys keys/                                                     # CURVE keys for two servers
python launch.py --role learner --bind tcp://0.0.0.0:5555 --keys keys/ --learner-gpu 0      # server A
python launch.py --role actors --learner tcp://serverA:5555 --keys keys/ --actors 16        # server B
python launch.py --resume runs/montezuma-20261128-101500
python launch.py --print-config LearningRate=3e-4
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from common.config import Config, ConfigError, dump_yaml, from_dict, load_config, parse_overrides, rom_name
from common.transport import KeysError
from learner.checkpoint import CheckpointError, CheckpointWriteError

REPO = Path(__file__).resolve().parent

DEFAULT_CONFIG = REPO / "configs" / "montezuma.yaml"
DEFAULT_REMOTE_BIND = "tcp://0.0.0.0:5555"


class UsageError(Exception):
    """A bad command line or environment: printed as one line, exit code 2."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help=f"YAML config (default: {DEFAULT_CONFIG.relative_to(REPO)})")
    p.add_argument("--actors", type=int, help="actor processes on this machine (default: one per spare core)")
    p.add_argument("--learner-gpu", type=int, help="GPU index of the learner, -1 for the CPU (default: 0 if any)")
    p.add_argument("--run-dir", help="where logs and checkpoints go (default: runs/<game>-<time>)")
    p.add_argument("--total-steps", type=int, help="agent steps to train (default: NumEpochs*NumWorkers*RolloutSteps)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    p.add_argument("--bind", help="learner address tcp://HOST:PORT (the weights use PORT+1)")
    p.add_argument("--role", choices=("local", "learner", "actors"), default="local")
    p.add_argument("--learner", help="actors role: the learner's --bind address, tcp://HOST:PORT")
    p.add_argument("--actor-offset", type=int, default=0, help="actors role: id of this machine's first actor")
    p.add_argument("--total-actors", type=int, help="actors role: actors on all machines (default: --actors)")
    p.add_argument(
        "--keys",
        type=Path,
        metavar="DIR",
        help="CURVE keys from 'launch.py keys DIR': encrypt and authenticate both channels",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="let a learner listen beyond loopback without keys (plaintext: a trusted network only)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (highest precedence)")
    return p.parse_args(argv)


# ---- resolution of config, run dir, device ---------------------------------------------------------------
def resolve_config(args: argparse.Namespace) -> tuple[Config, dict | None]:
    """defaults < YAML < key=value; with --resume, the checkpoint's config replaces defaults and YAML."""
    if args.resume:
        from learner.checkpoint import load_checkpoint

        data = load_checkpoint(args.resume)
        cfg = from_dict(data["config"])
        if args.overrides:
            cfg = from_dict(parse_overrides(args.overrides), cfg)
        return cfg, data
    return load_config(args.config or DEFAULT_CONFIG, args.overrides), None


def resolve_run_dir(args: argparse.Namespace, cfg: Config) -> Path:
    if args.resume:
        return Path(args.resume)
    if args.run_dir:
        return Path(args.run_dir)
    if cfg.SavePath:  # the report's SavePath names a checkpoint file; its folder becomes the run dir
        return Path(cfg.SavePath).expanduser().parent
    return REPO / "runs" / f"{rom_name(cfg.EnvName)}-{time.strftime('%Y%m%d-%H%M%S')}"


def resolve_device(gpu: int | None) -> str:
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
    return max(1, min(cfg.NumWorkers, (os.cpu_count() or 2) - 1))


def make_run_dir(run_dir: Path) -> None:
    """Create the run dir, and check it takes files (it may exist on a read-only filesystem)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"run dir {run_dir}: cannot create it ({e.strerror}); pass --run-dir") from None
    try:
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as e:
        raise UsageError(f"run dir {run_dir}: cannot write there ({e.strerror}); pass --run-dir") from None


# ---- roles -------------------------------------------------------------------------------------------------
def actor_supervisor(
    cfg_path: Path,
    learner_addr: str,
    ids: list[int],
    total: int,
    overrides: list[str],
    restart_on_learner_gone: bool,
    keys_dir: Path | None = None,
    learner_alive=None,
):
    """``learner_alive()``: asked, when ``restart_on_learner_gone`` is off, whether an actor that gave up
    on its learner should be restarted after all."""
    from actors.supervisor import ActorSupervisor

    keys = ["--keys", str(keys_dir.resolve())] if keys_dir is not None else []

    def cmd(actor_id: int, incarnation: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "actors.main",
            "--config",
            str(cfg_path),
            "--learner",
            learner_addr,
            "--actor-id",
            str(actor_id),
            "--num-actors",
            str(total),
            "--incarnation",
            str(incarnation),
            *keys,
            *overrides,
        ]

    return ActorSupervisor(
        cmd, ids, cwd=str(REPO), restart_on_learner_gone=restart_on_learner_gone, learner_alive=learner_alive
    )


def check_address(addr: str, flag: str) -> None:
    from common.transport import addr_is_ipc, parse_tcp

    if addr_is_ipc(addr):
        return
    try:
        parse_tcp(addr)
    except ValueError as e:
        raise UsageError(f"{flag}: {e}") from None


def learner_keys(args: argparse.Namespace, bind: str, local: bool):
    """The learner's keys, or None where plaintext is allowed: on loopback or ipc, or with --insecure.
    In local mode the actors' half of the folder is checked too: they start from the same one."""
    from common.transport import load_actor_keys, load_learner_keys, needs_keys

    if args.keys is not None and args.insecure:
        raise UsageError("--keys and --insecure exclude each other")
    if args.keys is not None:
        keys = load_learner_keys(args.keys)
        if local:
            load_actor_keys(args.keys)
        return keys
    if needs_keys(bind) and not args.insecure:
        raise UsageError(
            f"--bind {bind}: a learner reachable from other machines needs --keys DIR (made by "
            "'python launch.py keys DIR'), or --insecure for plaintext on a trusted network"
        )
    if needs_keys(bind):
        print(
            f"launch: warning: --insecure: segments and weights cross the network in plaintext, and anyone who "
            f"can reach {bind} can feed this learner",
            file=sys.stderr,
            flush=True,
        )
    return None


RUN_FILES = ("checkpoints", "metrics.csv", "episodes.jsonl")  # what a run that trained has written


def check_fresh_run_dir(run_dir: Path) -> None:
    """A new run may not take over a run dir that holds another run's checkpoints: its logs would be
    overwritten or mixed. An empty folder, or one holding only a config, is fine, and so is the folder
    of a run stopped before its first checkpoint (there is nothing to resume): it is reused, its logs
    replaced, and one line says so."""
    held = [name for name in RUN_FILES if _holds_data(run_dir / name)]
    if "checkpoints" in held:
        raise UsageError(
            f"run dir {run_dir} already holds a run ({', '.join(held)}); continue it with "
            f"--resume {run_dir}, or pass another --run-dir"
        )
    if held:
        print(
            f"launch: run dir {run_dir} holds the logs of a run stopped before its first checkpoint (nothing to "
            f"resume): starting afresh there, its {' and '.join(held)} replaced",
            file=sys.stderr,
            flush=True,
        )


def _holds_data(path: Path) -> bool:
    if path.is_dir():
        return any(path.glob("*.pt"))
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        lines = f.read(1 << 16).splitlines()
    return len(lines) > (1 if path.suffix == ".csv" else 0)  # metrics.csv: a row beyond its header


class StopNow(BaseException):
    """A second Ctrl-C or SIGTERM: stop at once (a BaseException, so no handler on the way catches it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def install_stop_handlers(learner) -> dict:
    """First SIGINT/SIGTERM: finish the update, checkpoint, stop. Second: drop the update in progress
    (latest.pt stays at the last whole one) and stop; during the final checkpoint it is ignored.
    Returns the previous handlers."""

    def request_stop(signum, frame):  # noqa: ARG001
        if learner.shutting_down:
            print(
                f"\nlaunch: signal {signum}: already writing the checkpoint and stopping", file=sys.stderr, flush=True
            )
            return
        if learner.stop_requested:
            raise StopNow(signum)
        print(
            f"\nlaunch: signal {signum}: finishing the update, writing a checkpoint, stopping actors (a second "
            "signal stops at once: the update in progress is dropped, latest.pt keeps the last checkpoint)",
            file=sys.stderr,
            flush=True,
        )
        learner.request_stop()

    return {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}


def checkpoint_note(learner, latest: Path) -> str:
    """Which update ``latest`` holds after a run ended early."""
    if learner.saved_version is not None:
        return f"{latest} holds update {learner.saved_version}"
    return f"{latest} is as it was" if latest.is_file() else "no checkpoint was written"


def build_learner(args: argparse.Namespace, cfg: Config, resume: dict | None, local: bool):
    """The learner and (local mode) its actor supervisor; the run dir gets config.yaml only once the
    learner holds the checkpoint, so a failed --resume leaves the run dir as it was."""
    import zmq

    from common.runtime import init_torch_runtime
    from common.transport import connect_address, free_tcp_address
    from learner.learner import Learner

    bind = args.bind or (free_tcp_address() if local else DEFAULT_REMOTE_BIND)
    check_address(bind, "--bind")
    keys = learner_keys(args, bind, local)
    device = resolve_device(args.learner_gpu)
    run_dir = resolve_run_dir(args, cfg)
    if resume is None:
        check_fresh_run_dir(run_dir)
    make_run_dir(run_dir)
    supervisor = None
    if local:
        n = args.actors or default_actors(cfg)
        if n > cfg.NumWorkers:
            raise UsageError(f"--actors {n}: more actors than envs (NumWorkers={cfg.NumWorkers})")
        supervisor = actor_supervisor(
            run_dir / "config.yaml", connect_address(bind), list(range(n)), n, [], True, args.keys
        )
    total = args.total_steps if args.total_steps is not None else cfg.total_agent_steps
    runtime = init_torch_runtime(cfg, device, "learner")
    try:
        learner = Learner(
            cfg,
            run_dir,
            device,
            bind=bind,
            total_steps=total,
            supervisor=supervisor,
            resume=resume,
            keys=keys,
            runtime=runtime,
        )
    except zmq.ZMQError as e:
        raise UsageError(f"--bind {bind}: {e} (is another learner using this port or port+1?)") from None
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    print(
        f"launch: run dir {run_dir} | learner on {device} | listening on {bind}"
        + (" (CURVE)" if keys is not None else "")
        + (f" | {len(supervisor.actor_ids)} actors" if supervisor else ""),
        flush=True,
    )
    return learner, supervisor


def run_learner(args: argparse.Namespace, cfg: Config, resume: dict | None, local: bool) -> int:
    learner, supervisor = build_learner(args, cfg, resume, local)
    previous = install_stop_handlers(learner)
    latest = learner.run_dir / "checkpoints" / "latest.pt"
    try:
        if supervisor:
            supervisor.start()
        learner.train()
    except StopNow as e:
        kept = "the update in progress was dropped; " if learner.update_in_progress else ""
        print(
            f"launch: stopped at once by signal {e.signum}; {kept}{checkpoint_note(learner, latest)}",
            file=sys.stderr,
            flush=True,
        )
        return 128 + e.signum
    finally:
        if supervisor:
            supervisor.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    if learner.failure is not None:
        print(
            f"launch: error: {learner.failure}; stopped ({checkpoint_note(learner, latest)})",
            file=sys.stderr,
            flush=True,
        )
        return 1
    print(
        f"launch: done at {learner.counters['agent_steps']:,} agent steps, update {learner.version}; "
        f"checkpoint {latest}",
        flush=True,
    )
    return 0


def run_actors(args: argparse.Namespace, cfg: Config) -> int:
    if not args.learner:
        raise UsageError("--role actors needs --learner tcp://HOST:PORT (the learner's --bind address)")
    check_address(args.learner, "--learner")
    n = args.actors or default_actors(cfg)
    total = args.total_actors or n
    if args.actor_offset < 0 or args.actor_offset + n > total:
        raise UsageError(f"actors {args.actor_offset}..{args.actor_offset + n - 1} do not fit --total-actors {total}")
    if total > cfg.NumWorkers:
        raise UsageError(f"{total} actors for NumWorkers={cfg.NumWorkers} envs")
    if args.keys is not None:
        from common.transport import load_actor_keys

        load_actor_keys(args.keys)  # one line here rather than one per actor
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rnd-actors-") as tmp:
        cfg_file = Path(tmp) / "config.yaml"
        cfg_file.write_text(dump_yaml(cfg))
        return supervise_actors(args, cfg_file, n, total)


def supervise_actors(args: argparse.Namespace, cfg_file: Path, n: int, total: int) -> int:
    """Run this machine's actors until the learner stops them or none is left; an actor that gave up
    on its learner is restarted while the learner is heard. The exit code says how they ended."""
    from actors.supervisor import learner_heard

    sup = actor_supervisor(
        cfg_file,
        args.learner,
        list(range(args.actor_offset, args.actor_offset + n)),
        total,
        [],
        restart_on_learner_gone=False,
        keys_dir=args.keys,
        learner_alive=lambda: learner_heard(args.learner, args.keys),
    )
    print(
        f"launch: {n} actors ({args.actor_offset}..{args.actor_offset + n - 1} of {total}) -> {args.learner}",
        flush=True,
    )
    sup.start()
    stop = {"now": False}

    def on_signal(signum, frame):  # noqa: ARG001
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop["now"] and not sup.all_done():
        sup.poll()
        time.sleep(0.5)
    sup.stop(grace_s=0.0 if stop["now"] else 5.0)
    print(f"launch: actors stopped ({sup.restarts} restarts)", flush=True)
    if stop["now"]:
        return 0
    code = sup.exit_code()
    if code and sup.notes:
        print(f"launch: error: no actor left: {'; '.join(sup.notes)}", file=sys.stderr, flush=True)
    return code


def run_keys(argv: list[str]) -> int:
    """``launch.py keys DIR``: write the key pairs and say which files go to which machine."""
    from common.transport import ACTOR_CERT, AUTHORIZED, LEARNER_CERT, create_keys

    p = argparse.ArgumentParser(prog="launch.py keys", description="create CURVE keys for a learner and its actors")
    p.add_argument("dir", type=Path, help="folder to write the keys into (created, mode 0700)")
    key_dir = p.parse_args(argv).dir
    for f in create_keys(key_dir):
        print(f"launch: wrote {f}" + (" (mode 0600)" if f.name.endswith("_secret") else ""))
    d = key_dir.resolve()
    actor_files = " ".join(str(d / f) for f in (f"{LEARNER_CERT}.key", f"{ACTOR_CERT}.key", f"{ACTOR_CERT}.key_secret"))
    print(f"""
The learner's machine uses this folder as it is:
    python3 launch.py --role learner --bind tcp://0.0.0.0:5555 --keys {d} ...
Each actors' machine needs three of its files ({LEARNER_CERT}.key, {ACTOR_CERT}.key, {ACTOR_CERT}.key_secret), e.g.:
    ssh serverB 'mkdir -m 700 -p {d}' && scp -p {actor_files} serverB:{d}/
    python3 launch.py --role actors --learner tcp://serverA:5555 --keys {d} ...
{LEARNER_CERT}.key_secret never leaves the learner's machine. The learner admits the public keys in
{d / AUTHORIZED}/; to admit another actor key pair, copy its .key file there.""")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:
        try:
            return run_keys(argv[1:])
        except KeysError as e:
            print(f"launch: error: keys: {e}", file=sys.stderr)
            return 2
    args = parse_args(argv)
    try:
        cfg, resume = resolve_config(args)
        if args.print_config:
            print(dump_yaml(cfg), end="")
            return 0
        if args.actors is not None and args.actors < 1:
            raise UsageError(f"--actors {args.actors}: must be >= 1")
        if args.role != "learner":  # this machine starts actors: one error line here, not N crashed actors
            from actors.rollout import check_actor_device

            check_actor_device(cfg.actor_device)
        if args.role == "actors":
            return run_actors(args, cfg)
        return run_learner(args, cfg, resume, local=args.role == "local")
    except KeysError as e:
        print(f"launch: error: --keys: {e}", file=sys.stderr)
        return 2
    except (ConfigError, UsageError, CheckpointError) as e:
        print(f"launch: error: {e}", file=sys.stderr)
        return 2
    except CheckpointWriteError as e:
        print(f"launch: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
