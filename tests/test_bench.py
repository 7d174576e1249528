"""bench.py end to end on the CPU, briefly: every figure is there, positive, and consistent."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = [
    "ale_steps_per_s_per_core",
    "infer_samples_per_s_per_core",
    "actor_ceiling_steps_per_s",
    "actor_steps_per_s_per_process",
    "actors_total_steps_per_s",
    "learner_steps_per_s",
    "e2e_sync_steps_per_s",
    "e2e_async_steps_per_s",
    "wire_bytes_per_step",
    "wire_bytes_per_step_zstd",
    "policy_lag_mean",
]


def test_bench_short_cpu_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    p = subprocess.run(
        [
            sys.executable,
            "bench.py",
            "--config",
            "configs/smoke.yaml",
            "--actors",
            "1",
            "--learner-gpu",
            "-1",
            "--seconds",
            "2",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    for k in KEYS:
        assert isinstance(r[k], float) and r[k] > 0, k
    assert r["device"].startswith("cpu") and r["actors"] == 1 and r["envs"] == 4 and r["cpu_count"] >= 1
    assert r["actor_device"] == "cpu"
    ale, inf = r["ale_steps_per_s_per_core"], r["infer_samples_per_s_per_core"]
    assert abs(r["actor_ceiling_steps_per_s"] - 1 / (1 / ale + 1 / inf)) < 1e-6 * ale
    spread = r["single_core_spread"]  # the actor and its two limits, measured in 3 alternating windows each
    assert len(spread["ale"]) == len(spread["infer"]) == len(spread["actor"]) == 3
    assert abs(ale - sum(spread["ale"]) / 3) < 1e-6 * ale
    assert min(spread["actor"]) <= r["actor_steps_per_s_per_process"] <= max(spread["actor"])
    frames_per_step = (16 + 4) / 16  # smoke: T=16 new frames + the bootstrap frame + 3 context frames
    assert r["wire_bytes_per_step"] <= 84 * 84 * frames_per_step + 64
    assert r["wire_bytes_per_step_zstd"] < r["wire_bytes_per_step"]
    assert 0.0 <= r["policy_lag_mean"] <= 1.0
    assert {"actor", "learner", "e2e_async", "e2e_sync"} <= set(r["phases"])
    assert "e2e_async_vs_shared_cpu" in r["targets"] and "actor_vs_ceiling" in r["targets"]
    assert "target actor_vs_ceiling" in p.stdout and "partial" not in r  # the last write is the whole result


def test_wire_bytes_per_step_with_the_paper_config() -> None:
    """With the paper's 128-step rollouts a step costs one 84x84 frame plus ~3% and a few bytes: <= 8192."""
    from bench_parts import wire_bytes
    from common.config import load_config

    wb = wire_bytes(load_config(REPO / "configs" / "montezuma.yaml"))  # 128 envs, measured on 8 of them
    assert wb["none"] <= 8192
    assert wb["zstd"] < wb["none"]


def test_one_actor_of_the_paper_config_is_a_valid_config() -> None:
    """The paper's 128 envs split over 15 actors: 9 envs of 128 steps hold fewer samples than its BatchSize."""
    from bench_parts import with_envs
    from common.config import load_config

    cfg = with_envs(load_config(REPO / "configs" / "montezuma.yaml"), 9)
    assert (cfg.NumWorkers, cfg.BatchSize, cfg.RolloutSteps) == (9, 9 * 128, 128)


def test_bench_refuses_an_unknown_part_to_skip() -> None:
    p = subprocess.run(
        [sys.executable, "bench.py", "--config", "configs/smoke.yaml", "--skip", "learner,lerner"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "bench: error: --skip: unknown part(s) lerner; choose from actors_total,e2e_async,e2e_sync,learner"
    ]


def test_bench_times_the_learner_at_each_rank_count(tmp_path: Path) -> None:
    out = tmp_path / "ranks.json"
    cmd = [sys.executable, "bench.py", "--config", "configs/smoke.yaml", "--learner-ranks", "1,2", "--seconds", "1"]
    p = subprocess.run([*cmd, "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert set(r["rounds"][0]) == {"1", "2"} and all(v > 0 for v in r["rounds"][0].values())
    assert r["median_ratio"]["1"] == 1.0 and r["median_ratio"]["2"] > 0
    assert "learner at 2 rank(s)" in p.stdout
