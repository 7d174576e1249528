"""scripts/compare_runs.py: exact binned returns and rooms, the summary, and one-line refusals."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from learner.logs import METRICS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "compare_runs.py"
_spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT)
cr = importlib.util.module_from_spec(_spec)
sys.modules["compare_runs"] = cr  # dataclasses look their module up by name
_spec.loader.exec_module(cr)

# (agent_steps, return, rooms); the common range is 0..1000 (run "a" ends there), 4 bins of 250 steps
A_EPISODES = [
    (100, 0.0, [1]),
    (200, 100.0, [1, 2]),
    (600, 200.0, [1, 3]),
    (750, 0.0, [5]),
    (1000, 400.0, [1, 2, 3, 4]),
]  # 750: on a bin edge, and just before the last 20%
B_EPISODES = [(250, 0.0, [1]), (300, 0.0, [1]), (900, 300.0, [1, 5]), (1200, 1000.0, [1, 2, 3, 4, 5, 6])]


def make_run(d: Path, final_steps: int, lag: float, episodes: list[tuple[int, float, list[int]]]) -> Path:
    d.mkdir()
    with open(d / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(METRICS))
        w.writeheader()
        for u in range(1, final_steps // 100 + 1):  # one update per 100 agent steps, 1 s each
            w.writerow(
                {
                    "update": u,
                    "agent_steps": 100 * u,
                    "time_s": float(u),
                    "episodes": 0,
                    "episode_return_mean": "",
                    "steps_per_second": "" if u == 1 else 90 + 10 * u,
                    "policy_lag_mean": lag,
                }
            )
    with open(d / "episodes.jsonl", "w") as f:
        f.writelines(
            json.dumps(
                {
                    "return": r,
                    "length": 10,
                    "rooms": rooms,
                    "update": s // 100,
                    "agent_steps": s,
                    "actor": 0,
                    "policy_version": 0,
                }
            )
            + "\n"
            for s, r, rooms in episodes
        )
    return d


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    return make_run(tmp_path / "a", 1000, 0.0, A_EPISODES), make_run(tmp_path / "b", 1200, 1.0, B_EPISODES)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's learner/ package, whichever one is installed
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False, env=env
    )


def same(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y)


def test_bins_and_summary_exact(runs: tuple[Path, Path]) -> None:
    a, b = cr.load_run(runs[0], "sync"), cr.load_run(runs[1], "async")
    stop = cr.common_steps([a, b])
    assert stop == 1000
    ba, bb = cr.bin_run(a, stop, 4), cr.bin_run(b, stop, 4)
    nan = math.nan
    # (lo, hi, episodes, return mean, rooms/episode, cumulative rooms); bins are (lo, hi]
    want_a = [
        (0, 250, 2, 50.0, 1.5, 2),
        (250, 500, 0, nan, nan, 2),
        (500, 750, 2, 100.0, 1.5, 4),
        (750, 1000, 1, 400.0, 4.0, 5),
    ]
    want_b = [
        (0, 250, 1, 0.0, 1.0, 1),
        (250, 500, 1, 0.0, 1.0, 1),
        (500, 750, 0, nan, nan, 1),
        (750, 1000, 1, 300.0, 2.0, 2),
    ]  # the episode at 1200 is past the common range
    for got, want in ((ba, want_a), (bb, want_b)):
        for g, w in zip(got, want, strict=True):
            assert (g.lo, g.hi, g.episodes, g.rooms_total) == (w[0], w[1], w[2], w[5])
            assert same(g.return_mean, w[3]) and same(g.rooms_mean, w[4])

    sa, sb = cr.summarise(a, ba, stop), cr.summarise(b, bb, stop)
    # steps/s is 110..190 on rows 2..10 (row 1 empty); b's rows past 1000 steps are not used
    assert sa == pytest.approx(
        {
            "agent_steps": 1000,
            "time_s": 10.0,
            "steps_per_second": 100.0,
            "policy_lag_mean": 0.0,
            "return_last20": 400.0,
            "rooms_total": 5,
            "return_auc": (50 + 100 + 400) / 3,
        }
    )
    assert sb == pytest.approx(
        {
            "agent_steps": 1000,
            "time_s": 10.0,
            "steps_per_second": 100.0,
            "policy_lag_mean": 1.0,
            "return_last20": 300.0,
            "rooms_total": 2,
            "return_auc": 100.0,
        }
    )


def test_max_steps_caps_the_range(runs: tuple[Path, Path]) -> None:
    a = cr.load_run(runs[0], "a")
    stop = cr.common_steps([a], max_steps=500)
    bins = cr.bin_run(a, stop, 2)
    assert stop == 500 and [b.episodes for b in bins] == [2, 0] and bins[-1].rooms_total == 2
    s = cr.summarise(a, bins, stop)
    assert s["agent_steps"] == 500 and s["time_s"] == 5.0 and math.isnan(s["return_last20"])
    assert s["return_auc"] == 50.0


def test_render_marks_an_empty_bin_with_a_dash(runs: tuple[Path, Path]) -> None:
    a = cr.load_run(runs[0], "sync")
    bins = cr.bin_run(a, 1000, 4)
    text = cr.render([a], [bins], [cr.summarise(a, bins, 1000)])
    assert "| 250–500 | 0 | – | – | 2 |" in text
    assert "| 0–250 | 2 | 50.0 | 1.50 | 2 |" in text
    assert "| sync | 1000 | 10.0 | 100.0 | 0.00 | 400.0 | 5 | 183.3 |" in text


def test_cli_prints_both_tables_and_writes_markdown(runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp.md"
    p = cli(str(runs[0]), str(runs[1]), "--labels", "sync,async", "--bins", "4", "--markdown", str(out))
    assert p.returncode == 0, p.stderr
    assert "## Return and rooms per agent step" in p.stdout and "## Summary" in p.stdout
    assert "| 500–750 | 2 | 100.0 | 1.50 | 4 | 0 | – | – | 1 |" in p.stdout
    assert "| async | 1000 | 10.0 | 100.0 | 1.00 | 300.0 | 2 | 100.0 |" in p.stdout
    assert out.read_text() == p.stdout


def assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_damaged_lines_are_skipped_counted_and_noted(runs: tuple[Path, Path]) -> None:
    """learner/logs.py's rule: a damaged line (cut short, binary, valid JSON that is not an episode, a bad
    metrics row) is left out, the comparison goes on, and one note per file on stderr counts them."""
    before = cli(str(runs[0]), str(runs[1]), "--bins", "4")
    with open(runs[1] / "episodes.jsonl", "ab") as f:
        f.write(b'[1, 2]\n{}\n{"return": 1.0, "agent_steps": 10, "rooms": "12"}\n\x00\xff\xfe binary\n')
        f.write(b'{"return": 1.0, "agent_steps": ')  # cut short, the last line: a run killed mid-write
    with open(runs[1] / "metrics.csv", "ab") as f:
        f.write(b"13,1300,not a number\n")  # a row cut short and a stray cell: one damaged line
    p = cli(str(runs[0]), str(runs[1]), "--bins", "4")
    assert p.returncode == 0, p.stderr
    assert p.stdout == before.stdout  # the same tables: nothing of the damaged lines was used
    notes = p.stderr.strip().splitlines()
    assert notes == [
        f"compare_runs: note: {runs[1] / 'metrics.csv'}: skipped 1 damaged line",
        f"compare_runs: note: {runs[1] / 'episodes.jsonl'}: skipped 5 damaged lines",
    ]


def test_cli_refuses_bad_input_in_one_line(runs: tuple[Path, Path], tmp_path: Path) -> None:
    assert_one_line_error(cli(str(runs[0]), str(tmp_path / "nope")), "nope", "no such directory")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli(str(tmp_path / "empty")), "metrics.csv")
    (runs[1] / "metrics.csv").write_bytes(b"\x00\x01 binary\n1,2,3\n")  # no header: not a metrics.csv at all
    assert_one_line_error(cli(str(runs[0]), str(runs[1])), "metrics.csv", "not a metrics.csv")
    assert_one_line_error(cli(), "RUN_DIR")
    assert_one_line_error(cli(str(runs[0]), "--labels", "x,y"), "--labels")
    assert_one_line_error(cli(str(runs[0]), "--bins", "zero"), "--bins")
