"""study/report.py and study/runs.py: the report's numbers and figures come from the run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_study_fakes import is_png, metrics_rows, synthetic_study

from study.cli import main
from study.figures import CURVES


def test_report_on_synthetic_runs_writes_every_figure_and_the_csv_values(tmp_path: Path):
    s = tmp_path / "s"
    synthetic_study(s)
    assert main(["report", str(s), "--eval-episodes", "0"]) == 0
    out = s / "report"
    figures = [f"curve_{k}.png" for k, _ in CURVES] + ["room_map.png", "heat_maps.png"]
    for f in figures:
        assert is_png(out / f), f
        assert f"]({f})" in (out / "report.md").read_text()
    summary = {r["name"]: r for r in json.loads((out / "summary.json").read_text())}
    for name, r in summary.items():
        rows = metrics_rows(s / name)
        assert r["agent_steps"] == int(rows[-1]["agent_steps"])
        assert r["final_episode_return_mean"] == pytest.approx(float(rows[-1]["episode_return_mean"]))
        assert r["cells_visited_total"] == int(rows[-1]["cells_visited_total"])
        assert r["rooms_visited_total"] == int(rows[-1]["rooms_visited_total"]) == 3
        assert r["wall_s"] == pytest.approx(float(rows[-1]["time_s"]))
        assert r["steps_per_s"] == pytest.approx(r["agent_steps"] / r["wall_s"])
    assert [summary[n]["cells_visited_total"] for n in ("ExtCoeff2_seed0", "ExtCoeff2_seed1", "ExtCoeff0_seed0")] == [
        70,
        90,
        50,
    ]
    a = summary["ExtCoeff2_seed0"]
    assert a["steps_to_first_reward"] == 6000 and a["best_episode_return"] == 400.0
    assert a["wall_s_to_first_reward"] == pytest.approx(15.0)  # 6,000 steps are update 6's, at 6 x 2.5 s
    assert summary["ExtCoeff2_seed1"]["steps_to_first_reward"] is None
    assert summary["ExtCoeff0_seed0"]["best_episode_return"] == 0.0
    table = [ln for ln in (out / "report.md").read_text().splitlines() if ln.startswith("| ExtCoeff=")]
    assert table[0].startswith("| ExtCoeff=2 | 2 | ") and "none in 1/2; 6,000" in table[0]
    assert table[1].startswith("| ExtCoeff=0 | 1 | 20,000 |") and "none in 1/1" in table[1]
    assert "| 80 [70, 90] |" in table[0] and "| 50 |" in table[1]  # cells: mean [min, max] over seeds


def test_report_refuses_an_empty_study(tmp_path: Path, capsys):
    (tmp_path / "s").mkdir()
    assert main(["report", str(tmp_path / "s")]) == 2
    assert "holds no run folders" in capsys.readouterr().err
