"""The GPU check rehearsed on the CPU on every run: scripts/device_session.sh with REHEARSAL=1 runs every step at
toy size (the CUDA parts skipped), so a broken path, a missing file or a wrong flag fails here, not on the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_device_session_rehearsal(tmp_path: Path) -> None:
    env = {**os.environ, "REHEARSAL": "1", "OUT": str(tmp_path)}
    env.pop("CONFIG", None)
    p = subprocess.run(
        ["bash", "scripts/device_session.sh"], cwd=REPO, capture_output=True, text=True, timeout=360, env=env
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    with tarfile.open(tmp_path / "device_session.tgz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    x = tmp_path / "x"
    assert "skipped" in (x / "gpu_tests.log").read_text()  # no CUDA here: the GPU tests skip cleanly
    assert (x / "bench_async.log").is_file() and (x / "bench.log").is_file()
    async_part = json.loads((x / "bench_async.json").read_text())
    assert async_part.get("partial") is True or async_part["e2e_async_steps_per_s"] > 0
    assert (x / "learner_variants.log").is_file()
