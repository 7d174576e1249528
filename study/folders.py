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
from study.plan import RunSpec, relative_to_repo, shown

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


def write_study_file(args: argparse.Namespace, specs: list[RunSpec]) -> None:
    """STUDY_DIR/study.json: the grid's runs in order, with their values and seeds (the report reads it; runs
    that a cluster scheduler starts from --dry-run's commands have no study_run.json of their own)."""
    args.study_dir.mkdir(parents=True, exist_ok=True)
    runs = [{"name": s.name, "values": s.values, "seed": s.seed} for s in specs]
    (args.study_dir / "study.json").write_text(
        json.dumps({"config": relative_to_repo(str(args.config)), "runs": runs, "argv": sys.argv[1:]}, indent=2)
    )


def last_agent_steps(run_dir: Path) -> int:
    """agent_steps of the newest whole row of the run's metrics.csv (0 if none yet); reads only the file's tail,
    since the progress line asks every few seconds of every run."""
    try:
        rows = read_metrics(run_dir / "metrics.csv", tail_bytes=METRICS_TAIL_BYTES).rows
    except (OSError, RunFileError):
        return 0
    return int(rows[-1]["agent_steps"]) if rows else 0
