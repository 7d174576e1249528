"""Run folders read back: ``RunData`` from each folder's metrics.csv, episodes.jsonl and exploration.json,
and the numbers the report gives of each run (``run_summary``) and of each configuration's seeds.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from common.config import rom_name
from study.folders import read_run_file


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


def finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def int_or_none(x: float | None) -> int | None:
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
