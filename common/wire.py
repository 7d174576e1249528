"""The wire protocol: a JSON header plus raw array buffers, as ZeroMQ multipart frames. Never pickled.

Frame 0 is a UTF-8 JSON object: ``proto`` (version), ``kind``, ``compression`` and ``arrays``
(``[{"name", "dtype", "shape"}]``, one per following frame), plus the kind's own fields (ids,
policy version). Everything that grows with what an actor has seen (the episode records, their
rooms and cells) is an array (``common/episodes.py``), so an actor message's header is small, capped
by ``SegmentSpec.envelope_bytes``, and a receiver judges it before reading anything else. Every
incoming message goes through ``decode`` and then the kind's validator; anything malformed raises
``WireError`` with a one-line reason, and the receiver drops the message and counts it.

Kinds, actor -> learner (PUSH/PULL): ``segment`` (T steps of K env streams), ``warmup`` (frames of
random-action steps for the observation normaliser). Learner -> actors (PUB/SUB): ``weights``
(policy tensors and their version), ``heartbeat`` (the current version, every second: the learner
is alive even in a long update), ``stop``. Weights and heartbeats also carry which segments the
learner has retired (consumed or dropped), per actor process: the actors' flow control.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.config import Config, ConfigError, config_types, from_dict
from common.episodes import ARRAYS as EPISODE_ARRAYS
from common.episodes import check_episode_arrays, episode_array_bytes, episode_records
from common.wire_checks import (  # noqa: F401  (re-exported: the wire's names)
    ACTOR_PHASES,
    MAX_ABS_VALUE,
    WireError,
    _check_timings,
    _int,
    _is_int,
    _is_number,
    _require,
)

PROTOCOL_VERSION = 3  # 2: num_actors, refused runs; 3: episode records as arrays, a small actor header
KINDS = ("segment", "warmup", "weights", "heartbeat", "stop")
MAX_HEADER_BYTES = 1 << 20
MAX_RANK = 1024  # learner ranks a weights message may name
MIN_LOGP = -100.0  # log-probs of sampled actions; below this the importance ratio overflows
_DTYPES = {"uint8": np.uint8, "uint32": np.uint32, "float32": np.float32, "float64": np.float64}

try:  # zstd is optional at import time; asking for it without the package is an error at use
    import zstandard as _zstd
except ImportError:  # pragma: no cover
    _zstd = None  # type: ignore[assignment]  # mypy types an optional import's fallback as the module


@dataclass
class Message:
    kind: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------------
# what the validators return: a message's fields, typed, once they have been checked


@dataclass(frozen=True)
class FlowMeta:
    """The flow-control fields of every weights and heartbeat message: the learner's policy
    ``version``, its ``learner_run`` id, and ``retired``, ((actor, actor run, newest retired seq), ...),
    read together with that version (see ``common/flow.py``); and ``refused``, ((actor, actor run),
    ...): runs refused because another live process holds their actor id."""

    version: int
    learner_run: int
    retired: tuple[tuple[int, int, int], ...]
    refused: tuple[tuple[int, int], ...] = ()

    def wire(self) -> dict[str, Any]:
        """The header fields, in the order the learner has always sent them."""
        out = {"version": self.version, "learner_run": self.learner_run, "retired": [list(t) for t in self.retired]}
        return {**out, "refused": [list(t) for t in self.refused]} if self.refused else out


@dataclass(frozen=True)
class WeightsMeta:
    """A weights message's fields: its flow metadata, the warm-up steps the learner asks of each env,
    and, where it carries them, the learner's resolved config and its rank (``weights_config``)."""

    flow: FlowMeta
    warmup_steps: int
    config: Config | None = None
    rank: int = 0


@dataclass(frozen=True)
class SegmentMeta:
    """A segment's fields: who sent it (actor id, actor run, seq), the policy version it was collected
    with, its global stream ids, its episode records and the actor's phase seconds."""

    actor: int
    version: int
    run: int
    seq: int
    streams: list[int]
    episodes: list[dict[str, Any]]
    timings: dict[str, float]
    num_actors: int = 1


@dataclass(frozen=True)
class WarmupMeta:
    """A warm-up message's fields: the actor id, the global stream ids of its frames and the number of
    actors the streams are split over."""

    actor: int
    streams: list[int]
    num_actors: int = 1


# ---------------------------------------------------------------------------------------------
# encoding / decoding


def encode(
    kind: str, meta: dict[str, Any], arrays: dict[str, np.ndarray], compression: str = "none", level: int = 1
) -> list[bytes]:
    """-> multipart frames [header, buffer, ...]. ``compression``: none | zstd (per buffer)."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    specs, bufs = [], []
    comp = _zstd.ZstdCompressor(level=level) if compression == "zstd" else None
    if compression == "zstd" and _zstd is None:
        raise RuntimeError("wire compression zstd needs the zstandard package")
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        specs.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape)})
        raw = memoryview(a).cast("B") if a.size else b""  # type: ignore[arg-type]  # flat bytes: len() == nbytes (numpy's stubs omit ndarray's buffer protocol)
        bufs.append(comp.compress(raw) if comp is not None else raw)
    header = {"proto": PROTOCOL_VERSION, "kind": kind, "compression": compression, "arrays": specs, **meta}
    return [json.dumps(header, separators=(",", ":")).encode()] + bufs


def decode(frames: list[bytes], max_bytes: int | None = None, max_header: int = MAX_HEADER_BYTES) -> Message:
    """Parse and check the envelope (header, dtypes, sizes); raises WireError and nothing else.

    ``max_bytes`` caps the total declared array bytes, checked before anything is decompressed;
    ``max_header`` the header's bytes, checked before it is parsed. No kind-specific checks here."""
    try:
        return _decode(frames, max_bytes, max_header)
    except WireError:
        raise
    except Exception as e:  # any other failure on hostile input is still just a bad message
        raise WireError(f"undecodable message ({type(e).__name__})") from None


def _decode(frames: list[bytes], max_bytes: int | None, max_header: int) -> Message:
    if not frames:
        raise WireError("empty message")
    if len(frames[0]) > max_header:
        raise WireError(f"header of {len(frames[0])} bytes exceeds {max_header}")
    try:
        header = json.loads(bytes(frames[0]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WireError("header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    if header.get("proto") != PROTOCOL_VERSION:
        raise WireError(f"protocol version {header.get('proto')!r}, expected {PROTOCOL_VERSION}")
    kind = header.get("kind")
    if kind not in KINDS:
        raise WireError(f"unknown kind {kind!r}")
    compression = header.get("compression")
    if compression not in ("none", "zstd"):
        raise WireError(f"unknown compression {compression!r}")
    specs = header.get("arrays")
    if not isinstance(specs, list) or len(specs) != len(frames) - 1:
        raise WireError(
            f"header lists {len(specs) if isinstance(specs, list) else '?'} arrays, "
            f"message has {len(frames) - 1} buffers"
        )
    parsed = [_array_spec(spec) for spec in specs]
    declared = sum(math.prod(shape) * dtype.itemsize for _, dtype, shape in parsed)
    if max_bytes is not None and declared > max_bytes:
        raise WireError(f"message declares {declared} bytes of arrays, more than the {max_bytes} allowed")
    arrays = {}
    for (name, dtype, shape), buf in zip(parsed, frames[1:], strict=True):
        if name in arrays:
            raise WireError(f"array {name!r} appears twice")
        arrays[name] = _buffer_to_array(buf, dtype, shape, compression, name)
    meta = {k: v for k, v in header.items() if k not in ("proto", "kind", "compression", "arrays")}
    return Message(kind, meta, arrays)


def _array_spec(spec: Any) -> tuple[str, np.dtype, tuple[int, ...]]:
    if not isinstance(spec, dict):
        raise WireError("array spec is not an object")
    name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
    if not isinstance(name, str) or not isinstance(dtype, str) or dtype not in _DTYPES:
        raise WireError(f"array {name!r}: bad name or dtype {dtype!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > 6
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 31 for d in shape)
    ):
        raise WireError(f"array {name!r}: bad shape {shape!r}")
    return name, np.dtype(_DTYPES[dtype]), tuple(shape)


def _buffer_to_array(buf: Any, dtype: np.dtype, shape: tuple[int, ...], compression: str, name: str) -> np.ndarray:
    nbytes = math.prod(shape) * dtype.itemsize
    buf = memoryview(buf).cast("B")
    if compression == "zstd":
        if _zstd is None:
            raise WireError("zstd-compressed message but the zstandard package is missing")
        try:
            claimed = _zstd.frame_content_size(bytes(buf[:18])) if nbytes else -1  # the frame header only
        except _zstd.ZstdError:
            raise WireError(f"array {name!r}: corrupt zstd data") from None
        if claimed not in (-1, nbytes):  # refuse before inflating: the cap below is ignored for sized frames
            raise WireError(f"array {name!r}: zstd frame holds {claimed} bytes, shape needs {nbytes}")
        try:
            buf = _zstd.ZstdDecompressor().decompress(bytes(buf), max_output_size=nbytes) if nbytes else b""
        except _zstd.ZstdError:
            raise WireError(f"array {name!r}: corrupt zstd data") from None
    if len(buf) != nbytes:  # a flat byte view: len() counts bytes
        raise WireError(f"array {name!r}: {len(buf)} bytes, shape {list(shape)} needs {nbytes}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


# ---------------------------------------------------------------------------------------------
# the kinds' schemas


@dataclass(frozen=True)
class SegmentSpec:
    """Shapes every segment must have: T steps, up to ``max_envs`` streams of ``num_streams``."""

    rollout_steps: int
    frame_stack: int
    height: int
    width: int
    num_actions: int
    num_streams: int

    @classmethod
    def from_config(cls, cfg: Any, num_actions: int) -> SegmentSpec:
        """The shapes a config fixes; actors and learner both build theirs here."""
        return cls(cfg.RolloutSteps, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth, num_actions, cfg.NumWorkers)

    def max_message_bytes(self) -> int:
        """The largest segment or warm-up message this spec allows (all streams in one segment, with
        its episode records at their most)."""
        arrays = self.segment_arrays(self.num_streams).values()
        return sum(math.prod(shape) * dtype.itemsize for dtype, shape in arrays) + episode_array_bytes(
            self.rollout_steps, self.num_streams
        )

    def envelope_bytes(self) -> int:
        """The largest header (frame 0) of an actor message: its fixed fields, twelve array specs, the
        actor's phase seconds and at most ``num_streams`` stream ids. A receiver reads no more than
        this before it judges the message."""
        return 4096 + 8 * self.num_streams

    def segment_arrays(self, k: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        t, h, w = self.rollout_steps, self.height, self.width
        u8, f32 = np.dtype(np.uint8), np.dtype(np.float32)
        return {
            "frames": (u8, (t + 1, k, h, w)),  # newest frame of obs_0 .. obs_T
            "context": (u8, (self.frame_stack - 1, k, h, w)),  # the older frames of obs_0's stack
            "actions": (u8, (t, k)),
            "behaviour_logp": (f32, (t, k)),
            "rewards": (f32, (t, k)),  # raw game score
            "terminated": (u8, (t, k)),  # game over after this step
            "truncated": (u8, (t, k)),  # time limit after this step
            "trunc_value": (f32, (t, k)),  # actor's V_ext of the final obs where truncated, else 0
        }


def env_split(num_envs: int, num_actors: int, actor_id: int) -> list[int]:
    """Global stream ids of actor ``actor_id``: NumWorkers split as evenly as possible, in order. An
    actor id owns these streams and no others (``check_split``)."""
    if not 0 <= actor_id < num_actors:
        raise ValueError(f"actor id {actor_id} outside [0, {num_actors})")
    if num_actors > num_envs:
        raise ValueError(f"{num_actors} actors for {num_envs} envs (NumWorkers): each actor needs at least one env")
    base, extra = divmod(num_envs, num_actors)
    start = actor_id * base + min(actor_id, extra)
    return list(range(start, start + base + (actor_id < extra)))


def _num_actors(meta: dict, num_envs: int) -> int:
    """An actor message's ``num_actors``: the actors its streams are split over, one of them its ``actor``."""
    n, actor = meta.get("num_actors"), meta.get("actor")
    if not (isinstance(n, int) and _is_int(n) and 1 <= n <= num_envs):
        raise WireError(f"field 'num_actors'={n!r} out of range")
    if not (isinstance(actor, int) and _is_int(actor) and 0 <= actor < n):
        raise WireError(f"actor id {actor!r} outside [0, num_actors={n})")
    return n


def check_split(meta: dict, num_envs: int) -> int:
    """An actor message's ``num_actors``, once its ``streams`` are exactly the ones its ``actor`` id owns
    in the split of ``num_envs`` streams over that many actors (the learner's rule: each stream comes
    from one env); raises WireError."""
    n = _num_actors(meta, num_envs)
    _require(meta.get("streams") == env_split(num_envs, n, meta["actor"]), "streams other than its actor id owns")
    return n


def _streams(meta: dict, spec: SegmentSpec) -> list[int]:
    s: Any = meta.get("streams")
    _require(isinstance(s, list) and 0 < len(s) <= spec.num_streams, "field 'streams' missing or wrong length")
    _require(all(_is_int(i) and 0 <= i < spec.num_streams for i in s), f"stream ids outside [0, {spec.num_streams})")
    _require(len(set(s)) == len(s), "stream ids repeat")
    _num_actors(meta, spec.num_streams)
    return s


def _check_arrays(arrays: dict[str, np.ndarray], want: dict[str, tuple[np.dtype, tuple[int, ...]]]) -> None:
    _require(set(arrays) == set(want), f"arrays {sorted(arrays)} != expected {sorted(want)}")
    for name, (dtype, shape) in want.items():
        a = arrays[name]
        _require(
            a.dtype == dtype and a.shape == shape,
            f"array {name!r}: {a.dtype}{list(a.shape)}, expected {dtype}{list(shape)}",
        )
        if dtype.kind == "f":
            _require(bool(np.isfinite(a).all()), f"array {name!r} has non-finite values")


def _check_flags(arrays: dict[str, np.ndarray], *names: str) -> None:
    for n in names:
        _require(int(arrays[n].max(initial=0)) <= 1, f"array {n!r} is not 0/1")


def validate_segment(msg: Message, spec: SegmentSpec) -> SegmentMeta:
    """Everything a segment must satisfy before it may reach a batch; raises WireError."""
    _require(msg.kind == "segment", f"expected a segment, got {msg.kind}")
    m = msg.meta
    _int(m, "actor"), _int(m, "version"), _int(m, "seq"), _int(m, "run")
    streams = _streams(m, spec)
    a = msg.arrays
    _require(all(n in a for n in EPISODE_ARRAYS), f"arrays {sorted(a)} lack the episode arrays")
    _check_arrays({n: v for n, v in a.items() if n not in EPISODE_ARRAYS}, spec.segment_arrays(len(streams)))
    _require(int(a["actions"].max(initial=0)) < spec.num_actions, "action out of range")
    logp = a["behaviour_logp"]
    _require(bool((logp <= 1e-4).all()) and bool((logp >= MIN_LOGP).all()), f"behaviour_logp outside [{MIN_LOGP}, 0]")
    for n in ("rewards", "trunc_value"):  # finite is not enough: 1e38 would still overflow the losses
        _require(bool((np.abs(a[n]) <= MAX_ABS_VALUE).all()), f"array {n!r} has values beyond {MAX_ABS_VALUE:g}")
    _check_flags(a, "terminated", "truncated")
    _require(not bool((a["terminated"] & a["truncated"]).any()), "a step both terminated and truncated")
    check_episode_arrays(a, streams, (a["terminated"] | a["truncated"]).astype(bool))
    _check_timings(m.get("timings", {}))
    timings, episodes = m.get("timings", {}), episode_records(a)
    return SegmentMeta(m["actor"], m["version"], m["run"], m["seq"], streams, episodes, timings, m["num_actors"])


def validate_warmup(msg: Message, spec: SegmentSpec) -> WarmupMeta:
    """Warm-up frames: uint8 [n <= T, K, H, W] of the message's K streams; raises WireError."""
    _require(msg.kind == "warmup", f"expected warmup, got {msg.kind}")
    actor = _int(msg.meta, "actor")
    streams = _streams(msg.meta, spec)
    _require(set(msg.arrays) == {"frames"}, "warmup carries exactly 'frames'")
    f = msg.arrays["frames"]
    _require(
        f.dtype == np.uint8
        and f.ndim == 4
        and 0 < f.shape[0] <= spec.rollout_steps
        and f.shape[1:] == (len(streams), spec.height, spec.width),
        f"warmup frames {f.dtype}{list(f.shape)} do not fit",
    )
    return WarmupMeta(actor, streams, msg.meta["num_actors"])


def _flow_meta(meta: dict) -> FlowMeta:
    """``version``, ``learner_run`` and ``retired``: [[actor, actor_run, newest retired seq], ...] (flow control)."""
    version = _int(meta, "version")
    learner_run = _int(meta, "learner_run")
    r: Any = meta.get("retired")
    _require(isinstance(r, list) and len(r) <= 1 << 16, "field 'retired' is not a list")
    _require(
        all(isinstance(x, list) and len(x) == 3 and all(_is_int(v) and v >= 0 for v in x) for x in r),
        "field 'retired' holds something other than [actor, run, seq] triples",
    )
    refused = meta.get("refused", [])
    _require(isinstance(refused, list) and len(refused) <= 1 << 16, "field 'refused' is not a list")
    _require(
        all(isinstance(x, list) and len(x) == 2 and all(_is_int(v) and v >= 0 for v in x) for x in refused),
        "field 'refused' holds something other than [actor, run] pairs",
    )
    return FlowMeta(version, learner_run, tuple((a, run, seq) for a, run, seq in r), tuple(map(tuple, refused)))


def validate_heartbeat(msg: Message) -> FlowMeta:
    """A heartbeat: no arrays, flow metadata only; raises WireError."""
    _require(msg.kind == "heartbeat" and not msg.arrays, "bad heartbeat")
    return _flow_meta(msg.meta)


def validate_weights(msg: Message, param_spec: list[tuple[str, tuple[int, ...]]]) -> WeightsMeta:
    """Weights: every policy tensor of ``param_spec`` [(name, shape), ...], float32, plus flow metadata,
    the warm-up steps and, where present, the learner's config and rank; raises WireError."""
    _require(msg.kind == "weights", f"expected weights, got {msg.kind}")
    _int(msg.meta, "version")  # before warmup_steps: a message wrong in both is refused for its version
    warmup_steps = _int(msg.meta, "warmup_steps")
    flow = _flow_meta(msg.meta)
    cfg, rank = weights_config(msg) if "config" in msg.meta or "rank" in msg.meta else (None, 0)
    want = {n: (np.dtype(np.float32), s) for n, s in param_spec}
    _check_arrays(msg.arrays, want)
    return WeightsMeta(flow, warmup_steps, cfg, rank)


def weights_config(msg: Message) -> tuple[Config, int]:
    """The learner's resolved config (``config``: its dict, as config.yaml holds it) and ``rank``
    (0 <= rank < MAX_RANK) from a weights header: read before the arrays, whose shapes the config
    fixes. Every value must be a JSON scalar of its key's type, then ``from_dict`` checks the ranges;
    raises WireError."""
    _require(msg.kind == "weights", f"expected weights, got {msg.kind}")
    rank = _int(msg.meta, "rank", 0, MAX_RANK - 1)
    values = msg.meta.get("config")
    if not isinstance(values, dict):
        raise WireError("weights without the learner's config")
    types = config_types()
    for k, v in values.items():
        want = types.get(k)
        if want is None:
            raise WireError(f"the learner's config: unknown key {str(k)[:40]!r}")
        ok = _is_number(v) if want is float else isinstance(v, want) and not (want is int and isinstance(v, bool))
        _require(ok, f"the learner's config: key {k} is not a {want.__name__}")
    try:
        return from_dict(values), rank
    except ConfigError as e:
        raise WireError(f"the learner's config: {e}") from None
