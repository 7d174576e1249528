"""Where the learner's batches come from: one interface, two sources.

``SocketBatchSource`` takes the batches the I/O thread (``learner/learner_io.py`` ``LearnerIO``)
picked and assembled off the critical path; ``InProcessBatchSource`` takes messages handed in by the
caller (the serial runner, tests), validated as the I/O thread validates them. Either way the
learner's loop asks ``next_batch(version, timeout)`` and updates on what it gets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from common.wire import SegmentSpec, WireError
from learner.batch import Batch, Segment, assemble
from learner.learner_io import LearnerIO, WarmupMoments, route_message


class BatchSource(Protocol):
    def next_batch(self, version: int, timeout: float) -> tuple[Batch, list[Segment]] | None:
        """A host batch (B streams of T steps) and the segments it holds, for the update that starts at
        ``version``; None if none is ready within ``timeout`` seconds."""
        ...


class SocketBatchSource:
    """Batches from the I/O thread. Warm-up moments it reduced go to ``on_warmup`` first, and it forms
    batches only while ``warm()`` says the observation normaliser is warm."""

    def __init__(self, io: LearnerIO, on_warmup: Callable[[WarmupMoments], None], warm: Callable[[], bool]):
        self.io, self.on_warmup, self.warm = io, on_warmup, warm

    def next_batch(self, version: int, timeout: float) -> tuple[Batch, list[Segment]] | None:
        while not self.io.warmups.empty():
            self.on_warmup(self.io.warmups.get())
        self.io.enabled = self.warm()
        return self.io.get(version, timeout)


class InProcessBatchSource:
    """Messages handed in with ``handle``: decoded and validated, warm-up frames merged at once
    (``on_warmup``), bad ones counted (``on_reject``), segments kept in ``pending`` until the next
    batch takes them all. No staleness check: the caller decides which weights each segment used."""

    def __init__(
        self,
        spec: SegmentSpec,
        frame_stack: int,
        on_reject: Callable[[WireError], None],
        on_warmup: Callable[[WarmupMoments], None],
    ):
        self.spec, self.frame_stack, self.on_reject, self.on_warmup = spec, frame_stack, on_reject, on_warmup
        self.pending: deque[Segment] = deque()

    def handle(self, frames: list[bytes]) -> None:
        """Decode, validate and file one message."""
        route_message(frames, self.spec, self.on_reject, self.on_warmup, self.pending.append)

    def take(self) -> list[Segment]:
        """Every pending segment, in arrival order; none stays pending."""
        segments = list(self.pending)
        self.pending.clear()
        return segments

    def next_batch(self, version: int, timeout: float) -> tuple[Batch, list[Segment]] | None:
        """All pending segments as one batch, at once (``version`` and ``timeout`` do not matter here);
        None if none is pending."""
        if not self.pending:
            return None
        segments = self.take()
        return assemble(segments, self.frame_stack), segments
