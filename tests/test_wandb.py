"""Weights & Biases, optional: the same names as TensorBoard, a one-line refusal without the package,
and an offline run that mirrors the metrics and the config (skipped where wandb is not installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from learner.logs import METRICS, tags

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")
PY = sys.executable


def test_tags_are_the_tensorboard_names() -> None:
    row = {"update": 3, "agent_steps": 192, "policy_loss": 0.5, "episode_return_mean": float("nan"), "episodes": 2}
    assert tags(row) == {"losses/policy_loss": 0.5, "charts/episodes": 2}
    assert all(f"{ns}/{name}" for name, ns in METRICS.items())


def test_wandb_without_the_package_is_refused_in_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = ["launch.py", "--config", SMOKE, "--learner-gpu", "-1", "--run-dir", str(run_dir), "--wandb", "proj"]
    code = (  # as if wandb were not installed, whether it is or not
        f"import sys, runpy; sys.modules['wandb'] = None; sys.argv = {argv!r}; "
        "runpy.run_path('launch.py', run_name='__main__')"
    )
    p = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        'launch: error: --wandb proj: the wandb package is not installed (pip install -e ".[wandb]")'
    ]
    assert not run_dir.exists()


def test_wandb_offline_mirrors_metrics_and_config(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    args = [
        "--config",
        SMOKE,
        "--actors",
        "1",
        "--learner-gpu",
        "-1",
        "--run-dir",
        str(run_dir),
        "--total-steps",
        "128",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    p = subprocess.run(
        [PY, "launch.py", *args, "--wandb", "fast-rnd-test", "MaxStepsPerEpisode=20"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    assert runs[0].name == f"run-{(run_dir / 'wandb_run_id.txt').read_text().strip()}.wandb"
    data = runs[0].read_bytes()  # protobuf records: the keys are plain UTF-8
    for tag in ("charts/episodes", "charts/frames", "losses/policy_loss", "rnd/obs_rms_mean", "perf/steps_per_second"):
        assert tag.encode() in data, tag
    for key in ("StickyActionProb", "NumWorkers", "wandb_project", "fast-rnd-test"):
        assert key.encode() in data, key
