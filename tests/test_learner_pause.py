"""A learner that falls silent: paused (SIGSTOP) with its connections open, its actors wait up to
learner_pause_s and go on when it is heard again; ended (SIGKILL), they give up after actor_timeout_s.
Real learner and actors roles over TCP on loopback, and the waiting rule (``actors/patience.py``) alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors.patience import Patience
from common.transport import free_tcp_address, learner_listening, parse_tcp
from learner.logs import read_metrics

REPO = Path(__file__).resolve().parents[1]


def popen(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def rows(run_dir: Path) -> int:
    return len(read_metrics(run_dir / "metrics.csv").rows) if (run_dir / "metrics.csv").exists() else 0


def wait_rows(run_dir: Path, n: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and rows(run_dir) < n:
        time.sleep(0.2)
    return rows(run_dir)


def test_the_rule_gives_a_gone_learner_the_timeout_and_a_paused_one_the_pause() -> None:
    p = Patience(timeout_s=5.0, pause_s=100.0)
    assert p.give_up(4.0, linked=False) is None
    assert "nothing listens" in (p.give_up(6.0, linked=False) or "")
    assert p.give_up(6.0, linked=True) is None and p.give_up(99.0, linked=True) is None
    assert "learner_pause_s" in (p.give_up(101.0, linked=True) or "")
    short = Patience(5.0, 1.0)  # a pause shorter than the timeout: the timeout holds
    assert short.give_up(4.0, linked=True) is None and short.give_up(6.0, linked=True) is not None


def test_one_actor_says_a_line_a_minute_while_it_waits_and_one_when_it_hears_again() -> None:
    quiet, speaker = Patience(5.0, 3600.0), Patience(5.0, 3600.0, speaks=True)
    silences = [1.0, 5.5, 30.0, 64.0, 66.0, 130.0, 1.0, 2.0]
    said = [speaker.report(s, linked=True) for s in silences]
    assert [quiet.report(s, linked=True) for s in silences] == [None] * len(silences)
    assert Patience(5.0, 3600.0, speaks=True).report(6.0, linked=False) is None
    assert [s is not None for s in said] == [False, True, False, False, True, True, True, False]
    assert "wait up to 60 min (learner_pause_s)" in (said[1] or "") and "heard again" in (said[6] or "")


def test_the_probe_tells_a_listening_address_from_a_closed_one(tmp_path: Path) -> None:
    import socket

    addr = free_tcp_address()
    assert not learner_listening(addr)  # nothing listens: refused
    with socket.create_server(parse_tcp(addr)) as server:
        assert learner_listening(addr)  # listening, and never accepting: a stopped process's kernel does this
        assert server.accept()[0] is not None  # the probe's connection is in the queue, already closed
    assert not learner_listening(f"ipc://{tmp_path / 'learner'}")  # an ipc socket file that is not there


@pytest.fixture
def roles(tmp_path: Path, learner_role_cmd, actors_role_cmd):
    """(start(actor overrides...) -> (addr, run_dir, learner, actors)); both roles killed at the end."""
    started: list[subprocess.Popen] = []

    def start(*actor_overrides: str) -> tuple[str, Path, subprocess.Popen, subprocess.Popen]:
        addr, run_dir = free_tcp_address(), tmp_path / "run"
        learner = popen(learner_role_cmd(addr, run_dir, 10**8))
        actors = popen(actors_role_cmd(addr, 2, *actor_overrides))
        started.extend([learner, actors])
        assert wait_rows(run_dir, 2, 180) >= 2, "no updates"
        return addr, run_dir, learner, actors

    yield start
    for p in started:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
        p.communicate(timeout=60)


def test_a_learner_paused_three_times_the_timeout_keeps_its_actors_and_one_killed_ends_them(roles, actor_pids) -> None:
    """SIGSTOP the learner role for 3x actor_timeout_s, then SIGCONT: the same actors role and the
    same actor processes go on training. Before, every actor gave up and the role exited 3. Then the
    learner is killed: nothing listens at its address, and the actors give up after actor_timeout_s."""
    addr, run_dir, learner, actors = roles("actor_timeout_s=5")
    pids = actor_pids(addr)
    os.kill(learner.pid, signal.SIGSTOP)
    time.sleep(15)
    during = actors.poll(), actor_pids(addr)
    os.kill(learner.pid, signal.SIGCONT)
    n = rows(run_dir)
    after = wait_rows(run_dir, n + 3, 120), actors.poll(), actor_pids(addr)
    learner.kill()
    t0 = time.monotonic()
    _, err = actors.communicate(timeout=120)
    gave_up_s = time.monotonic() - t0
    assert len(pids) == 2 and during == (None, pids), err
    assert after[0] >= n + 3 and after[1:] == (None, pids), err  # training went on, no actor restarted
    assert "silent for" in err and "learner_pause_s" in err and "heard again" in err
    assert err.count("silent for") == 1  # one actor of the two speaks, once in 15 s
    assert actors.returncode == 3 and "nothing listens at its address (actor_timeout_s)" in err, err
    assert gave_up_s < 5 + 30  # the timeout, the last listen and the role's probe, with room


@pytest.mark.slow  # the bound's rule is tested above without processes
def test_a_pause_past_learner_pause_s_ends_the_actors(roles) -> None:
    addr, run_dir, learner, actors = roles("actor_timeout_s=3", "learner_pause_s=6")
    os.kill(learner.pid, signal.SIGSTOP)
    try:
        _, err = actors.communicate(timeout=60)
    finally:
        os.kill(learner.pid, signal.SIGCONT)
    assert actors.returncode == 3, err
    assert "address still listening (learner_pause_s); giving up" in err


@pytest.mark.slow  # the actors wait on their own, as the role's test above shows
def test_a_local_run_paused_three_times_the_timeout_goes_on(tmp_path: Path, actor_pids) -> None:
    """Local mode: the launcher (learner and supervisor in one process) stopped for 3x actor_timeout_s;
    its actors wait, and the run goes on with the same actor processes after SIGCONT."""
    addr, run_dir = free_tcp_address(), tmp_path / "run"
    smoke = str(REPO / "configs" / "smoke.yaml")
    args = ["launch.py", "--config", smoke, *"--actors 2 --learner-gpu -1 --bind".split(), addr]
    launcher = popen([*args, "--run-dir", str(run_dir), "--total-steps", str(10**8), "actor_timeout_s=5"])
    try:
        assert wait_rows(run_dir, 2, 180) >= 2, "no updates"
        pids = actor_pids(addr)
        os.kill(launcher.pid, signal.SIGSTOP)
        time.sleep(15)
        os.kill(launcher.pid, signal.SIGCONT)
        n = rows(run_dir)
        assert wait_rows(run_dir, n + 3, 120) >= n + 3
        assert len(pids) == 2 and actor_pids(addr) == pids
    finally:
        os.kill(launcher.pid, signal.SIGCONT)
        launcher.send_signal(signal.SIGTERM)
        _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, err
