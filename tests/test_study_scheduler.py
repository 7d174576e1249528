"""study/scheduler.py: the grid runs as ordinary launch.py runs (skipped if finished, resumed if not),
Ctrl-C stops them at a checkpoint, and the same command continues the study."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_study_fakes import REPO, TINY, is_png, metrics_rows, run_study


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
