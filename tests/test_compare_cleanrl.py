"""scripts/compare_runs.py reads CleanRL's TensorBoard log as a run, and bins by wall seconds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare_runs", REPO / "scripts" / "compare_runs.py")
cr = importlib.util.module_from_spec(_spec)
sys.modules["compare_runs"] = cr
_spec.loader.exec_module(cr)


def write_cleanrl_log(d: Path) -> None:
    w = SummaryWriter(str(d / "runs" / "Breakout-v5__ppo_rnd_envpool__1__0"))
    w.add_text("hyperparameters", "x")
    for step, ret in ((300, 1.0), (900, 4.0), (2000, 2.0)):
        w.add_scalar("charts/episodic_return", ret, step)
    for k in (1, 2):
        w.add_scalar("charts/SPS", 1000 * k, 1024 * k)
    w.close()


def test_reads_a_cleanrl_log(tmp_path: Path) -> None:
    write_cleanrl_log(tmp_path)
    run = cr.load_any_run(tmp_path, "cleanrl")
    assert run.steps.tolist() == [300, 900, 2000] and run.returns.tolist() == [1.0, 4.0, 2.0]
    assert run.metrics["agent_steps"].tolist() == [1024, 2048]
    assert (run.metrics["time_s"] >= 0).all() and np.all(np.diff(run.metrics["time_s"]) >= 0)
    assert run.rooms == [None] * 3


def test_time_axis_and_cli(tmp_path: Path, capsys) -> None:
    write_cleanrl_log(tmp_path / "c")
    assert cr.main([str(tmp_path / "c"), "--labels", "cleanrl", "--bins", "2", "--axis", "time"]) == 0
    out = capsys.readouterr().out
    assert "per wall second" in out and "| wall seconds |" in out and "| cleanrl |" in out


def test_a_folder_without_a_log_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert cr.main([str(tmp_path / "empty")]) == 2
    assert "no such file" in capsys.readouterr().err
