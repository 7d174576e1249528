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
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
import zmq

from common.normalize import RunningMeanStd
from common.wire import MAX_HEADER_BYTES, SegmentSpec, WireError, decode, encode, validate_segment, validate_warmup
from learner.batch import Batch, Segment, assemble


HEARTBEAT_S = 1.0
RESEND_WEIGHTS_S = 5.0


def max_frame_bytes(spec: SegmentSpec) -> int:
    """ZMQ_MAXMSGSIZE of the segment socket: ZeroMQ checks it per frame, and no frame of a valid
    message exceeds the header cap or the largest segment this spec allows, zstd's worst-case
    growth of incompressible data (under 1/256) included with room to spare."""
    arrays = spec.max_message_bytes()
    return max(MAX_HEADER_BYTES, arrays + (arrays >> 7) + 4096)


def recv_queue(max_lag: int) -> int:
    """RCVHWM of the segment socket, in whole messages per connected peer: an actor never has more
    than ``max_lag + 1`` segments unretired, so one more slot only matters to a peer that floods."""
    return max_lag + 2


@dataclass
class WarmupMoments:
    """Per-pixel moments of a warm-up message's frames: float64 [H, W] twice, and the frame count."""

    mean: torch.Tensor
    var: torch.Tensor
    count: int


def parse_message(frames: list[bytes], spec: SegmentSpec) -> Segment | WarmupMoments:
    """Decode and validate one actor message; raises WireError."""
    msg = decode(frames, max_bytes=spec.max_message_bytes())
    if msg.kind == "segment":
        validate_segment(msg, spec)
        m = msg.meta
        return Segment(m["actor"], m["version"], m["streams"], msg.arrays, m["episodes"], m.get("timings", {}),
                       m["run"], m["seq"])
    if msg.kind == "warmup":
        validate_warmup(msg, spec)
        moments = RunningMeanStd((spec.height, spec.width), epsilon=0.0)  # exact moments of these frames only
        moments.update(torch.from_numpy(msg.arrays["frames"].copy()))
        return WarmupMoments(moments.mean, moments.var, int(moments.count))
    raise WireError(f"a learner does not accept {msg.kind!r} messages")


def route_message(frames: list[bytes], spec: SegmentSpec, on_reject: Callable[[WireError], None],
                  on_warmup: Callable[[WarmupMoments], None], on_segment: Callable[[Segment], None]) -> None:
    """Parse one message and hand it to the matching callback; a bad one goes to ``on_reject``."""
    try:
        item = parse_message(frames, spec)
    except WireError as e:
        on_reject(e)
        return
    except Exception as e:  # defence in depth: no message may stop the learner
        on_reject(WireError(f"message failed validation ({type(e).__name__})"))
        return
    if isinstance(item, WarmupMoments):
        on_warmup(item)
    else:
        on_segment(item)


class LearnerIO:
    """Thread that turns incoming messages into ready batches of >= ``num_envs`` streams, and sends."""

    def __init__(self, sock: zmq.Socket | None, pub: zmq.Socket | None, spec: SegmentSpec, num_envs: int,
                 frame_stack: int, max_lag: int, pin: bool, on_reject: Callable[[WireError], None],
                 on_stale: Callable[[list[Segment]], None], version: int = 0,
                 heartbeat_meta: Callable[[], dict] | None = None):
        self.sock, self.pub = sock, pub
        self.spec, self.num_envs, self.frame_stack, self.max_lag = spec, num_envs, frame_stack, max_lag
        self.pin, self.on_reject, self.on_stale, self.heartbeat_meta = pin, on_reject, on_stale, heartbeat_meta
        self._cond = threading.Condition()  # guards the hand-over: _ready and consume_version
        self._ready: tuple[Batch, list[Segment]] | None = None
        self.consume_version = version  # the learner version at which the next batch will be consumed
        self.warmups: queue.Queue[WarmupMoments] = queue.Queue()
        self.pending: deque[Segment] = deque()
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
                if self.sock.poll(20, zmq.POLLIN):
                    self._drain()
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
        once. Not this thread's ``_version``: see ``Learner.flow_meta`` for why."""
        return encode("heartbeat", self.heartbeat_meta(), {})

    def _drain(self) -> None:
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            route_message(frames, self.spec, self.on_reject, self.warmups.put, self.pending.append)

    def _pick(self) -> list[Segment] | None:
        """Under the lock: drop unusable segments, then take >= num_envs streams if the slot is free."""
        oldest_ok = self.consume_version - self.max_lag
        usable = deque(s for s in self.pending if oldest_ok <= s.version <= self._version)
        if len(usable) < len(self.pending):
            self.on_stale([s for s in self.pending if not oldest_ok <= s.version <= self._version])
        self.pending = usable
        if not self.enabled or self._ready is not None or sum(len(s.streams) for s in usable) < self.num_envs:
            return None
        picked, n = [], 0
        while n < self.num_envs:
            seg = self.pending.popleft()
            picked.append(seg)
            n += len(seg.streams)
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
