"""Faults of folders and disks that end in one line, not a traceback: a run dir or an eval output folder
that takes no files, a run stopped before its first checkpoint, a full disk before any checkpoint.

Tests run as root here, which chmod does not stop; /sys/kernel is a folder that exists and refuses
every new file (EACCES) even to root, so it stands in for a read-only filesystem."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from common.transport import free_tcp_address

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
UNWRITABLE = Path("/sys/kernel")


def unwritable() -> Path:
    try:
        (UNWRITABLE / "probe").write_bytes(b"")
    except OSError:
        return UNWRITABLE
    pytest.skip(f"{UNWRITABLE} takes files here")


def one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir with a checkpoint of one update."""
    from common.config import load_config
    from learner.serial import SerialRunner

    cfg = load_config(SMOKE, {"NumWorkers": 1, "ImageHeight": 44, "ImageWidth": 44, "BatchSize": 16})
    runner = SerialRunner(cfg, tmp_path_factory.mktemp("trained"))
    runner.run(1)
    runner.learner.save()
    runner.learner.close()
    return runner.learner.run_dir


def test_a_run_dir_that_takes_no_files_is_one_line(capsys: pytest.CaptureFixture) -> None:
    import launch

    run_dir = unwritable()
    argv = ["--role", "learner", "--config", SMOKE, "--learner-gpu", "-1", "--bind", free_tcp_address()]
    rc = launch.main([*argv, "--run-dir", str(run_dir), "--total-steps", "0"])
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and f"run dir {run_dir}: cannot write there" in line


@pytest.mark.parametrize("flag", ["--json", "--video", "--gif", "--int-trace"])
def test_eval_checks_output_folders_before_playing(trained: Path, capsys: pytest.CaptureFixture, flag: str) -> None:
    """Before, the episodes played first and the write ended in a traceback."""
    import eval as evaluate

    out = unwritable() / "out"
    rc = evaluate.main([str(trained), "--episodes", "1", "--max-steps", "5", flag, str(out)])
    got = capsys.readouterr()
    assert rc == 2 and f"{flag} {out}: cannot write in folder {out.parent}" in one_line(got.err)
    assert "episode 1" not in got.out  # nothing was played


def stopped_before_first_checkpoint(run_dir: Path, trained: Path) -> None:
    """What a run killed before its first checkpoint leaves: its config, logs of a few updates, and at
    most the temporary file of the checkpoint write it was killed in."""
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text((trained / "config.yaml").read_text())
    (run_dir / "metrics.csv").write_text("update,agent_steps\n1,16\n2,32\n")
    (run_dir / "episodes.jsonl").write_text('{"update": 2, "return": 0.0}\n')
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "ckpt_00000005.ptx1y2z3w4.tmp").write_bytes(b"PK\x03\x04 half")


def test_a_run_stopped_before_its_first_checkpoint_starts_again_in_its_folder(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before, a new run was refused for the logs (naming --resume) and --resume for the missing checkpoint."""
    import launch
    from common.config import dump_yaml, load_config

    (trained / "config.yaml").write_text(dump_yaml(load_config(SMOKE, {"NumWorkers": 1, "BatchSize": 16})))
    run_dir = tmp_path / "r"
    stopped_before_first_checkpoint(run_dir, trained)
    rc = launch.main(["--resume", str(run_dir), "--learner-gpu", "-1"])
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and "stopped before writing its first one" in line and "without --resume" in line
    argv = ["--role", "learner", "--config", SMOKE, "--learner-gpu", "-1", "--bind", free_tcp_address()]
    rc = launch.main([*argv, "--run-dir", str(run_dir), "--total-steps", "0", "NumWorkers=1", "BatchSize=16"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"run dir {run_dir} holds the logs of a run stopped before its first checkpoint" in err
    assert (run_dir / "metrics.csv").read_text().splitlines() == [(run_dir / "metrics.csv").read_text().split()[0]]
    assert (run_dir / "episodes.jsonl").read_text() == ""


def test_a_full_disk_before_any_checkpoint_does_not_claim_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_cfg
) -> None:
    """Before, the line said latest.pt held the last checkpoint written when none ever was."""
    from learner.checkpoint import CheckpointWriteError
    from learner.serial import SerialRunner

    runner = SerialRunner(small_cfg(NumWorkers=1, BatchSize=8), tmp_path)

    def full(obj, f, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("learner.checkpoint.torch.save", full)
    with pytest.raises(CheckpointWriteError) as e:
        runner.learner.save()
    runner.learner.close()
    assert "the disk is full" in str(e.value) and "no checkpoint has been written yet" in str(e.value)
    assert "holds" not in str(e.value)
