"""Run folders read back: ``RunData`` from each folder's metrics.csv, episodes.jsonl and exploration.json,
and the numbers the report gives of each run (``run_summary``) and of each configuration's seeds.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from common.config import rom_name
from learner.exploration import read_exploration
from learner.logs import LogRows, RunFileError, read_episodes, read_metrics
from study import StudyError
from study.folders import plan_difference, read_run_file, read_study_file


@dataclass
class RunData:
    """One finished or partial run, as its folder holds it."""

    name: str
    run_dir: Path
    values: dict[str, str]
    seed: int
    metrics: dict[str, np.ndarray]  # CSV column -> float [rows]; empty cells are NaN
    episodes: list[dict]
    exploration: dict | None  # exploration.json; None if the folder has no readable one (no maps of this run)
    game: str
    skipped: dict[str, int] = field(default_factory=dict)  # file name -> damaged lines its reader left out
    unreadable: dict[str, str] = field(default_factory=dict)  # file name -> why the report goes on without it

    @property
    def label(self) -> str:
        """The configuration: its axis values without the seed."""
        return ", ".join(f"{k}={v}" for k, v in self.values.items()) or "default"

    def last(self, key: str) -> float:
        """The newest finite value of a metric, NaN if none."""
        col = self.metrics.get(key, np.array([]))
        col = col[np.isfinite(col)]
        return float(col[-1]) if len(col) else float("nan")


def metric_columns(rows: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """``read_metrics``' rows as columns: name -> float [rows] (the header's order); {} for no rows."""
    return {k: np.array([r[k] for r in rows]) for k in rows[0]} if rows else {}


def load_run(run_dir: Path, planned: dict | None = None) -> RunData | None:
    """A run folder with a metrics.csv of at least one row, described by its study_run.json or by the study's
    plan (``planned``: its entry in study.json), else None. A metrics.csv without its header raises
    RunFileError; damaged lines are left out and counted in ``skipped``; an unreadable exploration.json
    leaves the run without maps (``unreadable`` says why)."""
    info = read_run_file(run_dir) or planned or {}
    if not info or not (run_dir / "metrics.csv").is_file():
        return None
    metrics = read_metrics(run_dir / "metrics.csv")
    if not metrics.rows:
        return None
    episodes = read_episodes(run_dir / "episodes.jsonl") if (run_dir / "episodes.jsonl").is_file() else LogRows([], 0)
    exploration, unreadable = None, {}
    if (run_dir / "exploration.json").is_file():
        try:
            exploration = read_exploration(run_dir / "exploration.json")
        except RunFileError as e:
            unreadable["exploration.json"] = str(e)
    game = "montezuma_revenge"
    if (run_dir / "config.yaml").is_file():
        game = rom_name(yaml.safe_load((run_dir / "config.yaml").read_text()).get("EnvName", "montezuma_revenge"))
    return RunData(
        run_dir.name,
        run_dir,
        dict(info.get("values", {})),
        int(info.get("seed", 0)),
        metric_columns(metrics.rows),
        episodes.rows,
        exploration,
        game,
        skipped={"metrics.csv": metrics.skipped, "episodes.jsonl": episodes.skipped},
        unreadable=unreadable,
    )


def load_study(study_dir: Path, plan: dict | None = None) -> list[RunData]:
    """The runs of the study's plan (``plan``: its study.json), in its order; without a plan, every run folder by
    name. A run whose metrics.csv cannot be read at all is left out, with one line on stderr that says why."""
    if plan is not None:
        planned = [r if isinstance(r, dict) else {"name": r} for r in plan.get("runs", [])]
        planned = [r for r in planned if isinstance(r.get("name"), str)]  # an entry without a name names no folder
    else:
        planned = [{"name": p.name} for p in sorted(study_dir.iterdir()) if p.is_dir()]
    runs = []
    for r in planned:
        if not (study_dir / r["name"]).is_dir():
            continue
        try:
            runs.append(load_run(study_dir / r["name"], r if "values" in r else None))
        except RunFileError as e:
            print(f"study report: {e}; run {r['name']} left out", file=sys.stderr)
    return [r for r in runs if r is not None]


def load_studies(study_dirs: list[Path]) -> tuple[list[RunData], list[str]]:
    """The runs of one study folder, or of several folders of one grid (shards run on several hosts), in the
    grid's order; and the names of the grid's runs that no folder holds a metrics.csv row of. Folders of
    another grid or config, a folder given twice and a run found in two folders are refused."""
    for d in study_dirs:
        if not d.is_dir():
            raise StudyError(f"no study at {d}")
    seen: dict[Path, Path] = {}
    for d in study_dirs:
        if d.resolve() in seen:
            raise StudyError(f"{d} is given twice (as {seen[d.resolve()]} too)")
        seen[d.resolve()] = d
    plans = [read_study_file(d) for d in study_dirs]
    for d, plan in zip(study_dirs[1:], plans[1:], strict=True):
        if plans[0] is None or plan is None:
            bare = study_dirs[0] if plans[0] is None else d
            raise StudyError(f"{bare} has no study.json, so it cannot be told to hold runs of the same study")
        why = plan_difference(plans[0], plan)
        if why:
            raise StudyError(f"{d} holds another study than {study_dirs[0]}: {why}")
    runs: list[RunData] = []
    found: dict[str, Path] = {}
    for d, plan in zip(study_dirs, plans, strict=True):
        for r in load_study(d, plan):
            if r.name in found:
                raise StudyError(f"run {r.name} is in both {found[r.name]} and {d}; give the report one of them")
            found[r.name] = d
            runs.append(r)
    grid = [g["name"] for g in (plans[0] or {}).get("grid", [])]
    order = {name: i for i, name in enumerate(grid)}
    runs.sort(key=lambda r: order.get(r.name, len(grid)))  # stable: runs outside the grid keep their order, last
    return runs, [n for n in grid if n not in found]


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


def finite_or_none(x: float | None) -> float | None:
    """JSON has no NaN: a number that is not finite is null in summary.json."""
    return None if x is None or not math.isfinite(x) else x


def int_or_none(x: float | None) -> int | None:
    """A count read as float (CSV) back to int; null if it is not finite."""
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


def cell_table(runs: list[RunData]) -> dict[tuple[int, int, int], float]:
    """(room, x bucket, y bucket) of the first level -> agent steps, the mean over the runs (seeds) that have
    an exploration.json (a run without one is left out rather than counted as having gone nowhere)."""
    mapped = [r.exploration for r in runs if r.exploration is not None]
    out: dict[tuple[int, int, int], float] = {}
    for expl in mapped:
        for c in expl["cells"]:
            if c["level"] == 0:
                k = (c["room"], c["x_bucket"], c["y_bucket"])
                out[k] = out.get(k, 0) + c["steps"] / len(mapped)
    return out


def room_totals(cells: dict[tuple[int, int, int], float]) -> dict[int, float]:
    """A ``cell_table`` summed per room: room -> agent steps spent there."""
    out: dict[int, float] = {}
    for (room, _, _), n in cells.items():
        out[room] = out.get(room, 0) + n
    return out
