"""study.py: the grid runs as ordinary launch.py runs (skip if finished, resume if not), and the report's
numbers and figures come from the run folders; eval.py's intrinsic-reward trace."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval as eval_py
import study
from common.cells import cell_parts
from common.config import load_config
from learner.logs import METRICS
from learner.serial import SerialRunner

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config", str(REPO / "configs" / "smoke.yaml"), "--gpus", "none", "--parallel", "1", "--actors", "1"]


def run_study(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "study.py"), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def metrics_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def is_png(path: Path) -> bool:
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 100


# ---- study run -----------------------------------------------------------------------------------------
def test_names_and_grid():
    assert study.run_name({"ExtCoeff": "2", "IntCoeff": "0.5"}, 1) == "ExtCoeff2_IntCoeff0.5_seed1"
    assert study.run_name({"EnvName": "ALE/Pong-v5"}, 0) == "EnvNameALE-Pong-v5_seed0"
    grid = study.grid_values([("ExtCoeff", ["2", "0"]), ("LearningRate", ["1e-4", "3e-4"])], [])
    assert len(grid) == 4 and grid[1] == {"ExtCoeff": "2", "LearningRate": "3e-4"}
    arms = study.grid_values([], [{"ExtCoeff": "2"}, {"IntCoeff": "0", "ExtCoeff": "2"}])
    assert arms == [{"ExtCoeff": "2"}, {"IntCoeff": "0", "ExtCoeff": "2"}]
    with pytest.raises(study.StudyError):
        study.grid_values([("ExtCoeff", ["2", "2"])], [])
    with pytest.raises(study.StudyError):
        study.parse_axis("ExtCoeff")


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
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "study.py"),
            "run",
            str(tmp_path / "o"),
            "--config",
            "configs/smoke.yaml",
            "--gpus",
            "none",
            "--dry-run",
            "LearningRate=0.0002",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert all("LearningRate=0.0002" in line for line in out.stdout.splitlines())
    elsewhere = subprocess.run(
        [
            sys.executable,
            str(REPO / "study.py"),
            "run",
            "s",
            "--config",
            str(REPO / "configs" / "smoke.yaml"),
            "--gpus",
            "none",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert f"--run-dir {tmp_path / 's' / 'ExtCoeff2_seed0'}" in elsewhere.stdout  # the folder it was started in


def test_a_folder_of_another_config_is_not_continued(tmp_path: Path):
    s = tmp_path / "s"
    (s / "ExtCoeff2_seed0").mkdir(parents=True)
    (s / "ExtCoeff2_seed0" / "study_run.json").write_text(json.dumps({"config_hash": "0123456789abcdef"}))
    out = run_study("run", str(s), *TINY, "--axis", "ExtCoeff=2", "--dry-run")
    assert out.returncode == 2 and "another config" in out.stderr


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


# ---- study report on synthetic run dirs ----------------------------------------------------------------
def synthetic_run(
    root: Path,
    name: str,
    values: dict,
    seed: int,
    rng: np.random.Generator,
    first_reward_at: int | None,
    cells_per_update: int = 3,
) -> None:
    run = root / name
    run.mkdir(parents=True)
    (run / "study_run.json").write_text(
        json.dumps({"name": name, "values": values, "seed": seed, "status": "finished", "command": "launch.py ..."})
    )
    (run / "config.yaml").write_text("EnvName: MontezumaRevengeNoFrameskip-v4\n")
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(METRICS))
        w.writeheader()
        for u in range(1, 21):
            row = {k: f"{rng.normal():.6g}" for k in METRICS}
            row.update(
                update=u,
                agent_steps=u * 1000 + seed * 7,
                time_s=f"{u * 2.5:.6g}",
                rooms_visited_total=1 + u // 10,
                cells_visited_total=10 + cells_per_update * u,
            )
            w.writerow(row)
    episodes = [{"return": 0.0, "length": 50, "agent_steps": s} for s in (3000, 5000)]
    if first_reward_at is not None:
        episodes += [
            {"return": 100.0, "length": 80, "agent_steps": first_reward_at},
            {"return": 400.0, "length": 90, "agent_steps": first_reward_at + 4000},
        ]
    (run / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    cells = [
        {"level": 0, "room": r, "x_bucket": x, "y_bucket": y, "steps": int(rng.integers(1, 50))}
        for r in (1, 0)
        for x in range(3, 9)
        for y in range(18, 30, 3)
    ]
    (run / "exploration.json").write_text(json.dumps({"cells": cells, "rooms": {}}))


def test_report_on_synthetic_runs_writes_every_figure_and_the_csv_values(tmp_path: Path):
    rng = np.random.default_rng(0)
    s = tmp_path / "s"
    synthetic_run(s, "ExtCoeff2_seed0", {"ExtCoeff": "2"}, 0, rng, 6000)
    synthetic_run(s, "ExtCoeff2_seed1", {"ExtCoeff": "2"}, 1, rng, None, cells_per_update=4)
    synthetic_run(s, "ExtCoeff0_seed0", {"ExtCoeff": "0"}, 0, rng, None, cells_per_update=2)
    (s / "study.json").write_text(json.dumps({"runs": ["ExtCoeff2_seed0", "ExtCoeff2_seed1", "ExtCoeff0_seed0"]}))
    assert study.main(["report", str(s), "--eval-episodes", "0"]) == 0
    out = s / "report"
    figures = [f"curve_{k}.png" for k, _ in study.CURVES] + ["room_map.png", "heat_maps.png"]
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
    assert study.main(["report", str(tmp_path / "s")]) == 2
    assert "holds no run folders" in capsys.readouterr().err


# ---- eval.py --int-trace --------------------------------------------------------------------------------
def tiny_checkpoint(tmp_path: Path) -> Path:
    cfg = load_config(
        REPO / "configs" / "smoke.yaml",
        {
            "NumWorkers": 2,
            "RolloutSteps": 8,
            "NumInitSteps": 4,
            "BatchSize": 8,
            "EpochSteps": 1,
            "MaxStepsPerEpisode": 30,
            "ImageHeight": 48,
            "ImageWidth": 48,
        },
    )
    runner = SerialRunner(cfg, tmp_path / "run", num_actors=1)
    runner.run(2)
    return runner.learner.save()


def test_eval_int_trace_and_best_gif(tmp_path: Path):
    ckpt = tiny_checkpoint(tmp_path)
    out = tmp_path / "eval.json"
    assert (
        eval_py.main(
            [
                str(ckpt),
                "--episodes",
                "2",
                "--int-trace",
                str(tmp_path / "trace.png"),
                "--best-gif",
                str(tmp_path / "best.gif"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    ev = json.loads(out.read_text())
    trace = ev["int_trace"]
    assert len(trace["rewards"]) == ev["episodes"][0]["length"] == 30
    assert all(np.isfinite(trace["rewards"])) and min(trace["rewards"]) > 0
    assert trace["peaks"] and all(1 <= p <= 30 for p in trace["peaks"])
    assert is_png(tmp_path / "trace.png")
    with Image.open(tmp_path / "best.gif") as im:
        assert im.format == "GIF" and im.n_frames == 15  # every 2nd of the best episode's 30 screens
    cells = ev["episodes"][0]["cells"]
    assert cells and all(cell_parts(c)[:2] == (0, 1) for c, _ in cells)  # level 0, the first room


def test_int_trace_is_the_learners_normalised_rnd_error(tmp_path: Path):
    """Written out: whiten the frame per pixel with the checkpoint's moments, clip at obs_clip, mean squared
    predictor-target difference over the features, divided by the running std of intrinsic returns."""
    data = torch.load(tiny_checkpoint(tmp_path), weights_only=True)
    cfg = load_config(None, data["config"])
    trace = eval_py.IntrinsicTrace(cfg, data["agent"])
    frame = np.random.default_rng(1).integers(0, 256, size=(48, 48)).astype(np.uint8)
    trace.add(frame, np.zeros((210, 160, 3), np.uint8))
    rms = data["agent"]["obs_rms"]
    x = (torch.from_numpy(frame).double() - rms["mean"].double()) / (rms["var"].double() + 1e-8).sqrt()
    x = x.clamp(-cfg.obs_clip, cfg.obs_clip).float()[None, None]
    from common.rl.networks import RNDModel

    rnd = RNDModel(48, 48)
    rnd.load_state_dict(data["agent"]["rnd"])  # the checkpoint's own predictor and target, loaded here
    with torch.no_grad():
        err = (rnd.predictor(x) - rnd.target(x)).pow(2).mean()
    std = float(data["agent"]["reward_rms"]["var"]) ** 0.5
    assert trace.rewards[0] == pytest.approx(float(err) / std, rel=1e-4)


def test_eval_checks_output_folders_before_playing(tmp_path: Path, capsys):
    assert eval_py.main([str(tmp_path), "--int-trace", str(tmp_path / "no" / "t.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
