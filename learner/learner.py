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
from typing import Any

import torch
import zmq

from common.config import Config
from common.flow import LearnerLedger
from common.rl.networks import NUM_ACTIONS
from common.runtime import TorchRuntime
from common.timing import Timings
from common.transport import LearnerKeys, LearnerSockets, bind_learner
from common.wire import SegmentSpec, WireError, encode
from learner.agent import NonFiniteLoss, RNDAgent
from learner.batch import Batch, Segment, assemble
from learner.batch_source import BatchSource, InProcessBatchSource, SocketBatchSource
from learner.checkpoint import CheckpointError, CheckpointWriteError
from learner.console import RunStatus
from learner.distributed import Dist, RankLost
from learner.exploration import ExplorationStats
from learner.learner_io import LearnerIO, WarmupMoments, max_frame_bytes, recv_queue
from learner.logs import NullLogger, RunLogger
from learner.persist import checkpoint_state, restore_checkpoint, write_checkpoint
from learner.ranks import RanksDiverged, gather_episodes, merge_row, rank_update
from learner.run_stats import (
    MAX_REJECT_REASONS,
    OTHER_REASONS,
    RunStats,
    Supervisor,
    actor_phases,
    policy_lags,
    reject_reason,
)

log = logging.getLogger("learner")


class Learner:
    """Wires the agent to its batch source, logs and checkpoints. ``step_on(segments)`` is the socket-free core.

    With ``bind`` the batches come from the I/O thread; without, from messages handed in with ``handle``.
    ``on_update`` holds callables given each metrics row as it is logged. ``progress=False`` turns the
    live console line off (the metrics files are written as ever). ``runtime``: how the networks compute,
    from the process's ``init_torch_runtime`` (default: the config's choices on ``device``). ``dist``: this
    process is one of several learner ranks (``learner/distributed.py``); rank 0 writes the run's files."""

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
        dist: Dist | None = None,
    ):
        self.cfg = cfg
        self.dist = dist
        self.rank, self.world = (dist.rank, dist.world) if dist is not None else (0, 1)
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
        if dist is not None:
            self.agent.distribute(dist)
        self._warm_merged = resume is not None or dist is None  # resumed ranks hold the merged normaliser
        self.rank_lost = False
        self.timings = Timings()
        self.stop_requested = False
        self.on_update: list[Callable[[dict[str, Any]], None]] = []
        self._saved_version: int | None = None
        self._in_update = False
        self._saved_path: Path | None = None
        self._save_failed = False
        self.failure: str | None = None  # why the run stopped early as a failure (no actors, a non-finite loss)
        self.shutting_down = False
        warmup_frames = 0 if self.obs_rms_ready else cfg.NumInitSteps * cfg.NumWorkers  # what the status counts
        show = progress and self.rank == 0  # other ranks print only errors
        status = RunStatus(self.total_steps, cfg.NumWorkers, warmup_frames, bind, keys is not None, show)
        resumed = resume is not None
        self.logger: RunLogger | NullLogger = NullLogger(status)
        if self.rank == 0:  # it writes the run dir for every rank
            purge = self.stats.counters["agent_steps"] if resumed else None
            resume_update = self.version if resumed else None
            self.logger = RunLogger(self.run_dir, resume_update, tensorboard, purge, progress, status)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
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
            "config": self.cfg.to_dict(),  # the run's one config: actors run with it (common/wire.py weights_config)
            "rank": getattr(self, "rank", 0),
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
        self.logger.status.hear(m.streams)
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
            if self.dist is not None and self.dist.peer_stopped():
                return None
        return None

    def all_go(self, got: tuple[Batch, list[Segment]] | None) -> bool:
        """Whether to update on ``got`` (None: this rank stops). With several learner ranks, every rank
        decides together once all have a batch (or one stops), so that they all stop at the same update."""
        if self.dist is None:
            return got is not None
        return self.dist.agree_to_go(self.version, got is None, self._idle_until_stop) and got is not None

    def _idle_until_stop(self) -> bool:
        self.idle()
        return self.stop_requested

    def idle(self) -> None:
        self.logger.status.waiting(self.stats.counters["warmup_frames"], self.io.heard if self.io is not None else b"")
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
            metrics = self._update(batch)
        self.stats.count("agent_steps", self._global_steps(batch.T * batch.B))
        self.ledger.advance(segments)  # the version moves on and the segments are retired at once
        self._in_update = False
        self._record_episodes(segments)
        return self._row(metrics, segments)

    def _update(self, batch: Batch) -> dict[str, float]:
        """The agent's update (``learner/ranks.py`` ``rank_update`` with several ranks)."""
        if self.dist is None:
            return self.agent.update(batch)
        metrics = rank_update(self.dist, self.agent, batch, merge_warmup=not self._warm_merged)
        self._warm_merged = True
        return metrics

    def _global_steps(self, local: int) -> int:
        """Agent steps of this update over every rank."""
        return local if self.dist is None else int(self.dist.sum(torch.tensor([float(local)]))[0])

    def _record_episodes(self, segments: list[Segment]) -> None:
        """Count the segments' episodes in the run statistics and log their records (with several ranks,
        rank 0 does so for every rank's: ``learner/ranks.py`` ``gather_episodes``)."""
        if self.dist is None:
            self.logger.log_episodes(self.stats.record_episodes(segments, self.version))
            return
        for records in gather_episodes(self.dist, self.stats, segments, self.version):
            self.logger.log_episodes(records)

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
        self.last_row: dict[str, Any] | None = None
        try:
            self.io.start()
            self.publish_weights()
            self._loop()
        except (RankLost, RanksDiverged) as e:  # latest.pt keeps the last whole checkpoint
            self.rank_lost = True
            self.fail(f"{e}; stopping")
        finally:
            self.shutdown()
        return self.last_row

    def _loop(self) -> None:
        while self.stats.counters["agent_steps"] < self.total_steps and not self.stop_requested:
            with self.timings.time("wait_data"):
                got = self.next_batch()
                go = self.all_go(got)
            if not go or got is None:
                break
            try:
                row = self.step_on_batch(*got)
            except NonFiniteLoss as e:  # the update stays half-applied: never published nor saved
                self.fail(f"update {self.version + 1}: {e}; its weights were not published")
                break
            self.publish_weights()
            self.idle()  # a busy learner may never wait: restart dead actors here too
            self.last_row = row = row if self.dist is None else merge_row(self.dist, row)
            if self.rank == 0:
                self.log(row)
                self.logger.progress(row, self.total_steps)
            if self.version % self.cfg.checkpoint_every == 0:
                self.save()

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
            if not self._in_update and not self._save_failed and not self.rank_lost:
                self.save()
        finally:
            if self.io is not None:
                self.stop_actors()
            self.close()
            if self.dist is not None:
                self.dist.close(clean=not self.rank_lost)

    # ---- state ----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything a checkpoint holds (``learner/persist.py`` ``checkpoint_state``; collective with
        several learner ranks)."""
        return checkpoint_state(self)

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
        restore_checkpoint(self, data)
        self.ledger = LearnerLedger(self.cfg.NumWorkers, self.stats.restore(data))
        if self.rank > 0:  # rank 0 holds the run-wide totals; the others count their own share anew
            self.stats.forget_totals()

    @property
    def saved_version(self) -> int | None:
        """The update of the last checkpoint this process wrote, if any."""
        return self._saved_version

    def save(self) -> Path | None:
        """Checkpoint now, unless this very update was just saved. With several learner ranks every rank
        calls it (the state is gathered), rank 0 writes, and all learn whether the write succeeded."""
        if self._saved_version == self.version:
            return self._saved_path
        state = self.state()
        error: CheckpointWriteError | None = None
        if self.rank == 0:
            try:
                self._write(state)
            except CheckpointWriteError as e:
                error = e
        if self.dist is not None and not all(self.dist.flags(error is None)) and error is None:
            self._save_failed = True
            self.fail("learner rank 0 could not write the checkpoint")
            return None
        if error is not None:
            self._save_failed = True
            raise error
        self._saved_version = self.version
        return self._saved_path

    def _write(self, state: dict[str, Any]) -> None:
        self._saved_path = write_checkpoint(self, state)

    def close(self) -> None:
        if self.io is not None:
            self.io.stop()  # the sockets belong to its thread until it has ended
        self.logger.close()
        if self.sockets is not None:
            self.sockets.close()
