"""The learner process: PULL segments -> validate -> batch -> update -> PUB weights; logs, checkpoints.

It owns all learning state (networks, optimizer, normalisers, per-stream reward filters), so one
checkpoint resumes everything. Game-specific facts never appear here: rooms and exploration cells
arrive as episode stats and are counted run-wide (``learner/exploration.py``).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import zmq

from common.config import Config, shape_keys
from common.flow import LearnerLedger
from common.networks import NUM_ACTIONS
from common.timing import Timings
from common.transport import LearnerKeys, LearnerSockets, bind_learner
from common.wire import SegmentSpec, WireError, encode
from learner.agent import NonFiniteLoss, RNDAgent
from learner.batch import Batch, Segment, assemble
from learner.checkpoint import CheckpointError, CheckpointWriteError, save_checkpoint, write_fault
from learner.exploration import ExplorationStats
from learner.learner_io import LearnerIO, WarmupMoments, max_frame_bytes, recv_queue, route_message
from learner.logs import RunLogger

log = logging.getLogger("learner")


MAX_REJECT_REASONS = 64  # distinct faults logged; later new ones are counted under OTHER_REASONS
OTHER_REASONS = "other"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def reject_reason(e: WireError) -> str:
    """What makes two rejections the same fault: the whole reason with its numbers masked, so that
    different faults of one array log apart while one fault with changing sizes or ids logs once."""
    return _NUMBER.sub("#", str(e))


class Supervisor(Protocol):
    restarts: int  # actor processes restarted so far

    def poll(self) -> int: ...  # restarts dead children; returns restarts so far

    def gave_up(self) -> str | None: ...  # why no actor is left, once none is


def actor_phases(segments: list[Segment]) -> dict[str, float]:
    """Mean seconds per segment of each actor phase, as the actors reported them."""
    out = {}
    for phase in ("infer", "env", "wait", "send"):
        vals = [s.timings[phase] for s in segments if phase in s.timings]
        out[f"actor_{phase}_s"] = float(np.mean(vals)) if vals else float("nan")
    return out


class Learner:
    """Wires the agent to sockets, logs and checkpoints. ``step_on(segments)`` is the socket-free core."""

    def __init__(self, cfg: Config, run_dir: Path, device: torch.device | str = "cpu", bind: str | None = None,
                 total_steps: int | None = None, supervisor: Supervisor | None = None, resume: dict | None = None,
                 tensorboard: bool = True, keys: LearnerKeys | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.total_steps = total_steps if total_steps is not None else cfg.total_agent_steps
        self.agent = RNDAgent(cfg, NUM_ACTIONS, device)
        self.spec = SegmentSpec.from_config(cfg, NUM_ACTIONS)
        self.supervisor = supervisor
        self.ledger = LearnerLedger(cfg.NumWorkers)  # the version, this process's run id, the retirements
        self._counts: dict[str, int] = {"agent_steps": 0, "rejected_messages": 0,
                                        "dropped_stale_segments": 0, "episodes": 0, "warmup_frames": 0}
        self.obs_rms_ready = cfg.NumInitSteps == 0
        self.exploration = ExplorationStats()
        self.recent: deque[tuple[float, int, int, int]] = deque(maxlen=100)  # (return, length, rooms, cells)
        self.rejected_by_reason: Counter[str] = Counter()
        self._counter_lock = threading.Lock()
        self.elapsed_before, self.restarts_before = 0.0, 0
        if resume is not None:
            self._load(resume)
        self.timings = Timings()
        self.pending: deque[Segment] = deque()
        self.stop_requested = False
        self._step_times: deque[tuple[float, int]] = deque(maxlen=11)
        self._start = time.monotonic()
        self._saved_version: int | None = None
        self._in_update = False
        self._saved_path: Path | None = None
        self._save_failed = False
        self.failure: str | None = None  # why the run stopped early as a failure (no actors, a non-finite loss)
        self.shutting_down = False
        self.logger = RunLogger(self.run_dir, resume_update=self.version if resume is not None else None,
                                tensorboard=tensorboard,
                                purge_step=self._counts["agent_steps"] if resume is not None else None)
        self.ctx = zmq.Context.instance()
        self.sockets: LearnerSockets | None = None
        self.io: LearnerIO | None = None
        if bind is not None:
            self._bind(bind, keys)

    # ---- sockets ---------------------------------------------------------------------------------
    def _bind(self, addr: str, keys: LearnerKeys | None) -> None:
        """Sockets (CURVE with ``keys``), sized by the config: see learner_io's bounds."""
        self.sockets = bind_learner(self.ctx, addr, keys, max_frame_bytes(self.spec),
                                    recv_queue(self.cfg.max_policy_lag))
        self.io = LearnerIO(self.sockets.pull, self.sockets.pub, self.spec, self.cfg.NumWorkers, self.cfg.FrameStack,
                            self.cfg.max_policy_lag, pin=self.agent.device.type == "cuda",
                            on_reject=self.reject, on_stale=self.count_stale, version=self.version,
                            heartbeat_meta=self.ledger.flow_meta)

    @property
    def version(self) -> int:
        """Policy version = updates done; weights published after update u carry version u."""
        return self.ledger.version

    @property
    def counters(self) -> dict[str, int]:
        """The run's counters as checkpoints and metrics name them (a copy): the update, then the rest."""
        with self._counter_lock:
            return {"update": self.version, **self._counts}

    def publish_weights(self) -> None:
        state = self.agent.policy.state_dict()
        # a snapshot: the I/O thread sends it later, while the next update changes the parameters
        arrays = {k: v.detach().to("cpu", torch.float32, copy=True).numpy() for k, v in state.items()}
        meta = {**self.ledger.flow_meta().wire(), "warmup_steps": 0 if self.obs_rms_ready else self.cfg.NumInitSteps,
                "shape_keys": shape_keys(self.cfg)}
        self.io.publish_weights(self.version, encode("weights", meta, arrays))

    def stop_actors(self) -> None:
        """Queue stop messages; the I/O thread flushes them before it ends."""
        for _ in range(3):
            self.io.publish(encode("stop", {}, {}))
        time.sleep(0.3)

    # ---- incoming messages -----------------------------------------------------------------------
    def reject(self, e: WireError) -> None:
        """A bad message: counted, and logged once per reason. Called from the I/O thread."""
        reason = reject_reason(e)
        with self._counter_lock:
            self._counts["rejected_messages"] += 1
            if reason not in self.rejected_by_reason and len(self.rejected_by_reason) >= MAX_REJECT_REASONS:
                reason = OTHER_REASONS  # a peer varying its faults must not grow this table or the log
            first = self.rejected_by_reason[reason] == 0
            self.rejected_by_reason[reason] += 1
        if first and reason == OTHER_REASONS:
            log.warning("dropped a bad message (%s); %d kinds of fault logged, further new ones are only counted",
                        e, MAX_REJECT_REASONS)
        elif first:
            log.warning("dropped a bad message (%s); further ones like it are only counted", e)

    def count_stale(self, segments: list[Segment]) -> None:
        """Segments too old for the next update, or newer than any weights of this run (an old run's).
        Called from the I/O thread."""
        with self._counter_lock:
            self._counts["dropped_stale_segments"] += len(segments)
        self.ledger.retire(segments)

    def accept_warmup(self, m: WarmupMoments) -> None:
        if self.obs_rms_ready:  # the normaliser's start is fixed once warm: later frames would shift it
            self.reject(WireError("warm-up frames after the warm-up ended, ignored"))
            return
        self.agent.obs_rms.update_from_moments(m.mean.to(self.agent.device), m.var.to(self.agent.device), m.count)
        self._counts["warmup_frames"] += m.count
        if self._counts["warmup_frames"] >= self.cfg.NumInitSteps * self.cfg.NumWorkers:
            self.obs_rms_ready = True

    def handle(self, frames: list[bytes]) -> None:
        """In-process path (serial runner, tests): decode, validate and file one message."""
        route_message(frames, self.spec, self.reject, self.accept_warmup, self.pending.append)

    def next_batch(self) -> tuple[Batch, list[Segment]] | None:
        """Socket path: wait for the I/O thread's next batch (normaliser warm, segments fresh enough).
        Returns None if a stop was requested meanwhile."""
        while not self.stop_requested:
            while not self.io.warmups.empty():
                self.accept_warmup(self.io.warmups.get())
            self.io.enabled = self.obs_rms_ready
            got = self.io.get(self.version, timeout=0.1)
            if got is not None:
                return got
            self.idle()
        return None

    def idle(self) -> None:
        if self.supervisor is None:
            return
        self.supervisor.poll()
        gone = self.supervisor.gave_up()
        if gone is not None:  # no actor left: waiting would be forever
            self.fail(gone)

    # ---- the update --------------------------------------------------------------------------------
    def step_on(self, segments: list[Segment]) -> dict[str, Any]:
        """One update on ``segments`` (in-process path); returns the logged metrics row."""
        return self.step_on_batch(assemble(segments, self.cfg.FrameStack), segments)

    def step_on_batch(self, batch: Batch, segments: list[Segment]) -> dict[str, Any]:
        """One update on an assembled host batch; returns the logged metrics row."""
        self._in_update = True  # a checkpoint now would hold a half-applied update
        with self.timings.time("learn"):
            batch = batch.to(self.agent.device)
            metrics = self.agent.update(batch)
        self._counts["agent_steps"] += batch.T * batch.B
        self.ledger.advance(segments)  # the version moves on and the segments are retired at once
        self._in_update = False
        self._record_episodes(segments)
        return self._row(metrics, segments)

    def _record_episodes(self, segments: list[Segment]) -> None:
        records = []
        for seg in segments:
            for e in seg.episodes:
                rooms, cells = self.exploration.add_episode(e)
                self.recent.append((float(e["return"]), int(e["length"]), rooms, cells))
                record = {k: v for k, v in e.items() if k != "cells"}  # the run-wide counts keep the cells
                if "cells" in e:
                    record["cells_visited"] = cells
                records.append({**record, "update": self.version, "agent_steps": self._counts["agent_steps"],
                                "actor": seg.actor, "policy_version": seg.version})
        self._counts["episodes"] += len(records)
        self.logger.log_episodes(records)

    def _row(self, metrics: dict[str, float], segments: list[Segment]) -> dict[str, Any]:
        now = time.monotonic()
        lags = [self.version - 1 - s.version for s in segments]  # the update just done was version-1 -> version
        self._step_times.append((now, self._counts["agent_steps"]))
        (t0, s0), (t1, s1) = self._step_times[0], self._step_times[-1]
        sps = (s1 - s0) / (t1 - t0) if t1 > t0 else float("nan")
        split = self.timings.split()
        recent = np.array(self.recent, dtype=np.float64).reshape(-1, 4)
        nan = float("nan")
        row = {"update": self.version, "agent_steps": self._counts["agent_steps"],
               "frames": self._counts["agent_steps"] * self.cfg.FrameSkip, "time_s": self.elapsed_s(),
               "episode_return_mean": recent[:, 0].mean() if len(recent) else nan,
               "episode_length_mean": recent[:, 1].mean() if len(recent) else nan,
               "rooms_per_episode_mean": recent[:, 2].mean() if len(recent) else nan,
               "cells_per_episode_mean": recent[:, 3].mean() if len(recent) else nan,
               "episodes": self._counts["episodes"], "rooms_visited_total": self.exploration.rooms_visited,
               "cells_visited_total": self.exploration.cells_visited,
               "obs_rms_mean": float(self.agent.obs_rms.mean.mean()),
               "policy_lag_mean": float(np.mean(lags)), "policy_lag_max": int(max(lags)),  # lag at consumption
               "steps_per_second": sps, "wait_data_s": split.get("wait_data", 0.0),
               "learn_s": split.get("learn", 0.0), "rejected_messages": self._counts["rejected_messages"],
               "dropped_stale_segments": self._counts["dropped_stale_segments"],
               "actor_restarts": self.actor_restarts(),
               **actor_phases(segments), **metrics}
        return row

    # ---- the loop ------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any] | None:
        """Run until total_steps agent steps, a stop request or a failure (then ``failure`` says why);
        always checkpoint what is whole and stop the actors."""
        last_row = None
        try:
            self.io.start()
            self.publish_weights()
            while self._counts["agent_steps"] < self.total_steps and not self.stop_requested:
                with self.timings.time("wait_data"):
                    got = self.next_batch()
                if got is None:
                    break
                try:
                    last_row = self.step_on_batch(*got)
                except NonFiniteLoss as e:  # the update stays half-applied: never published nor saved
                    self.fail(f"update {self.version + 1}: {e}; its weights were not published")
                    break
                self.publish_weights()
                self.idle()  # a busy learner may never wait: restart dead actors here too
                self.logger.log_update(last_row)
                self.logger.progress(last_row, self.total_steps)
                if self.version % self.cfg.checkpoint_every == 0:
                    self.save()
        finally:
            self.shutdown()
        return last_row

    def fail(self, why: str) -> None:
        """End the run as a failure: the loop stops, shutdown checkpoints what is whole."""
        if self.failure is None:
            self.failure = why
        self.stop_requested = True

    def shutdown(self) -> None:
        """Checkpoint (unless an update was cut off half-way, or a save already failed: then latest.pt
        stays at the last whole one), tell the actors to stop, close logs and sockets."""
        self.shutting_down = True
        try:
            if not self._in_update and not self._save_failed:
                self.save()
        finally:
            if self.io is not None:
                self.stop_actors()
            self.close()

    # ---- state ----------------------------------------------------------------------------------------
    def elapsed_s(self) -> float:
        """Training wall time, summed over resumed sessions."""
        return self.elapsed_before + time.monotonic() - self._start

    def actor_restarts(self) -> int:
        """Actor restarts, summed over resumed sessions."""
        return self.restarts_before + (self.supervisor.restarts if self.supervisor is not None else 0)

    def state(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "agent": self.agent.state_dict(), "counters": self.counters,
                "obs_rms_ready": self.obs_rms_ready,
                "exploration": self.exploration.state(),
                "recent_episodes": [list(r) for r in self.recent], "elapsed_s": self.elapsed_s(),
                "actor_restarts": self.actor_restarts()}

    def _load(self, data: dict[str, Any]) -> None:
        """Restore a checkpoint (``load_checkpoint`` checked its parts); what still does not fit this
        run's config (say a changed NumWorkers override) is one CheckpointError line."""
        try:
            self._restore(data)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"the checkpoint does not fit this run: {type(e).__name__}: {e}") from None

    def _restore(self, data: dict[str, Any]) -> None:
        self.agent.load_state_dict(data["agent"])
        counts = {k: int(v) for k, v in data["counters"].items()}
        self.ledger = LearnerLedger(self.cfg.NumWorkers, counts.pop("update", 0))
        self._counts.update(counts)
        self.obs_rms_ready = bool(data["obs_rms_ready"])
        self.exploration.load(data["exploration"])
        self.recent.extend((float(a), int(b), int(c), int(d)) for a, b, c, d in data["recent_episodes"])
        self.elapsed_before = float(data.get("elapsed_s", 0.0))
        self.restarts_before = int(data.get("actor_restarts", 0))

    @property
    def saved_version(self) -> int | None:
        """The update of the last checkpoint this process wrote, if any."""
        return self._saved_version

    def save(self) -> Path:
        """Checkpoint now, unless this very update was just saved."""
        if self._saved_version != self.version:
            try:
                self._saved_path = save_checkpoint(self.run_dir, self.state(), self.version,
                                                   self.cfg.keep_checkpoints)
                self.exploration.write_json(self.run_dir / "exploration.json", self.version,
                                            self._counts["agent_steps"], self._counts["episodes"])
            except OSError as e:  # exploration.json: the checkpoint itself says so in save_checkpoint
                self._save_failed = True
                raise write_fault(e, self.run_dir / "exploration.json", self.run_dir / "checkpoints") from None
            except CheckpointWriteError:
                self._save_failed = True
                raise
            self._saved_version = self.version
        return self._saved_path

    def close(self) -> None:
        if self.io is not None:
            self.io.stop()  # the sockets belong to its thread until it has ended
        self.logger.close()
        if self.sockets is not None:
            self.sockets.close()

