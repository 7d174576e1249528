"""launch.py and eval.py refuse bad input with one clear line, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SEED_CONFIG = REPO / "configs" / "report.yaml"  # the report's config, verbatim


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_print_config_precedence() -> None:
    p = run("launch.py", "--config", "configs/smoke.yaml", "--print-config", "LearningRate=3e-4", "NumWorkers=8")
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert cfg["LearningRate"] == 3e-4 and cfg["NumWorkers"] == 8  # command line wins
    assert cfg["RolloutSteps"] == 16  # YAML beats defaults
    assert cfg["PPOAdvLambda"] == 0.95  # defaults fill the rest


def test_default_config_is_montezuma() -> None:
    p = run("launch.py", "--print-config")
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert cfg["EnvName"].startswith("MontezumaRevenge") and cfg["NumWorkers"] == 128


def test_seed_config_loads_unchanged() -> None:
    p = run("launch.py", "--config", str(SEED_CONFIG), "--print-config")
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load(p.stdout)["SavePath"] == "/home/chervontsev/checkpoints/RndAgentAlt.ckpt"


@pytest.mark.parametrize(
    "override,needle",
    [
        ("NumWorkers=-1", "NumWorkers"),
        ("Bogus=1", "Bogus"),
        ("LearningRate=fast", "LearningRate"),
        ("UseTPU=true", "UseTPU"),
        ("StickyActionProb=1.5", "StickyActionProb"),
        ("nonsense", "key=value"),
    ],
)
def test_bad_overrides(override: str, needle: str) -> None:
    assert_one_line_error(run("launch.py", "--print-config", override), needle)


def test_malformed_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("NumWorkers: [1, 2\nRolloutSteps: 3\n")
    assert_one_line_error(run("launch.py", "--config", str(bad), "--print-config"), "bad.yaml")
    missing = tmp_path / "missing.yaml"
    assert_one_line_error(run("launch.py", "--config", str(missing), "--print-config"), "missing.yaml")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_requested_without_cuda(tmp_path: Path) -> None:
    p = run("launch.py", "--config", "configs/smoke.yaml", "--learner-gpu", "0", "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(p, "--learner-gpu 0", "--learner-gpu -1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_actor_device_without_cuda(tmp_path: Path) -> None:
    """Refused before the run dir or any actor exists, in both roles that start actors, and by bench.py."""
    run_dir = tmp_path / "r"
    p = run(
        "launch.py",
        "--config",
        "configs/smoke.yaml",
        "--learner-gpu",
        "-1",
        "--run-dir",
        str(run_dir),
        "actor_device=cuda",
    )
    assert_one_line_error(p, "actor_device", "no CUDA device")
    assert not run_dir.exists()
    p = run(
        "launch.py",
        "--config",
        "configs/smoke.yaml",
        "--role",
        "actors",
        "--learner",
        "tcp://127.0.0.1:5555",
        "actor_device=cuda:0",
    )
    assert_one_line_error(p, "actor_device", "no CUDA device")
    assert_one_line_error(run("bench.py", "--config", "configs/smoke.yaml", "actor_device=cuda"), "actor_device")


def test_bad_addresses_and_actor_counts(tmp_path: Path) -> None:
    assert_one_line_error(run("launch.py", "--config", "configs/smoke.yaml", "--role", "actors"), "--learner")
    assert_one_line_error(
        run("launch.py", "--config", "configs/smoke.yaml", "--role", "actors", "--learner", "http://x"), "--learner"
    )
    assert_one_line_error(
        run(
            "launch.py",
            "--config",
            "configs/smoke.yaml",
            "--actors",
            "9",
            "--learner-gpu",
            "-1",
            "--run-dir",
            str(tmp_path / "r"),
        ),
        "NumWorkers",
    )


def test_resume_and_eval_refuse_bad_checkpoints(tmp_path: Path) -> None:
    assert_one_line_error(run("launch.py", "--resume", str(tmp_path / "nothing")), "no checkpoint")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest.pt").write_bytes(b"PK\x03\x04 truncated zip")
    assert_one_line_error(run("launch.py", "--resume", str(tmp_path)), "corrupt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"some": torch.zeros(2)}, foreign)
    assert_one_line_error(run("eval.py", str(foreign)), "not a checkpoint of this project")
    text = tmp_path / "text.pt"
    text.write_text("hello")
    assert_one_line_error(run("eval.py", str(text)), "not a checkpoint")


def test_a_new_run_refuses_a_run_dir_that_holds_a_run(tmp_path: Path) -> None:
    """Before, the new run wiped metrics.csv and episodes.jsonl and mixed both runs' checkpoints."""
    run_dir = tmp_path / "r"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "ckpt_00000005.pt").write_bytes(b"PK\x03\x04 a checkpoint")
    (run_dir / "metrics.csv").write_text("update,agent_steps\n5,320\n")
    (run_dir / "episodes.jsonl").write_text('{"update": 5}\n')
    p = run("launch.py", "--config", "configs/smoke.yaml", "--learner-gpu", "-1", "--run-dir", str(run_dir))
    assert_one_line_error(p, str(run_dir), "--resume", "checkpoints, metrics.csv, episodes.jsonl")
    assert (run_dir / "metrics.csv").read_text() == "update,agent_steps\n5,320\n"
    assert (run_dir / "episodes.jsonl").read_text() == '{"update": 5}\n'
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["ckpt_00000005.pt"]
