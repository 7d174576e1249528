"""The one-call GPU scripts, dry-run on the CPU with the smoke config (slow: minutes; run with -m slow).
A GPU check that fails half-way costs a rerun on the GPU machine, so the scripts are run here first, without one."""

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
DRY_RUN = {**os.environ, "CONFIG": "configs/smoke.yaml", "GPU": "-1"}


def test_device_session_packs_each_step(tmp_path: Path) -> None:
    """A budget too small for the whole bench (it gets budget - 200 s): the script still ends within its budget,
    and the tests, the bench's finished parts, the variants and the learning table if it had time come back in
    one archive."""
    t0 = time.monotonic()
    p = subprocess.run(
        ["bash", "scripts/device_session.sh", "240", "1", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=290,
        env={**DRY_RUN, "OUT": str(tmp_path)},
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert time.monotonic() - t0 < 240 + 15
    with tarfile.open(tmp_path / "device_session.tgz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    x = tmp_path / "x"
    assert "skipped" in (x / "gpu_tests.log").read_text()  # no CUDA here: the GPU tests skip cleanly
    bench = json.loads((x / "bench_gpu.json").read_text())
    assert bench["actor_steps_per_s_per_process"] > 0  # its first part, written before the time limit
    assert bench.get("partial") is True or bench["e2e_async_steps_per_s"] > 0
    variants = json.loads((x / "learner_variants.json").read_text())["variants"]
    assert [(v["learner_precision"], v["learner_compile"]) for v in variants] == [
        ("fp32", False),
        ("auto", False),
        ("auto", True),
    ]
    assert all(v["steps_per_s"] > 0 for v in variants)
    if "no time left for the learning runs" not in p.stdout:
        assert "| async |" in (x / "learning" / "learning.md").read_text()


def test_device_learning_tabulates_both_runs(tmp_path: Path) -> None:
    p = subprocess.run(
        ["bash", "scripts/device_learning.sh", "1", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=200,
        env={**DRY_RUN, "OUT": str(tmp_path)},
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    table = (tmp_path / "learning.md").read_text()
    assert "| sync |" in table and "| async |" in table
    for lag in (0, 1):
        assert (tmp_path / f"lag{lag}_metrics.csv").stat().st_size > 0
