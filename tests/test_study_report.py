"""study/report.py and study/runs.py: the report's numbers and figures come from the run folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_study_fakes import REPO, is_png, metrics_rows, synthetic_run, synthetic_study

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


def test_report_refuses_an_empty_study_and_an_out_it_cannot_make(tmp_path: Path, capsys):
    (tmp_path / "s").mkdir()
    assert main(["report", str(tmp_path / "s")]) == 2
    assert "holds no run folders" in capsys.readouterr().err
    synthetic_study(tmp_path / "t")
    (tmp_path / "file").write_text("")
    assert main(["report", str(tmp_path / "t"), "--out", str(tmp_path / "file" / "r"), "--eval-episodes", "0"]) == 2
    assert capsys.readouterr().err.startswith(f"study: error: --out {tmp_path / 'file' / 'r'}: cannot create it")


def test_report_skips_and_counts_damaged_episode_lines(tmp_path: Path, capsys):
    """Valid JSON that is not an episode and a binary line are left out and counted in report.md; every
    number is the one of the undamaged files."""
    clean, damaged = tmp_path / "clean", tmp_path / "damaged"
    synthetic_study(clean)
    synthetic_study(damaged)
    with open(damaged / "ExtCoeff2_seed0" / "episodes.jsonl", "ab") as f:
        f.write(b'[1, 2]\n{"return": 5000.0}\n\x00\xff\xfe binary\n{"return": 9000.0, "agent_st')
    assert main(["report", str(clean), "--eval-episodes", "0"]) == 0
    assert main(["report", str(damaged), "--eval-episodes", "0"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    summary = json.loads((damaged / "report" / "summary.json").read_text())
    assert summary == json.loads((clean / "report" / "summary.json").read_text())
    runs = [ln for ln in (damaged / "report" / "report.md").read_text().splitlines() if ln.startswith("- `")]
    assert runs[0].endswith("(4 damaged lines of `episodes.jsonl` skipped)") and "damaged" not in runs[1]


def test_report_goes_on_without_the_maps_of_a_run_whose_exploration_json_is_cut(tmp_path: Path, capsys):
    s = tmp_path / "s"
    synthetic_study(s)
    assert main(["report", str(s), "--eval-episodes", "0", "--out", str(tmp_path / "whole")]) == 0
    capsys.readouterr()
    cut = s / "ExtCoeff2_seed1" / "exploration.json"
    cut.write_text(cut.read_text()[:100])
    assert main(["report", str(s), "--eval-episodes", "0"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"study report: {cut}: cut short or not JSON")
    assert err[0].endswith("the report goes on without this run's maps")
    out = s / "report"
    assert is_png(out / "room_map.png") and is_png(out / "heat_maps.png")  # drawn from the other two runs
    text = (out / "report.md").read_text()
    assert (
        "`ExtCoeff2_seed1` (finished" in text and "`exploration.json` unreadable, so the run is not in the maps" in text
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads((tmp_path / "whole" / "summary.json").read_text())  # the numbers are the CSV's
    assert (out / "room_map.png").read_bytes() != (tmp_path / "whole" / "room_map.png").read_bytes()


def test_seeds_without_an_exploration_json_are_left_out_of_the_maps_mean(tmp_path: Path):
    from study.runs import cell_table, load_study

    s = tmp_path / "s"
    synthetic_study(s)
    runs = {r.name: r for r in load_study(s)}
    one = cell_table([runs["ExtCoeff2_seed0"]])
    (s / "ExtCoeff2_seed1" / "exploration.json").unlink()
    runs = {r.name: r for r in load_study(s)}
    assert cell_table([runs["ExtCoeff2_seed0"], runs["ExtCoeff2_seed1"]]) == one  # not halved by the missing seed


SMOKE_GRID = ["--config", str(REPO / "configs" / "smoke.yaml"), "--gpus", "none", "--dry-run"]


def shard_folder(root: Path, shard: str, *grid: str) -> Path:
    """The study.json that ``study.py run ROOT --shard K/N`` writes, and a finished fake run for each of its runs."""
    assert main(["run", str(root), *SMOKE_GRID, "--shard", shard, *grid]) == 0
    rng = np.random.default_rng(len(shard))
    for r in json.loads((root / "study.json").read_text())["runs"]:
        synthetic_run(root, r["name"], r["values"], r["seed"], rng, None)
    return root


def test_a_report_of_two_shards_merges_them_in_the_grid_order(tmp_path: Path, capsys):
    grid = ("--axis", "ExtCoeff=2,1,0")
    a = shard_folder(tmp_path / "a", "1/2", *grid)  # ExtCoeff 2 and 0
    b = shard_folder(tmp_path / "b", "2/2", *grid)  # ExtCoeff 1
    capsys.readouterr()
    assert main(["report", str(a), str(b), "--eval-episodes", "0"]) == 0
    summary = json.loads((a / "report" / "summary.json").read_text())
    assert [r["name"] for r in summary] == ["ExtCoeff2_seed0", "ExtCoeff1_seed0", "ExtCoeff0_seed0"]
    text = (a / "report" / "report.md").read_text()
    assert f"Written by `python study.py report {a} {b} --eval-episodes 0`" in text
    assert [ln[:7] for ln in text.splitlines() if ln.startswith("| ExtCoeff=")] == ["| ExtCo"] * 3
    assert "not in this report" not in text
    assert main(["report", str(b), "--eval-episodes", "0"]) == 0  # one shard alone says what it lacks
    assert (
        "not in this report (no folder given holds a metrics.csv row of them): `ExtCoeff2_seed0`, `ExtCoeff0_seed0`"
        in ((b / "report" / "report.md").read_text())
    )


@pytest.mark.parametrize(
    ("other", "why"),
    [
        (("--axis", "ExtCoeff=2,1,5"), "runs only it has: ExtCoeff5_seed0; runs only the first has: ExtCoeff0_seed0"),
        (("--axis", "ExtCoeff=2,1,0", "--total-steps", "128"), "ExtCoeff2_seed0's agent steps 128, the first's 1280"),
        (("--axis", "ExtCoeff=2,1,0", "LearningRate=0.0002"), "ExtCoeff2_seed0's resolved config"),
    ],
)
def test_a_report_refuses_folders_of_another_grid_or_config(tmp_path: Path, capsys, other: tuple, why: str):
    a = shard_folder(tmp_path / "a", "1/2", "--axis", "ExtCoeff=2,1,0")
    b = shard_folder(tmp_path / "b", "2/2", *other)
    capsys.readouterr()
    assert main(["report", str(a), str(b), "--eval-episodes", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"study: error: {b} holds another study than {a}: ") and why in err[0]
    assert not (a / "report").exists()


def test_a_report_refuses_a_folder_twice_a_run_twice_and_a_folder_without_a_plan(tmp_path: Path, capsys):
    a = shard_folder(tmp_path / "a", "1/2", "--axis", "ExtCoeff=2,1,0")
    whole = shard_folder(tmp_path / "whole", "1/1", "--axis", "ExtCoeff=2,1,0")
    bare = tmp_path / "bare"
    synthetic_study(bare)
    (bare / "study.json").unlink()
    capsys.readouterr()
    for dirs, why in (
        ([a, tmp_path / "a" / ".." / "a"], f"{tmp_path / 'a' / '..' / 'a'} is given twice (as {a} too)"),
        ([a, whole], f"run ExtCoeff2_seed0 is in both {a} and {whole}"),
        ([a, bare], f"{bare} has no study.json"),
        ([a, tmp_path / "nope"], f"no study at {tmp_path / 'nope'}"),
    ):
        assert main(["report", *map(str, dirs), "--eval-episodes", "0"]) == 2
        assert why in capsys.readouterr().err
