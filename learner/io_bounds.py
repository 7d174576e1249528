"""What a broken or hostile peer can make the learner hold, as functions of the config: the segment
socket's frame cap and queue, the pending segments' caps, one batch in assembly, the flow-control tables,
and the whole flood memory bound the README's "Reliability bounds" states. ``learner/learner_io.py``
enforces them; the tests hold the learner to them."""

from __future__ import annotations

import math

from common.episodes import episode_array_bytes
from common.flow import RUNS_KEPT_PER_ACTOR
from common.wire import SegmentSpec


def max_frame_bytes(spec: SegmentSpec) -> int:
    """ZMQ_MAXMSGSIZE of the segment socket: ZeroMQ checks it per frame, and no frame of a valid
    message exceeds the header cap or the largest segment this spec allows, zstd's worst-case
    growth of incompressible data (under 1/256) included with room to spare."""
    arrays = spec.max_message_bytes()
    return max(spec.envelope_bytes(), arrays + (arrays >> 7) + 4096)


def recv_queue(max_lag: int) -> int:
    """RCVHWM of the segment socket, in whole messages per connected peer: an actor never has more
    than ``max_lag + 1`` segments unretired, so one more slot only matters to a peer that floods."""
    return max_lag + 2


# ---- bounds on what peers can make the learner hold ----------------------------------------------------
MAX_DRAIN = 256  # messages read per pass of the I/O loop: batches, stale drops and heartbeats go on under a flood
DRAIN_BUDGET_S = 0.05  # and at most this long per pass
QUIET_FACTOR = 9  # after a pass that left messages queued, no reading for this many times its waste (learner_io)
WASTE_SLICE_S = 0.002  # a pass ends once it has spent this long on messages it did not file
_TRIPLE_DIGITS = 19 + 19 + 5  # len('[a,r,q],') less a's digits: run and seq are < 2**62 (19 digits)


def stream_bytes(spec: SegmentSpec) -> int:
    """Decoded bytes of one stream of one segment, its episode records at their most."""
    fixed = sum(math.prod(shape) * dtype.itemsize for dtype, shape in spec.segment_arrays(1).values())
    return fixed + episode_array_bytes(spec.rollout_steps, 1)


def pending_segments_per_actor(max_lag: int) -> int:
    """Segments one actor id may have waiting: an actor has at most ``max_lag + 1`` unretired, and a
    restarted one may still have a segment of its previous run here."""
    return max_lag + 2


def pending_cap_bytes(spec: SegmentSpec, max_lag: int) -> int:
    """Decoded segments kept waiting for a batch: every actor's allowance, ``max_lag + 2`` segments of
    each of the ``num_streams`` streams. Legitimate traffic never reaches it (at most ``max_lag + 1``
    segments per stream are unretired); past it, new segments are dropped before they are decompressed."""
    return pending_segments_per_actor(max_lag) * spec.num_streams * stream_bytes(spec)


def assembly_bytes(spec: SegmentSpec) -> int:
    """One batch being assembled: up to 2 x num_streams streams (the last segment may overshoot),
    concatenated, then copied into tensors, plus the stack index (int64 [T+1, B, S]) and the per-step arrays."""
    b = 2 * spec.num_streams
    t = spec.rollout_steps
    return 3 * b * stream_bytes(spec) + (t + 1) * b * spec.frame_stack * 8 + 6 * t * b * 8


def flood_memory_bound(spec: SegmentSpec, max_lag: int, peers: int) -> int:
    """Most bytes a flood from ``peers`` connections adds to a learner's resident memory: the pending
    segments, one batch in assembly, ZeroMQ's per-peer queue of whole messages (each at most the
    largest segment plus the header cap), one message being decoded (compressed and decoded), and
    the warm-up moments (two float64 H x W pairs)."""
    message = spec.max_message_bytes() + spec.envelope_bytes()
    warm = 2 * 2 * spec.height * spec.width * 8
    return (
        pending_cap_bytes(spec, max_lag)
        + assembly_bytes(spec)
        + peers * recv_queue(max_lag) * message
        + 2 * message
        + warm
    )


def retired_table_bytes(num_workers: int) -> int:
    """Most bytes of the retirement table in a heartbeat or weights header (compact JSON): at most
    RUNS_KEPT_PER_ACTOR runs of each of the ``num_workers`` actor ids a run can have."""
    return 2 + RUNS_KEPT_PER_ACTOR * num_workers * (_TRIPLE_DIGITS + len(str(num_workers - 1)))


def refused_table_bytes(num_workers: int) -> int:
    """Most bytes of the refused runs in a heartbeat or weights header (compact JSON, with the key): at
    most RUNS_KEPT_PER_ACTOR runs of each actor id, ``[a,r],`` each, r below 2**62 (19 digits)."""
    return len(',"refused":[]') + RUNS_KEPT_PER_ACTOR * num_workers * (len("[,],") + 19 + len(str(num_workers - 1)))
