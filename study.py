#!/usr/bin/env python3
"""A study: a grid of ordinary training runs, then a report with figures that compares them.

  python study.py run runs/extcoeff                                  # the report's study: ExtCoeff 2, 1, 0
  python study.py run runs/s --config configs/smoke.yaml --axis ExtCoeff=2,0 --total-steps 4096 --gpus none
  python study.py run runs/s --arm ExtCoeff=2 --arm ExtCoeff=0 --arm IntCoeff=0,ExtCoeff=2 --seeds 3
  python study.py run runs/s --dry-run                               # print each run's command, run nothing
  python study.py report runs/s --eval-episodes 5                    # runs/s/report/report.md and figures

``run`` starts each run as ``launch.py`` would be started by hand, one folder per run under
STUDY_DIR named by its axis values and seed; a finished run is skipped and an interrupted one is
resumed, so the same command continues a study. ``report`` reads the run folders and writes
``report.md``, ``summary.json`` and PNG figures (matplotlib) beside it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from actors.env import ROOM_LAYOUT
from common.config import ConfigError, load_config, rom_name

REPO = Path(__file__).resolve().parent

DEFAULT_CONFIG = REPO / "configs" / "montezuma.yaml"
DEFAULT_AXIS = ("ExtCoeff", ["2", "1", "0"])  # the report's study, at IntCoeff 1
RUN_FILE = "study_run.json"  # in each run's folder: what the study ran there, and how it ended
PROGRESS_S = 10.0


class StudyError(Exception):
    """A bad study command line: printed as one line, exit code 2."""


# ---- the grid --------------------------------------------------------------------------------------------
@dataclass
class RunSpec:
    """One run of the grid: its config values (axis and arm keys, in order), seed and command."""

    values: dict[str, str]
    seed: int
    run_dir: Path
    total_steps: int
    command: list[str] = field(default_factory=list)
    config_hash: str = ""  # of the resolved config: a folder made with another config is not this run

    @property
    def name(self) -> str:
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


def plan(args: argparse.Namespace) -> list[RunSpec]:
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
                values, seed, args.study_dir / run_name(values, seed), total, config_hash=config_hash(cfg.to_dict())
            )
            spec.command = launch_command(args, spec, overrides)
            specs.append(spec)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise StudyError("two runs of the grid would share a folder name; use values that differ in letters or digits")
    return specs


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def check_folders(specs: list[RunSpec]) -> None:
    """Refuse to continue a run folder that another config made (a changed --config or key=value)."""
    for spec in specs:
        made = read_run_file(spec.run_dir).get("config_hash")
        if made and made != spec.config_hash:
            raise StudyError(
                f"{spec.run_dir} holds a run of another config; give this grid another STUDY_DIR or remove that folder"
            )


def launch_command(args: argparse.Namespace, spec: RunSpec, overrides: list[str]) -> list[str]:
    """The ``launch.py`` command of a fresh run (``resume_command`` turns it into a continuation)."""
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
    if args.actors is not None:
        cmd += ["--actors", str(args.actors)]
    return cmd + overrides + [f"seed={spec.seed}"]


def resume_command(spec: RunSpec, gpu: str | None) -> list[str]:
    """Continue an interrupted run from its latest checkpoint (its config is in the checkpoint)."""
    base = spec.command
    cmd = base[:2] + ["--resume", str(spec.run_dir), "--total-steps", str(spec.total_steps)]
    if "--actors" in base:
        cmd += base[base.index("--actors") : base.index("--actors") + 2]
    return with_device(cmd, gpu)


def next_command(spec: RunSpec, state: str, gpu: str | None) -> list[str]:
    """The command that takes a run on from ``state`` (``run_state``): a continuation or a fresh start."""
    return resume_command(spec, gpu) if state == "resume" else with_device(spec.command, gpu)


def with_device(cmd: list[str], gpu: str | None) -> list[str]:
    """The learner on the CPU (``gpu`` None), or on the one GPU the run sees (``child_env`` shows it only ``gpu``)."""
    return cmd[:2] + ["--learner-gpu", "-1" if gpu is None else "0"] + cmd[2:]


def child_env(gpu: str | None) -> dict[str, str]:
    """A run on GPU ``gpu`` sees that GPU alone, so its learner and any actor_device=cuda actors share it."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


# ---- run state on disk -----------------------------------------------------------------------------------
def run_state(spec: RunSpec) -> str:
    """finished | resume | fresh: what the study does with this run next."""
    info = read_run_file(spec.run_dir)
    if info.get("status") == "finished" and info.get("agent_steps", 0) >= spec.total_steps:
        return "finished"
    if (spec.run_dir / "checkpoints" / "latest.pt").is_file():
        return "resume"
    return "fresh"


def read_run_file(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def shown(cmd: list[str]) -> str:
    """A launch.py command as a person types it in the repo's folder (paths inside the repo made relative)."""
    return shlex.join(["python3", "launch.py"] + [relative_to_repo(a) for a in cmd[2:]])


def relative_to_repo(arg: str) -> str:
    p = Path(arg)
    return str(p.relative_to(REPO)) if p.is_absolute() and p.is_relative_to(REPO) else arg


def write_run_file(spec: RunSpec, **fields: object) -> None:
    info = {
        "name": spec.name,
        "values": spec.values,
        "seed": spec.seed,
        "total_steps": spec.total_steps,
        "command": shown(spec.command),
        "config_hash": spec.config_hash,
        **fields,
    }
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = spec.run_dir / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, spec.run_dir / RUN_FILE)


def last_agent_steps(run_dir: Path) -> int:
    """agent_steps of the newest row of the run's metrics.csv (0 if none yet); reads only the file's tail."""
    path = run_dir / "metrics.csv"
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        cells = line.split(",")
        if len(cells) > 1 and cells[1].isdigit():
            return int(cells[1])
    return 0


# ---- running ---------------------------------------------------------------------------------------------
@dataclass
class Running:
    spec: RunSpec
    proc: subprocess.Popen
    gpu: str | None
    started: float
    signalled: bool = False


class Scheduler:
    """Starts runs on free slots (one per GPU, or ``parallel`` on the CPU) and prints one progress line."""

    def __init__(self, specs: list[RunSpec], slots: list[str | None]):
        self.todo = [s for s in specs if run_state(s) != "finished"]
        self.specs, self.free, self.running = specs, list(slots), []
        self.done = len(specs) - len(self.todo)
        self.failed: list[str] = []
        self.stopping = False
        self._t0, self._steps0 = time.monotonic(), sum(self.steps_done().values())
        self._last_print = 0.0
        self._tty = sys.stdout.isatty()

    def steps_done(self) -> dict[str, int]:
        """Each run's agent steps so far (its metrics.csv), up to its total."""
        return {s.name: min(last_agent_steps(s.run_dir), s.total_steps) for s in self.specs}

    def start(self, spec: RunSpec, gpu: str | None) -> None:
        state = run_state(spec)
        if state == "fresh" and spec.run_dir.exists():  # no checkpoint: nothing in it can be continued
            shutil.rmtree(spec.run_dir)
        cmd = next_command(spec, state, gpu)
        write_run_file(spec, status="running", started=time.time(), launched=shown(cmd))
        log = open(spec.run_dir / "launch.log", "a")
        log.write(f"# study: {shown(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=REPO,
            env=child_env(gpu),
        )
        log.close()
        self.running.append(Running(spec, proc, gpu, time.monotonic()))

    def reap(self) -> None:
        for r in [r for r in self.running if r.proc.poll() is not None]:
            self.running.remove(r)
            self.free.append(r.gpu)
            steps = last_agent_steps(r.spec.run_dir)
            ok = r.proc.returncode == 0 and steps >= r.spec.total_steps
            write_run_file(
                r.spec,
                status="finished" if ok else ("stopped" if self.stopping else "failed"),
                returncode=r.proc.returncode,
                agent_steps=steps,
            )
            if ok:
                self.done += 1
            elif not self.stopping:
                self.failed.append(r.spec.name)
                print(
                    f"\nstudy: run {r.spec.name} ended with code {r.proc.returncode} at {steps:,} agent steps; "
                    f"see {r.spec.run_dir / 'launch.log'}",
                    file=sys.stderr,
                    flush=True,
                )

    def loop(self) -> int:
        while self.todo or self.running:
            if self.stopping:
                self.signal_all()  # a child started just before the signal hears it too
            self.reap()
            while self.todo and self.free and not self.stopping:
                self.start(self.todo.pop(0), self.free.pop(0))
            self.progress()
            if self.stopping and not self.running:
                break
            time.sleep(0.5)
        self.progress(force=True)
        print(flush=True)
        return 130 if self.stopping else (1 if self.failed else 0)

    def stop(self) -> None:
        """Ctrl-C / SIGTERM: each launch.py finishes its update and checkpoints, so a rerun resumes."""
        if not self.stopping:
            print(
                "\nstudy: stopping; each run checkpoints first (the same command resumes the study)",
                file=sys.stderr,
                flush=True,
            )
        self.stopping = True
        self.signal_all()

    def signal_all(self) -> None:
        for r in self.running:
            if r.proc.poll() is None and not r.signalled:
                r.proc.send_signal(signal.SIGTERM)
                r.signalled = True

    def progress(self, force: bool = False) -> None:
        """One line: on a terminal it redraws in place, in a file a new line every PROGRESS_S."""
        now = time.monotonic()
        if not force and now - self._last_print < (1.0 if self._tty else PROGRESS_S):
            return
        self._last_print = now
        steps = self.steps_done()  # each metrics.csv read once a line
        live = [s for s in self.specs if s.name not in self.failed]  # failed runs no longer count towards the ETA
        total = sum(s.total_steps for s in live)
        done = sum(steps[s.name] for s in live)
        rate = (sum(steps.values()) - self._steps0) / max(now - self._t0, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("nan")
        line = (
            f"study: {self.done}/{len(self.specs)} runs done, {len(self.running)} running | "
            f"steps {done:,}/{total:,} | {rate:,.0f} steps/s | ETA {fmt_duration(eta)}"
        )
        print("\r" + line if self._tty else line, end="" if self._tty else "\n", flush=True)


def fmt_duration(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def write_study_file(args: argparse.Namespace, specs: list[RunSpec]) -> None:
    """STUDY_DIR/study.json: the grid's runs in order, with their values and seeds (the report reads it; runs
    that a cluster scheduler starts from --dry-run's commands have no study_run.json of their own)."""
    args.study_dir.mkdir(parents=True, exist_ok=True)
    runs = [{"name": s.name, "values": s.values, "seed": s.seed} for s in specs]
    (args.study_dir / "study.json").write_text(
        json.dumps({"config": relative_to_repo(str(args.config)), "runs": runs, "argv": sys.argv[1:]}, indent=2)
    )


def slots_for(gpus: str | None, parallel: int | None) -> list[str | None]:
    """One slot per listed GPU (at most ``parallel``), or ``parallel`` CPU slots for ``none``."""
    import torch

    if gpus is None:
        gpus = ",".join(str(i) for i in range(torch.cuda.device_count())) or "none"
    if gpus == "none":
        return [None] * (parallel or 1)
    ids = [g.strip() for g in gpus.split(",")]
    if not all(g.isdigit() for g in ids) or len(set(ids)) != len(ids):
        raise StudyError(f"--gpus {gpus!r}: expected GPU indices like 0,1 or none")
    have = torch.cuda.device_count()
    if max(int(g) for g in ids) >= have:
        raise StudyError(f"--gpus {gpus}: this machine has {have} CUDA device(s); use --gpus none for the CPU")
    return ids[:parallel] if parallel else ids


def cmd_run(args: argparse.Namespace) -> int:
    # launch.py runs in the repo's folder: every path it is given must mean the same there
    args.config = Path(args.config or DEFAULT_CONFIG).resolve()
    args.study_dir = args.study_dir.resolve()
    if args.parallel is not None and args.parallel < 1:
        raise StudyError("--parallel must be >= 1")
    slots = slots_for(args.gpus, args.parallel)
    if args.actors is None and slots[0] is None:  # K runs at once share the cores: one actor per spare core each
        args.actors = max(1, ((os.cpu_count() or 2) - 1) // len(slots))
    specs = plan(args)
    check_folders(specs)
    write_study_file(args, specs)
    if args.dry_run:
        for i, spec in enumerate(specs):
            state = run_state(spec)
            gpu = slots[i % len(slots)]
            cmd = next_command(spec, state, gpu)
            pin = f"CUDA_VISIBLE_DEVICES={gpu} " if gpu is not None else ""
            print(f"# {spec.name}: finished, skipped" if state == "finished" else pin + shlex.join(cmd))
        return 0
    sched = Scheduler(specs, slots)
    print(
        f"study: {len(specs)} runs in {args.study_dir} ({sched.done} finished already), "
        f"{len(slots)} at a time on {'the CPU' if slots[0] is None else 'GPU ' + ','.join(slots)}",
        flush=True,
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sched.stop())
    code = sched.loop()
    if sched.failed:
        print(
            f"study: {len(sched.failed)} run(s) failed: {', '.join(sched.failed)}; rerun to retry them", file=sys.stderr
        )
    return code


# ---- reading run folders ---------------------------------------------------------------------------------
CURVES = [  # metric -> axis label; the report's three plots first
    ("ext_reward_per_rollout", "extrinsic reward per rollout (raw score per env)"),
    ("int_reward_per_rollout", "intrinsic reward per rollout (normalised)"),
    ("episode_return_mean", "episode return (last 100 episodes, all envs)"),
    ("rooms_visited_total", "rooms visited (run total)"),
    ("cells_visited_total", "cells visited (run total)"),
    ("episode_length_mean", "episode length (agent steps)"),
    ("entropy", "policy entropy (nats)"),
]


@dataclass
class RunData:
    """One finished or partial run, as its folder holds it."""

    name: str
    run_dir: Path
    values: dict[str, str]
    seed: int
    metrics: dict[str, np.ndarray]  # CSV column -> float [rows]; empty cells are NaN
    episodes: list[dict]
    exploration: dict
    game: str

    @property
    def label(self) -> str:
        """The configuration: its axis values without the seed."""
        return ", ".join(f"{k}={v}" for k, v in self.values.items()) or "default"

    def last(self, key: str) -> float:
        """The newest finite value of a metric, NaN if none."""
        col = self.metrics.get(key, np.array([]))
        col = col[np.isfinite(col)]
        return float(col[-1]) if len(col) else float("nan")


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """CSV column -> float array; a last row still being written (a live run) is left out."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and (None in rows[-1].values() or not rows[-1]["agent_steps"].isdigit()):
        rows = rows[:-1]
    if not rows:
        return {}
    return {k: np.array([to_float(r[k]) for r in rows]) for k in rows[0]}


def to_float(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def read_jsonl(path: Path) -> list[dict]:
    """One object a line; a line still being written (a live run) is left out."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def load_run(run_dir: Path, planned: dict | None = None) -> RunData | None:
    """A run folder with a metrics.csv of at least one row, described by its study_run.json or by the study's
    plan (``planned``: its entry in study.json), else None."""
    info = read_run_file(run_dir) or planned or {}
    if not info or not (run_dir / "metrics.csv").is_file():
        return None
    metrics = read_metrics(run_dir / "metrics.csv")
    if not metrics:
        return None
    expl = run_dir / "exploration.json"
    exploration = json.loads(expl.read_text()) if expl.is_file() else {}
    game = "montezuma_revenge"
    if (run_dir / "config.yaml").is_file():
        game = rom_name(yaml.safe_load((run_dir / "config.yaml").read_text()).get("EnvName", "montezuma_revenge"))
    return RunData(
        run_dir.name,
        run_dir,
        dict(info.get("values", {})),
        int(info.get("seed", 0)),
        metrics,
        read_jsonl(run_dir / "episodes.jsonl"),
        exploration,
        game,
    )


def load_study(study_dir: Path) -> list[RunData]:
    """The runs of the study's plan (study.json), in its order; without a plan, every run folder by name."""
    if (study_dir / "study.json").is_file():
        plan_runs = json.loads((study_dir / "study.json").read_text()).get("runs", [])
        planned = [r if isinstance(r, dict) else {"name": r} for r in plan_runs]
    else:
        planned = [{"name": p.name} for p in sorted(study_dir.iterdir()) if p.is_dir()]
    runs = [
        load_run(study_dir / r["name"], r if "values" in r else None)
        for r in planned
        if (study_dir / r["name"]).is_dir()
    ]
    return [r for r in runs if r is not None]


def group_runs(runs: list[RunData]) -> dict[str, list[RunData]]:
    """Configuration label -> its runs (one per seed), in study order."""
    groups: dict[str, list[RunData]] = {}
    for r in runs:
        groups.setdefault(r.label, []).append(r)
    return groups


# ---- numbers -------------------------------------------------------------------------------------------
def first_reward(run: RunData) -> tuple[int | None, float | None]:
    """(agent steps, wall seconds) at which the first episode with a nonzero return was consumed."""
    for e in run.episodes:
        if e.get("return", 0) != 0 and "agent_steps" in e:
            steps = int(e["agent_steps"])
            times = run.metrics.get("time_s")
            return steps, (float(np.interp(steps, run.metrics["agent_steps"], times)) if times is not None else None)
    return None, None


def finite_or_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def int_or_none(x: float) -> int | None:
    return None if x is None or not math.isfinite(x) else int(x)


def run_summary(run: RunData) -> dict:
    """One run's row of summary.json (every figure read from its CSV, episodes and exploration files)."""
    steps = int_or_none(run.last("agent_steps")) or 0
    wall = run.last("time_s")
    first_steps, first_s = first_reward(run)
    returns = [float(e["return"]) for e in run.episodes]
    return {
        "name": run.name,
        "values": run.values,
        "seed": run.seed,
        "agent_steps": steps,
        "final_episode_return_mean": finite_or_none(run.last("episode_return_mean")),
        "best_episode_return": max(returns) if returns else None,
        "episodes": len(returns),
        "rooms_visited_total": int_or_none(run.last("rooms_visited_total")),
        "cells_visited_total": int_or_none(run.last("cells_visited_total")),
        "steps_to_first_reward": first_steps,
        "wall_s_to_first_reward": first_s,
        "wall_s": finite_or_none(wall),
        "steps_per_s": finite_or_none(steps / wall if wall > 0 else float("nan")),
    }


def on_common_grid(runs: list[RunData], key: str, points: int = 200) -> tuple[np.ndarray, np.ndarray] | None:
    """Each run's metric interpolated on agent steps up to the shortest run's end: (x [P], y [runs, P])."""
    series = []
    for r in runs:
        x, y = r.metrics.get("agent_steps"), r.metrics.get(key)
        if x is None or y is None:
            continue
        ok = np.isfinite(y)
        if ok.sum() >= 1:
            series.append((x[ok], y[ok]))
    if not series:
        return None
    lo = max(s[0][0] for s in series)
    hi = min(s[0][-1] for s in series)
    if hi < lo:  # the seeds' logged ranges do not overlap: no common curve
        return None
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([hi])
    return grid, np.stack([np.interp(grid, x, y) for x, y in series])


# ---- figures (matplotlib, Agg) ---------------------------------------------------------------------------
def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(groups: dict[str, list[RunData]], key: str, ylabel: str, path: Path) -> bool:
    """Mean over seeds with a min-max band, one line per configuration. False if no run has the metric."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for label, runs in groups.items():
        got = on_common_grid(runs, key)
        if got is None:
            continue
        x, y = got
        (line,) = ax.plot(x, y.mean(0), label=f"{label} ({len(runs)} seed{'s' * (len(runs) > 1)})", lw=1.4)
        ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.2, lw=0)
        drawn = True
    ax.set(xlabel="agent steps", ylabel=ylabel)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def cell_table(runs: list[RunData]) -> dict[tuple[int, int, int], float]:
    """(room, x bucket, y bucket) of the first level -> agent steps, the mean over the runs (seeds)."""
    out: dict[tuple[int, int, int], float] = {}
    for r in runs:
        for c in r.exploration.get("cells", []):
            if int(c["level"]) == 0:
                k = (int(c["room"]), int(c["x_bucket"]), int(c["y_bucket"]))
                out[k] = out.get(k, 0) + int(c["steps"]) / len(runs)
    return out


def room_totals(cells: dict[tuple[int, int, int], float]) -> dict[int, float]:
    """A ``cell_table`` summed per room: room -> agent steps spent there."""
    out: dict[int, float] = {}
    for (room, _, _), n in cells.items():
        out[room] = out.get(room, 0) + n
    return out


def plot_room_maps(groups: dict[str, list[RunData]], layout: list[list[int]], path: Path) -> None:
    """The level's rooms as the game lays them out, shaded by agent steps spent there; one map per configuration."""
    plt = pyplot()
    from matplotlib.colors import LogNorm

    totals = {label: room_totals(cell_table(runs)) for label, runs in groups.items()}
    peak = max([1] + [n for t in totals.values() for n in t.values()])
    norm, cmap = LogNorm(1, max(peak, 10)), plt.get_cmap("viridis")
    width = max(len(row) for row in layout)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 2.6), squeeze=False)
    for ax, (label, steps) in zip(axes[0], totals.items(), strict=True):
        for r, row in enumerate(layout):
            for i, room in enumerate(row):
                x, n = (width - len(row)) / 2 + i, steps.get(room, 0)
                ax.add_patch(plt.Rectangle((x, -r - 1), 0.95, 0.95, color=cmap(norm(n)) if n else "0.88"))
                ax.text(
                    x + 0.47,
                    -r - 0.53,
                    f"{room}\n{n:,.0f}" if n else str(room),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if n and norm(n) < 0.6 else "black",
                )
        ax.set(xlim=(0, width), ylim=(-len(layout), 0), title=label)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=cmap),
        ax=axes[0].tolist(),
        shrink=0.8,
        label="agent steps in the room (mean over seeds)",
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_heat_maps(groups: dict[str, list[RunData]], path: Path, rooms_each: int = 3) -> None:
    """Agent steps per position cell in each configuration's most visited rooms (x right, y up, RAM units)."""
    plt = pyplot()
    from matplotlib.colors import LogNorm

    from common.cells import CELL_BUCKET, bucket_count

    n = bucket_count()
    tables = {label: cell_table(runs) for label, runs in groups.items()}
    rooms_each = min(rooms_each, max(len(room_totals(t)) for t in tables.values()))
    every = [k for t in tables.values() for k in t]
    xlim = (max(0, min(k[1] for k in every) - 1) * CELL_BUCKET, min(n, max(k[1] for k in every) + 2) * CELL_BUCKET)
    ylim = (max(0, min(k[2] for k in every) - 1) * CELL_BUCKET, min(n, max(k[2] for k in every) + 2) * CELL_BUCKET)
    fig, axes = plt.subplots(len(groups), rooms_each, figsize=(3.2 * rooms_each, 2.9 * len(groups)), squeeze=False)
    for row, (label, cells) in zip(axes, tables.items(), strict=True):
        totals = room_totals(cells)
        top = sorted(totals, key=lambda k: -totals[k])[:rooms_each]
        for ax in row:
            ax.axis("off")
        for ax, room in zip(row, top, strict=False):  # a configuration may have seen fewer rooms than the row holds
            grid = np.zeros((n, n))
            for (rm, xb, yb), steps in cells.items():
                if rm == room:
                    grid[yb, xb] += steps
            ax.axis("on")
            im = ax.imshow(
                np.where(grid > 0, grid, np.nan),
                origin="lower",
                extent=(0, 256, 0, 256),
                norm=LogNorm(1, max(grid.max(), 10)),
                cmap="magma",
                aspect="auto",
            )
            ax.set(xlim=xlim, ylim=ylim)
            ax.set_title(f"{label}\nroom {room}: {grid.sum():,.0f} steps", fontsize=8)
            ax.set_xlabel(f"x (RAM, {CELL_BUCKET}-unit cells)", fontsize=7)
            ax.set_ylabel("y (RAM)", fontsize=7)
            ax.tick_params(labelsize=6)
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- checkpoints played --------------------------------------------------------------------------------
def evaluate_run(run: RunData, out: Path, episodes: int) -> dict:
    """eval.py on the run's newest checkpoint: N sticky-action episodes, the best one's GIF, an intrinsic trace."""
    if not (run.run_dir / "checkpoints" / "latest.pt").is_file():
        return {"error": "no checkpoint"}
    files = {
        "json": out / f"{run.name}_eval.json",
        "best_gif": out / f"{run.name}_best.gif",
        "int_trace": out / f"{run.name}_int_trace.png",
    }
    cmd = [
        sys.executable,
        str(REPO / "eval.py"),
        str(run.run_dir),
        "--episodes",
        str(episodes),
        "--seed",
        "0",
        "--json",
        str(files["json"]),
        "--best-gif",
        str(files["best_gif"]),
        "--int-trace",
        str(files["int_trace"]),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"eval.py exited {done.returncode}"}
    ev = json.loads(files["json"].read_text())
    return {
        "episodes": len(ev["episodes"]),
        "return_mean": ev["return_mean"],
        "return_max": ev["return_max"],
        "length_mean": ev["length_mean"],
        "rooms_visited": ev.get("rooms_visited"),
        "update": ev["update"],
        "best_gif": files["best_gif"].name,
        "int_trace": files["int_trace"].name,
        "int_trace_peaks": ev["int_trace"]["peaks"],
    }


# ---- report.md -----------------------------------------------------------------------------------------
def fmt_num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 or float(x).is_integer() else f"{x:.{digits}g}"


def fmt_spread(values: list) -> str:
    """'mean [min, max]' over seeds (just the value for one seed); '-' for none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return fmt_num(vals[0])
    return f"{fmt_num(float(np.mean(vals)))} [{fmt_num(min(vals))}, {fmt_num(max(vals))}]"


def answers_table(groups: dict[str, list[RunData]], summary: dict[str, dict]) -> list[str]:
    cols = [
        ("agent steps", "agent_steps"),
        ("final return", "final_episode_return_mean"),
        ("best episode", "best_episode_return"),
        ("rooms", "rooms_visited_total"),
        ("cells", "cells_visited_total"),
        ("steps to first reward", "steps_to_first_reward"),
        ("wall s to first reward", "wall_s_to_first_reward"),
        ("wall s", "wall_s"),
        ("steps/s", "steps_per_s"),
    ]
    lines = ["| configuration | seeds | " + " | ".join(c for c, _ in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for label, runs in groups.items():
        rows = [summary[r.name] for r in runs]
        cells = []
        for _, key in cols:
            vals = [row[key] for row in rows]
            none = sum(v is None for v in vals)
            text = fmt_spread(vals)
            if key.endswith("first_reward") and none:
                text = f"none in {none}/{len(vals)}" + ("" if none == len(vals) else f"; {text}")
            cells.append(text)
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def eval_table(runs: list[RunData], summary: dict[str, dict]) -> list[str]:
    lines = [
        "| run | checkpoint update | episodes | return mean | best return | length mean | rooms | best episode |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        ev = summary[r.name].get("eval") or {}
        if "error" in ev:
            lines.append(f"| {r.name} | {ev['error']} | | | | | | |")
        elif ev:
            lines.append(
                f"| {r.name} | {ev['update']} | {ev['episodes']} | {fmt_num(ev['return_mean'])} | "
                f"{fmt_num(ev['return_max'])} | {fmt_num(ev['length_mean'])} | {ev['rooms_visited']} | "
                f"![best]({ev['best_gif']}) |"
            )
    return lines


def report_lines(
    study_dir: Path,
    groups: dict[str, list[RunData]],
    summary: dict[str, dict],
    figures: dict[str, str],
    eval_episodes: int,
    out_flag: str,
) -> list[str]:
    runs = [r for rs in groups.values() for r in rs]
    out = runs_section(study_dir, runs, summary, eval_episodes, out_flag)
    out += [
        "",
        "## Answers",
        "",
        "Per configuration; several seeds read as mean [min, max]. *final return* is the mean return of the last "
        "100 episodes at the end; *best episode* the highest return of any episode; *rooms* and *cells* are "
        "run totals (a cell is a level, room and 8x8 RAM-unit position bucket); *steps to first reward* the "
        "agent steps at which the first episode with a nonzero return was consumed.",
        "",
    ]
    out += answers_table(groups, summary)
    out += figures_section(figures)
    if eval_episodes:
        out += eval_section(runs, summary, eval_episodes)
    return out + [""]


def runs_section(
    study_dir: Path, runs: list[RunData], summary: dict[str, dict], eval_episodes: int, out_flag: str
) -> list[str]:
    """The report's title, where its numbers come from, and each run with its command."""
    out = [
        f"# Study: {study_dir.name}",
        "",
        f"Written by `python study.py report {study_dir}{out_flag} --eval-episodes {eval_episodes}` from the run "
        "folders "
        f"below; every number comes from their `metrics.csv`, `episodes.jsonl` and `exploration.json`, "
        "and from `eval.py` on their newest checkpoints.",
        "",
        "## Runs",
        "",
    ]
    for r in runs:
        info = read_run_file(r.run_dir)
        out.append(
            f"- `{r.name}` ({info.get('status', '?')}, {summary[r.name]['agent_steps']:,} agent steps): "
            f"`{info.get('command', '?')}`"
        )
    return out


def figures_section(figures: dict[str, str]) -> list[str]:
    """The curves, the room map and the heat maps that were drawn."""
    out = [
        "",
        "## Curves",
        "",
        "Mean over seeds, the band from the lowest to the highest seed, against agent steps.",
        "",
    ]
    out += [f"![{key}]({figures[key]})" for key, _ in CURVES if key in figures]
    out += ["", "## Where the agents went", ""]
    if "room_map" in figures:
        out += [
            "Agent steps spent in each room of the first level, the mean over seeds (grey: never entered).",
            "",
            f"![room map]({figures['room_map']})",
            "",
        ]
    if "heat_maps" in figures:
        out += [
            "Agent steps per position cell (mean over seeds) in each configuration's most visited rooms of "
            "the first level.",
            "",
            f"![heat maps]({figures['heat_maps']})",
            "",
        ]
    return out


def eval_section(runs: list[RunData], summary: dict[str, dict], eval_episodes: int) -> list[str]:
    """eval.py's table of each run's newest checkpoint and the intrinsic-reward traces."""
    out = [
        "## Checkpoints played",
        "",
        f"`eval.py` on each run's newest checkpoint, {eval_episodes} episodes with sticky actions, seed 0; "
        "the GIF is the best of them.",
        "",
    ]
    out += eval_table(runs, summary)
    out += [
        "",
        "Intrinsic reward of each step of the first eval episode, with the frames at its highest peaks:",
        "",
    ]
    out += [
        f"![{r.name}]({summary[r.name]['eval']['int_trace']})"
        for r in runs
        if "int_trace" in (summary[r.name].get("eval") or {})
    ]
    return out


def write_figures(groups: dict[str, list[RunData]], out: Path) -> dict[str, str]:
    figures = {}
    for key, ylabel in CURVES:
        if plot_curves(groups, key, ylabel, out / f"curve_{key}.png"):
            figures[key] = f"curve_{key}.png"
    runs = [r for rs in groups.values() for r in rs]
    layout = ROOM_LAYOUT.get(runs[0].game)
    if layout is not None and any(r.exploration.get("cells") for r in runs):
        plot_room_maps(groups, layout, out / "room_map.png")
        plot_heat_maps(groups, out / "heat_maps.png")
        figures.update(room_map="room_map.png", heat_maps="heat_maps.png")
    return figures


def write_report(study_dir: Path, out: Path, eval_episodes: int) -> int:
    """report.md, summary.json and the figures of the study in ``study_dir``, into ``out``."""
    if eval_episodes < 0:
        raise StudyError("--eval-episodes must be >= 0")
    if not study_dir.is_dir():
        raise StudyError(f"no study at {study_dir}")
    runs = load_study(study_dir)
    if not runs:
        raise StudyError(f"{study_dir} holds no run folders with a {RUN_FILE} and a metrics.csv row")
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    summary = {r.name: run_summary(r) for r in runs}
    for r in runs if eval_episodes else []:
        print(f"study report: playing {r.name}'s newest checkpoint ({eval_episodes} episodes)", flush=True)
        summary[r.name]["eval"] = evaluate_run(r, out, eval_episodes)
    figures = write_figures(groups, out)
    (out / "summary.json").write_text(json.dumps(list(summary.values()), indent=2))
    out_flag = "" if out == study_dir / "report" else f" --out {out}"
    (out / "report.md").write_text(
        "\n".join(report_lines(study_dir, groups, summary, figures, eval_episodes, out_flag))
    )
    print(f"study report: {out / 'report.md'} ({len(runs)} runs, {len(figures)} figures)")
    return 0


# ---- command line ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run (or continue) the grid")
    r.add_argument("study_dir", type=Path)
    r.add_argument("--config", help=f"YAML config of every run (default: {DEFAULT_CONFIG.relative_to(REPO)})")
    r.add_argument(
        "--axis",
        action="append",
        default=[],
        metavar="KEY=v1,v2,...",
        help="a config key and its values; several axes are crossed (default: ExtCoeff=2,1,0)",
    )
    r.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="KEY=v[,KEY=v...]",
        help="one configuration given by several keys; arms are crossed with the axes",
    )
    r.add_argument("--seeds", type=int, default=1, help="seeds per configuration: seed=0..N-1")
    r.add_argument("--total-steps", type=int, help="agent steps per run (default: the config's)")
    r.add_argument(
        "--gpus",
        help="GPUs to spread runs over, one run per GPU at a time: 0,1 | none (default: every visible GPU, else none)",
    )
    r.add_argument("--parallel", type=int, help="runs at a time (with --gpus none; default 1)")
    r.add_argument("--actors", type=int, help="actor processes per run (default: launch.py's)")
    r.add_argument("--dry-run", action="store_true", help="print each run's command and run nothing")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    rp = sub.add_parser("report", help="write report.md, summary.json and figures from the run folders")
    rp.add_argument("study_dir", type=Path)
    rp.add_argument("--out", type=Path, help="output folder (default: STUDY_DIR/report)")
    rp.add_argument(
        "--eval-episodes", type=int, default=3, help="eval.py episodes per run's newest checkpoint (0: none)"
    )
    args, extra = p.parse_known_args(argv)  # key=value may also follow the options
    unknown = [a for a in extra if args.cmd != "run" or a.startswith("-") or "=" not in a]
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.cmd == "run":
        args.overrides += extra
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.cmd == "run":
            return cmd_run(args)
        return write_report(args.study_dir, args.out or args.study_dir / "report", args.eval_episodes)
    except (StudyError, ConfigError) as e:
        print(f"study: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
