"""What a study keeps on disk besides the runs' own logs.

``STUDY_DIR/study.json`` is the plan (each run's folder, values and seed): the report reads it, and it
is all a report needs of runs that a cluster scheduler started from ``--dry-run``'s commands. Each run
folder's ``study_run.json`` says what the study ran there and how it ended.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from learner.logs import RunFileError, read_metrics
from study import StudyError
from study.plan import RunSpec, grid_hash, plan_grid, relative_to_repo, shown

RUN_FILE = "study_run.json"  # in each run's folder: what the study ran there, and how it ended
METRICS_TAIL_BYTES = 4096  # a metrics.csv row is a few hundred bytes: the tail holds several whole ones


def read_run_file(run_dir: Path) -> dict:
    """A run folder's study_run.json; {} if it has none (or an unreadable one: the run is then planned afresh)."""
    try:
        return json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_run_file(spec: RunSpec, **fields: object) -> None:
    """study_run.json of ``spec``'s folder: the run's plan and ``fields`` (status, ...), replaced atomically."""
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


def run_state(spec: RunSpec) -> str:
    """finished | resume | fresh: what the study does with this run next."""
    info = read_run_file(spec.run_dir)
    if info.get("status") == "finished" and info.get("agent_steps", 0) >= spec.total_steps:
        return "finished"
    if (spec.run_dir / "checkpoints" / "latest.pt").is_file():
        return "resume"
    return "fresh"


def check_folders(specs: list[RunSpec]) -> None:
    """Refuse to continue a run folder that another config made (a changed --config or key=value)."""
    for spec in specs:
        made = read_run_file(spec.run_dir).get("config_hash")
        if made and made != spec.config_hash:
            raise StudyError(
                f"{spec.run_dir} holds a run of another config; give this grid another STUDY_DIR or remove that folder"
            )


def write_study_file(args: argparse.Namespace, specs: list[RunSpec], grid: list[RunSpec]) -> None:
    """STUDY_DIR/study.json: this folder's runs in order, with their values and seeds (the report reads it; runs
    that a cluster scheduler starts from --dry-run's commands have no study_run.json of their own), and the
    whole grid (``plan_grid``) with its hash, by which a report of several shards knows they belong together."""
    args.study_dir.mkdir(parents=True, exist_ok=True)
    runs = [{"name": s.name, "values": s.values, "seed": s.seed} for s in specs]
    whole = plan_grid(grid)
    plan = {
        "config": relative_to_repo(str(args.config)),
        "runs": runs,
        "argv": sys.argv[1:],
        "shard": f"{args.shard[0]}/{args.shard[1]}" if args.shard else None,
        "plan_hash": grid_hash(whole),
        "grid": whole,
    }
    tmp = args.study_dir / "study.json.tmp"
    tmp.write_text(json.dumps(plan, indent=2))
    os.replace(tmp, args.study_dir / "study.json")  # a report never reads half a plan


def read_study_file(study_dir: Path) -> dict | None:
    """STUDY_DIR/study.json (None if there is none); one that is not a plan is a StudyError naming it."""
    path = study_dir / "study.json"
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_bytes().decode("utf-8"))
    except ValueError as e:
        raise StudyError(f"{path}: not a study plan ({e})") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("runs", []), list):
        raise StudyError(f"{path}: not a study plan (no list of runs)")
    return plan


def check_shard_folder(study_dir: Path, shard: tuple[int, int] | None) -> None:
    """Refuse a folder that holds another shard of a grid: its study.json would be overwritten with this
    shard's runs and the report would lose the others. (The whole grid may follow a shard: it holds it.)"""
    held = (read_study_file(study_dir) or {}).get("shard")
    wanted = f"{shard[0]}/{shard[1]}" if shard else None
    if held and wanted and held != wanted:
        raise StudyError(f"{study_dir} holds shard {held} of its grid; give shard {wanted} a folder of its own")


def plan_difference(first: dict, other: dict) -> str | None:
    """What makes ``other``'s study.json plan another study than ``first``'s, in words; None if their grids are the
    same (the same run names, each with the same resolved-config hash and agent steps), whichever shards they
    hold."""
    if not first.get("plan_hash") or not other.get("plan_hash"):
        return "a study.json without its grid (rewrite it with the same `study.py run ... --dry-run`)"
    if first["plan_hash"] == other["plan_hash"]:
        return None
    fa, ot = ({r["name"]: r for r in p.get("grid", []) if isinstance(r, dict) and "name" in r} for p in (first, other))
    diffs = [f"its config {other.get('config')}, the first's {first.get('config')}"]
    diffs = diffs if first.get("config") != other.get("config") else []
    if set(ot) - set(fa):
        diffs.append(f"runs only it has: {', '.join(sorted(set(ot) - set(fa))[:3])}")
    if set(fa) - set(ot):
        diffs.append(f"runs only the first has: {', '.join(sorted(set(fa) - set(ot))[:3])}")
    for name in [n for n in ot if n in fa]:
        for key, what in (("config_hash", "resolved config"), ("total_steps", "agent steps")):
            if fa[name].get(key) != ot[name].get(key):
                diffs.append(f"{name}'s {what} {ot[name].get(key)}, the first's {fa[name].get(key)}")
    return "; ".join(diffs[:3]) or "another grid"


def last_agent_steps(run_dir: Path) -> int:
    """agent_steps of the newest whole row of the run's metrics.csv (0 if none yet); reads only the file's tail,
    since the progress line asks every few seconds of every run."""
    try:
        rows = read_metrics(run_dir / "metrics.csv", tail_bytes=METRICS_TAIL_BYTES).rows
    except (OSError, RunFileError):
        return 0
    return int(rows[-1]["agent_steps"]) if rows else 0
