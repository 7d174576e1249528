"""Hostile or unlucky inputs: none may crash the learner or corrupt what it learns from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zmq

from actors.actor import WeightsReceiver
from common.config import load_config
from common.episodes import episode_arrays
from common.transport import free_tcp_address, send_with_timeout
from common.wire import PROTOCOL_VERSION, SegmentSpec, WireError, decode, encode
from learner.learner_io import LearnerIO, route_message
from learner.logs import RunLogger

SPEC = SegmentSpec(rollout_steps=4, frame_stack=4, height=84, width=84, num_actions=18, num_streams=2)


def good_segment(version: int = 0, **over) -> tuple[dict, dict]:
    arrays = {n: np.zeros(shape, dtype) for n, (dtype, shape) in SPEC.segment_arrays(2).items()}
    arrays["behaviour_logp"][:] = -2.0
    arrays.update(episode_arrays([]))
    meta = {"actor": 0, "streams": [0, 1], "num_actors": 1, "version": version, "run": 5, "seq": 0}
    meta.update(over)
    return meta, arrays


def routed(frames: list[bytes]) -> tuple[list, list]:
    rejected, segments = [], []
    route_message([bytes(f) for f in frames], SPEC, rejected.append, segments.append, segments.append)
    return rejected, segments


def test_a_good_segment_routes() -> None:
    meta, arrays = good_segment()
    rejected, segments = routed(encode("segment", meta, arrays))
    assert not rejected and len(segments) == 1


@pytest.mark.parametrize(
    "header",
    [
        b'{"proto":1,"kind":"segment","compression":"none","arrays":[{"name":"x","dtype":[],"shape":[1]}]}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"proto":1,"kind":"segment","compression":"none","arrays":[],"x":' + b"9" * 5000 + b"}",
    ],
)
def test_hostile_headers_are_rejected_not_raised(header: bytes) -> None:
    rejected, segments = routed([header])
    assert len(rejected) == 1 and isinstance(rejected[0], WireError) and not segments


def test_huge_numbers_in_meta_are_rejected() -> None:
    meta, arrays = good_segment(seq=10**400)
    assert len(routed(encode("segment", meta, arrays))[0]) == 1
    meta, arrays = good_segment(timings={"env": 10**400})
    assert len(routed(encode("segment", meta, arrays))[0]) == 1


def test_declared_sizes_are_capped_before_decompressing() -> None:
    import zstandard

    shape = [1 << 20, 1 << 10]  # 1 GiB declared, matching a zstd frame that claims the same
    header = json.dumps(
        {
            "proto": PROTOCOL_VERSION,
            "kind": "warmup",
            "compression": "zstd",
            "actor": 0,
            "streams": [0],
            "num_actors": 2,
            "arrays": [{"name": "frames", "dtype": "uint8", "shape": shape}],
        }
    ).encode()
    bomb = zstandard.ZstdCompressor().compress(b"\0" * 1000)
    rejected, _ = routed([header, bomb])
    assert len(rejected) == 1 and "allowed" in str(rejected[0])
    with pytest.raises(WireError, match="allowed"):
        decode([header, bomb], max_bytes=SPEC.max_message_bytes())


@pytest.mark.parametrize("name,value", [("behaviour_logp", -1e30), ("trunc_value", 1e38), ("rewards", -1e9)])
def test_finite_but_absurd_values_are_rejected(name: str, value: float) -> None:
    meta, arrays = good_segment()
    arrays[name][1, 1] = value
    rejected, segments = routed(encode("segment", meta, arrays))
    assert len(rejected) == 1 and not segments


def test_sent_frames_are_copied_before_the_buffer_is_reused() -> None:
    """ZeroMQ sends from its own thread; a zero-copy send of a reused buffer would ship newer data."""
    ctx = zmq.Context.instance()
    addr = free_tcp_address()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind(addr)
    push.connect(addr)
    try:
        buf = np.zeros(1 << 20, np.uint8)  # 1 MiB: far above pyzmq's copy threshold
        for i in range(10):
            buf[:] = i
            assert send_with_timeout(push, [b"h", memoryview(buf)], 5.0)
            buf[:] = 255  # the collector's next segment overwrites the same buffer at once
        for i in range(10):
            assert pull.poll(5000)
            got = np.frombuffer(pull.recv_multipart()[1], np.uint8)
            assert got.min() == got.max() == i
    finally:
        pull.close(0)
        push.close(0)


def test_actor_flow_control_keeps_the_lag_bound(fake_sub, weights_frames) -> None:
    """An actor may have at most max_policy_lag segments that the learner has not retired yet (through the
    receiver and the wire; ``tests/test_flow.py`` has the gate alone)."""
    from common.rl.networks import PolicyNet

    policy, sub = PolicyNet(18, 4, 44, 44), fake_sub
    rx = WeightsReceiver(sub, policy, timeout_s=60, actor_id=3, run_id=11)
    sub.queue.append(weights_frames(policy, 0, learner_run=1, retired=[]))
    rx.poll()
    assert rx.version == 0 and rx.gate.unretired() == 0
    rx.gate.sent(1)  # two segments (0, 1) sent
    assert rx.gate.unretired() == 2  # lag 1 allows no third one yet
    sub.queue.append(weights_frames(policy, 1, learner_run=1, retired=[[3, 11, 0], [3, 99, 7], [4, 11, 9]]))
    rx.poll()
    assert rx.gate.unretired() == 1  # only its own (actor 3, run 11) retirements count
    beat = encode("heartbeat", {"version": 5, "learner_run": 1, "retired": [[3, 11, 1]]}, {})
    sub.queue.append(beat)
    rx.poll()
    assert rx.gate.unretired() == 1  # a heartbeat ahead of the weights this actor holds does not count yet
    sub.queue.append(weights_frames(policy, 5, learner_run=1, retired=[[3, 11, 0]]))
    sub.queue.append(beat)
    rx.poll()
    assert rx.gate.unretired() == 0


def test_actor_forgets_flow_state_when_the_learner_restarts(fake_sub, weights_frames) -> None:
    from common.rl.networks import PolicyNet

    policy, sub = PolicyNet(18, 4, 44, 44), fake_sub
    rx = WeightsReceiver(sub, policy, timeout_s=60, actor_id=0, run_id=5)
    sub.queue.append(weights_frames(policy, 105, learner_run=1, retired=[[0, 5, 40]]))
    rx.poll()
    rx.gate.sent(42)
    assert rx.gate.unretired() == 2
    sub.queue.append(weights_frames(policy, 100, learner_run=2, retired=[]))  # resumed from an older checkpoint
    rx.poll()
    assert rx.version == 100 and rx.gate.unretired() == 0  # the new learner will never report seqs 41, 42


def test_segments_newer_than_any_published_weights_are_dropped() -> None:
    stale = []
    io = LearnerIO(
        None,
        None,
        SPEC,
        num_envs=2,
        frame_stack=4,
        max_lag=1,
        pin=False,
        on_reject=lambda e: None,
        on_stale=stale.extend,
        version=100,
    )
    for v in (99, 100, 104):
        meta, arrays = good_segment(version=v)
        route_message(encode("segment", meta, arrays), SPEC, io.on_reject, io.warmups.put, io.pending.append)
    io.enabled = True
    io._maybe_assemble()
    got = io.get(version=100, timeout=1)
    assert got is not None and [s.version for s in got[1]] == [99]
    assert [s.version for s in stale] == [104]  # version 104 came from an older run of this learner
    assert io.consume_version == 101


def test_resumed_logs_drop_rows_written_after_the_checkpoint(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, tensorboard=False)
    for u in range(1, 6):
        log.log_update({"update": u, "agent_steps": 10 * u})
        log.log_episodes([{"update": u, "return": 0.0}])
    log.close()
    log = RunLogger(tmp_path, resume_update=3, tensorboard=False)  # the checkpoint was at update 3
    log.log_update({"update": 4, "agent_steps": 40})
    log.close()
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["update", "1", "2", "3", "4"]
    eps = [json.loads(x)["update"] for x in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert eps == [1, 2, 3]


@pytest.mark.parametrize("progress", [True, False])
def test_the_progress_line_can_be_turned_off(tmp_path: Path, capsys: pytest.CaptureFixture, progress: bool) -> None:
    log = RunLogger(tmp_path, tensorboard=False, progress=progress)
    row = {"update": 1, "agent_steps": 10, "steps_per_second": 5.0, "rooms_visited_total": 1, "policy_lag_mean": 0.0}
    log.log_update(row)
    log.progress(row, 100)
    log.close()
    out = capsys.readouterr().out
    assert ("update      1 | steps" in out) is progress
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 2  # the CSV is written either way


def test_no_checkpoint_of_a_half_applied_update(tmp_path: Path) -> None:
    from learner.serial import SerialRunner

    cfg = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml",
        {"NumWorkers": 1, "ImageHeight": 44, "ImageWidth": 44, "BatchSize": 16},
    )
    runner = SerialRunner(cfg, tmp_path, num_actors=1)
    runner.run(1)
    runner.learner.save()
    runner.collect()
    segments = list(runner.learner.pending)

    def failing_update(batch):
        raise RuntimeError("CUDA out of memory (simulated)")

    runner.learner.agent.update = failing_update
    with pytest.raises(RuntimeError, match="out of memory"):
        runner.learner.step_on(segments)
    runner.learner.shutdown()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["ckpt_00000001.pt", "latest.pt"]


def test_an_actor_that_refuses_every_learner_message_says_so_and_exits(fake_sub, weights_frames) -> None:
    """Messages that arrive but all fail validation (say a retirement table past the header cap)
    are not a live learner: after actor_timeout_s the actor stops with the reason, not silently."""
    import time

    from actors.actor import ActorStop
    from common.rl.networks import PolicyNet

    policy, sub = PolicyNet(18, 4, 44, 44), fake_sub
    rx = WeightsReceiver(sub, policy, timeout_s=0.3, actor_id=0, run_id=5)
    sub.queue.append(weights_frames(policy, 0, learner_run=1, retired=[]))
    rx.poll()
    bad = encode("heartbeat", {"version": 0, "learner_run": 1, "retired": [[0, 5, -1]]}, {})
    deadline = time.monotonic() + 5
    with pytest.raises(ActorStop, match=r"refused every message from the learner .*'retired'") as stop:
        while time.monotonic() < deadline:
            sub.queue.append(bad)
            rx.poll()
            time.sleep(0.02)
    assert stop.value.exit_code == 3 and rx.rejected >= 10
