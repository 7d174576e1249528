"""Each env stream comes from one env: an actor id owns the streams of its place in the split, one
process at a time holds an actor id, and a batch never holds one stream twice."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.config import load_config
from common.episodes import episode_arrays
from common.flow import ActorRuns, LearnerLedger
from common.rl.networks import NUM_ACTIONS
from common.wire import PROTOCOL_VERSION, SegmentSpec, encode
from learner.batch import Segment, assemble

REPO = Path(__file__).resolve().parents[1]
CFG = load_config(REPO / "configs" / "smoke.yaml", {"ImageHeight": 44, "ImageWidth": 44})  # 4 streams, L = 1
SPEC = SegmentSpec.from_config(CFG, NUM_ACTIONS)


def segment(actor: int, streams: list[int], num_actors: int, run: int, seq: int, version: int = 0) -> list[bytes]:
    arrays = {n: np.zeros(shape, dtype) for n, (dtype, shape) in SPEC.segment_arrays(len(streams)).items()}
    arrays["behaviour_logp"][:] = -2.0
    arrays.update(episode_arrays([]))
    meta = {
        "actor": actor,
        "streams": streams,
        "num_actors": num_actors,
        "version": version,
        "run": run,
        "seq": seq,
    }
    return encode("segment", meta, arrays)


def io_with_refusals(socketless_io):
    io, rejected, dropped = socketless_io(CFG, 0)
    refused: list[tuple[int, int]] = []
    io.refuse_run = lambda actor, run: refused.append((actor, run))
    io.enabled = True
    return io, rejected, dropped, refused


def test_an_actor_that_claims_streams_it_does_not_own_is_refused_and_counted(socketless_io) -> None:
    io, rejected, dropped, _ = io_with_refusals(socketless_io)
    io.admit(segment(0, [0, 1], 2, run=1, seq=0))  # actor 0 of 2 owns streams 0 and 1
    for frames in (
        segment(1, [0, 1], 2, run=2, seq=0),  # actor 1 of 2 claims actor 0's streams
        segment(1, [1, 2], 2, run=2, seq=1),  # half of them
        segment(1, [2, 3, 0], 2, run=2, seq=2),  # its own and one more
        segment(1, [1], 4, run=3, seq=0),  # a valid place in another split, overlapping actor 0's
    ):
        io.admit(frames)
    assert [s.actor for s in io.pending] == [0] and not dropped
    assert [str(e) for e in rejected[:3]] == ["streams other than its actor id owns"] * 3
    assert "num_actors=4, while this run's actors split the streams over 2" in str(rejected[3])


def test_two_processes_under_one_actor_id_the_later_is_refused(socketless_io) -> None:
    """Run A holds actor id 0; run B starts under the same id (two actors roles with one --actor-offset)
    and takes the id as a restart would; A keeps sending, which an ended process cannot do past its
    max_policy_lag + 1 unretired segments: B is refused, A holds the id again."""
    io, rejected, dropped, refused = io_with_refusals(socketless_io)
    a, b = 11, 22
    io.admit(segment(0, [0, 1], 2, run=a, seq=0))
    io.admit(segment(0, [0, 1], 2, run=b, seq=0))  # B takes the id over: A's next segments are dropped
    for seq in range(1, CFG.max_policy_lag + 2):
        io.admit(segment(0, [0, 1], 2, run=a, seq=seq))
    assert not refused and len(dropped) == CFG.max_policy_lag + 1 and not rejected
    io.admit(segment(0, [0, 1], 2, run=a, seq=9))  # one more than an ended process could deliver
    assert refused == [(0, b)]
    assert [(s.run, s.seq) for s in io.pending] == [(a, 0), (a, 9)]  # B's waiting segment dropped
    io.admit(segment(0, [0, 1], 2, run=b, seq=1))
    assert len(rejected) == 1 and "refused actor run" in str(rejected[0])


def test_a_restarted_actor_keeps_its_id_while_its_predecessor_delivers_what_it_had_sent(socketless_io) -> None:
    io, rejected, dropped, refused = io_with_refusals(socketless_io)
    io.admit(segment(0, [0, 1], 2, run=1, seq=0))
    io.admit(segment(0, [0, 1], 2, run=2, seq=0))  # the restart's first segment came first
    for seq in range(1, CFG.max_policy_lag + 2):  # the ended run's last ones, still queued
        io.admit(segment(0, [0, 1], 2, run=1, seq=seq))
    io.admit(segment(0, [0, 1], 2, run=2, seq=1))
    assert not refused and not rejected and len(dropped) == CFG.max_policy_lag + 1
    assert [s.run for s in io.pending if s.actor == 0][-1] == 2


def test_a_batch_never_holds_one_stream_twice(socketless_io) -> None:
    """Before, a fast actor's two segments filled a batch alone: [0, 1, 0, 1]."""
    io, rejected, dropped, _ = io_with_refusals(socketless_io)
    io.admit(segment(0, [0, 1], 2, run=1, seq=0))
    io.admit(segment(0, [0, 1], 2, run=1, seq=1))
    io._maybe_assemble()
    assert io.get(0, timeout=0) is None  # actor 1's streams are missing: no batch yet
    io.admit(segment(1, [2, 3], 2, run=5, seq=0))
    io._maybe_assemble()
    batch, segments = io.get(0, timeout=0)
    assert batch.streams.tolist() == [0, 1, 2, 3] and [(s.actor, s.seq) for s in segments] == [(0, 0), (1, 0)]
    assert [(s.actor, s.seq) for s in io.pending] == [(0, 1)]  # the next batch's, in order
    one = Segment(0, 0, [0, 1], {n: np.zeros(s, d) for n, (d, s) in SPEC.segment_arrays(2).items()}, [])
    with pytest.raises(ValueError, match="stream 0 twice"):
        assemble([one, one], CFG.FrameStack)


def test_refused_runs_stay_bounded_and_go_out_with_the_flow_metadata() -> None:
    runs = ActorRuns(max_lag=0)
    for later in range(2, 12):  # a run takes id 3 over, then its predecessor proves alive: refused
        runs.take(3, 1)
        runs.take(3, later)
        assert runs.judge(3, 1) == (ActorRuns.REPLACED, None)
        assert runs.judge(3, 1) == (ActorRuns.OK, later)
    assert list(runs.refused[3]) == [8, 9, 10, 11] and list(runs.replaced[3]) == [] and runs.owner[3] == 1
    ledger = LearnerLedger(num_workers=4)
    for run in range(10):
        ledger.refuse(3, run)
    ledger.refuse(99, 1)  # an id the run cannot have: not kept
    assert ledger.flow_meta().refused == ((3, 6), (3, 7), (3, 8), (3, 9))


def test_an_actor_told_it_is_refused_stops_with_its_own_code(fake_sub, weights_frames) -> None:
    from actors.actor import ActorStop, WeightsReceiver
    from actors.supervisor import EXIT_DUPLICATE
    from common.rl.networks import PolicyNet

    policy = PolicyNet(18, 4, 44, 44)
    rx = WeightsReceiver(fake_sub, policy, timeout_s=30, actor_id=1, run_id=5)
    fake_sub.queue.append(weights_frames(policy, 0, learner_run=1))
    rx.poll()
    beat = {"version": 0, "learner_run": 1, "retired": [], "refused": [[1, 6], [0, 5]]}  # others' runs
    fake_sub.queue.append(encode("heartbeat", beat, {}))
    rx.poll()
    fake_sub.queue.append(encode("heartbeat", {**beat, "refused": [[1, 5]]}, {}))
    with pytest.raises(ActorStop, match="another live process sends segments as actor 1") as e:
        rx.poll()
    assert e.value.exit_code == EXIT_DUPLICATE
    assert json.loads(encode("heartbeat", beat, {})[0])["proto"] == PROTOCOL_VERSION


def rows(run_dir: Path) -> int:
    try:
        return len((run_dir / "metrics.csv").read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


def test_two_actors_roles_with_one_offset_the_later_is_refused_and_training_goes_on(
    tmp_path: Path, learner_role_cmd, actors_role_cmd
) -> None:
    """Before, both trained, and batches held one env stream twice."""
    from common.transport import free_tcp_address

    addr, run_dir = free_tcp_address(), tmp_path / "run"
    logs = {n: open(tmp_path / f"{n}.txt", "w+") for n in ("learner", "first", "second")}

    def start(name: str, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=logs[name], stderr=subprocess.STDOUT)

    learner = start("learner", learner_role_cmd(addr, run_dir, 10**8))
    first = start("first", actors_role_cmd(addr, 2))
    second = None
    try:
        deadline = time.monotonic() + 180
        while rows(run_dir) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        second = start("second", actors_role_cmd(addr, 1, "--actor-offset", "1", "--total-actors", "2"))
        assert second.wait(timeout=120) == 6  # EXIT_DUPLICATE
        n = rows(run_dir)
        while rows(run_dir) < n + 3 and time.monotonic() < deadline + 60:
            time.sleep(0.5)
        assert rows(run_dir) >= n + 3 and first.poll() is None and learner.poll() is None
    finally:
        for p in (second, first, learner):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(timeout=30)
    text = {n: (f.seek(0), f.read())[1] for n, f in logs.items()}
    assert "another live process sends segments as actor 1" in text["second"]
    assert "launch: error: no actor left: another live process holds actor id 1" in text["second"]
    assert "actor id 1: two live processes send segments" in text["learner"]
    assert "Traceback" not in text["learner"] + text["first"]
