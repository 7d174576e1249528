"""Fake study and run folders for the study's tests (no test here): run folders that hold what a training
run writes, with numbers chosen so that every figure of the report can be checked by hand."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from learner.logs import METRICS

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config", str(REPO / "configs" / "smoke.yaml"), "--gpus", "none", "--parallel", "1", "--actors", "1"]


def run_study(*args: str, timeout: float = 240, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python3 study.py ARGS`` as a person runs it."""
    return subprocess.run(
        [sys.executable, str(REPO / "study.py"), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def metrics_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def is_png(path: Path) -> bool:
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 100


def synthetic_run(
    root: Path,
    name: str,
    values: dict,
    seed: int,
    rng: np.random.Generator,
    first_reward_at: int | None,
    cells_per_update: int = 3,
) -> Path:
    """A finished run of 20 updates of 1,000 agent steps (plus 7 x seed), 2.5 s each, in ``root/name``."""
    run = root / name
    run.mkdir(parents=True)
    (run / "study_run.json").write_text(
        json.dumps({"name": name, "values": values, "seed": seed, "status": "finished", "command": "launch.py ..."})
    )
    (run / "config.yaml").write_text("EnvName: MontezumaRevengeNoFrameskip-v4\n")
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(METRICS))
        w.writeheader()
        for u in range(1, 21):
            row = {k: f"{rng.normal():.6g}" for k in METRICS}
            row.update(
                update=u,
                agent_steps=u * 1000 + seed * 7,
                time_s=f"{u * 2.5:.6g}",
                rooms_visited_total=1 + u // 10,
                cells_visited_total=10 + cells_per_update * u,
            )
            w.writerow(row)
    episodes = [{"return": 0.0, "length": 50, "agent_steps": s} for s in (3000, 5000)]
    if first_reward_at is not None:
        episodes += [
            {"return": 100.0, "length": 80, "agent_steps": first_reward_at},
            {"return": 400.0, "length": 90, "agent_steps": first_reward_at + 4000},
        ]
    (run / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    cells = [
        {"level": 0, "room": r, "x_bucket": x, "y_bucket": y, "steps": int(rng.integers(1, 50))}
        for r in (1, 0)
        for x in range(3, 9)
        for y in range(18, 30, 3)
    ]
    (run / "exploration.json").write_text(json.dumps({"cells": cells, "rooms": {}}))
    return run


def synthetic_study(root: Path) -> list[str]:
    """Three runs of two configurations (ExtCoeff 2 with two seeds, ExtCoeff 0) and a study.json naming them."""
    rng = np.random.default_rng(0)
    synthetic_run(root, "ExtCoeff2_seed0", {"ExtCoeff": "2"}, 0, rng, 6000)
    synthetic_run(root, "ExtCoeff2_seed1", {"ExtCoeff": "2"}, 1, rng, None, cells_per_update=4)
    synthetic_run(root, "ExtCoeff0_seed0", {"ExtCoeff": "0"}, 0, rng, None, cells_per_update=2)
    names = ["ExtCoeff2_seed0", "ExtCoeff2_seed1", "ExtCoeff0_seed0"]
    (root / "study.json").write_text(json.dumps({"runs": names}))
    return names
