"""An actor message as the learner's I/O thread reads it: the small header first (``read_envelope``,
enough to judge the message), then the whole message decoded and validated (``parse_message``).
Warm-up frames become per-pixel moments here. No sockets here."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import torch

from common.rl.normalize import RunningMeanStd
from common.wire import SegmentSpec, WireError, check_split, decode, validate_segment, validate_warmup
from learner.batch import Segment


@dataclass
class WarmupMoments:
    """Per-pixel moments of a warm-up message's frames: float64 [H, W] twice, and the frame count."""

    mean: torch.Tensor
    var: torch.Tensor
    count: int
    streams: frozenset[int] = frozenset()  # the env streams the frames came from


def merge_moments(a: WarmupMoments, b: WarmupMoments) -> WarmupMoments:
    """The moments of both frame sets (Chan et al.'s parallel formula, as the normaliser merges them)."""
    rms = RunningMeanStd(tuple(a.mean.shape), epsilon=0.0)
    rms.update_from_moments(a.mean, a.var, a.count)
    rms.update_from_moments(b.mean, b.var, b.count)
    return WarmupMoments(rms.mean, rms.var, a.count + b.count, a.streams | b.streams)


def check_actor_id(actor: object, spec: SegmentSpec) -> int:
    """Actor ids a run can have: every actor holds at least one of the ``num_streams`` streams."""
    if not isinstance(actor, int) or isinstance(actor, bool) or not 0 <= actor < spec.num_streams:
        raise WireError(f"actor id outside [0, {spec.num_streams}) (NumWorkers)")
    return actor


@dataclass(frozen=True)
class Envelope:
    """What an actor message's header says, read before any array is decompressed."""

    kind: str
    actor: int
    version: int = -1
    run: int = -1
    seq: int = -1
    streams: int = 0
    num_actors: int = 0

    def as_dropped(self) -> Segment:
        """The segment as flow control needs it (who sent it, which one) when it is dropped unread."""
        return Segment(self.actor, self.version, streams=[], arrays={}, episodes=[], run=self.run, seq=self.seq)


def _header_int(header: dict, key: str) -> int:
    v = header.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 1 << 62:
        raise WireError(f"field {key!r}={v!r} out of range")
    return v


def read_envelope(frames: list[bytes], spec: SegmentSpec) -> Envelope:
    """Parse the JSON header of an actor message and check its ids; raises WireError. The full
    decode checks everything again: this only decides whether the rest is worth reading. The header
    is at most ``spec.envelope_bytes()`` (a few KiB), so judging a message costs little, and the same
    whatever the rest of it holds."""
    if not frames or len(frames[0]) > spec.envelope_bytes():
        raise WireError("empty message or header over the size cap")
    try:
        header = json.loads(bytes(frames[0]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WireError("header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    kind = header.get("kind")
    if kind not in ("segment", "warmup"):  # refused with its own reason by the full decode
        return Envelope(str(kind), -1)
    actor = check_actor_id(header.get("actor"), spec)
    num_actors = check_split(header, spec.num_streams)  # the streams its actor id owns, no others
    if kind == "warmup":
        return Envelope(kind, actor, num_actors=num_actors)
    return Envelope(
        kind,
        actor,
        _header_int(header, "version"),
        _header_int(header, "run"),
        _header_int(header, "seq"),
        len(header["streams"]),
        num_actors,
    )


def parse_message(frames: list[bytes], spec: SegmentSpec) -> Segment | WarmupMoments:
    """Decode and validate one actor message; raises WireError."""
    msg = decode(frames, max_bytes=spec.max_message_bytes(), max_header=spec.envelope_bytes())
    if msg.kind in ("segment", "warmup"):
        check_actor_id(msg.meta.get("actor"), spec)
        check_split(msg.meta, spec.num_streams)
    if msg.kind == "segment":
        m = validate_segment(msg, spec)
        return Segment(m.actor, m.version, m.streams, msg.arrays, m.episodes, m.timings, m.run, m.seq)
    if msg.kind == "warmup":
        w = validate_warmup(msg, spec)
        moments = RunningMeanStd((spec.height, spec.width), epsilon=0.0)  # exact moments of these frames only
        moments.update(torch.from_numpy(msg.arrays["frames"].copy()))
        return WarmupMoments(moments.mean, moments.var, int(moments.count), frozenset(w.streams))
    raise WireError(f"a learner does not accept {msg.kind!r} messages")


def route_message(
    frames: list[bytes],
    spec: SegmentSpec,
    on_reject: Callable[[WireError], None],
    on_warmup: Callable[[WarmupMoments], None],
    on_segment: Callable[[Segment], None],
) -> None:
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
