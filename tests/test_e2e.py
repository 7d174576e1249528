"""End to end, as a user runs it: launch.py (local and two roles over TCP), eval.py, resume, signals, restarts."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")
PY = sys.executable
REQUIRED_COLUMNS = [
    "update",
    "agent_steps",
    "frames",
    "ext_reward_per_rollout",
    "int_reward_per_rollout",
    "episode_return_mean",
    "rooms_visited_total",
    "policy_lag_mean",
    "steps_per_second",
    "rejected_messages",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "explained_var_ext",
    "explained_var_int",
    "wait_data_s",
    "learn_s",
]


def run(args: list[str], timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, **kw)


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def free_addr() -> str:
    from common.transport import free_tcp_address

    return free_tcp_address()


def popen(args: list[str]) -> subprocess.Popen:
    """``args`` under this interpreter in the repo, its output piped as text."""
    return subprocess.Popen([PY, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def start_learner_role(learner_role_cmd: Callable[..., list[str]]) -> Callable[[str, Path, int], subprocess.Popen]:
    """(addr, run_dir, total_steps) -> a learner role bound at ``addr``, started."""
    return lambda addr, run_dir, total_steps: popen(learner_role_cmd(addr, run_dir, total_steps))


@pytest.fixture
def start_actors_role(actors_role_cmd: Callable[..., list[str]]) -> Callable[..., subprocess.Popen]:
    """(addr, *extra) -> an actors role of 2 actors connecting to ``addr``, started."""
    return lambda addr, *extra: popen(actors_role_cmd(addr, 2, *extra))


def test_local_train_eval_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    p = run(
        [
            "launch.py",
            "--config",
            SMOKE,
            "--actors",
            "2",
            "--learner-gpu",
            "-1",
            "--run-dir",
            str(run_dir),
            "--total-steps",
            "192",
            "MaxStepsPerEpisode=20",
        ]
    )
    assert p.returncode == 0, p.stderr
    rows = read_metrics(run_dir)
    assert [int(r["update"]) for r in rows] == [1, 2, 3]
    assert all(c in rows[0] for c in REQUIRED_COLUMNS)
    assert int(rows[-1]["agent_steps"]) == 192 and int(rows[-1]["frames"]) == 4 * 192
    assert float(rows[-1]["policy_lag_mean"]) <= 1.0
    assert int(rows[-1]["dropped_stale_segments"]) == 0  # flow control: actors never outrun the lag bound
    episodes = [json.loads(x) for x in (run_dir / "episodes.jsonl").read_text().splitlines()]
    assert episodes and {e["length"] for e in episodes} == {20}  # the cap is a truncation at 20 steps
    assert {e["stream"] for e in episodes} == {0, 1, 2, 3}  # episode stats come from every env
    assert all(e["rooms"] == [1] or 1 in e["rooms"] for e in episodes)
    assert int(rows[-1]["rooms_visited_total"]) >= 1
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    assert list((run_dir / "tb").iterdir()), "TensorBoard events missing"

    out = tmp_path / "eval.json"
    e = run(
        [
            "eval.py",
            str(run_dir / "checkpoints" / "latest.pt"),
            "--episodes",
            "2",
            "--max-steps",
            "15",
            "--json",
            str(out),
            "--video",
            str(tmp_path / "play.mp4"),
        ]
    )
    assert e.returncode == 0, e.stderr
    summary = json.loads(out.read_text())
    assert summary["update"] == 3 and len(summary["episodes"]) == 2
    assert all(ep["length"] == 15 for ep in summary["episodes"]) and 1 in summary["rooms_visited"]
    assert "episode 2: checkpoint update 3" in e.stdout
    assert (tmp_path / "play.mp4").stat().st_size > 1000

    keys = tmp_path / "keys"  # local mode with keys: both channels CURVE on loopback
    assert run(["launch.py", "keys", str(keys)]).returncode == 0
    r = run(
        [
            "launch.py",
            "--resume",
            str(run_dir),
            "--actors",
            "2",
            "--learner-gpu",
            "-1",
            "--total-steps",
            "320",
            "--keys",
            str(keys),
        ]
    )
    assert r.returncode == 0, r.stderr
    assert "(CURVE)" in r.stdout
    rows = read_metrics(run_dir)
    assert [int(x["update"]) for x in rows] == [1, 2, 3, 4, 5]
    assert int(rows[-1]["agent_steps"]) == 320


def test_learner_and_actors_roles_over_tcp(tmp_path: Path, start_learner_role, actors_role_cmd) -> None:
    addr = free_addr()
    run_dir = tmp_path / "run"
    learner = start_learner_role(addr, run_dir, total_steps=128)
    try:
        actors = run(actors_role_cmd(addr, 2), timeout=180)
        assert actors.returncode == 0, actors.stderr
        assert "learner finished training" in actors.stderr
        out, err = learner.communicate(timeout=60)
        assert learner.returncode == 0, err
    finally:
        learner.kill()
    rows = read_metrics(run_dir)
    assert int(rows[-1]["agent_steps"]) == 128


def test_actor_gives_up_on_a_silent_learner(tmp_path: Path, actors_role_cmd) -> None:
    addr = free_addr()  # nothing listens there
    t0 = time.monotonic()
    p = run(actors_role_cmd(addr, 1, "actor_timeout_s=3"), timeout=120)
    assert p.returncode == 3, p.stderr  # the actors role failed: every actor gave up (before, exit 0)
    assert "no message from the learner" in p.stderr
    assert "launch: error: no actor left: actor 0 gave up on a silent learner" in p.stderr
    assert time.monotonic() - t0 < 60


def test_bad_messages_are_counted_not_fatal(tmp_path: Path, start_learner_role, actors_role_cmd) -> None:
    addr = free_addr()
    run_dir = tmp_path / "run"
    learner = start_learner_role(addr, run_dir, total_steps=128)
    try:
        ctx = zmq.Context.instance()
        push = ctx.socket(zmq.PUSH)
        push.connect(addr)
        bad = [
            [b"not json"],
            [b'{"proto": 1, "kind": "segment", "compression": "none", "arrays": []}'],
            [b"\x80\x04\x95pickle"],
            [b'{"proto": 99}'],
        ]
        for frames in bad:
            push.send_multipart(frames)
        actors = run(actors_role_cmd(addr, 1), timeout=180)
        assert actors.returncode == 0, actors.stderr
        _, err = learner.communicate(timeout=60)
        assert learner.returncode == 0, err
        push.close(linger=0)
    finally:
        learner.kill()
    rows = read_metrics(run_dir)
    assert int(rows[-1]["rejected_messages"]) == len(bad)
    assert err.count("dropped a bad message") <= len(bad)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find actor processes")
def test_killed_actor_is_restarted_and_sigterm_checkpoints(tmp_path: Path, actor_pids) -> None:
    addr = free_addr()
    run_dir = tmp_path / "run"
    p = subprocess.Popen(
        [
            PY,
            "launch.py",
            "--config",
            SMOKE,
            "--actors",
            "2",
            "--learner-gpu",
            "-1",
            "--bind",
            addr,
            "--run-dir",
            str(run_dir),
            "--total-steps",
            "100000000",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (run_dir / "metrics.csv").exists():
            time.sleep(0.5)
        while time.monotonic() < deadline and len(read_metrics(run_dir)) < 2:
            time.sleep(0.5)
        victims = actor_pids(addr)
        assert len(victims) == 2
        os.kill(victims[0], signal.SIGKILL)
        n = len(read_metrics(run_dir))
        while time.monotonic() < deadline and len(read_metrics(run_dir)) < n + 3:
            time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert "restarting" in err
    rows = read_metrics(run_dir)
    assert int(rows[-1]["actor_restarts"]) >= 1
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    from learner.checkpoint import load_checkpoint

    assert load_checkpoint(run_dir)["counters"]["update"] == int(rows[-1]["update"])
    time.sleep(1)
    assert actor_pids(addr) == []


def _wait_rows(run_dir: Path, n: int, deadline: float) -> None:
    while time.monotonic() < deadline and not ((run_dir / "metrics.csv").exists() and len(read_metrics(run_dir)) >= n):
        time.sleep(0.1)


@pytest.mark.slow
def test_a_second_signal_during_an_update_stops_cleanly(tmp_path: Path) -> None:
    """Before, the second signal ended in a KeyboardInterrupt traceback. Updates here take seconds
    (EpochSteps=100), so both signals land in the second update. (test_faults has a fast in-process
    version.)"""
    run_dir = tmp_path / "run"
    p = subprocess.Popen(
        [
            PY,
            "launch.py",
            "--config",
            SMOKE,
            "--actors",
            "1",
            "--learner-gpu",
            "-1",
            "--run-dir",
            str(run_dir),
            "--total-steps",
            "100000000",
            "EpochSteps=100",
            "checkpoint_every=1",
            "NumWorkers=2",
            "BatchSize=16",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_rows(run_dir, 1, time.monotonic() + 180)
        assert len(read_metrics(run_dir)) == 1
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "a second signal stops at once" in err
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "the update in progress was dropped" in err and "latest.pt holds update 1" in err
    from learner.checkpoint import load_checkpoint

    assert [int(r["update"]) for r in read_metrics(run_dir)] == [1]
    assert load_checkpoint(run_dir)["counters"]["update"] == 1


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find actor processes")
def test_an_actor_stopped_past_its_timeout_goes_on_when_resumed(
    tmp_path: Path, start_learner_role, start_actors_role, actor_pids
) -> None:
    """SIGSTOP for longer than actor_timeout_s, then SIGCONT: before, the actor gave up at once on a
    learner that was alive (it judged the silence before reading what was queued)."""
    addr = free_addr()
    run_dir = tmp_path / "run"
    learner = start_learner_role(addr, run_dir, total_steps=10**8)
    actors = start_actors_role(addr, "actor_timeout_s=5")
    try:
        _wait_rows(run_dir, 1, time.monotonic() + 180)
        pids = actor_pids(addr)
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGSTOP)
        time.sleep(12)
        os.kill(pids[0], signal.SIGCONT)
        n = len(read_metrics(run_dir))
        _wait_rows(run_dir, n + 3, time.monotonic() + 120)
        assert len(read_metrics(run_dir)) >= n + 3
        assert pids[0] in actor_pids(addr)  # the stopped one did not give up
        learner.send_signal(signal.SIGTERM)
        learner.communicate(timeout=60)
        _, err = actors.communicate(timeout=60)
    finally:
        learner.kill()
        actors.kill()
    assert actors.returncode == 0, err
    assert "learner finished training" in err


@pytest.mark.slow
def test_a_fresh_learner_behind_running_actors_gets_its_warmup(
    tmp_path: Path, start_learner_role, start_actors_role
) -> None:
    """The first learner dies (SIGKILL: no stop message); a fresh one on the same address asks for
    warm-up frames. Before, the running actors never sent them again and it waited forever."""
    addr = free_addr()
    first = start_learner_role(addr, tmp_path / "first", total_steps=10**8)
    actors = start_actors_role(addr)
    second = None
    try:
        _wait_rows(tmp_path / "first", 1, time.monotonic() + 180)
        first.kill()
        first.wait(timeout=30)
        second = start_learner_role(addr, tmp_path / "second", total_steps=192)
        _, learner_err = second.communicate(timeout=120)
        assert second.returncode == 0, learner_err
        _, err = actors.communicate(timeout=60)
    finally:
        first.kill()
        actors.kill()
        if second is not None:
            second.kill()
    rows = read_metrics(tmp_path / "second")
    assert int(rows[-1]["agent_steps"]) == 192
    assert actors.returncode == 0, err
