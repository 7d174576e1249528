"""study/lock.py: one study.py run at a time in a study folder; a lock whose study is gone is taken over on its
host, and one of another host is refused with who holds it and how to remove it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_study_fakes import REPO, run_study

from study import StudyError
from study.cli import main
from study.lock import LOCK_FILE, StudyLock, pid_namespace, process_start

TINY_GRID = ["--config", str(REPO / "configs" / "smoke.yaml"), "--axis", "ExtCoeff=2,0", "--gpus", "none"]


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(study_dir: Path, **holder: object) -> Path:
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / LOCK_FILE).write_text(json.dumps(holder))
    return study_dir / LOCK_FILE


def test_a_held_lock_refuses_a_second_study_and_is_released(tmp_path: Path):
    with StudyLock(tmp_path / "s") as first:
        held = json.loads(first.path.read_text())
        assert held["host"] == socket.gethostname() and held["pid"] == os.getpid()
        with pytest.raises(StudyError, match=f"in use by another study on this host \\(pid {os.getpid()}") as e:
            StudyLock(tmp_path / "s").acquire()
        assert "\n" not in str(e.value)
    assert not (tmp_path / "s" / LOCK_FILE).exists()


def test_a_stale_lock_of_this_host_is_taken_over(tmp_path: Path, capsys):
    s = tmp_path / "s"
    pid = dead_pid()
    write_lock(s, host=socket.gethostname(), pid=pid, started=None, since="then")
    with StudyLock(s) as lock:
        assert json.loads(lock.path.read_text())["token"] == lock.me["token"]
    assert f"took over {s / LOCK_FILE} of pid {pid}" in capsys.readouterr().err
    # a live pid that now belongs to a later process (the lock's pid was reused) is stale too
    write_lock(s, host=socket.gethostname(), pid=os.getpid(), started=(process_start(os.getpid()) or 0) - 1)
    if process_start(os.getpid()) is not None:  # where /proc tells a process's start
        with StudyLock(s):
            pass
    assert sorted(p.name for p in s.iterdir()) in ([], [LOCK_FILE])  # nothing moved aside is left behind


def test_a_lock_of_another_host_is_refused_naming_host_pid_and_the_way_out(tmp_path: Path):
    lock = write_lock(tmp_path / "s", host="node7.example", pid=4242, since="2025-01-01 10:00:00")
    with pytest.raises(StudyError) as e:
        StudyLock(tmp_path / "s").acquire()
    msg = str(e.value)
    assert "host node7.example (pid 4242, since 2025-01-01 10:00:00)" in msg and f"remove {lock}" in msg
    assert lock.exists()  # refused, not taken
    if pid_namespace() is not None:  # the same host name, another container: its pids are not ours to check
        write_lock(tmp_path / "s", host=socket.gethostname(), pid=dead_pid(), pid_ns=pid_namespace() + 1)
        with pytest.raises(StudyError, match=f"in use by a study on host {socket.gethostname()}"):
            StudyLock(tmp_path / "s").acquire()
    lock.write_text("")  # a lock that never got its record (its study died between create and write)
    with pytest.raises(StudyError, match="unreadable"):
        StudyLock(tmp_path / "s").acquire()


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path: Path):
    lock = StudyLock(tmp_path / "s")
    lock.acquire()
    write_lock(tmp_path / "s", host="other", pid=1, token="theirs")  # taken over meanwhile
    lock.release()
    assert json.loads((tmp_path / "s" / LOCK_FILE).read_text())["token"] == "theirs"


def test_a_second_study_run_on_a_locked_folder_changes_nothing(tmp_path: Path):
    """Two study.py run in one folder: the second refuses in one line before it touches study.json or a run
    folder (it would delete the first one's runs that have no checkpoint yet)."""
    s = tmp_path / "s"
    assert main(["run", str(s), *TINY_GRID, "--dry-run"]) == 0
    (s / "ExtCoeff2_seed0").mkdir()  # a run just started by the first study: no checkpoint yet
    plan = (s / "study.json").read_bytes()
    with StudyLock(s):  # the first study, running (this process is alive)
        second = run_study("run", str(s), *TINY_GRID, "--axis", "ExtCoeff=5", timeout=120)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"study: error: {s} is in use by another study on this host (pid ")
    assert (s / "study.json").read_bytes() == plan and (s / "ExtCoeff2_seed0").is_dir()


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path):
    (tmp_path / "file").write_text("")
    for where in (tmp_path / "file", tmp_path / "file" / "s"):
        with pytest.raises(StudyError, match=f"cannot create the study folder {where}: "):
            StudyLock(where).acquire()
