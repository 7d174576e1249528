"""Several learner ranks on torch.distributed (gloo on the CPU): R ranks update like one learner with R
times the envs and the minibatch, hold the same weights and normalisers after every update, train end
to end with launch.py's own ranks and with ranks started as torchrun starts them, resume with the same
rank count only, and stop together when a rank dies."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from learner.distributed import RankEnvError, rank_env
from learner.spawn import rank_bind, split_actors, strip_flags

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import dist_update  # noqa: E402

SMOKE = str(REPO / "configs" / "smoke.yaml")


def free_port() -> int:
    from learner.spawn import free_port_block

    return free_port_block(1)


def rank_environ(rank: int, world: int, master_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(master_port),
        "OMP_NUM_THREADS": "1",
    }


# ---- the pieces --------------------------------------------------------------------------------------------
def test_rank_env_reads_torchruns_variables() -> None:
    assert rank_env({}) is None and rank_env({"WORLD_SIZE": "1"}) is None
    env = rank_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "a", "MASTER_PORT": "1"})
    assert (env.rank, env.world, env.local_rank) == (3, 4, 1)
    for bad in ({"WORLD_SIZE": "2"}, {"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}):
        with pytest.raises(RankEnvError):
            rank_env(bad)


def test_each_rank_binds_its_own_pair_of_ports() -> None:
    assert rank_bind("tcp://0.0.0.0:5555", 0) == "tcp://0.0.0.0:5555"
    assert rank_bind("tcp://0.0.0.0:5555", 1) == "tcp://0.0.0.0:5557"  # 5557 segments, 5558 weights
    assert split_actors(15, 2) == [8, 7] and split_actors(1, 2) == [1, 1]
    argv = ["--config", "c.yaml", "--learner-ranks", "2", "--actors=3", "--run-dir", "d", "LearningRate=1e-4"]
    assert strip_flags(argv, ("--learner-ranks", "--actors", "--run-dir")) == [
        "--config",
        "c.yaml",
        "LearningRate=1e-4",
    ]


# ---- equivalence -------------------------------------------------------------------------------------------
def test_two_ranks_update_like_one_learner_on_both_batches(tmp_path: Path) -> None:
    """One update on 2 ranks with batches B0 and B1 gives the weights one rank gets from B0 + B1 with the
    same minibatches and predictor subsets (to 1e-5), and both ranks end with the same bits."""
    port = free_port()
    outs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "dist_update.py"), str(outs[r])],
            env=rank_environ(r, 2, port),
            cwd=REPO,
        )
        for r in range(2)
    ]
    cfg = dist_update.rank_config(2 * dist_update.STREAMS, 2 * dist_update.MINIBATCH)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks run: the orthogonal init's QR differs in the last bits with threads
    try:
        start = dist_update.snapshot(dist_update.prepared_agent(cfg))
        alone = dist_update.prepared_agent(cfg)
        alone.update(dist_update.combined_batch(2, cfg), dist_update.combined_plan(2))
    finally:
        torch.set_num_threads(threads)
    want = dist_update.snapshot(alone)
    for p in procs:
        assert p.wait(timeout=120) == 0
    got = [torch.load(o, weights_only=True) for o in outs]
    assert torch.equal(got[0]["checksum"], got[1]["checksum"])
    for k, v in got[0]["state"].items():
        assert torch.equal(v, got[1]["state"][k]), k
        torch.testing.assert_close(v.double(), want[k].double(), rtol=1e-5, atol=1e-5, msg=k)
    moved = max(float((want[k] - v).abs().max()) for k, v in start.items() if k.startswith("policy"))
    assert moved > 1e-4  # the update moved the weights: the comparison is not of two untouched copies


# ---- end to end --------------------------------------------------------------------------------------------
def launch(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "launch.py", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def rank_checksums(run_dir: Path) -> list[list[bytes]]:
    sums = []
    for ckpt in sorted((run_dir / "checkpoints").glob("ckpt_*.pt")):
        data = torch.load(ckpt, weights_only=True)
        assert data["world_size"] == 2
        sums.append([bytes(p["checksum"].tolist()) for p in data["rank_states"]])
    return sums


def test_two_cpu_ranks_train_resume_and_refuse_another_rank_count(tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["--config", SMOKE, "--learner-gpu", "-1", "--learner-ranks", "2", "--actors", "2"]
    first = launch(*common, "--run-dir", str(run), "--total-steps", "1536")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("launch: done at 1,536 agent steps") == 1  # rank 0 speaks for the run
    sums = rank_checksums(run)
    assert sums and all(a == b for a, b in sums)  # every checkpoint: the same weights on both ranks
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[-1].split(",")[1] == "1536"  # agent steps summed over the ranks
    again = subprocess.Popen(
        [sys.executable, "launch.py", *common, "--resume", str(run), "--total-steps", "1000000"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while len((run / "metrics.csv").read_text().splitlines()) < len(rows) + 2:
        assert time.monotonic() < deadline and again.poll() is None, again.stderr.read()[-3000:]
        time.sleep(0.5)
    again.send_signal(signal.SIGTERM)  # to the launcher: every rank checkpoints and stops at one update
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-3000:]
    updates = [int(r.split(",")[0]) for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert updates == list(range(1, updates[-1] + 1))  # continued, no update twice
    latest = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert latest["counters"]["update"] == updates[-1] > len(rows) - 1  # the stop wrote a checkpoint
    assert all(a == b for a, b in rank_checksums(run))
    other = launch("--resume", str(run), "--learner-gpu", "-1", "--actors", "1", timeout=60)
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert "written by 2 learner rank(s) and this run has 1" in other.stderr


def start_rank(rank: int, port: int, bind: str, run_dir: Path, total: int, *extra: str) -> subprocess.Popen:
    args = ["launch.py", "--role", "learner", "--config", SMOKE, "--bind", bind, "--learner-gpu", "-1"]
    args += ["--run-dir", str(run_dir), "--total-steps", str(total), SLOW_START, *extra]
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=rank_environ(rank, 2, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


SLOW_START = "actor_timeout_s=180"  # a loaded machine may take a while to start both ranks: the actors wait


def start_actors(learner: str) -> subprocess.Popen:
    args = ["launch.py", "--role", "actors", "--config", SMOKE, "--learner", learner, "--actors", "1", SLOW_START]
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_all(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def test_ranks_started_as_torchrun_starts_them_train_with_an_actors_role_each(tmp_path: Path) -> None:
    from learner.spawn import free_port_block

    port, base = free_port(), free_port_block(4)
    bind = f"tcp://127.0.0.1:{base}"
    ranks = [start_rank(r, port, bind, tmp_path / "run", 1024) for r in range(2)]
    actors = [start_actors(f"tcp://127.0.0.1:{base + 2 * r}") for r in range(2)]
    try:
        outs = [p.communicate(timeout=240) for p in ranks]
        assert [p.returncode for p in ranks] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
        assert "launch: done at 1,024 agent steps" in outs[0][0] and "launch: done" not in outs[1][0]
        assert all(a == b for a, b in rank_checksums(tmp_path / "run"))
        assert [a.wait(timeout=60) for a in actors] == [0, 0]  # told to stop by their own rank
    finally:
        stop_all(*ranks, *actors)


def test_a_rank_killed_mid_run_ends_the_other_with_one_line(tmp_path: Path) -> None:
    from learner.spawn import free_port_block

    port, base = free_port(), free_port_block(4)
    bind = f"tcp://127.0.0.1:{base}"
    run = tmp_path / "run"
    ranks = [start_rank(r, port, bind, run, 1 << 30, "dist_timeout_s=10") for r in range(2)]
    actors = [start_actors(f"tcp://127.0.0.1:{base + 2 * r}") for r in range(2)]
    try:
        deadline = time.monotonic() + 180
        while not (run / "metrics.csv").is_file() or len((run / "metrics.csv").read_text().splitlines()) < 4:
            assert time.monotonic() < deadline and ranks[0].poll() is None, ranks[0].communicate()[1][-2000:]
            time.sleep(0.5)
        killed = time.monotonic()
        os.killpg(ranks[1].pid, signal.SIGKILL)
        _, err = ranks[0].communicate(timeout=60)
        took = time.monotonic() - killed
        assert ranks[0].returncode == 1, err[-2000:]
        lines = [ln for ln in err.splitlines() if ln.startswith("launch:")]
        assert len(lines) == 1 and re.search(r"learner rank 1 (is gone|stopped answering)", lines[0]), err[-2000:]
        assert took < 10 + 30  # dist_timeout_s plus the diagnosis and a clean stop
    finally:
        stop_all(*ranks, *actors)


def test_rank_flags_are_checked_in_one_line(tmp_path: Path) -> None:
    run = ["--config", SMOKE, "--run-dir", str(tmp_path / "r")]
    for flags, want in (
        (["--learner-gpus", "0,x"], "expected a comma-separated list of GPU indexes"),
        (["--learner-gpus", "0,0"], "expected distinct GPU indexes"),
        (["--learner-gpus", "0,1", "--learner-gpu", "-1"], "exclude each other"),
        (["--learner-ranks", "0"], "must be >= 1"),
    ):
        p = launch(*run, *flags, timeout=60)
        assert p.returncode == 2 and want in p.stderr and p.stderr.count("\n") == 1, (flags, p.stderr)
    if not torch.cuda.is_available():
        p = launch(*run, "--learner-gpus", "0,1", timeout=60)
        assert p.returncode == 2 and "no CUDA device is available here" in p.stderr
