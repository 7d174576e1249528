"""A run's checkpoint written by the whole Learner on ``device`` plays on a CPU-only machine (eval.py with CUDA
hidden) and resumes on ``device``. The CPU rehearsal runs here; tests/test_gpu.py runs the same on CUDA."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from learner.checkpoint import load_checkpoint
from learner.learner import Learner
from learner.serial import SerialRunner

REPO = Path(__file__).resolve().parents[1]
LOSSES = ("policy_loss", "value_loss", "rnd_loss")


def play_and_resume(cfg, tmp_path: Path, device: str) -> None:
    """Warm up and collect on the CPU (as actors would), update and checkpoint on ``device``, play that
    checkpoint with CUDA hidden, resume it on ``device`` and update again."""
    runner = SerialRunner(cfg, tmp_path / "warm", num_actors=1)
    runner.run(1)
    runner.learner.save()
    batches = []
    for _ in range(2):
        runner.collect()
        batches.append(copy.deepcopy(list(runner.learner.pending)))
        runner.learner.pending.clear()

    learner = Learner(cfg, tmp_path / "run", device, bind=None, resume=load_checkpoint(tmp_path / "warm"))
    row = learner.step_on(copy.deepcopy(batches[0]))
    assert all(math.isfinite(row[k]) for k in LOSSES), row
    assert next(learner.agent.policy.parameters()).device.type == torch.device(device).type
    learner.save()
    counters = dict(learner.counters)

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    out = tmp_path / "eval.json"
    p = subprocess.run(
        [sys.executable, "eval.py", str(tmp_path / "run"), "--episodes", "1", "--max-steps", "20", "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout[-1500:] + p.stderr[-1500:]
    assert json.loads(out.read_text())

    resumed = Learner(cfg, tmp_path / "run2", device, bind=None, resume=load_checkpoint(tmp_path / "run"))
    assert resumed.counters == counters
    row = resumed.step_on(copy.deepcopy(batches[1]))
    assert all(math.isfinite(row[k]) for k in LOSSES), row


def test_cpu_checkpoint_plays_and_resumes(small_cfg, tmp_path: Path) -> None:
    play_and_resume(small_cfg(), tmp_path, "cpu")
