"""The learner's I/O thread: all socket work, off the learner's critical path.

A background thread owns both sockets. It receives, decodes and validates segments; while the main
thread runs update v -> v+1 on the
device, this thread already picks the segments for the update after it (fresh enough for version
v+1, given ``max_policy_lag``) and assembles them into pinned host memory, so the main thread only
copies a ready batch to the device. Learning state stays with the main thread: warm-up frames are
reduced here to per-pixel moments, which the main thread merges into the normaliser. It also sends
what the main thread queues (new weights, stop) and, every HEARTBEAT_S, a tiny heartbeat, so actors
know their learner is alive even during an update that takes minutes (a CPU learner), and re-sends
the newest weights every RESEND_WEIGHTS_S for actors that joined late (PUB/SUB drops for them).

What a peer can make it hold is bounded by the config (the functions below derive each bound):
it reads at most MAX_DRAIN messages per pass, so batches, stale drops and heartbeats go on under
a flood; it reads a segment's header before anything else, and drops a segment that cannot be
used (too old, newer than any weights, or beyond the pending bounds) before decompressing it;
it keeps at most ``pending_segments_per_actor`` segments per actor id and ``pending_cap_bytes``
in all; actor ids must be ones the run can have (below NumWorkers); and warm-up moments waiting
for the main thread are merged into one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

import zmq

from common.flow import ActorRuns, SeenSegments
from common.wire import (
    FlowMeta,
    SegmentSpec,
    WireError,
    encode,
)
from learner.batch import Batch, Segment, assemble
from learner.io_bounds import (  # noqa: F401  (re-exported: the bounds' old home)
    _TRIPLE_DIGITS,
    DRAIN_BUDGET_S,
    MAX_DRAIN,
    QUIET_FACTOR,
    WASTE_SLICE_S,
    assembly_bytes,
    flood_memory_bound,
    max_frame_bytes,
    pending_cap_bytes,
    pending_segments_per_actor,
    recv_queue,
    refused_table_bytes,
    retired_table_bytes,
    stream_bytes,
)
from learner.messages import (  # noqa: F401  (re-exported: their old home)
    Envelope,
    WarmupMoments,
    check_actor_id,
    merge_moments,
    parse_message,
    read_envelope,
    route_message,
)

HEARTBEAT_S = 1.0
RESEND_WEIGHTS_S = 5.0
SPLIT_LAPSE_S = 60.0  # the actors' split (num_actors) is pinned while messages under it come this often
log = logging.getLogger("learner")


class LearnerIO:
    """Thread that turns incoming messages into ready batches of >= ``num_envs`` streams, and sends."""

    def __init__(
        self,
        sock: zmq.Socket | None,
        pub: zmq.Socket | None,
        spec: SegmentSpec,
        num_envs: int,
        frame_stack: int,
        max_lag: int,
        pin: bool,
        on_reject: Callable[[WireError], None],
        on_stale: Callable[[list[Segment]], None],
        version: int = 0,
        heartbeat_meta: Callable[[], FlowMeta] | None = None,
        refuse_run: Callable[[int, int], None] | None = None,
    ):
        """``refuse_run(actor, run)``: an actor run refused because another live process holds its
        actor id (the learner's ledger reports it to the actors)."""
        self.sock, self.pub = sock, pub
        self.spec, self.num_envs, self.frame_stack, self.max_lag = spec, num_envs, frame_stack, max_lag
        self.pin, self.on_reject, self.on_stale, self.heartbeat_meta = pin, on_reject, on_stale, heartbeat_meta
        self._cond = threading.Condition()  # guards the hand-over: _ready and consume_version
        self._ready: tuple[Batch, list[Segment]] | None = None
        self.consume_version = version  # the learner version at which the next batch will be consumed
        self.warmups: queue.Queue[WarmupMoments] = queue.Queue()  # at most one item: see _add_warmup
        self._warm: WarmupMoments | None = None  # moments merged while the main thread had not taken the last
        self.pending: deque[Segment] = deque()
        self.heard = bytearray(spec.num_streams)  # 1: a segment of that env stream arrived (the console's status)
        self.seen = SeenSegments()
        self.filed = 0  # segments and warm-ups filed so far: the drain's throttle tells them from waste
        self._quiet_until = 0.0  # no reading before then (see _drain)
        self.runs = ActorRuns(max_lag)  # which process holds each actor id
        self.refuse_run = refuse_run
        self.num_actors: int | None = None  # the actors' split, pinned (see _check_split)
        self._split_heard = 0.0
        self._pending_streams = 0  # streams in pending, as of the last change made here
        self._cap_streams = pending_segments_per_actor(max_lag) * spec.num_streams  # pending_cap_bytes / stream
        self._per_actor = pending_segments_per_actor(max_lag)
        self.enabled = False  # batches are formed only once the observation normaliser is warm
        self.outbox: queue.Queue[list] = queue.Queue()
        self._weights: list | None = None  # newest weights frames, re-sent for late joiners
        self._version = version  # newest published version: no segment can be newer (else: an old run's)
        self._last_send = self._last_weights = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="learner-io", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after it has sent everything queued (sent from here if the thread died)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        elif self.pub is not None:
            while not self.outbox.empty():
                self.pub.send_multipart(self.outbox.get(), copy=False)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                quiet = self._quiet_until - time.monotonic()
                if quiet > 0:  # after a flood's pass: batches and heartbeats go on, no reading
                    self._stop.wait(min(quiet, 0.02))
                elif self.sock.poll(20, zmq.POLLIN):
                    self._drain()
                self.hand_over_warmup()
                self._maybe_assemble()
                self._send()
            self._send()  # flush what was queued last (the stop messages)
        except BaseException as e:  # surfaced to the main thread by get()
            self.error = e

    # ---- outgoing ---------------------------------------------------------------------------------
    def publish_weights(self, version: int, frames: list) -> None:
        """Queue new weights (already encoded) for the actors."""
        self._weights, self._version = frames, version
        self.outbox.put(frames)

    def publish(self, frames: list) -> None:
        self.outbox.put(frames)

    def _send(self) -> None:
        now = time.monotonic()
        while not self.outbox.empty():
            frames = self.outbox.get()
            self.pub.send_multipart(frames, copy=False)
            self._last_send = now
            if frames is self._weights:
                self._last_weights = now
        if self._weights is not None and now - self._last_weights > RESEND_WEIGHTS_S:
            self.pub.send_multipart(self._weights, copy=False)
            self._last_send = self._last_weights = now
        if self.heartbeat_meta is not None and now - self._last_send > HEARTBEAT_S:
            self.pub.send_multipart(self.heartbeat_frames())
            self._last_send = now

    def heartbeat_frames(self) -> list[bytes]:
        """A heartbeat: the learner's ``heartbeat_meta()`` (version, learner_run, retired), read at
        once. Not this thread's ``_version``: see ``LearnerLedger.flow_meta`` for why."""
        return encode("heartbeat", self.heartbeat_meta().wire(), {})  # type: ignore[misc]  # only where heartbeat_meta is set

    # ---- incoming ---------------------------------------------------------------------------------
    def _drain(self) -> None:
        """Read what is queued, at most MAX_DRAIN messages or DRAIN_BUDGET_S: the loop must come back
        to batches and heartbeats however fast messages arrive. Between messages this thread lets the
        main thread take the GIL; after a pass that did not empty the queue, it reads nothing for
        QUIET_FACTOR times what it spent on messages it did not file (dropped or refused). So a flood
        takes at most 1 / (1 + QUIET_FACTOR) of this thread's time and no wait for the GIL from the
        update, ZeroMQ holds the rest at its senders (each connection's messages are read in turn),
        and the actors' own segments, which are filed, never cause a pause."""
        start, wasted = time.monotonic(), 0.0
        for _ in range(MAX_DRAIN):
            t, filed = time.monotonic(), self.filed
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.admit(frames)
            time.sleep(0)  # release the GIL: the main thread's next torch call need not wait for it
            wasted += time.monotonic() - t if self.filed == filed else 0.0
            if wasted > WASTE_SLICE_S or time.monotonic() - start > DRAIN_BUDGET_S:
                break  # short slices: an actor's segment queued behind a flood waits one quiet spell at most
        self._quiet_until = time.monotonic() + QUIET_FACTOR * wasted

    def admit(self, frames: list[bytes]) -> None:
        """One message from the socket: a segment that cannot be used is dropped (and retired, so its
        actor moves on) from its header alone; anything else is decoded, validated and filed."""
        try:
            env = read_envelope(frames, self.spec)
            self._check_split(env)
        except WireError as e:
            self.on_reject(e)
            return
        if env.kind == "segment" and not self._worth_reading(env):
            return
        if env.kind == "warmup" and self.enabled:
            self.on_reject(WireError("warm-up frames after the warm-up ended, ignored"))
            return
        route_message(frames, self.spec, self.on_reject, self._add_warmup, self._add_segment)

    def _check_split(self, env: Envelope) -> None:
        """All actors split the streams over one number of actors: the first message's ``num_actors`` is
        pinned while messages under it keep coming (SPLIT_LAPSE_S), so that no stream can be claimed
        under two splits; a message of another split is refused."""
        if env.kind not in ("segment", "warmup"):
            return
        now = time.monotonic()
        if self.num_actors is None or now - self._split_heard > SPLIT_LAPSE_S:
            self.num_actors = env.num_actors
        if env.num_actors != self.num_actors:
            raise WireError(
                f"num_actors={env.num_actors}, while this run's actors split the streams over {self.num_actors}"
            )
        self._split_heard = now

    def _worth_reading(self, env: Envelope) -> bool:
        """Judge a segment from its header: a replay, another process's, or one that cannot be used
        (too old, newer than any weights, past the pending cap) is dropped here. A dropped segment is
        retired (its actor moves on) if its run holds or held its actor id; one of a run never seen
        is only counted, so that made-up runs cannot push real ones out of the retirement table."""
        if not self.seen.first_time(env.actor, env.run, env.seq):
            self.on_reject(WireError("a segment seen before (its actor, run and seq), dropped as a replay"))
            return False
        verdict = self._holds_its_id(env)
        if verdict is None:
            return False
        if self._fresh(env.version) and self._pending_streams + env.streams <= self._cap_streams:
            return True
        if verdict == ActorRuns.NEW:
            self.on_reject(WireError("a segment that cannot be used, of an actor run that holds no actor id"))
        else:
            self.on_stale([env.as_dropped()])
        return False

    def _holds_its_id(self, env: Envelope) -> str | None:
        """Whether the segment's actor run holds its actor id (``ActorRuns``): OK, or NEW (a run not
        seen, which takes the id over once a segment of it passes validation); None when it was dropped
        here: a replaced run's segment is dropped and retired, a refused run's refused. A run found to
        share its id with a live earlier one is refused here, its waiting segments dropped."""
        verdict, later = self.runs.judge(env.actor, env.run)
        if verdict == ActorRuns.REFUSED:
            self.on_reject(WireError("a segment of a refused actor run: another live process holds its actor id"))
            return None
        if verdict == ActorRuns.REPLACED:
            self.on_stale([env.as_dropped()])
            return None
        if later is not None:
            log.warning(
                "actor id %d: two live processes send segments (actor runs %d and %d); refusing the later, run %d",
                env.actor,
                env.run,
                later,
                later,
            )
            if self.refuse_run is not None:
                self.refuse_run(env.actor, later)
            gone = [s for s in self.pending if s.actor == env.actor and s.run == later]
            self.pending = deque(s for s in self.pending if not (s.actor == env.actor and s.run == later))
            self._pending_streams -= sum(len(s.streams) for s in gone)
            self.on_stale(gone)
        return verdict

    def _fresh(self, version: int) -> bool:
        """Usable by the next batch: within max_lag of the version it will be consumed at, and no newer
        than the newest published weights (a newer one comes from an earlier run of this learner)."""
        return self.consume_version - self.max_lag <= version <= self._version

    def _add_segment(self, seg: Segment) -> None:
        """File a validated segment; an actor id over its allowance loses its oldest waiting one. Its
        run holds its actor id from now on (a new run: a restart)."""
        self.runs.take(seg.actor, seg.run)
        self.filed += 1
        mine = [s for s in self.pending if s.actor == seg.actor]
        if len(mine) >= self._per_actor:
            self.pending.remove(mine[0])
            self._pending_streams -= len(mine[0].streams)
            self.on_stale([mine[0]])
        self.pending.append(seg)
        self._pending_streams += len(seg.streams)
        for stream in seg.streams:
            self.heard[stream] = 1

    def _add_warmup(self, m: WarmupMoments) -> None:
        """Warm-up moments for the main thread, merged here while it has not taken the last ones, so
        that a flood of warm-up messages holds one [H, W] pair, not one per message."""
        self._warm = m if self._warm is None else merge_moments(self._warm, m)
        self.filed += 1
        self.hand_over_warmup()

    def hand_over_warmup(self) -> None:
        if self._warm is not None and self.warmups.empty():  # only this thread puts: at most one queued
            self.warmups.put(self._warm)
            self._warm = None

    def _pick(self) -> list[Segment] | None:
        """Under the lock: drop unusable segments, then take >= num_envs streams if the slot is free."""
        usable = deque(s for s in self.pending if self._fresh(s.version))
        if len(usable) < len(self.pending):
            self.on_stale([s for s in self.pending if not self._fresh(s.version)])
        self.pending = usable
        self._pending_streams = sum(len(s.streams) for s in usable)
        if not self.enabled or self._ready is not None or self._pending_streams < self.num_envs:
            return None
        picked: list[Segment] = []
        taken: set[int] = set()
        for seg in self.pending:  # in arrival order, the first segment of each stream: never one twice
            if taken.isdisjoint(seg.streams):
                picked.append(seg)
                taken.update(seg.streams)
                if len(taken) >= self.num_envs:
                    break
        if len(taken) < self.num_envs:
            return None
        for seg in picked:
            self.pending.remove(seg)
        self._pending_streams -= len(taken)
        return picked

    def _maybe_assemble(self) -> None:
        with self._cond:
            picked = self._pick()
        if picked is None:
            return
        batch = assemble(picked, self.frame_stack, pin=self.pin)  # outside the lock: the slot stays empty
        with self._cond:
            self._ready = (batch, picked)
            self._cond.notify_all()

    def get(self, version: int, timeout: float) -> tuple[Batch, list[Segment]] | None:
        """The next ready batch (host memory) for the learner at ``version``, or None after ``timeout`` s.
        Taking it sets the version the batch after it will be consumed at, in the same critical section."""
        if self.error is not None:
            raise RuntimeError(f"learner I/O thread failed: {self.error!r}") from self.error
        with self._cond:
            if self._ready is None:
                self._cond.wait(timeout)
            got, self._ready = self._ready, None
            if got is not None:
                self.consume_version = version + 1
            return got
