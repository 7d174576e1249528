"""Replayed segments and late warm-up frames: a valid segment sent again is consumed once, and warm-up
frames that come after the warm-up has ended leave the observation normaliser alone. Both are counted.
(The replay check alone, ``SeenSegments``, is tested in tests/test_flow.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.config import load_config
from common.rl.networks import NUM_ACTIONS
from common.wire import SegmentSpec, encode
from learner.serial import SerialRunner

REPO = Path(__file__).resolve().parents[1]
CFG = load_config(
    REPO / "configs" / "smoke.yaml",
    {"NumWorkers": 2, "RolloutSteps": 8, "BatchSize": 16, "ImageHeight": 48, "ImageWidth": 48, "NumInitSteps": 4},
)
SPEC = SegmentSpec.from_config(CFG, NUM_ACTIONS)


def real_segment(runner: SerialRunner, seq: int, run: int = 5) -> list[bytes]:
    i, col = runner.collectors[0]
    arrays, _ = col.collect()
    return encode(
        "segment",
        {
            "actor": i,
            "streams": col.streams,
            "num_actors": 1,
            "version": 0,
            "run": run,
            "seq": seq,
        },
        arrays,
    )


def test_a_segment_sent_twelve_times_is_filed_once(socketless_io, tmp_path: Path) -> None:
    runner = SerialRunner(CFG, tmp_path, num_actors=1)
    io, rejected, dropped = socketless_io(CFG, 0)
    frames = real_segment(runner, seq=3)
    for _ in range(12):
        io.admit(frames)
    assert len(io.pending) == 1 and len(rejected) == 11 and not dropped
    assert all("replay" in str(e) for e in rejected)
    io.admit(real_segment(runner, seq=2))  # an older seq of the same actor run: a replay too
    assert len(io.pending) == 1 and len(rejected) == 12
    io.admit(real_segment(runner, seq=4))  # the next one is new
    io.admit(real_segment(runner, seq=0, run=6))  # so is a new actor run (a restarted actor) from seq 0
    assert len(io.pending) == 3 and len(rejected) == 12


def test_warmup_after_the_warmup_ended_is_ignored_and_counted(socketless_io, tmp_path: Path) -> None:
    runner = SerialRunner(CFG, tmp_path, num_actors=1)
    runner.warmup()
    learner = runner.learner
    assert learner.obs_rms_ready and learner.counters["rejected_messages"] == 0
    mean, count = learner.agent.obs_rms.mean.clone(), learner.counters["warmup_frames"]
    bright = np.full((8, 2, SPEC.height, SPEC.width), 255, np.uint8)
    learner.handle(encode("warmup", {"actor": 0, "streams": [0, 1], "num_actors": 1}, {"frames": bright}))
    assert torch.equal(learner.agent.obs_rms.mean, mean) and learner.counters["warmup_frames"] == count
    assert learner.counters["rejected_messages"] == 1

    io, rejected, _ = socketless_io(CFG, 0)  # the I/O thread refuses them too once batches are being formed
    io.enabled = True
    io.admit(encode("warmup", {"actor": 0, "streams": [0, 1], "num_actors": 1}, {"frames": bright}))
    assert io.warmups.empty() and io._warm is None and len(rejected) == 1
