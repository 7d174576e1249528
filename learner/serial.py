"""The same actor and learner pieces wired serially in one process, with no sockets (for tests and debugging).

Segments still go through the wire encoding and the learner's validation, so what is tested is what
the multi-process system runs.
"""

from __future__ import annotations

from pathlib import Path

from actors.rollout import build_collector
from common.config import Config
from common.wire import encode
from learner.learner import Learner


class SerialRunner:
    """``num_actors`` collectors share the learner's process; actor policies copy the learner's weights.
    Messages reach the learner through its in-process batch source (``source``)."""

    def __init__(self, cfg: Config, run_dir: Path, num_actors: int = 1, tensorboard: bool = False):
        self.cfg = cfg
        self.learner = Learner(cfg, run_dir, "cpu", bind=None, tensorboard=tensorboard)
        self.source = self.learner.inbox
        self.collectors = [(i, build_collector(cfg, i, num_actors)) for i in range(num_actors)]
        self.seq = 0

    def sync_weights(self) -> None:
        for _, col in self.collectors:
            col.policy.load_state_dict(self.learner.agent.policy.state_dict())

    def warmup(self) -> None:
        for i, col in self.collectors:
            for frames in col.warmup(self.cfg.NumInitSteps):
                meta = {"actor": i, "streams": col.streams, "num_actors": len(self.collectors)}
                self.source.handle(encode("warmup", meta, {"frames": frames}))

    def collect(self) -> None:
        """Every actor collects one segment with its current weights and sends it through the wire format."""
        for i, col in self.collectors:
            arrays, _ = col.collect()  # its episode records travel among the arrays
            meta = {
                "actor": i,
                "streams": col.streams,
                "num_actors": len(self.collectors),
                "version": self.learner.version,
                "run": 0,
                "seq": self.seq,
            }
            self.source.handle(encode("segment", meta, arrays))
        self.seq += 1

    def run(self, updates: int) -> list[dict]:
        """Synchronous (max_policy_lag 0) training for ``updates`` updates; returns the metric rows."""
        self.sync_weights()
        self.warmup()
        rows = []
        for _ in range(updates):
            self.collect()
            got = self.source.next_batch(self.learner.version, timeout=0.0)
            if got is None:
                raise RuntimeError("the segments just collected did not reach the learner")
            rows.append(self.learner.step_on_batch(*got))
            self.learner.log(rows[-1])
            self.sync_weights()
        return rows
