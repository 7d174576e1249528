#!/usr/bin/env python3
"""Batches that hold one env stream twice, over 25 updates of configs/smoke.yaml on loopback.

    python3 scripts/stream_duplicates.py offset   # a second actors role whose actor id overlaps the first's
    python3 scripts/stream_duplicates.py claim    # an actor with a valid id that sends another actor's streams

The learner runs in this process, its batch assembly counted; one actors role of ids 0 and 1 trains,
and 5 s later the second party starts. Prints the batches, those with a stream twice, how the second
party exited (None: still running when training ended) and the learner's rejected and dropped counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import learner.batch as batch_module  # noqa: E402
import learner.learner_io as learner_io  # noqa: E402
from common.config import load_config  # noqa: E402
from common.transport import free_tcp_address  # noqa: E402
from learner.learner import Learner  # noqa: E402

CLAIM = (  # actor 1's process, its env split replaced by actor 0's
    "import actors.rollout as r; split = r.env_split; r.env_split = lambda n, k, a: split(n, k, 0); "
    "import actors.main, sys; sys.exit(actors.main.main(sys.argv[1:]))"
)


def main(mode: str) -> None:
    counts = {"batches": 0, "twice": 0}
    assemble = batch_module.assemble

    def counting(segments, frame_stack, pin=False):
        streams = [s for sg in segments for s in sg.streams]
        counts["batches"] += 1
        counts["twice"] += len(set(streams)) != len(streams)
        return assemble(segments, frame_stack, pin)

    learner_io.assemble = counting
    cfg = load_config(REPO / "configs" / "smoke.yaml")
    addr, run_dir = free_tcp_address(), Path(f"/tmp/stream-duplicates-{mode}-{os.getpid()}")
    steps = 25 * cfg.NumWorkers * cfg.RolloutSteps
    learner = Learner(cfg, run_dir, "cpu", bind=addr, total_steps=steps, tensorboard=False, progress=False)
    training = threading.Thread(target=learner.train, daemon=True)
    training.start()
    role = [sys.executable, "launch.py", "--role", "actors", "--config", "configs/smoke.yaml", "--learner", addr]
    first = subprocess.Popen([*role, "--actors", "2"], cwd=REPO)
    time.sleep(5)
    if mode == "offset":
        second = subprocess.Popen([*role, "--actors", "1", "--actor-offset", "1", "--total-actors", "2"], cwd=REPO)
    else:
        args = ["--config", "configs/smoke.yaml", "--learner", addr, "--actor-id", "1", "--num-actors", "2"]
        second = subprocess.Popen([sys.executable, "-c", CLAIM, *args], cwd=REPO)
    training.join(timeout=900)
    time.sleep(2)
    second_rc = second.poll()
    for p in (first, second):
        if p.poll() is None:
            p.terminate()
            p.wait()
    c = learner.counters
    print(
        f"{mode}: {counts['batches']} batches, {counts['twice']} with a stream twice; the second party exited "
        f"{second_rc}; rejected_messages {c['rejected_messages']}, dropped_stale_segments {c['dropped_stale_segments']}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "offset")
