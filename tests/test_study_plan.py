"""study/plan.py: the grid's configurations, run names and commands, and the refusals before any run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_study_fakes import REPO, TINY, run_study

from study import StudyError
from study.cli import main
from study.plan import RunSpec, grid_values, parse_axis, parse_shard, run_name, take_shard


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


def test_shard_k_of_n_takes_every_nth_run_of_the_grid(tmp_path: Path, capsys):

    specs = [RunSpec({"ExtCoeff": str(i)}, 0, tmp_path / f"r{i}", 64) for i in range(7)]
    assert [s.name for s in take_shard(specs, (1, 3))] == ["r0", "r3", "r6"]
    assert [s.name for s in take_shard(specs, (3, 3))] == ["r2", "r5"]
    every = [s.name for k in (1, 2, 3) for s in take_shard(specs, (k, 3))]
    assert sorted(every) == sorted(s.name for s in specs)  # each run in exactly one shard
    assert take_shard(specs, None) == specs
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(StudyError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(StudyError, match="has none"):
        take_shard(specs[:2], (3, 3))

    grid = ["--config", str(REPO / "configs" / "smoke.yaml"), "--axis", "ExtCoeff=2,1,0", "--seeds", "2"]
    assert main(["run", str(tmp_path / "s2"), *grid, "--gpus", "none", "--shard", "2/3", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("--run-dir ")[1].split()[0].rsplit("/", 1)[1] for ln in lines] == [
        "ExtCoeff2_seed1",
        "ExtCoeff0_seed0",
    ]
    plan = json.loads((tmp_path / "s2" / "study.json").read_text())
    assert plan["shard"] == "2/3" and [r["name"] for r in plan["runs"]] == ["ExtCoeff2_seed1", "ExtCoeff0_seed0"]
    assert len(plan["grid"]) == 6 and plan["grid"][0]["name"] == "ExtCoeff2_seed0" and plan["plan_hash"]


SHARD_GRID = ["--config", str(REPO / "configs" / "smoke.yaml"), "--axis", "ExtCoeff=2,0", "--gpus", "none"]


def test_a_folder_of_one_shard_refuses_another(tmp_path: Path, capsys):
    """Each host's shard has a folder of its own: a second shard would overwrite the first one's study.json."""
    s = tmp_path / "s"
    assert main(["run", str(s), *SHARD_GRID, "--shard", "1/2", "--dry-run"]) == 0
    assert main(["run", str(s), *SHARD_GRID, "--shard", "2/2", "--dry-run"]) == 2
    assert "holds shard 1/2 of its grid; give shard 2/2 a folder of its own" in capsys.readouterr().err
    assert json.loads((s / "study.json").read_text())["shard"] == "1/2"
    assert main(["run", str(s), *SHARD_GRID, "--dry-run"]) == 0  # the whole grid holds shard 1/2: allowed
