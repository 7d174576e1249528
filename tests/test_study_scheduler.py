"""study/scheduler.py: the grid runs as ordinary launch.py runs (skipped if finished, resumed if not),
Ctrl-C stops them at a checkpoint, and the same command continues the study."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_study_fakes import REPO, TINY, is_png, metrics_rows, run_study

from study import StudyError
from study.cli import main
from study.scheduler import actors_share, child_env, slots_for, visible_device

TINY_GRID = ["--config", str(REPO / "configs" / "smoke.yaml"), "--axis", "ExtCoeff=2,0"]


def test_study_runs_skips_finished_resumes_and_reports(tmp_path: Path):
    s = tmp_path / "s"
    first = run_study("run", str(s), *TINY, "--axis", "ExtCoeff=2,0", "--total-steps", "128")
    assert first.returncode == 0, first.stdout + first.stderr
    names = ["ExtCoeff2_seed0", "ExtCoeff0_seed0"]
    for n in names:
        info = json.loads((s / n / "study_run.json").read_text())
        assert info["status"] == "finished" and info["agent_steps"] == 128 and info["values"] == {"ExtCoeff": n[8]}
        assert [r["agent_steps"] for r in metrics_rows(s / n)] == ["64", "128"]
    assert "2/2 runs done" in first.stdout

    again = run_study("run", str(s), *TINY, "--axis", "ExtCoeff=2,0", "--total-steps", "128")
    assert again.returncode == 0 and "(2 finished already)" in again.stdout
    assert all((s / n / "launch.log").read_text().count("# study:") == 1 for n in names)  # nothing relaunched

    # interrupted half-way through a longer study, then continued by the same command
    args = [sys.executable, str(REPO / "study.py"), "run", str(s), *TINY, "--axis", "ExtCoeff=2,0"]
    proc = subprocess.Popen(
        args + ["--total-steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
    )
    deadline = time.monotonic() + 120
    while len(metrics_rows(s / names[0])) < 6 and time.monotonic() < deadline:  # a checkpoint at update 5
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    stopped = json.loads((s / names[0] / "study_run.json").read_text())
    assert stopped["status"] == "stopped" and 6 <= stopped["agent_steps"] // 64 < 100000 // 64
    assert json.loads((s / names[1] / "study_run.json").read_text())["status"] == "finished"  # never started

    more = run_study("run", str(s), *TINY, "--axis", "ExtCoeff=2,0", "--total-steps", "640")
    assert more.returncode == 0, more.stdout + more.stderr
    for n in names:
        log = (s / n / "launch.log").read_text()
        assert "--resume" in log.split("# study:")[-1]
        updates = [int(r["update"]) for r in metrics_rows(s / n)]
        assert updates == list(range(1, len(updates) + 1)) and len(updates) >= 10  # continued, none twice
        assert json.loads((s / n / "study_run.json").read_text())["agent_steps"] >= 640

    rep = run_study("report", str(s), "--eval-episodes", "1")
    assert rep.returncode == 0, rep.stdout + rep.stderr
    out = s / "report"
    for n in names:
        assert (out / f"{n}_best.gif").stat().st_size > 0 and is_png(out / f"{n}_int_trace.png")
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary] == names
    assert all(r["agent_steps"] >= 640 and r["eval"]["episodes"] == 1 for r in summary)
    assert "ExtCoeff2_seed0_best.gif" in (out / "report.md").read_text()


@pytest.fixture
def two_gpus(monkeypatch):
    """This process sees two GPUs (torch says so), whatever the machine has."""
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_per_gpu_runs_k_runs_on_each_gpu_at_once(two_gpus):
    assert slots_for("0,1", None) == ["0", "1"]
    assert slots_for("0,1", None, per_gpu=2) == ["0", "1", "0", "1"]  # spread over the GPUs first
    assert slots_for("1", None, per_gpu=3) == ["1", "1", "1"]
    assert slots_for("0,1", 3, per_gpu=2) == ["0", "1", "0"]  # --parallel caps the runs at a time
    assert slots_for("none", 2) == [None, None]
    with pytest.raises(StudyError, match="--per-gpu needs GPUs"):
        slots_for("none", None, per_gpu=2)
    with pytest.raises(StudyError, match="--per-gpu must be >= 1"):
        slots_for("0", None, per_gpu=0)
    with pytest.raises(StudyError, match="2 CUDA device"):
        slots_for("0,2", None)


def test_gpu_indices_are_those_this_shell_sees(two_gpus, monkeypatch, tmp_path: Path, capsys):
    """With CUDA_VISIBLE_DEVICES=2,3 set, --gpus 0,1 means physical 2 and 3: the child's list is the parent's
    entry at the slot's index, not the bare index."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert child_env("1")["CUDA_VISIBLE_DEVICES"] == "1" and "CUDA_VISIBLE_DEVICES" not in child_env(None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert child_env("0")["CUDA_VISIBLE_DEVICES"] == "2" and child_env("1")["CUDA_VISIBLE_DEVICES"] == "3"
    assert child_env(None)["CUDA_VISIBLE_DEVICES"] == "2,3"  # a CPU run keeps the shell's view
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa, GPU-bbbb")
    assert child_env("1")["CUDA_VISIBLE_DEVICES"] == "GPU-bbbb"
    assert visible_device("1", None) == "1"
    with pytest.raises(StudyError, match="shows this study 1 GPU"):
        visible_device("1", "5")

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert main(["run", str(tmp_path / "s"), *TINY_GRID, "--gpus", "0,1", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["CUDA_VISIBLE_DEVICES=2", "CUDA_VISIBLE_DEVICES=3"]
    assert all("--learner-gpu 0" in ln for ln in lines)  # each run's one GPU is its cuda:0


def test_concurrent_runs_divide_the_cores_in_every_mode(two_gpus, monkeypatch, tmp_path: Path, capsys):
    """Each run at a time keeps a core for its learner and an equal share of the rest for its actors:
    max(1, (cores - K) // K), at most its NumWorkers (4 in smoke.yaml); an explicit --actors is kept."""
    assert [actors_share(16, k) for k in (1, 2, 3, 4, 16, 20)] == [15, 7, 4, 3, 1, 1]

    def actors(*args: str, cores: int, runs: str = "ExtCoeff=2,1,0,3") -> list[int]:
        monkeypatch.setattr("study.cli.usable_cores", lambda: cores)
        grid = ["--config", str(REPO / "configs" / "smoke.yaml"), "--axis", runs]
        assert main(["run", str(tmp_path / "s"), *grid, *args, "--dry-run"]) == 0
        out = capsys.readouterr().out.splitlines()
        return [int(ln.split("--actors ")[1].split()[0]) for ln in out]

    assert actors("--gpus", "0,1", cores=11) == [4, 4, 4, 4]  # 2 at a time: (11 - 2) // 2, not each 10
    assert actors("--gpus", "0,1", cores=8) == [3, 3, 3, 3]
    assert actors("--gpus", "0,1", "--per-gpu", "2", cores=16) == [3, 3, 3, 3]  # 4 at a time
    assert actors("--gpus", "none", "--parallel", "2", cores=2) == [1, 1, 1, 1]
    assert actors("--gpus", "none", cores=64) == [4, 4, 4, 4]  # no more actors than envs (launch.py's limit)
    assert actors("--gpus", "0,1", "--per-gpu", "4", cores=8, runs="ExtCoeff=2,0") == [3, 3]  # 2 runs: 2 at once
    assert actors("--gpus", "0,1", "--actors", "2", cores=64) == [2, 2, 2, 2]


def test_two_shards_run_as_two_commands_give_one_merged_report(tmp_path: Path):
    """Two hosts' shares of one grid, each in its own folder (here two commands at once on this machine),
    then one report of both."""
    a, b = tmp_path / "host_a", tmp_path / "host_b"
    grid = [*TINY, "--axis", "ExtCoeff=2,0", "--total-steps", "64"]
    procs = [
        subprocess.Popen(
            [sys.executable, str(REPO / "study.py"), "run", str(d), *grid, "--shard", shard],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        for d, shard in ((a, "1/2"), (b, "2/2"))
    ]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "shard 1/2 of the grid" in outs[0] and "1/1 runs done" in outs[0]
    assert sorted(p.name for p in a.iterdir()) == ["ExtCoeff2_seed0", "study.json"]  # the lock is gone too
    assert sorted(p.name for p in b.iterdir()) == ["ExtCoeff0_seed0", "study.json"]
    rep = run_study("report", str(a), str(b), "--eval-episodes", "0")
    assert rep.returncode == 0, rep.stdout + rep.stderr
    summary = json.loads((a / "report" / "summary.json").read_text())
    assert [(r["name"], r["agent_steps"]) for r in summary] == [("ExtCoeff2_seed0", 64), ("ExtCoeff0_seed0", 64)]
    assert f"Written by `python study.py report {a} {b} --eval-episodes 0`" in (a / "report" / "report.md").read_text()
