"""What a user sees and keeps: run dirs that never collide, RUN_DIR/launch.log with the whole console
(the actors' lines too), the start line, the waiting lines and the note of a learner nobody reaches."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from launch import UsageError, make_run_dir

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")
PY = sys.executable


def test_default_run_dirs_never_collide(tmp_path: Path) -> None:
    base = tmp_path / "runs" / "montezuma_revenge-20261206-010203"
    got = [make_run_dir(base, unique=True) for _ in range(3)]
    assert [p.name for p in got] == [base.name, f"{base.name}-2", f"{base.name}-3"]
    racing: list[Path] = []
    threads = [threading.Thread(target=lambda: racing.append(make_run_dir(base, unique=True))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(racing)) == 8 and not set(racing) & set(got)  # runs started in the same second
    assert make_run_dir(base) == base  # a name given by the user is used as it is (check_fresh_run_dir judges it)
    (tmp_path / "afile").write_text("")
    with pytest.raises(UsageError, match="in the way"):
        make_run_dir(tmp_path / "afile")


def test_local_run_keeps_its_console_in_launch_log(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["--config", SMOKE, "--actors", "1", "--learner-gpu", "-1", "--run-dir", str(run_dir)]
    p = subprocess.run(
        [PY, "launch.py", *args, "--total-steps", "128", "MaxStepsPerEpisode=20"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 0, p.stderr
    log = (run_dir / "launch.log").read_text()
    start = log.splitlines()[0]
    assert start.startswith(f"launch: run dir {run_dir} | learner on cpu |") and "| 1 actors |" in start
    assert "128 agent steps (2 updates of 64)" in start and "a warm-up of 32 frames" in start
    assert "warm-up 0/32 frames (0%) | env streams heard 0/4" in log
    update = next(ln for ln in log.splitlines() if ln.startswith("update "))
    assert "50.0%" in update and "ETA" in update and "nan" not in update
    assert "actor 0: learner finished training" in log  # an actor process's stderr
    assert "launch: done at 128 agent steps" in log
    assert set((p.stdout + p.stderr).splitlines()) <= set(log.splitlines())  # all the console, in order or not


def _lines(proc: subprocess.Popen) -> tuple[list[tuple[float, str]], threading.Thread]:
    """Read ``proc``'s stdout into (time, line) pairs in a thread."""
    got: list[tuple[float, str]] = []

    def read() -> None:
        for line in proc.stdout:
            got.append((time.monotonic(), line.rstrip("\n")))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return got, t


@pytest.mark.slow  # the line itself is tested with a made-up clock in test_status.py
def test_a_learner_nobody_reaches_says_so(tmp_path: Path, learner_role_cmd: Callable[..., list[str]]) -> None:
    """Waiting lines from the start, and after 30 s without an actor one line naming where it listens."""
    from common.transport import free_tcp_address

    addr, run_dir = free_tcp_address(), tmp_path / "run"
    proc = subprocess.Popen(
        [PY, *learner_role_cmd(addr, run_dir, 128)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    got, reader = _lines(proc)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any("no actor heard" in ln for _, ln in got):
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(10)
    finally:
        proc.kill()
    lines = [ln for _, ln in got]
    t_start = next(t for t, ln in got if ln.startswith("launch: run dir"))
    t_wait = next(t for t, ln in got if "env streams heard 0/4" in ln)
    assert t_wait - t_start < 10, lines
    note = next(ln for ln in lines if "no actor heard" in ln)
    assert note == f"status: no actor heard for 30 s; the learner listens on {addr}, it expects no keys (plaintext)"
    assert "actors: those of --role actors" in lines[0]
    assert note in (run_dir / "launch.log").read_text()


def test_help_points_to_print_config_and_the_key_table() -> None:
    p = subprocess.run([PY, "launch.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    assert "--print-config [--config FILE] [key=value ...]" in p.stdout
    assert 'README.md, section "Config keys"' in p.stdout
    readme = (REPO / "README.md").read_text()
    assert "\n## Config keys\n" in readme  # the section the help names


def test_a_console_already_sent_to_launch_log_is_not_copied_twice(tmp_path: Path) -> None:
    """study.py sends a run's console to RUN_DIR/launch.log itself: each line must be there once."""
    from common.transport import free_tcp_address

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    args = ["--role", "learner", "--bind", free_tcp_address(), "--config", SMOKE, "--learner-gpu", "-1"]
    with open(run_dir / "launch.log", "a") as log:
        p = subprocess.run(
            [PY, "launch.py", *args, "--run-dir", str(run_dir), "--total-steps", "0"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    assert p.returncode == 0
    text = (run_dir / "launch.log").read_text()
    assert text.count("launch: run dir") == 1 and text.count("launch: done at 0 agent steps") == 1, text
