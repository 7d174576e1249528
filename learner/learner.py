"""The learner process: PULL segments -> validate -> batch -> update -> PUB weights; logs, checkpoints.

It owns all learning state (networks, optimizer, normalisers, per-stream reward filters), so one
checkpoint resumes everything. Its parts: the batches come from a ``BatchSource``
(``learner/batch_source.py``: the I/O thread's, or messages handed in), the flow-control state from a
``LearnerLedger`` (``common/flow.py``), what the run counts from ``RunStats``
(``learner/run_stats.py``). Game-specific facts never appear here: rooms and exploration cells
arrive as episode stats and are counted run-wide (``learner/exploration.py``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import zmq

from common.config import Config, shape_keys
from common.flow import LearnerLedger
from common.rl.networks import NUM_ACTIONS
from common.runtime import TorchRuntime
from common.timing import Timings
from common.transport import LearnerKeys, LearnerSockets, bind_learner
from common.wire import SegmentSpec, WireError, encode
from learner.agent import NonFiniteLoss, RNDAgent
from learner.batch import Batch, Segment, assemble
from learner.batch_source import BatchSource, InProcessBatchSource, SocketBatchSource
from learner.checkpoint import CheckpointError, CheckpointWriteError, save_checkpoint, write_fault
from learner.exploration import ExplorationStats
from learner.learner_io import LearnerIO, WarmupMoments, max_frame_bytes, recv_queue
from learner.logs import RunLogger
from learner.run_stats import MAX_REJECT_REASONS, OTHER_REASONS, RunStats, reject_reason

log = logging.getLogger("learner")


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


def policy_lags(segments: list[Segment], version: int) -> dict[str, float]:
    """How stale the segments of the update that just made ``version`` were: versions between the
    weights each used and the update's start (``version - 1``)."""
    lags = [version - 1 - s.version for s in segments]
    return {"policy_lag_mean": float(np.mean(lags)), "policy_lag_max": int(max(lags))}


class Learner:
    """Wires the agent to its batch source, logs and checkpoints. ``step_on(segments)`` is the socket-free core.

    With ``bind`` the batches come from the I/O thread; without, from messages handed in with ``handle``.
    ``on_update`` holds callables given each metrics row as it is logged. ``progress=False`` turns the
    live console line off (the metrics files are written as ever). ``runtime``: how the networks compute,
    from the process's ``init_torch_runtime`` (default: the config's choices on ``device``)."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        device: torch.device | str = "cpu",
        bind: str | None = None,
        total_steps: int | None = None,
        supervisor: Supervisor | None = None,
        resume: dict | None = None,
        tensorboard: bool = True,
        keys: LearnerKeys | None = None,
        progress: bool = True,
        runtime: TorchRuntime | None = None,
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.total_steps = total_steps if total_steps is not None else cfg.total_agent_steps
        self.agent = RNDAgent(cfg, NUM_ACTIONS, device, runtime)
        self.spec = SegmentSpec.from_config(cfg, NUM_ACTIONS)
        self.supervisor = supervisor
        self.ledger = LearnerLedger(cfg.NumWorkers)  # the version, this process's run id, the retirements
        self.stats = RunStats(lambda: supervisor.restarts if supervisor is not None else 0)
        self.obs_rms_ready = cfg.NumInitSteps == 0
        if resume is not None:
            self._load(resume)
        self.timings = Timings()
        self.stop_requested = False
        self.on_update: list[Callable[[dict[str, Any]], None]] = []
        self._saved_version: int | None = None
        self._in_update = False
        self._saved_path: Path | None = None
        self._save_failed = False
        self.failure: str | None = None  # why the run stopped early as a failure (no actors, a non-finite loss)
        self.shutting_down = False
        self.logger = RunLogger(
            self.run_dir,
            resume_update=self.version if resume is not None else None,
            tensorboard=tensorboard,
            purge_step=self.stats.counters["agent_steps"] if resume is not None else None,
            progress=progress,
        )
        self.ctx = zmq.Context.instance()
        self.sockets: LearnerSockets | None = None
        self.io: LearnerIO | None = None
        self.source: BatchSource = InProcessBatchSource(self.spec, cfg.FrameStack, self.reject, self.accept_warmup)
        if bind is not None:
            self._bind(bind, keys)

    # ---- sockets ---------------------------------------------------------------------------------
    def _bind(self, addr: str, keys: LearnerKeys | None) -> None:
        """Sockets (CURVE with ``keys``), sized by the config: see learner_io's bounds."""
        self.sockets = bind_learner(
            self.ctx, addr, keys, max_frame_bytes(self.spec), recv_queue(self.cfg.max_policy_lag)
        )
        self.io = LearnerIO(
            self.sockets.pull,
            self.sockets.pub,
            self.spec,
            self.cfg.NumWorkers,
            self.cfg.FrameStack,
            self.cfg.max_policy_lag,
            pin=self.agent.device.type == "cuda",
            on_reject=self.reject,
            on_stale=self.count_stale,
            version=self.version,
            heartbeat_meta=self.ledger.flow_meta,
            refuse_run=self.ledger.refuse,
        )
        self.source = SocketBatchSource(self.io, self.accept_warmup, lambda: self.obs_rms_ready)

    @property
    def version(self) -> int:
        """Policy version = updates done; weights published after update u carry version u."""
        return self.ledger.version

    @property
    def counters(self) -> dict[str, int]:
        """The run's counters as checkpoints and metrics name them (a copy): the update, then the rest."""
        return self.stats.snapshot(self.version)

    @property
    def exploration(self) -> ExplorationStats:
        """The run-wide room and cell counts."""
        return self.stats.exploration

    @property
    def recent(self) -> deque[tuple[float, int, int, int]]:
        """The recent episodes: (return, length, rooms, cells)."""
        return self.stats.recent

    @property
    def update_in_progress(self) -> bool:
        """Whether an update is half-applied now (a checkpoint would hold it half-way)."""
        return self._in_update

    def publish_weights(self) -> None:
        state = self.agent.policy.state_dict()
        # a snapshot: the I/O thread sends it later, while the next update changes the parameters
        arrays = {k: v.detach().to("cpu", torch.float32, copy=True).numpy() for k, v in state.items()}
        meta = {
            **self.ledger.flow_meta().wire(),
            "warmup_steps": 0 if self.obs_rms_ready else self.cfg.NumInitSteps,
            "shape_keys": shape_keys(self.cfg),
        }
        self.io.publish_weights(self.version, encode("weights", meta, arrays))

    def stop_actors(self) -> None:
        """Queue stop messages; the I/O thread flushes them before it ends."""
        for _ in range(3):
            self.io.publish(encode("stop", {}, {}))
        time.sleep(0.3)

    # ---- incoming messages -----------------------------------------------------------------------
    def reject(self, e: WireError) -> None:
        """A bad message: counted, and logged once per reason. Called from the I/O thread."""
        reason, first = self.stats.note_rejection(reject_reason(e))
        if first and reason == OTHER_REASONS:
            log.warning(
                "dropped a bad message (%s); %d kinds of fault logged, further new ones are only counted",
                e,
                MAX_REJECT_REASONS,
            )
        elif first:
            log.warning("dropped a bad message (%s); further ones like it are only counted", e)

    def count_stale(self, segments: list[Segment]) -> None:
        """Segments too old for the next update, or newer than any weights of this run (an old run's).
        Called from the I/O thread."""
        self.stats.count("dropped_stale_segments", len(segments))
        self.ledger.retire(segments)

    def accept_warmup(self, m: WarmupMoments) -> None:
        if self.obs_rms_ready:  # the normaliser's start is fixed once warm: later frames would shift it
            self.reject(WireError("warm-up frames after the warm-up ended, ignored"))
            return
        self.agent.obs_rms.update_from_moments(m.mean.to(self.agent.device), m.var.to(self.agent.device), m.count)
        self.stats.count("warmup_frames", m.count)
        if self.stats.counters["warmup_frames"] >= self.cfg.NumInitSteps * self.cfg.NumWorkers:
            self.obs_rms_ready = True

    @property
    def inbox(self) -> InProcessBatchSource:
        """The in-process source of a learner built without sockets: messages handed in by the caller."""
        if not isinstance(self.source, InProcessBatchSource):
            raise TypeError("this learner takes its messages on its sockets")
        return self.source

    def handle(self, frames: list[bytes]) -> None:
        """In-process path (serial runner, tests): decode, validate and file one message."""
        self.inbox.handle(frames)

    @property
    def pending(self) -> deque[Segment]:
        """In-process path: the segments handed in and not yet in a batch."""
        return self.inbox.pending

    def next_batch(self) -> tuple[Batch, list[Segment]] | None:
        """Wait for the source's next batch (socket path: normaliser warm, segments fresh enough);
        meanwhile dead actors are restarted. Returns None if a stop was requested meanwhile."""
        while not self.stop_requested:
            got = self.source.next_batch(self.version, timeout=0.1)
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
        """One update on ``segments`` (in-process path); returns the metrics row (not logged)."""
        return self.step_on_batch(assemble(segments, self.cfg.FrameStack), segments)

    def step_on_batch(self, batch: Batch, segments: list[Segment]) -> dict[str, Any]:
        """One update on an assembled host batch; returns the metrics row (not logged: see ``log``)."""
        self._in_update = True  # a checkpoint now would hold a half-applied update
        with self.timings.time("learn"):
            batch = batch.to(self.agent.device)
            metrics = self.agent.update(batch)
        self.stats.count("agent_steps", batch.T * batch.B)
        self.ledger.advance(segments)  # the version moves on and the segments are retired at once
        self._in_update = False
        self._record_episodes(segments)
        return self._row(metrics, segments)

    def _record_episodes(self, segments: list[Segment]) -> None:
        """Count the segments' episodes in the run statistics and log their records."""
        self.logger.log_episodes(self.stats.record_episodes(segments, self.version))

    def _row(self, metrics: dict[str, float], segments: list[Segment]) -> dict[str, Any]:
        version, counters, stats = self.version, self.stats.counters, self.stats
        split = self.timings.split()
        return {
            "update": version,
            "agent_steps": counters["agent_steps"],
            "frames": counters["agent_steps"] * self.cfg.FrameSkip,
            "time_s": stats.elapsed_s(),
            **stats.episode_means(),
            "episodes": counters["episodes"],
            "rooms_visited_total": stats.exploration.rooms_visited,
            "cells_visited_total": stats.exploration.cells_visited,
            "obs_rms_mean": float(self.agent.obs_rms.mean.mean()),
            **policy_lags(segments, version),  # lag at consumption
            "steps_per_second": stats.steps_per_second(),
            "wait_data_s": split.get("wait_data", 0.0),
            "learn_s": split.get("learn", 0.0),
            "rejected_messages": counters["rejected_messages"],
            "dropped_stale_segments": counters["dropped_stale_segments"],
            "actor_restarts": stats.actor_restarts(),
            **actor_phases(segments),
            **metrics,
        }

    def log(self, row: dict[str, Any]) -> None:
        """Log one metrics row, then hand it to every ``on_update`` hook."""
        self.logger.log_update(row)
        for hook in self.on_update:
            hook(row)

    # ---- the loop ------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any] | None:
        """Run until total_steps agent steps, a stop request or a failure (then ``failure`` says why);
        always checkpoint what is whole and stop the actors."""
        last_row = None
        try:
            self.io.start()
            self.publish_weights()
            while self.stats.counters["agent_steps"] < self.total_steps and not self.stop_requested:
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
                self.log(last_row)
                self.logger.progress(last_row, self.total_steps)
                if self.version % self.cfg.checkpoint_every == 0:
                    self.save()
        finally:
            self.shutdown()
        return last_row

    def request_stop(self) -> None:
        """Finish the update in progress, then stop: the loop ends and shutdown checkpoints."""
        self.stop_requested = True

    def fail(self, why: str) -> None:
        """End the run as a failure: the loop stops, shutdown checkpoints what is whole."""
        if self.failure is None:
            self.failure = why
        self.request_stop()

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
    def state(self) -> dict[str, Any]:
        """Everything a checkpoint holds: config, agent, counters, obs_rms_ready, and the run statistics."""
        stats = self.stats.state(self.version)
        return {
            "config": self.cfg.to_dict(),
            "agent": self.agent.state_dict(),
            "counters": stats.pop("counters"),
            "obs_rms_ready": self.obs_rms_ready,
            **stats,
        }

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
        self.ledger = LearnerLedger(self.cfg.NumWorkers, self.stats.restore(data))
        self.obs_rms_ready = bool(data["obs_rms_ready"])

    @property
    def saved_version(self) -> int | None:
        """The update of the last checkpoint this process wrote, if any."""
        return self._saved_version

    def save(self) -> Path:
        """Checkpoint now, unless this very update was just saved."""
        if self._saved_version != self.version:
            try:
                self._saved_path = save_checkpoint(self.run_dir, self.state(), self.version, self.cfg.keep_checkpoints)
                self.stats.exploration.write_json(
                    self.run_dir / "exploration.json",
                    self.version,
                    self.stats.counters["agent_steps"],
                    self.stats.counters["episodes"],
                )
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
