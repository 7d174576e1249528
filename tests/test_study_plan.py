"""study/plan.py: the grid's configurations, run names and commands, and the refusals before any run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_study_fakes import REPO, TINY, run_study

from study import StudyError
from study.plan import grid_values, parse_axis, run_name


def test_names_and_grid():
    assert run_name({"ExtCoeff": "2", "IntCoeff": "0.5"}, 1) == "ExtCoeff2_IntCoeff0.5_seed1"
    assert run_name({"EnvName": "ALE/Pong-v5"}, 0) == "EnvNameALE-Pong-v5_seed0"
    grid = grid_values([("ExtCoeff", ["2", "0"]), ("LearningRate", ["1e-4", "3e-4"])], [])
    assert len(grid) == 4 and grid[1] == {"ExtCoeff": "2", "LearningRate": "3e-4"}
    arms = grid_values([], [{"ExtCoeff": "2"}, {"IntCoeff": "0", "ExtCoeff": "2"}])
    assert arms == [{"ExtCoeff": "2"}, {"IntCoeff": "0", "ExtCoeff": "2"}]
    with pytest.raises(StudyError):
        grid_values([("ExtCoeff", ["2", "2"])], [])
    with pytest.raises(StudyError):
        parse_axis("ExtCoeff")


def test_dry_run_prints_the_default_grid_and_refuses_bad_keys(tmp_path: Path):
    out = run_study("run", str(tmp_path / "s"), "--dry-run", "--gpus", "none")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3  # the report's study: ExtCoeff 2, 1, 0 at the config's IntCoeff 1
    for line, v in zip(lines, ["2", "1", "0"], strict=True):
        assert "launch.py" in line and f"ExtCoeff={v}" in line and "seed=0" in line and "--learner-gpu -1" in line
        assert f"ExtCoeff{v}_seed0" in line
    plan = json.loads((tmp_path / "s" / "study.json").read_text())  # the plan, for the report of a scheduler's runs
    assert [r["values"] for r in plan["runs"]] == [{"ExtCoeff": v} for v in "210"]
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["study.json"]  # and no run folder
    bad = run_study("run", str(tmp_path / "s"), "--dry-run", "--axis", "NoSuchKey=1,2")
    assert bad.returncode == 2 and "NoSuchKey" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_study("run", str(tmp_path / "s"), "--dry-run", "--axis", "ExtCoeff=2,x")
    assert bad.returncode == 2 and "ExtCoeff" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_study("run", str(tmp_path / "s"), "--dry-run", "--bogus")
    assert bad.returncode == 2 and "--bogus" in bad.stderr


def test_overrides_after_the_options_and_paths_from_another_folder(tmp_path: Path):
    out = run_study(
        "run",
        str(tmp_path / "o"),
        "--config",
        "configs/smoke.yaml",
        "--gpus",
        "none",
        "--dry-run",
        "LearningRate=0.0002",
    )
    assert out.returncode == 0, out.stderr
    assert all("LearningRate=0.0002" in line for line in out.stdout.splitlines())
    elsewhere = run_study(
        "run", "s", "--config", str(REPO / "configs" / "smoke.yaml"), "--gpus", "none", "--dry-run", cwd=tmp_path
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert f"--run-dir {tmp_path / 's' / 'ExtCoeff2_seed0'}" in elsewhere.stdout  # the folder it was started in


def test_a_folder_of_another_config_is_not_continued(tmp_path: Path):
    s = tmp_path / "s"
    (s / "ExtCoeff2_seed0").mkdir(parents=True)
    (s / "ExtCoeff2_seed0" / "study_run.json").write_text(json.dumps({"config_hash": "0123456789abcdef"}))
    out = run_study("run", str(s), *TINY, "--axis", "ExtCoeff=2", "--dry-run")
    assert out.returncode == 2 and "another config" in out.stderr
