"""The grid of a study: its configurations (axes crossed with arms), seeds, run names and commands.

Nothing here starts a process or writes a file: ``build_plan`` turns the command line into one
``RunSpec`` per run, each with the ``launch.py`` command that starts it, and every config is loaded
(so a bad key or value stops the study before its first run).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common.config import load_config
from study import REPO, StudyError

DEFAULT_CONFIG = REPO / "configs" / "montezuma.yaml"
DEFAULT_AXIS = ("ExtCoeff", ["2", "1", "0"])  # the report's study, at IntCoeff 1


@dataclass
class RunSpec:
    """One run of the grid: its config values (axis and arm keys, in order), seed and command."""

    values: dict[str, str]
    seed: int
    run_dir: Path
    total_steps: int  # agent steps the run trains for
    command: list[str] = field(default_factory=list)
    config_hash: str = ""  # of the resolved config: a folder made with another config is not this run
    envs: int = 1  # the config's NumWorkers: launch.py refuses more actors than envs

    @property
    def name(self) -> str:
        """The run's folder name (``run_name``)."""
        return self.run_dir.name


def run_name(values: dict[str, str], seed: int) -> str:
    """Folder name: ``ExtCoeff2_IntCoeff1_seed0`` (keys in grid order; characters a path can't hold become -)."""
    parts = [f"{k}{v}" for k, v in values.items()] + [f"seed{seed}"]
    return "_".join("".join(c if c.isalnum() or c in ".-+" else "-" for c in p) for p in parts)


def parse_axis(text: str) -> tuple[str, list[str]]:
    """``KEY=v1,v2,...`` -> (KEY, [v1, v2, ...])."""
    key, sep, vals = text.partition("=")
    values = [v.strip() for v in vals.split(",")]
    if not sep or not key.strip() or not all(values):
        raise StudyError(f"--axis {text!r}: expected KEY=v1,v2,...")
    return key.strip(), values


def parse_arm(text: str) -> dict[str, str]:
    """``KEY=v[,KEY=v...]`` -> {KEY: v, ...}: one configuration of the grid."""
    arm = {}
    for part in text.split(","):
        key, sep, val = part.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise StudyError(f"--arm {text!r}: expected KEY=v[,KEY=v...]")
        arm[key.strip()] = val.strip()
    return arm


def grid_values(axes: list[tuple[str, list[str]]], arms: list[dict[str, str]]) -> list[dict[str, str]]:
    """Every configuration: each arm (or none) crossed with every combination of the axes' values."""
    keys = [k for k, _ in axes]
    combos = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(v for _, v in axes))]
    out = [{**arm, **combo} for arm in (arms or [{}]) for combo in combos]
    names = [tuple(sorted(v.items())) for v in out]
    if len(set(names)) != len(names):
        raise StudyError("the grid lists the same configuration twice")
    return out


def build_plan(args: argparse.Namespace) -> list[RunSpec]:
    """The study's runs, each with its resolved total steps; a bad key or value stops here, before any run."""
    axes = [parse_axis(a) for a in args.axis]
    arms = [parse_arm(a) for a in args.arm]
    if not axes and not arms:
        axes = [DEFAULT_AXIS]
    if args.seeds < 1:
        raise StudyError("--seeds must be >= 1")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise StudyError(f"override {bad[0]!r}: expected key=value")
    specs = []
    for values in grid_values(axes, arms):
        for seed in range(args.seeds):
            overrides = [f"{k}={v}" for k, v in {**dict(o.split("=", 1) for o in args.overrides), **values}.items()]
            cfg = load_config(args.config, overrides + [f"seed={seed}"])
            total = args.total_steps if args.total_steps is not None else cfg.total_agent_steps
            spec = RunSpec(
                values,
                seed,
                args.study_dir / run_name(values, seed),
                total,
                config_hash=config_hash(cfg.to_dict()),
                envs=cfg.NumWorkers,
            )
            spec.command = launch_command(args, spec, overrides)
            specs.append(spec)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise StudyError("two runs of the grid would share a folder name; use values that differ in letters or digits")
    return specs


def config_hash(cfg: dict) -> str:
    """16 hex digits of the resolved config (key order does not matter)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def launch_command(args: argparse.Namespace, spec: RunSpec, overrides: list[str]) -> list[str]:
    """The ``launch.py`` command of a fresh run (``resume_command`` turns it into a continuation); ``set_actors``
    adds its ``--actors``."""
    cmd = [
        sys.executable,
        str(REPO / "launch.py"),
        "--config",
        str(args.config),
        "--run-dir",
        str(spec.run_dir),
        "--total-steps",
        str(spec.total_steps),
    ]
    return cmd + overrides + [f"seed={spec.seed}"]


def set_actors(specs: list[RunSpec], explicit: int | None, share: int) -> None:
    """Give each run's command its ``--actors``: ``explicit`` (the command line's) as it is, else ``share`` (the
    run's share of the cores) capped at the run's envs, which is as many actors as launch.py accepts."""
    for spec in specs:
        n = explicit if explicit is not None else min(share, spec.envs)
        at = spec.command.index("--total-steps") + 2  # where a person types it: after the run's own options
        spec.command = spec.command[:at] + ["--actors", str(n)] + spec.command[at:]


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N), 1 <= K <= N: this host's share of a grid that N hosts run between them."""
    k, sep, n = text.partition("/")
    if not sep or not k.isdigit() or not n.isdigit() or not 1 <= int(k) <= int(n):
        raise StudyError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 1/2")
    return int(k), int(n)


def take_shard(specs: list[RunSpec], shard: tuple[int, int] | None) -> list[RunSpec]:
    """Shard K of N: the grid's runs K, K+N, K+2N, ... counting from 1 in the grid's order (``--dry-run``'s
    order without a shard), so that N hosts with shards 1/N .. N/N run every run exactly once."""
    if shard is None:
        return specs
    k, n = shard
    mine = specs[k - 1 :: n]
    if not mine:
        raise StudyError(f"--shard {k}/{n}: the grid has {len(specs)} runs, so this shard has none")
    return mine


def plan_grid(specs: list[RunSpec]) -> list[dict]:
    """The whole grid as study.json records it: each run's name, config hash and agent steps, in order; two
    folders whose grids are equal hold runs of the same study, whichever shard each holds."""
    return [{"name": s.name, "config_hash": s.config_hash, "total_steps": s.total_steps} for s in specs]


def grid_hash(grid: list[dict]) -> str:
    """16 hex digits of ``plan_grid``'s list."""
    return hashlib.sha256(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:16]


def resume_command(spec: RunSpec, gpu: str | None) -> list[str]:
    """Continue an interrupted run from its latest checkpoint (its config is in the checkpoint)."""
    base = spec.command
    cmd = base[:2] + ["--resume", str(spec.run_dir), "--total-steps", str(spec.total_steps)]
    if "--actors" in base:
        cmd += base[base.index("--actors") : base.index("--actors") + 2]
    return with_device(cmd, gpu)


def next_command(spec: RunSpec, state: str, gpu: str | None) -> list[str]:
    """The command that takes a run on from ``state`` (``folders.run_state``): a continuation or a fresh start."""
    return resume_command(spec, gpu) if state == "resume" else with_device(spec.command, gpu)


def with_device(cmd: list[str], gpu: str | None) -> list[str]:
    """The learner on the CPU (``gpu`` None), or on the one GPU the run sees (the scheduler shows it only ``gpu``)."""
    return cmd[:2] + ["--learner-gpu", "-1" if gpu is None else "0"] + cmd[2:]


def shown(cmd: list[str]) -> str:
    """A launch.py command as a person types it in the repo's folder (paths inside the repo made relative)."""
    return shlex.join(["python3", "launch.py"] + [relative_to_repo(a) for a in cmd[2:]])


def relative_to_repo(arg: str) -> str:
    """A path inside the repo relative to it; anything else as it is."""
    p = Path(arg)
    return str(p.relative_to(REPO)) if p.is_absolute() and p.is_relative_to(REPO) else arg
