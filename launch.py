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
import signal
import sys
import time
from pathlib import Path

from actors.role import actors_config, run_actors
from actors.supervisor import actor_supervisor
from common.cli import UsageError, check_address, default_actors
from common.config import Config, ConfigError, dump_yaml, from_dict, load_config, parse_overrides, rom_name
from common.transport import KeysError
from learner.checkpoint import CheckpointError, CheckpointWriteError
from learner.distributed import RankEnvError
from learner.run_outputs import (
    attach_wandb,
    check_fresh_run_dir,
    close_run_outputs,
    default_run_dir,
    make_run_dir,
    open_console_log,
    run_plan,
)

REPO = Path(__file__).resolve().parent

DEFAULT_CONFIG = REPO / "configs" / "montezuma.yaml"
DEFAULT_REMOTE_BIND = "tcp://0.0.0.0:5555"
HELP_CONFIG = """config:
  Every key of common/config.py can be set in a YAML file (--config) or as key=value (last wins).
  python3 launch.py --print-config [--config FILE] [key=value ...]   prints the resolved config and exits;
  README.md, section "Config keys", has the table of every key with its default and meaning.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, epilog=HELP_CONFIG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--config",
        help=f"YAML config (default: {DEFAULT_CONFIG.relative_to(REPO)}; actors role: none, they run with the "
        "learner's, and a config given must agree with it)",
    )
    p.add_argument("--actors", type=int, help="actor processes on this machine (default: one per spare core)")
    p.add_argument("--learner-gpu", type=int, help="GPU index of the learner, -1 for the CPU (default: 0 if any)")
    p.add_argument(
        "--learner-gpus",
        metavar="0,1",
        help="one learner rank per listed GPU on this host, the actors divided among them (data-parallel)",
    )
    p.add_argument(
        "--learner-ranks",
        type=int,
        metavar="R",
        help="R learner ranks on this host (with --learner-gpu -1: on the CPU)",
    )
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
    p.add_argument(
        "--wandb",
        metavar="PROJECT",
        help='mirror metrics and config to this Weights & Biases project (pip install -e ".[wandb]"); '
        "the same as wandb_project=PROJECT",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (highest precedence)")
    args = p.parse_args(argv)
    if args.wandb:
        args.overrides.append(f"wandb_project={args.wandb}")
    return args


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
    learner holds the checkpoint, so a failed --resume leaves the run dir as it was. Under torch's env://
    variables this process is one learner rank of several (``learner/distributed.py``): it binds
    ``--bind``'s PORT + 2 LOCAL_RANK, and only rank 0 writes the run dir."""
    import zmq

    from common.runtime import init_torch_runtime, learner_threads
    from common.transport import connect_address, free_tcp_address
    from learner.distributed import rank_env
    from learner.learner import Learner
    from learner.spawn import join_ranks, private_config, rank_bind, rank_device

    env = rank_env()
    local_rank = env.local_rank if env is not None else 0
    bind = rank_bind(args.bind or (free_tcp_address() if local else DEFAULT_REMOTE_BIND), local_rank)
    check_address(bind, "--bind")
    keys = learner_keys(args, bind, local)
    device = rank_device(args, env)
    writer = env is None or env.rank == 0
    run_dir = prepare_run_dir(args, cfg, resume) if writer else resolve_run_dir(args, cfg)
    dist = join_ranks(env, device, cfg) if env is not None else None
    cfg_file = run_dir / "config.yaml" if writer else private_config(cfg)
    supervisor = local_actors(args, cfg, cfg_file, connect_address(bind)) if local else None
    total = args.total_steps if args.total_steps is not None else cfg.total_agent_steps
    threads = learner_threads(host_cores(env), args.actors or default_actors(cfg), local)
    runtime = init_torch_runtime(cfg, device, "learner", threads)
    try:
        learner = Learner(
            cfg,
            run_dir,
            device,
            bind=bind,
            total_steps=total * (dist.world if dist is not None and args.total_steps is None else 1),
            supervisor=supervisor,
            resume=resume,
            keys=keys,
            runtime=runtime,
            dist=dist,
        )
    except zmq.ZMQError as e:
        raise UsageError(f"--bind {bind}: {e} (is another learner using this port or port+1?)") from None
    if writer:
        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
        attach_wandb(learner, cfg)
        plan = run_plan(cfg, learner.total_steps, learner.obs_rms_ready)
        print(start_line(run_dir, device, dist, bind, keys is not None, supervisor) + f" | {plan}", flush=True)
    return learner, supervisor


def prepare_run_dir(args: argparse.Namespace, cfg: Config, resume: dict | None) -> Path:
    """The run dir, made: a new run refuses one holding another run's files; a default name gets a suffix
    when taken (``learner/run_outputs.py``); the console is copied to its launch.log from here on."""
    run_dir = resolve_run_dir(args, cfg)
    unique = default_run_dir(args, cfg)
    if resume is None and not unique:
        check_fresh_run_dir(run_dir)
    run_dir = make_run_dir(run_dir, unique)
    open_console_log(run_dir)
    return run_dir


def host_cores(env) -> int | None:
    """The cores of this host that are this learner's and its actors': all of them, or a rank's share when
    several learner ranks run here (LOCAL_WORLD_SIZE, as torchrun and the rank launcher set it)."""
    import os

    cores = os.cpu_count()
    share = int(os.environ.get("LOCAL_WORLD_SIZE") or 1) if env is not None else 1
    return None if cores is None else max(1, cores // max(1, share))


def local_actors(args: argparse.Namespace, cfg: Config, cfg_file: Path, learner_addr: str):
    """Local mode's supervisor of this machine's actors (restarted when they die)."""
    n = args.actors or default_actors(cfg)
    if n > cfg.NumWorkers:
        raise UsageError(f"--actors {n}: more actors than envs (NumWorkers={cfg.NumWorkers})")
    return actor_supervisor(cfg_file, learner_addr, list(range(n)), n, restart_on_learner_gone=True, keys_dir=args.keys)


def start_line(run_dir: Path, device: str, dist, bind: str, curve: bool, supervisor) -> str:
    """The one line a learner prints once it is built: where it writes, computes and listens."""
    ranks = f" | {dist.world} learner ranks" if dist is not None else ""
    actors = f" | {len(supervisor.actor_ids)} actors" if supervisor else " | actors: those of --role actors"
    listening = f"listening on {bind}" + (" (CURVE)" if curve else "")
    return f"launch: run dir {run_dir} | learner on {device}{ranks} | {listening}{actors}"


def run_ranks(args: argparse.Namespace, argv: list[str], cfg: Config, resume: dict | None) -> int:
    """``--learner-gpus`` / ``--learner-ranks`` on one host: one launch.py process per learner rank
    (``learner/spawn.py``), sharing this run dir."""
    from learner.spawn import launch_ranks

    if args.bind:
        check_address(args.bind, "--bind")
    run_dir = prepare_run_dir(args, cfg, resume)
    default_bind = None if args.role == "local" else DEFAULT_REMOTE_BIND
    return launch_ranks(args, argv, cfg, resume, run_dir, REPO / "launch.py", default_bind)


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
    if learner.rank == 0:
        print(
            f"launch: done at {learner.counters['agent_steps']:,} agent steps, update {learner.version}; "
            f"checkpoint {latest}",
            flush=True,
        )
    return 0


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
    args.argv = argv  # the rank launcher passes it on to each rank
    try:
        return run_role(args)
    finally:
        close_run_outputs()  # after the last line, the error ones included


def run_role(args: argparse.Namespace) -> int:
    """The role ``args`` asks for; its exit code, with errors as one line."""
    try:
        if args.actors is not None and args.actors < 1:
            raise UsageError(f"--actors {args.actors}: must be >= 1")
        if args.role == "actors" and not args.print_config:
            own = actors_config(args)
            return run_actors(args, own)
        cfg, resume = resolve_config(args)
        if args.print_config:
            print(dump_yaml(cfg), end="")
            return 0
        if cfg.wandb_project:
            from learner.wandb_mirror import wandb_missing

            if why := wandb_missing():
                raise UsageError(f"--wandb {cfg.wandb_project}: {why}")
        if args.role != "learner":  # this machine starts actors: one error line here, not N crashed actors
            from actors.rollout import check_actor_device

            check_actor_device(cfg.actor_device)
        from learner.spawn import wants_ranks

        if wants_ranks(args):
            return run_ranks(args, args.argv, cfg, resume)
        return run_learner(args, cfg, resume, local=args.role == "local")
    except KeysError as e:
        print(f"launch: error: --keys: {e}", file=sys.stderr)
        return 2
    except (ConfigError, UsageError, CheckpointError, RankEnvError) as e:
        print(f"launch: error: {e}", file=sys.stderr)
        return 2
    except CheckpointWriteError as e:
        print(f"launch: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
