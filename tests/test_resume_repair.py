"""A run dir that a power cut or a kill -9 interrupted mid-append resumes: partial last lines are cut,
rows past the checkpoint dropped, temporary files of unfinished writes removed, and one line says so."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from learner.logs import RunLogger


def write_run(run_dir: Path, updates: int) -> None:
    log = RunLogger(run_dir, tensorboard=False, progress=False)
    for u in range(1, updates + 1):
        log.log_update({"update": u, "agent_steps": 10 * u})
        log.log_episodes([{"update": u, "return": 1.0, "rooms": [1]}, {"update": u, "return": 2.0}])
    log.close()


def csv_updates(run_dir: Path) -> list[str]:
    return [r.split(",")[0] for r in (run_dir / "metrics.csv").read_text().splitlines()]


def episode_updates(run_dir: Path) -> list[int]:
    return [json.loads(x)["update"] for x in (run_dir / "episodes.jsonl").read_text().splitlines()]


def stale_temps(run_dir: Path) -> list[Path]:
    """What a writer killed mid-checkpoint leaves, as _atomic_save and _save name their files."""
    ckpt = run_dir / "checkpoints"
    ckpt.mkdir(exist_ok=True)
    made = [Path(tempfile.mkstemp(dir=ckpt, prefix=f"ckpt_{u:08d}.pt", suffix=".tmp")[1]) for u in (3, 4)]
    made += [ckpt / ".latest.4242.tmp", run_dir / "exploration.json.tmp"]
    for p in made[2:]:
        p.write_bytes(b"PK\x03\x04 half")
    (ckpt / "latest.pt").write_bytes(b"kept")  # not a temporary file: left alone
    return made


@pytest.mark.parametrize("cut", ["mid-row", "a smaller update"])
def test_partial_last_lines_are_cut_and_rows_stay_in_update_order(
    tmp_path: Path, capsys: pytest.CaptureFixture, cut: str
) -> None:
    write_run(tmp_path, 5)
    with open(tmp_path / "episodes.jsonl", "a") as f:
        f.write('{"update": 6, "ret')  # the power went here
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("6,60,24" if cut == "mid-row" else "1")  # "1" of "16,...": it reads as update 1
    temps = stale_temps(tmp_path)
    capsys.readouterr()
    log = RunLogger(tmp_path, resume_update=3, tensorboard=False, progress=False)  # its checkpoint: update 3
    log.log_update({"update": 4, "agent_steps": 40})
    log.log_episodes([{"update": 4, "return": 0.0}])
    log.close()
    assert csv_updates(tmp_path) == ["update", "1", "2", "3", "4"]
    assert episode_updates(tmp_path) == [1, 1, 2, 2, 3, 3, 4]
    assert not any(p.exists() for p in temps) and (tmp_path / "checkpoints" / "latest.pt").read_bytes() == b"kept"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"resume: repaired {tmp_path}: "), err
    assert "metrics.csv: cut a partial last line" in err[0] and "dropped 2 rows past update 3" in err[0]
    assert "episodes.jsonl: cut a partial last line" in err[0] and "removed 4 temporary files" in err[0]


def test_a_clean_resume_says_nothing_and_damaged_middle_lines_are_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_run(tmp_path, 3)
    eps = tmp_path / "episodes.jsonl"
    eps.write_text(eps.read_text().replace('{"update": 2, "return": 1.0', '{"upd#te": 2, "return": 1.0', 1))
    capsys.readouterr()
    RunLogger(tmp_path, resume_update=3, tensorboard=False, progress=False).close()
    assert capsys.readouterr().err == ""
    assert len(eps.read_text().splitlines()) == 6  # readers skip the damaged one; the writer loses nothing
    assert csv_updates(tmp_path) == ["update", "1", "2", "3"]


def test_metrics_rows_out_of_update_order_are_dropped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Rows an earlier resume left behind its own: each update once, in order."""
    write_run(tmp_path, 4)
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("2,20\n3,30\n")
    RunLogger(tmp_path, resume_update=4, tensorboard=False, progress=False).close()
    assert csv_updates(tmp_path) == ["update", "1", "2", "3", "4"]
    assert "dropped 2 rows out of update order" in capsys.readouterr().err


def test_launch_resumes_a_run_whose_episodes_end_in_half_a_line(tmp_path: Path, capsys, small_cfg) -> None:
    """Before, --resume ended in a JSONDecodeError traceback."""
    import launch
    from common.config import dump_yaml
    from common.transport import free_tcp_address
    from learner.serial import SerialRunner

    runner = SerialRunner(small_cfg(NumWorkers=1, BatchSize=8), tmp_path)
    runner.run(2)
    runner.learner.save()
    runner.learner.close()
    (tmp_path / "config.yaml").write_text(dump_yaml(runner.cfg))
    with open(tmp_path / "episodes.jsonl", "a") as f:
        f.write('{"return": 0.0, "len')
    steps = runner.learner.counters["agent_steps"]
    argv = ["--role", "learner", "--resume", str(tmp_path), "--learner-gpu", "-1", "--bind", free_tcp_address()]
    rc = launch.main([*argv, "--total-steps", str(steps)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "episodes.jsonl: cut a partial last line" in err and "Traceback" not in err
    assert all(json.loads(x) for x in (tmp_path / "episodes.jsonl").read_text().splitlines())
