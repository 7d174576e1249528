"""common/wire.py: a JSON header plus raw buffers, never pickled; every malformed message raises WireError."""

from __future__ import annotations

import ast
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import zstandard

from common import wire
from common.cells import MAX_EPISODE_CELLS, cell_id
from common.episodes import episode_arrays, plain_record
from common.rl.networks import PolicyNet, policy_param_spec
from common.wire import (
    MAX_HEADER_BYTES,
    PROTOCOL_VERSION,
    FlowMeta,
    SegmentMeta,
    SegmentSpec,
    WarmupMeta,
    WeightsMeta,
    WireError,
    decode,
    encode,
    validate_heartbeat,
    validate_segment,
    validate_warmup,
    validate_weights,
)

REPO = Path(__file__).resolve().parents[1]
SPEC = SegmentSpec(rollout_steps=5, frame_stack=4, height=12, width=10, num_actions=18, num_streams=8)
STREAMS = [2, 5, 7]
COMPRESSIONS = ["none", "zstd"]


def segment_arrays(spec: SegmentSpec = SPEC, k: int = len(STREAMS), seed: int = 0) -> dict[str, np.ndarray]:
    """A valid segment's arrays, filled with plausible random content."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (dtype, shape) in spec.segment_arrays(k).items():
        if name in ("frames", "context"):
            a = rng.integers(0, 256, size=shape)
        elif name == "actions":
            a = rng.integers(0, spec.num_actions, size=shape)
        elif name == "behaviour_logp":
            a = -rng.uniform(0.0, 5.0, size=shape)
        elif name == "rewards":
            a = rng.choice([0.0, 100.0, 300.0], size=shape)
        elif name in ("terminated", "truncated"):
            a = np.zeros(shape)
        else:  # trunc_value
            a = np.zeros(shape)
        out[name] = np.asarray(a, dtype=dtype)
    if k >= 2:  # the episode ends of segment_meta's records: stream 5 (column 1) at t 2, stream 2 at t 4
        out["terminated"][2, 1] = 1
        out["truncated"][4, 0] = 1
        out["trunc_value"][4, 0] = 0.5
    return {**out, **episode_arrays(segment_meta()["episodes"] if k >= 2 else [])}


def valid_cells(n: int) -> list[int]:
    """``n`` distinct, increasing, well-formed cell ids (rooms 0.., every bucket)."""
    return sorted(cell_id(0, r, 8 * x, 8 * y) for r in range(n // 1024 + 1) for x in range(32) for y in range(32))[:n]


def arrays_ending(episodes: list[dict]) -> dict[str, np.ndarray]:
    """segment_arrays with an episode end (game over) at each record's (t, stream) and nowhere else."""
    arrays = {k: v for k, v in segment_arrays().items() if k not in episode_arrays([])}
    arrays["terminated"][:] = 0
    arrays["truncated"][:] = 0
    arrays["trunc_value"][:] = 0
    for e in episodes:
        arrays["terminated"][e["t"], STREAMS.index(e["stream"])] = 1
    return arrays


def segment_meta(**over) -> dict:
    meta = {
        "actor": 1,
        "num_actors": 8,
        "streams": list(STREAMS),
        "version": 3,
        "run": 77,
        "seq": 0,
        "episodes": [
            {"stream": 5, "t": 2, "return": 100.0, "length": 37, "rooms": [0, 1]},
            {"stream": 2, "t": 4, "return": 0.0, "length": 4500},
        ],
    }
    meta.update(over)
    return meta


def on_the_wire(frames: list) -> list[bytes]:
    """What a ZeroMQ receiver gets: each frame's bytes (encode may hand out memoryviews of the arrays)."""
    return [bytes(f) for f in frames]


def wire_encode(*args, **kwargs) -> list[bytes]:
    return on_the_wire(encode(*args, **kwargs))


def segment_frames(compression: str = "none", meta: dict | None = None, arrays: dict | None = None) -> list[bytes]:
    """A segment message; the meta's "episodes" records, if it has that key, go out as the episode
    arrays (as the actor's collector makes them), else ``arrays`` brings its own."""
    meta = dict(segment_meta() if meta is None else meta)
    arrays = dict(segment_arrays() if arrays is None else arrays)
    if "episodes" in meta:
        arrays.update(episode_arrays(meta.pop("episodes")))
    return on_the_wire(encode("segment", meta, arrays, compression))


def with_header(frames: list[bytes], **changes) -> list[bytes]:
    """The same buffers under an edited header (a key set to ... is removed)."""
    header = json.loads(frames[0])
    for k, v in changes.items():
        if v is ...:
            header.pop(k)
        else:
            header[k] = v
    return [json.dumps(header).encode()] + list(frames[1:])


def edit_spec(frames: list[bytes], name: str, **changes) -> list[bytes]:
    header = json.loads(frames[0])
    for s in header["arrays"]:
        if s["name"] == name:
            s.update(changes)
    return [json.dumps(header).encode()] + list(frames[1:])


def index_of(frames: list[bytes], name: str) -> int:
    return 1 + [s["name"] for s in json.loads(frames[0])["arrays"]].index(name)


def check_segment(frames: list[bytes], spec: SegmentSpec = SPEC) -> None:
    validate_segment(decode(frames), spec)


def refused(frames: list[bytes], spec: SegmentSpec = SPEC) -> str:
    with pytest.raises(WireError) as e:
        check_segment(frames, spec)
    text = str(e.value)
    assert text and "\n" not in text, "a WireError's text is one line"
    return text


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_segment_round_trip(compression):
    arrays, meta = segment_arrays(), _meta_without("episodes")
    sent = encode("segment", meta, arrays, compression)
    assert all(isinstance(f, (bytes, bytearray, memoryview)) for f in sent)
    frames = on_the_wire(sent)
    assert len(frames) == 1 + len(arrays)
    header = json.loads(frames[0])
    assert header["proto"] == PROTOCOL_VERSION and header["kind"] == "segment"
    assert header["compression"] == compression
    msg = decode(frames)
    assert msg.kind == "segment"
    assert msg.meta == meta
    assert set(msg.arrays) == set(arrays)
    for name, a in arrays.items():
        assert msg.arrays[name].dtype == a.dtype and msg.arrays[name].shape == a.shape
        np.testing.assert_array_equal(msg.arrays[name], a)
    validate_segment(msg, SPEC)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_decode_accepts_encode_output_directly(compression):
    """In process (the serial runner, tests) encode's frames go straight to decode, with no socket between.

    encode returns ``a.data`` for compression none: a memoryview whose len() is the length of the first
    dimension, not the byte count, so decode's size check refuses every multi-dimensional array.
    """
    arrays, meta = segment_arrays(), segment_meta()
    msg = decode(encode("segment", meta, arrays, compression))
    validate_segment(msg, SPEC)
    for name, a in arrays.items():
        np.testing.assert_array_equal(msg.arrays[name], a)


def test_zstd_shrinks_compressible_frames():
    arrays = segment_arrays()
    arrays["frames"][:] = 0
    plain, packed = segment_frames("none", arrays=arrays), segment_frames("zstd", arrays=arrays)
    i = index_of(plain, "frames")
    assert len(packed[i]) < len(plain[i]) // 4


def test_round_trip_of_non_contiguous_and_empty_arrays():
    a = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]  # not contiguous
    e = np.zeros((0, 3), np.uint8)
    for compression in COMPRESSIONS:
        msg = decode(on_the_wire(encode("warmup", {"actor": 0}, {"a": a, "e": e}, compression)))
        np.testing.assert_array_equal(msg.arrays["a"], a)
        assert msg.arrays["e"].shape == (0, 3)


def test_stop_message_round_trip():
    msg = decode(on_the_wire(encode("stop", {}, {})))
    assert msg.kind == "stop" and msg.arrays == {} and msg.meta == {}


def test_encode_refuses_unknown_kind():
    with pytest.raises(ValueError):
        encode("hello", {}, {})


def test_behaviour_logp_of_zero_is_fine():
    arrays = segment_arrays()
    arrays["behaviour_logp"][:] = 0.0  # a deterministic policy: log 1 = 0
    check_segment(segment_frames(arrays=arrays))


def test_no_episodes_is_fine():
    check_segment(segment_frames(meta=segment_meta(episodes=[]), arrays=arrays_ending([])))


def test_fewer_streams_than_spec_is_fine():
    arrays = segment_arrays(k=1)
    check_segment(segment_frames(meta=segment_meta(streams=[0], episodes=[]), arrays=arrays))


# ---------------------------------------------------------------------------------------------
# the envelope: decode


@pytest.mark.parametrize(
    "header",
    [b"{not json", b"\xff\xfe\x00{}", b"", b"[1, 2]", b'"segment"', b"3", b"null"],
    ids=["not-json", "not-utf8", "empty", "list", "string", "number", "null"],
)
def test_decode_refuses_bad_header_bytes(header):
    with pytest.raises(WireError):
        decode([header] + segment_frames()[1:])


def test_decode_refuses_empty_message():
    with pytest.raises(WireError):
        decode([])


@pytest.mark.parametrize("proto", [PROTOCOL_VERSION + 1, 0, "1", None, ...])
def test_decode_refuses_other_protocol_versions(proto):
    with pytest.raises(WireError, match="protocol"):
        decode(with_header(segment_frames(), proto=proto))


@pytest.mark.parametrize("kind", ["hello", "", None, 3, "Segment", ...])
def test_decode_refuses_unknown_kind(kind):
    with pytest.raises(WireError, match="kind"):
        decode(with_header(segment_frames(), kind=kind))


@pytest.mark.parametrize("compression", ["lz4", "gzip", "", None, ...])
def test_decode_refuses_unknown_compression(compression):
    with pytest.raises(WireError, match="compression"):
        decode(with_header(segment_frames(), compression=compression))


def test_decode_refuses_array_count_mismatch():
    frames = segment_frames()
    with pytest.raises(WireError):
        decode(frames[:-1])  # one buffer missing
    with pytest.raises(WireError):
        decode(frames + [b""])  # one buffer too many
    with pytest.raises(WireError):
        decode(with_header(frames, arrays="frames"))  # not a list
    with pytest.raises(WireError):
        decode(with_header(frames, arrays=...))


@pytest.mark.parametrize("dtype", ["float64", "int64", "object", "O", "<f4", "bool", None, 1])
def test_decode_refuses_unknown_dtype(dtype):
    frames = segment_frames()
    with pytest.raises(WireError):
        decode(edit_spec(frames, "actions", dtype=dtype))


@pytest.mark.parametrize(
    "shape",
    [[-1, 3], [5, -3], [1 << 31, 3], [2**64, 3], [5.0, 3], [True, 3], "5,3", None, {"0": 5}, [1, 1, 1, 1, 1, 5, 3]],
    ids=["neg0", "neg1", "2^31", "2^64", "float", "bool", "string", "null", "dict", "7-dims"],
)
def test_decode_refuses_bad_shape(shape):
    with pytest.raises(WireError):
        decode(edit_spec(segment_frames(), "actions", shape=shape))


@pytest.mark.parametrize("spec", ["actions", None, 3, ["actions", "uint8", [5, 3]]])
def test_decode_refuses_array_spec_that_is_not_an_object(spec):
    frames = segment_frames()
    header = json.loads(frames[0])
    header["arrays"][0] = spec
    with pytest.raises(WireError):
        decode([json.dumps(header).encode()] + frames[1:])


def test_decode_refuses_array_without_a_name():
    frames = segment_frames()
    header = json.loads(frames[0])
    header["arrays"][0]["name"] = 7
    with pytest.raises(WireError):
        decode([json.dumps(header).encode()] + frames[1:])


def test_decode_refuses_repeated_array_name():
    frames = segment_frames()
    header = json.loads(frames[0])
    a, b = header["arrays"][2], header["arrays"][3]  # actions uint8 [5,3], behaviour_logp float32 [5,3]
    header["arrays"][3] = dict(a)
    frames = [json.dumps(header).encode()] + frames[1:]
    frames[4] = frames[3]
    assert a["name"] == "actions" and b["name"] == "behaviour_logp"
    with pytest.raises(WireError, match="twice"):
        decode(frames)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("delta", [-1, 1, -4])
def test_decode_refuses_buffer_size_mismatch(compression, delta):
    frames = segment_frames(compression)
    i = index_of(frames, "rewards")
    raw = np.ascontiguousarray(segment_arrays()["rewards"]).tobytes()
    raw = raw[:delta] if delta < 0 else raw + b"\0" * delta
    frames[i] = zstandard.ZstdCompressor().compress(raw) if compression == "zstd" else raw
    with pytest.raises(WireError):
        decode(frames)


def test_decode_refuses_truncated_buffer():
    frames = segment_frames()
    i = index_of(frames, "frames")
    frames[i] = bytes(frames[i])[: len(frames[i]) // 2]
    with pytest.raises(WireError, match="bytes"):
        decode(frames)


@pytest.mark.parametrize(
    "payload", [b"not zstd at all", b"", b"\x28\xb5\x2f\xfd\x00"], ids=["garbage", "empty", "magic-only"]
)
def test_decode_refuses_corrupt_zstd(payload):
    frames = segment_frames("zstd")
    frames[index_of(frames, "rewards")] = payload
    with pytest.raises(WireError):
        decode(frames)


def test_decode_refuses_truncated_zstd():
    frames = segment_frames("zstd")
    i = index_of(frames, "frames")
    frames[i] = bytes(frames[i])[:-7]
    with pytest.raises(WireError):
        decode(frames)


def test_decode_refuses_zstd_bigger_than_declared_without_content_size():
    frames = segment_frames("zstd")
    i = index_of(frames, "actions")
    big = np.zeros((SPEC.rollout_steps * 50, len(STREAMS)), np.uint8).tobytes()
    frames[i] = zstandard.ZstdCompressor(write_content_size=False).compress(big)
    with pytest.raises(WireError):
        decode(frames)


def test_decode_refuses_zstd_bigger_than_declared_with_content_size():
    frames = segment_frames("zstd")
    i = index_of(frames, "actions")
    big = np.zeros((SPEC.rollout_steps * 50, len(STREAMS)), np.uint8).tobytes()
    frames[i] = zstandard.ZstdCompressor().compress(big)
    with pytest.raises(WireError):
        decode(frames)


def _zstd_frame_claiming(content_size: int, payload: bytes) -> bytes:
    """A valid-looking zstd frame (one raw block) whose header claims ``content_size`` bytes."""
    return (
        struct.pack("<I", 0xFD2FB528)
        + bytes([0xE0])
        + struct.pack("<Q", content_size)
        + struct.pack("<I", 1 | (len(payload) << 3))[:3]
        + payload
    )


def test_zstd_frame_helper_is_a_valid_frame():
    assert zstandard.ZstdDecompressor().decompress(_zstd_frame_claiming(5, b"abcde")) == b"abcde"


def test_decode_refuses_zstd_frame_that_claims_a_huge_size():
    """A 30-byte message must not make the receiver allocate a terabyte: the declared shape bounds the output.

    python-zstandard trusts the frame's content size over ``max_output_size``; the allocation then fails with
    MemoryError, which is not a WireError, so the learner's handle() does not catch it.
    """
    frames = wire_encode("warmup", {"actor": 0, "streams": [0]}, {"frames": np.zeros((1, 1, 2, 5), np.uint8)}, "zstd")
    frames[1] = _zstd_frame_claiming(1 << 40, b"0123456789")
    with pytest.raises(WireError):
        decode(frames)


def test_decode_does_not_inflate_a_zstd_bomb_past_the_declared_size(monkeypatch):
    """A tiny payload that inflates to far more than the declared array must be refused without inflating it."""
    produced = []
    real = zstandard.ZstdDecompressor

    class Recording:
        def __init__(self, *a, **kw):
            self._d = real(*a, **kw)

        def __getattr__(self, name):
            attr = getattr(self._d, name)
            if name != "decompress":
                return attr

            def decompress(*args, **kwargs):
                out = attr(*args, **kwargs)
                produced.append(len(out))
                return out

            return decompress

    monkeypatch.setattr(wire._zstd, "ZstdDecompressor", Recording)
    frames = wire_encode("warmup", {"actor": 0, "streams": [0]}, {"frames": np.zeros((1, 1, 2, 5), np.uint8)}, "zstd")
    frames[1] = zstandard.ZstdCompressor().compress(b"\0" * 4_000_000)
    with pytest.raises(WireError):
        decode(frames)
    assert max(produced, default=0) <= 10 + 1, f"inflated {max(produced)} bytes for a 10-byte array"


def test_decode_refuses_oversized_header():
    frames = segment_frames()
    header = json.loads(frames[0])
    header["padding"] = "x" * MAX_HEADER_BYTES
    with pytest.raises(WireError, match="header"):
        decode([json.dumps(header).encode()] + frames[1:])


# ---------------------------------------------------------------------------------------------
# the segment schema: validate_segment


def test_validate_segment_refuses_other_kinds():
    frames = wire_encode("warmup", segment_meta(), segment_arrays())
    refused(frames)


@pytest.mark.parametrize("name", list(SPEC.segment_arrays(1)))
def test_missing_array_refused(name):
    arrays = segment_arrays()
    del arrays[name]
    refused(segment_frames(arrays=arrays))


def test_extra_array_refused():
    arrays = segment_arrays()
    arrays["bonus"] = np.zeros((SPEC.rollout_steps, len(STREAMS)), np.float32)
    refused(segment_frames(arrays=arrays))


@pytest.mark.parametrize("name", list(SPEC.segment_arrays(1)))
def test_wrong_dtype_refused(name):
    arrays = segment_arrays()
    a = arrays[name]
    arrays[name] = a.astype(np.float32 if a.dtype == np.uint8 else np.uint8)
    assert name in refused(segment_frames(arrays=arrays))  # the reason names the array


@pytest.mark.parametrize("name", list(SPEC.segment_arrays(1)))
@pytest.mark.parametrize("how", ["time+1", "time-1", "k+1", "flat"])
def test_wrong_shape_refused(name, how):
    arrays = segment_arrays()
    a = arrays[name]
    if how == "time+1":
        a = np.concatenate([a, a[:1]], axis=0)
    elif how == "time-1":
        a = a[:-1]
    elif how == "k+1":
        a = np.concatenate([a, a[:, :1]], axis=1)
    else:
        a = a.reshape(-1)
    arrays[name] = np.ascontiguousarray(a)
    with pytest.raises(WireError, match=name):
        check_segment(segment_frames(arrays=arrays))


def test_shapes_follow_the_spec_not_the_sender():
    """A segment built for another frame size, consistent in itself, is refused by this learner's spec."""
    other = SegmentSpec(5, 4, 84, 84, 18, 8)
    frames = segment_frames(arrays=segment_arrays(other))
    check_segment(frames, other)
    refused(frames, SPEC)


@pytest.mark.parametrize("name", ["behaviour_logp", "rewards", "trunc_value"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_non_finite_floats_refused(name, bad, compression):
    arrays = segment_arrays()
    arrays[name][3, 2] = bad
    refused(segment_frames(compression, arrays=arrays))


@pytest.mark.parametrize("action", [18, 19, 255])
def test_action_out_of_range_refused(action):
    arrays = segment_arrays()
    arrays["actions"][0, 1] = action
    assert "action" in refused(segment_frames(arrays=arrays))


def test_action_range_follows_spec():
    arrays = segment_arrays()
    arrays["actions"][:] = 5
    spec6 = SegmentSpec(5, 4, 12, 10, 6, 8)
    check_segment(segment_frames(arrays=arrays), spec6)
    arrays["actions"][0, 0] = 6
    refused(segment_frames(arrays=arrays), spec6)


@pytest.mark.parametrize("logp", [0.01, 1.0, 50.0])
def test_positive_behaviour_logp_refused(logp):
    arrays = segment_arrays()
    arrays["behaviour_logp"][1, 0] = logp
    assert "behaviour_logp" in refused(segment_frames(arrays=arrays))


@pytest.mark.parametrize("name", ["terminated", "truncated"])
@pytest.mark.parametrize("value", [2, 255])
def test_flags_not_zero_one_refused(name, value):
    arrays = segment_arrays()
    arrays[name][0, 2] = value
    refused(segment_frames(arrays=arrays))


def test_terminated_and_truncated_both_set_refused():
    arrays = segment_arrays()
    arrays["terminated"][3, 1] = 1
    arrays["truncated"][3, 1] = 1
    assert "both" in refused(segment_frames(arrays=arrays))


@pytest.mark.parametrize(
    "streams",
    [[2, 5, 8], [2, 5, -1], [2, 5, 5], [2, True, 5], [2, 5.0, 7], [2, "5", 7], [2, None, 7]],
    ids=["too-big", "negative", "repeated", "bool", "float", "string", "null"],
)
def test_bad_stream_ids_refused(streams):
    refused(segment_frames(meta=segment_meta(streams=streams, episodes=[])))


def test_stream_list_shape_refused():
    refused(segment_frames(meta=segment_meta(streams=[], episodes=[]), arrays=segment_arrays(k=0)))
    refused(segment_frames(meta=segment_meta(streams=3, episodes=[]), arrays=segment_arrays(k=1)))
    no_streams = _meta_without("streams")
    no_streams["episodes"] = []
    refused(segment_frames(meta=no_streams))
    nine = SPEC.num_streams + 1
    refused(segment_frames(meta=segment_meta(streams=list(range(nine)), episodes=[]), arrays=segment_arrays(k=nine)))


def test_stream_count_must_match_array_width():
    refused(segment_frames(meta=segment_meta(streams=[2, 5], episodes=[])))  # arrays are for 3 streams


def _meta_without(key):
    m = segment_meta()
    m.pop(key)
    return m


@pytest.mark.parametrize("key", ["actor", "version", "seq", "run"])
@pytest.mark.parametrize("value", [-1, True, 1.0, "3", None, 1 << 63, ...])
def test_bad_integer_meta_fields_refused(key, value):
    meta = _meta_without(key) if value is ... else segment_meta(**{key: value})
    refused(segment_frames(meta=meta))


def test_version_zero_is_fine():
    check_segment(segment_frames(meta=segment_meta(version=0, seq=0, actor=0)))


def test_a_segment_without_its_episode_arrays_is_refused():
    frames = segment_frames(meta=segment_meta(episodes=[]))
    header = json.loads(frames[0])
    keep = [i for i, a in enumerate(header["arrays"]) if a["name"] != "episode_cells"]
    header["arrays"] = [header["arrays"][i] for i in keep]
    assert "lack the episode arrays" in refused([json.dumps(header).encode()] + [frames[1 + i] for i in keep])


GOOD_EP = {"stream": 5, "t": 2, "return": 100.0, "length": 37, "rooms": [0, 1]}

BAD_EPISODES = {  # records the actor's encoding can express, each breaking one rule
    "stream-not-in-segment": [dict(GOOD_EP, stream=3)],
    "t-equals-T": [dict(GOOD_EP, t=SPEC.rollout_steps)],
    "t-negative": [dict(GOOD_EP, t=-1)],
    "t-fraction": [dict(GOOD_EP, t=2.5)],
    "stream-fraction": [dict(GOOD_EP, stream=5.5)],
    "return-nan": [dict(GOOD_EP, **{"return": float("nan")})],
    "return-inf": [dict(GOOD_EP, **{"return": float("inf")})],
    "return-huge": [dict(GOOD_EP, **{"return": 1e16})],
    "length-zero": [dict(GOOD_EP, length=0)],
    "length-fraction": [dict(GOOD_EP, length=37.5)],
    "length-huge": [dict(GOOD_EP, length=(1 << 31) + 1)],
    "second-record-bad": [dict(GOOD_EP), dict(GOOD_EP, t=99)],
    "no-end-there": [dict(GOOD_EP, t=3)],
    "twice": [dict(GOOD_EP), dict(GOOD_EP)],
    "rooms-unsorted": [dict(GOOD_EP, rooms=[1, 0])],
    "rooms-repeat": [dict(GOOD_EP, rooms=[1, 1])],
    "rooms-past-length": [dict(GOOD_EP, length=2, rooms=[0, 1, 2, 3])],
    "cells-steps-zero": [dict(GOOD_EP, cells=[[5, 37], [6, 0]])],
    "cells-repeat": [dict(GOOD_EP, cells=[[5, 30], [5, 7]])],
    "cells-unsorted": [dict(GOOD_EP, cells=[[6, 30], [5, 7]])],
    "cells-steps-exceed-length": [dict(GOOD_EP, cells=[[5, 30], [6, 8]])],
    "cells-steps-short-of-length": [dict(GOOD_EP, cells=[[5, 30], [6, 6]])],
    "bucket-out-of-range": [dict(GOOD_EP, cells=[[0x01_01_20_1D, 37]])],  # x bucket 32 of 0..31
    "cells-too-many": [
        dict(GOOD_EP, length=MAX_EPISODE_CELLS + 1, cells=[[c, 1] for c in valid_cells(MAX_EPISODE_CELLS + 1)])
    ],
}


@pytest.mark.parametrize("case", list(BAD_EPISODES))
def test_malformed_episode_records_refused(case):
    """The segment ends one episode, where GOOD_EP says."""
    refused(segment_frames(meta=segment_meta(episodes=BAD_EPISODES[case]), arrays=arrays_ending([GOOD_EP])))


def test_an_episode_end_without_its_record_is_refused():
    refused(segment_frames(meta=segment_meta(episodes=[GOOD_EP])))  # the arrays end two episodes


def test_a_later_episode_of_a_stream_is_the_steps_since_the_one_before():
    """Stream 5 ends an episode at step 1, then another at step 4: that one is 3 steps long."""
    first, second = dict(GOOD_EP, t=1), dict(GOOD_EP, t=4, length=3, rooms=[0])
    check_segment(segment_frames(meta=segment_meta(episodes=[first, second]), arrays=arrays_ending([first, second])))
    for length in (2, 4, 37):
        bad = dict(second, length=length)
        refused(segment_frames(meta=segment_meta(episodes=[first, bad]), arrays=arrays_ending([first, bad])))


@pytest.mark.parametrize(
    "name,change",
    [
        ("episodes", lambda a: a["episodes"].astype(np.float32)),
        ("episodes", lambda a: a["episodes"][:, :3].copy()),
        ("episode_counts", lambda a: a["episode_counts"] + np.uint32(1)),  # more rooms and cells than sent
        ("episode_counts", lambda a: a["episode_counts"][:0].copy()),
        ("episode_rooms", lambda a: a["episode_rooms"].astype(np.uint32)),
        ("episode_cells", lambda a: a["episode_cells"].reshape(-1).copy()),
    ],
)
def test_episode_arrays_of_the_wrong_kind_are_refused(name, change):
    ep = dict(GOOD_EP, cells=[[5, 30], [6, 7]])
    arrays = {**arrays_ending([ep]), **episode_arrays([ep])}
    arrays[name] = change(arrays)
    refused(segment_frames(meta=_meta_without("episodes"), arrays=arrays))


def test_good_episode_records_pass():
    biggest_cell = cell_id(255, 255, 255, 255)
    eps = [
        dict(GOOD_EP),
        {"stream": 7, "t": 0, "return": -3, "length": 1},
        dict(GOOD_EP, t=SPEC.rollout_steps - 1),
        dict(GOOD_EP, length=255, rooms=list(range(256))),
        dict(GOOD_EP, cells=[[0, 1], [5, 30], [biggest_cell, 6]]),
        dict(GOOD_EP, cells=[]),
        dict(GOOD_EP, length=MAX_EPISODE_CELLS, cells=[[c, 1] for c in valid_cells(MAX_EPISODE_CELLS)]),
    ]
    for ep in eps:
        msg = decode(segment_frames(meta=segment_meta(episodes=[ep]), arrays=arrays_ending([ep])))
        got = validate_segment(msg, SPEC).episodes
        got = [dict(g, **({"cells": g["cells"].tolist()} if "cells" in g else {})) for g in got]
        assert got == [{k: v for k, v in ep.items() if v != []}], got
    both = [dict(GOOD_EP), dict(GOOD_EP, stream=2, t=2)]  # two streams ending at one step
    check_segment(segment_frames(meta=segment_meta(episodes=both), arrays=arrays_ending(both)))


def test_episode_records_cost_a_small_header_however_many_cells():
    """The header is the same few hundred bytes with or without 4,096 cells in an episode. Before,
    each cell was a JSON pair in the header, which 4,096-cell episodes filled to about 770 KB."""
    ep = dict(GOOD_EP, length=MAX_EPISODE_CELLS, cells=[[c, 1] for c in valid_cells(MAX_EPISODE_CELLS)])
    small = segment_frames(meta=segment_meta(episodes=[dict(GOOD_EP)]), arrays=arrays_ending([GOOD_EP]))
    big = segment_frames(meta=segment_meta(episodes=[ep]), arrays=arrays_ending([ep]))
    assert len(big[0]) - len(small[0]) < 8 and len(big[0]) < SPEC.envelope_bytes()


def test_a_decoded_record_goes_back_to_json_as_the_actor_made_it():
    """Cells come off the wire as an array view; another rank's records travel to rank 0 as JSON."""
    ep = dict(GOOD_EP, length=3, cells=[[c, 1] for c in valid_cells(3)])
    m = validate_segment(decode(segment_frames(meta=segment_meta(episodes=[ep]), arrays=arrays_ending([ep]))), SPEC)
    assert json.loads(json.dumps([plain_record(r) for r in m.episodes])) == [ep]


# ---------------------------------------------------------------------------------------------
# warmup and weights


def warmup_frames(n: int = 3, k: int = 2, compression: str = "none", **meta) -> list[bytes]:
    frames = np.random.default_rng(0).integers(0, 256, size=(n, k, SPEC.height, SPEC.width)).astype(np.uint8)
    m = {"actor": 0, "streams": list(range(k)), "num_actors": 1}
    m.update(meta)
    return wire_encode("warmup", m, {"frames": frames}, compression)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_validate_warmup_accepts_good(compression):
    msg = decode(warmup_frames(compression=compression))
    validate_warmup(msg, SPEC)
    validate_warmup(decode(warmup_frames(n=SPEC.rollout_steps)), SPEC)


def test_validate_warmup_refuses_bad():
    def bad(msg):
        with pytest.raises(WireError):
            validate_warmup(msg, SPEC)

    bad(decode(warmup_frames(n=SPEC.rollout_steps + 1)))  # more steps than a segment
    bad(decode(warmup_frames(n=0)))
    bad(decode(warmup_frames(actor=-1)))
    bad(decode(warmup_frames(streams=[0, 0])))
    bad(decode(warmup_frames(streams=[0])))  # frames are for 2 streams
    bad(decode(segment_frames()))  # wrong kind
    f = np.zeros((2, 2, SPEC.height, SPEC.width), np.uint8)
    bad(
        decode(
            wire_encode("warmup", {"actor": 0, "streams": [0, 1], "num_actors": 1}, {"frames": f.astype(np.float32)})
        )
    )
    bad(decode(wire_encode("warmup", {"actor": 0, "streams": [0, 1], "num_actors": 1}, {"frames": f[..., :-1].copy()})))
    bad(decode(wire_encode("warmup", {"actor": 0, "streams": [0, 1], "num_actors": 1}, {"frames": f[0]})))
    bad(decode(wire_encode("warmup", {"actor": 0, "streams": [0, 1], "num_actors": 1}, {"frames": f, "extra": f})))
    bad(decode(wire_encode("warmup", {"actor": 0, "streams": [0, 1]}, {"obs": f})))


NET_HW = 44  # the smallest frame the policy's convs take (config.MIN_FRAME_SIZE): keeps these tests fast


@pytest.fixture(scope="module")
def policy():
    return PolicyNet(num_actions=18, frame_stack=4, height=NET_HW, width=NET_HW)


def weights_message(net: PolicyNet, compression: str = "none", **meta) -> tuple[list[bytes], dict]:
    arrays = {k: v.detach().float().numpy() for k, v in net.state_dict().items()}
    m = {"version": 4, "warmup_steps": 0, "learner_run": 9, "retired": [[0, 77, 3]]}
    m.update(meta)
    return wire_encode("weights", m, arrays, compression), arrays


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_validate_weights_accepts_good_and_round_trips(policy, compression):
    frames, arrays = weights_message(policy, compression)
    msg = decode(frames)
    validate_weights(msg, policy_param_spec(policy))
    assert list(msg.arrays) == [n for n, _ in policy_param_spec(policy)]
    for k, a in arrays.items():
        np.testing.assert_array_equal(msg.arrays[k], a)
    other = PolicyNet(18, 4, NET_HW, NET_HW)
    import torch

    other.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in msg.arrays.items()})
    for (k, v), (k2, v2) in zip(policy.state_dict().items(), other.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


def test_validate_weights_refuses_bad(policy):
    spec = policy_param_spec(policy)

    def bad(frames):
        with pytest.raises(WireError):
            validate_weights(decode(frames), spec)

    bad(weights_message(policy, version=-1)[0])
    bad(weights_message(policy, version=True)[0])
    bad(weights_message(policy, warmup_steps=-5)[0])
    bad(weights_message(policy, warmup_steps=None)[0])
    bad(weights_message(policy, learner_run=None)[0])
    bad(weights_message(policy, retired=[[0, 1]])[0])  # triples only
    bad(weights_message(policy, retired=[[0, 1, -2]])[0])
    bad(weights_message(policy, retired={"0": 1})[0])
    frames, arrays = weights_message(policy)
    bad(with_header(frames, version=...))
    meta = {"version": 4, "warmup_steps": 0, "learner_run": 9, "retired": []}
    bad(wire_encode("segment", meta, arrays))  # wrong kind
    first = next(iter(arrays))
    missing = dict(arrays)
    del missing[first]
    bad(wire_encode("weights", meta, missing))
    bad(wire_encode("weights", meta, dict(arrays, extra=np.zeros(3, np.float32))))
    wrong_shape = dict(arrays)
    wrong_shape[first] = wrong_shape[first][:1].copy()
    bad(wire_encode("weights", {"version": 4, "warmup_steps": 0, "learner_run": 9, "retired": []}, wrong_shape))
    wrong_dtype = dict(arrays)
    wrong_dtype["pi_head.bias"] = np.zeros(arrays["pi_head.bias"].shape, np.uint8)
    bad(wire_encode("weights", {"version": 4, "warmup_steps": 0, "learner_run": 9, "retired": []}, wrong_dtype))
    nan = dict(arrays)
    nan["v_ext.weight"] = arrays["v_ext.weight"].copy()
    nan["v_ext.weight"][0, 0] = np.nan
    bad(wire_encode("weights", {"version": 4, "warmup_steps": 0, "learner_run": 9, "retired": []}, nan))
    # weights of a network for other frame sizes / action counts
    bad(weights_message(PolicyNet(num_actions=6, height=NET_HW, width=NET_HW))[0])
    bad(weights_message(PolicyNet(num_actions=18, frame_stack=3, height=NET_HW, width=NET_HW))[0])


# ---------------------------------------------------------------------------------------------
# nothing pickled, anywhere on the wire path


def test_validators_return_the_fields_typed(policy):
    seg = validate_segment(decode(segment_frames()), SPEC)
    assert seg == SegmentMeta(1, 3, 77, 0, list(STREAMS), segment_meta()["episodes"], {}, 8)
    assert validate_warmup(decode(warmup_frames(actor=2, num_actors=3)), SPEC) == WarmupMeta(2, [0, 1], 3)
    w = validate_weights(decode(weights_message(policy, warmup_steps=6)[0]), policy_param_spec(policy))
    assert w == WeightsMeta(FlowMeta(4, 9, ((0, 77, 3),)), 6)
    beat = decode(wire_encode("heartbeat", {"version": 5, "learner_run": 9, "retired": [[1, 2, 3], [0, 4, 5]]}, {}))
    assert validate_heartbeat(beat) == FlowMeta(5, 9, ((1, 2, 3), (0, 4, 5)))
    beat = decode(wire_encode("heartbeat", {**FlowMeta(5, 9, (), ((3, 11),)).wire()}, {}))
    assert validate_heartbeat(beat) == FlowMeta(5, 9, (), ((3, 11),))


@pytest.mark.parametrize("refused", [[[1]], [[1, -2]], [[1, 2, 3]], [[True, 2]], "x", [[1, 2]] * 70000])
def test_bad_refused_runs_are_refused(refused):
    with pytest.raises(WireError, match="refused"):
        validate_heartbeat(
            decode(wire_encode("heartbeat", {"version": 5, "learner_run": 9, "retired": [], "refused": refused}, {}))
        )


def test_an_actor_id_owns_exactly_its_split_of_the_streams():
    from common.wire import check_split, env_split

    assert [env_split(8, 3, a) for a in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert check_split({"actor": 1, "num_actors": 3, "streams": [3, 4, 5]}, 8) == 3
    for meta in (
        {"actor": 1, "num_actors": 3, "streams": [2, 3, 4]},  # a neighbour's stream
        {"actor": 1, "num_actors": 3, "streams": [3, 4]},  # a part of its own
        {"actor": 1, "num_actors": 2, "streams": [3, 4, 5]},  # another split's
        {"actor": 3, "num_actors": 3, "streams": [7]},
        {"actor": 0, "num_actors": 9, "streams": [0]},  # more actors than streams
        {"actor": 0, "streams": [0]},
    ):
        with pytest.raises(WireError):
            check_split(meta, 8)


def test_flow_meta_encodes_as_the_fields_always_did():
    """The typed flow fields go out byte for byte as the dict the learner built before them."""
    old = {"version": 7, "learner_run": 1 << 61, "retired": [[0, 5, 2], [1, 6, 0]]}
    flow = FlowMeta(7, 1 << 61, ((0, 5, 2), (1, 6, 0)))
    assert wire_encode("heartbeat", flow.wire(), {}) == wire_encode("heartbeat", old, {})
    assert flow.wire() == old and list(flow.wire()) == list(old)


def _sources() -> list[Path]:
    files = [REPO / "common" / "wire.py"]
    for d in ("learner", "actors"):
        files += sorted((REPO / d).glob("*.py"))
    return [f for f in files if f.exists()]


def test_source_files_found():
    names = {p.relative_to(REPO).as_posix() for p in _sources()}
    assert {"common/wire.py", "actors/actor.py", "actors/env.py", "actors/rollout.py"} <= names


BANNED_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "dill", "cloudpickle", "shelve", "joblib"}


def _check_tree(tree: ast.AST, where: str = "<src>") -> None:
    """Assert that ``tree`` neither imports a pickling module nor calls a pickling API."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] not in BANNED_MODULES, f"{where}: import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in BANNED_MODULES, f"{where}: from {node.module} import"
        elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
            assert isinstance(node.value, ast.Constant) and node.value.value is False, f"{where}: allow_pickle"
        elif isinstance(node, ast.Attribute):
            assert node.attr not in ("recv_pyobj", "send_pyobj"), f"{where}: zmq {node.attr} pickles"
            base = node.value
            name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
            assert name not in BANNED_MODULES, f"{where}: {name}.{node.attr}"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_pickle_on_the_wire_path(path):
    _check_tree(ast.parse(path.read_text(), filename=str(path)), str(path.relative_to(REPO)))


@pytest.mark.parametrize(
    "src",
    [
        "import pickle",
        "import pickle as pk",
        "from pickle import loads",
        "sock.recv_pyobj()",
        "sock.send_pyobj(x)",
        "import marshal",
        "np.load(f, allow_pickle=True)",
        "cloudpickle.dumps(x)",
        "from _pickle import dumps",
    ],
)
def test_pickle_detector_catches_pickle(src):
    """The rule above must be able to fail: it flags the usual ways of pickling."""
    with pytest.raises(AssertionError):
        _check_tree(ast.parse(src))


def test_pickle_detector_passes_clean_code():
    _check_tree(ast.parse("import json\nnp.load(f, allow_pickle=False)\nnp.frombuffer(b, np.uint8)"))
