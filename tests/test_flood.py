"""Hostile peers on loopback against a real learner role and a real actor: a flood of well-formed
bogus segments, made-up actor ids, and frames over the size cap. Each stays within the bounds that
learner/learner_io.py derives from the config, and training goes on."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
import zstandard

from common.cells import MAX_EPISODE_CELLS, cell_id
from common.config import load_config
from common.episodes import episode_arrays
from common.rl.networks import NUM_ACTIONS
from common.transport import free_tcp_address, weights_address
from common.wire import PROTOCOL_VERSION, SegmentSpec, encode
from learner.learner_io import (
    flood_memory_bound,
    max_frame_bytes,
    merge_moments,
    pending_cap_bytes,
    pending_segments_per_actor,
    retired_table_bytes,
    stream_bytes,
)

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
PY = sys.executable
CFG = load_config(SMOKE)
SPEC = SegmentSpec.from_config(CFG, NUM_ACTIONS)
ALLOCATOR_SLACK = 96 << 20  # what Python's and glibc's allocators may keep around; measured growth is below


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def updates(run_dir: Path) -> int:
    try:
        with open(run_dir / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return 0
    return int(rows[-1]["update"]) if rows else 0


def last_row(run_dir: Path) -> dict[str, str]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))[-1]


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class Listener(threading.Thread):
    """Subscribes to the learner's weights channel: when each message came, its header size, the version."""

    def __init__(self, addr: str):
        super().__init__(daemon=True)
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(weights_address(addr))
        self.times: list[float] = []
        self.table_bytes: list[tuple[float, int]] = []  # (when, bytes of the retirement table) per message
        self.version = 0
        self.updates: list[tuple[float, int]] = []  # (when, version) of each new version's weights
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.sub.poll(100):
                frames = self.sub.recv_multipart()
                self.times.append(time.monotonic())
                meta = json.loads(frames[0])
                if "retired" in meta:
                    table = json.dumps(meta["retired"], separators=(",", ":"))
                    self.table_bytes.append((self.times[-1], len(table)))
                if meta.get("kind") == "weights" and meta["version"] > self.version:  # a new update's
                    self.version = meta["version"]  # (a heartbeat's version may be one ahead of the weights)
                    self.updates.append((self.times[-1], self.version))

    def max_gap(self, since: float) -> float:
        t = [since] + [x for x in self.times if x >= since] + [time.monotonic()]
        return float(np.diff(t).max())

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=5)
        self.sub.close(0)
        self.ctx.term()


class RssWatch(threading.Thread):
    """Samples the learner's resident memory every 50 ms; kills it past ``kill_above`` (so that a
    regression fails the test instead of exhausting the machine)."""

    def __init__(self, proc: subprocess.Popen, kill_above: int):
        super().__init__(daemon=True)
        self.proc, self.kill_above, self.peak = proc, kill_above, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.proc.poll() is None:
            try:
                self.peak = max(self.peak, rss_bytes(self.proc.pid))
            except (OSError, RuntimeError):
                return
            if self.peak > self.kill_above:
                self.proc.kill()
                return
            time.sleep(0.05)


def segment_frames(
    actor: int, version: int, seq: int, streams: list[int], bufs: list[bytes], run: int | None = None
) -> list[bytes]:
    """A segment of ``streams``, split over as many actors as ``actor`` owning ``streams`` means: one
    actor holding every stream, or one actor per stream."""
    specs = [{"name": n, "dtype": d.name, "shape": list(s)} for n, (d, s) in SPEC.segment_arrays(len(streams)).items()]
    specs += [{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)} for n, a in episode_arrays([]).items()]
    header = {
        "proto": PROTOCOL_VERSION,
        "kind": "segment",
        "compression": "zstd",
        "arrays": specs,
        "actor": actor,
        "streams": streams,
        "num_actors": 1 if len(streams) == SPEC.num_streams else SPEC.num_streams,
        "version": version,
        "run": 7 + hash(actor) % 100 if run is None else run,
        "seq": seq,
    }
    return [json.dumps(header).encode(), *bufs]


def compressed_arrays(k: int) -> list[bytes]:
    """A valid segment's arrays for k streams, zstd-compressed once (about 1 KB on the wire)."""
    comp = zstandard.ZstdCompressor(level=1)
    out = []
    for name, (dtype, shape) in SPEC.segment_arrays(k).items():
        a = np.full(shape, -1.0 if name == "behaviour_logp" else 0, dtype)
        out.append(comp.compress(a.tobytes()))
    return out + [comp.compress(a.tobytes()) for a in episode_arrays([]).values()]


def flood(addr: str, messages, deadline_s: float) -> int:
    """Send ``messages`` (an iterator of frames) as fast as the learner takes them; returns how many went."""
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 1000)
    push.connect(addr)
    sent, end = 0, time.monotonic() + deadline_s
    try:
        for frames in messages:
            while not push.poll(100, zmq.POLLOUT):
                if time.monotonic() > end:
                    return sent
            push.send_multipart(frames)
            sent += 1
        while time.monotonic() < end and push.get(zmq.EVENTS) & zmq.POLLOUT == 0:
            time.sleep(0.05)
        return sent
    finally:
        push.close(linger=2000)
        ctx.term()


# ---- the I/O thread's admission, in process ----------------------------------------------------------


def test_unusable_segments_are_dropped_from_their_header_alone(socketless_io) -> None:
    """Too old, or newer than any weights: dropped and retired without decompressing (corrupt zstd
    data here, which decoding would reject), so its actor moves on and nothing is inflated."""
    io, rejected, dropped = socketless_io(CFG, 5)
    io.admit(segment_frames(1, 5, 0, [1], compressed_arrays(1)))  # run 8 holds actor id 1 from now on
    corrupt = [b"\x28\xb5\x2f\xfd garbage"] * (len(SPEC.segment_arrays(1)) + len(episode_arrays([])))
    for v in (0, 3, 6, 99):
        io.admit(segment_frames(1, v, 40 + v, [1], corrupt))
    assert not rejected and [s.seq for s in io.pending] == [0]
    assert [(s.actor, s.version, s.run, s.seq) for s in dropped] == [(1, v, 8, 40 + v) for v in (0, 3, 6, 99)]
    io.admit(segment_frames(1, 5, 200, [1], corrupt))  # fresh (and a later seq): read in full, and refused
    assert len(rejected) == 1 and "zstd" in str(rejected[0])
    io.admit(segment_frames(1, 0, 0, [1], corrupt, run=9))  # a run never seen: counted, not retired
    assert len(dropped) == 4 and "holds no actor id" in str(rejected[1])


def test_made_up_actor_ids_are_refused_before_anything_else(socketless_io) -> None:
    io, rejected, dropped = socketless_io(CFG, 5)
    bufs = compressed_arrays(1)
    for actor in (SPEC.num_streams, 10**6, -1, True, "0"):
        io.admit(segment_frames(actor, 5, 0, [0], bufs))
    warm = {"actor": 9, "streams": [0], "num_actors": 4}
    io.admit(encode("warmup", warm, {"frames": np.zeros((1, 1, 84, 84), np.uint8)}))
    assert len(rejected) == 6 and not dropped and not io.pending and io.warmups.empty()
    assert all("actor id outside [0, 4)" in str(e) for e in rejected)
    io.admit(encode("stop", {}, {}))  # not an actor's kind: refused for that, not for a missing id
    assert "does not accept 'stop'" in str(rejected[-1])


def test_pending_segments_are_bounded_per_actor_id_and_in_all(socketless_io) -> None:
    io, rejected, dropped = socketless_io(CFG, 5)
    one, every = compressed_arrays(1), compressed_arrays(SPEC.num_streams)
    for seq in range(10):  # one actor id: only its newest pending_segments_per_actor stay
        io.admit(segment_frames(2, 5, seq, [2], one))
    per_actor = pending_segments_per_actor(CFG.max_policy_lag)
    assert [s.seq for s in io.pending] == list(range(10 - per_actor, 10))
    assert [s.seq for s in dropped] == list(range(10 - per_actor)) and not rejected
    for seq in range(20):  # every id, each its own stream: the byte cap holds
        io.admit(segment_frames(seq % SPEC.num_streams, 5, 100 + seq, [seq % SPEC.num_streams], one))
    held = sum(len(s.streams) for s in io.pending) * stream_bytes(SPEC)
    assert held <= pending_cap_bytes(SPEC, CFG.max_policy_lag)
    assert len(dropped) + len(io.pending) == 30 and not rejected
    io.admit(segment_frames(0, 5, 200, list(range(SPEC.num_streams)), every))  # another split: refused
    assert len(rejected) == 1 and "num_actors=1" in str(rejected[0])


def test_warmup_moments_waiting_for_the_main_thread_are_merged_into_one(socketless_io) -> None:
    io, rejected, _ = socketless_io(CFG, 5)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (3, 1, SPEC.height, SPEC.width), dtype=np.uint8) for _ in range(50)]
    for f in frames:
        io.admit(encode("warmup", {"actor": 0, "streams": [0], "num_actors": 4}, {"frames": f}))
    assert not rejected and io.warmups.qsize() == 1  # the main thread has taken nothing yet
    got = [io.warmups.get()]
    io.hand_over_warmup()
    got.append(io.warmups.get())
    assert io.warmups.empty() and io._warm is None
    merged = merge_moments(*got)
    every = np.concatenate(frames).reshape(-1, SPEC.height, SPEC.width).astype(np.float64)
    assert merged.count == len(every)
    np.testing.assert_allclose(merged.mean.numpy(), every.mean(0), rtol=1e-12)
    np.testing.assert_allclose(merged.var.numpy(), every.var(0), rtol=1e-9)


# ---- a real learner role under attack ------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, learner_role_cmd, actors_role_cmd):
    """A learner role on loopback (no keys) training with one real actor, past its second update."""
    run_dir = tmp_path_factory.mktemp("flood") / "run"
    addr = free_tcp_address()
    logs = open(run_dir.parent / "stderr.txt", "w")  # a file, not a pipe: nothing may block on it
    learner = subprocess.Popen(
        [PY, *learner_role_cmd(addr, run_dir, 100000000)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=logs,
    )
    actors = subprocess.Popen(
        [PY, *actors_role_cmd(addr, 1)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=logs,
    )
    listener = Listener(addr)
    listener.start()
    try:
        wait_for(lambda: updates(run_dir) >= 3, 90, "the first updates")
        yield addr, run_dir, learner, actors, listener
    finally:
        listener.close()
        for p in (actors, learner):
            p.terminate()
        for p in (actors, learner):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        logs.close()


def costly_segment(fault: bool) -> list[bytes]:
    """The costliest segment a peer can send under this config: every stream ends one episode of
    MAX_EPISODE_CELLS cells (before, such episode stats filled the JSON header to about 770 KB, and
    parsing one took the I/O thread 68 ms); with ``fault`` its cells' steps miss the episodes'
    lengths by one, so that it is read in full before it is refused."""
    k = SPEC.num_streams
    arrays = {n: np.full(s, -1.0 if n == "behaviour_logp" else 0, d) for n, (d, s) in SPEC.segment_arrays(k).items()}
    places = [(lv, r, x, y) for lv in range(4) for r in range(2) for x in range(32) for y in range(16)]
    cells = sorted(cell_id(lv, r, 8 * x, 8 * y) for lv, r, x, y in places)
    records = []
    for s in range(k):
        arrays["terminated"][s, s] = 1
        cells_steps = [[c, 1] for c in cells[:MAX_EPISODE_CELLS]]
        records.append({"stream": s, "t": s, "return": 0.0, "length": MAX_EPISODE_CELLS + fault, "cells": cells_steps})
    meta = {"actor": 0, "streams": list(range(k)), "num_actors": 1, "version": 0, "run": 0, "seq": 0}
    return encode("segment", meta, {**arrays, **episode_arrays(records)}, "zstd")


def send_costly(addr: str, listener: Listener, stale: bool, stop: threading.Event, sent: list[int]) -> None:
    """Until ``stop``: costly segments under actor id 0 with a new made-up run each, as fast as the
    learner takes them; ``stale`` ones carry version 0 (dropped from their header), the others the
    learner's current version and a fault (read in full, then refused)."""
    frames = costly_segment(fault=not stale)
    header = json.loads(frames[0])
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 100)
    push.connect(addr)
    try:
        while not stop.is_set():
            if push.poll(100, zmq.POLLOUT):
                n = sent[0]
                header.update(run=10**9 + n, seq=n, version=0 if stale else listener.version)
                push.send_multipart([json.dumps(header).encode(), *frames[1:]])
                sent[0] += 1
    finally:
        push.close(linger=0)
        ctx.term()


def updates_per_second(listener: Listener, seconds: float, flood=None) -> tuple[float, int]:
    """The learner's updates per second over ``seconds`` (between the first and the last new weights
    heard in them, so that a window's count does not round the rate), and the messages
    ``flood(stop, sent)`` sent meanwhile."""
    stop, sent = threading.Event(), [0]
    sender = threading.Thread(target=flood, args=(stop, sent)) if flood is not None else None
    t0 = time.monotonic()
    if sender is not None:
        sender.start()
    time.sleep(seconds)
    stop.set()
    if sender is not None:
        sender.join()
    new = [(t, v) for t, v in listener.updates if t >= t0]
    if len(new) < 2:
        return 0.0, sent[0]
    return (new[-1][1] - new[0][1]) / (new[-1][0] - new[0][0]), sent[0]


def test_a_flood_of_costly_segments_leaves_the_learners_rate_within_20_percent(live) -> None:
    """Windows of 5 s in turn, none flooded, then stale costly segments, none, faulty fresh ones, none:
    the machine's load drifts, and the flooded windows are compared with the ones around them.
    Before, a flood of costly headers took the learner from about 250 to 7 agent steps/s."""
    addr, run_dir, learner, actors, listener = live
    updates_per_second(listener, 4.0)  # the first updates after start come faster: not a baseline
    windows = []
    for stale in (None, True, None, False, None):
        flood = None if stale is None else lambda stop, sent, s=stale: send_costly(addr, listener, s, stop, sent)
        windows.append((stale, *updates_per_second(listener, 5.0, flood)))
    base = [r for stale, r, _ in windows if stale is None]
    flooded = [r for stale, r, _ in windows if stale is not None]
    print("rates (updates/s, messages sent):", [(s, round(r, 2), n) for s, r, n in windows])
    assert learner.poll() is None and actors.poll() is None
    assert all(n > 200 for s, _, n in windows if s is not None)  # the learner read at least that many
    assert sum(flooded) / len(flooded) >= 0.8 * sum(base) / len(base)


def baseline_rss(pid: int) -> int:
    samples = []
    for _ in range(10):
        samples.append(rss_bytes(pid))
        time.sleep(0.05)
    return max(samples)


def test_a_flood_of_valid_segments_stays_bounded_and_training_goes_on(live) -> None:
    """10,000 well-formed segments of every stream, with made-up actor ids and the current version:
    zstd makes each about 1 KB on the wire and 0.56 MiB decoded, so a learner that keeps what
    arrives needs 5.6 GB. The learner's RSS stays within flood_memory_bound of where it was,
    heartbeats keep coming, and updates go on."""
    addr, run_dir, learner, actors, listener = live
    rss0 = baseline_rss(learner.pid)
    bound = flood_memory_bound(SPEC, CFG.max_policy_lag, peers=1) + ALLOCATOR_SLACK
    watch = RssWatch(learner, kill_above=rss0 + bound + (512 << 20))
    watch.start()
    u0, t0 = updates(run_dir), time.monotonic()
    bufs = compressed_arrays(SPEC.num_streams)
    streams = list(range(SPEC.num_streams))
    msgs = (segment_frames(0, listener.version, i, streams, bufs, run=1000 + i) for i in range(10_000))
    sent = flood(addr, msgs, deadline_s=60)
    wait_for(lambda: updates(run_dir) >= u0 + 3 or learner.poll() is not None, 60, "updates after the flood")
    watch.stop.set()
    watch.join()
    assert learner.poll() is None, f"learner died (or was killed at {watch.peak / 2**20:.0f} MiB RSS)"
    assert sent == 10_000
    grew = watch.peak - rss0
    print(
        f"flood: {sent} segments in {time.monotonic() - t0:.1f} s; RSS {rss0 / 2**20:.0f} MiB + "
        f"{grew / 2**20:.1f} MiB (bound {bound / 2**20:.1f} MiB); heartbeat gap {listener.max_gap(t0):.2f} s"
    )
    assert grew <= bound
    assert listener.max_gap(t0) < 5.0  # HEARTBEAT_S is 1 s
    assert updates(run_dir) >= u0 + 3 and actors.poll() is None


def test_made_up_actor_ids_are_refused_and_the_retired_table_stays_small(live) -> None:
    """5,000 stale one-stream segments, each under another actor id: ids the run cannot have are
    refused and counted, the retirement table every heartbeat carries stays within its bound, and
    the real actor keeps training. (The learner reads such waste at a tenth of its I/O thread's
    time, a few hundred a second here: 5,000 take about 20 s.)"""
    addr, run_dir, learner, actors, listener = live
    rejected0, u0, t0 = int(last_row(run_dir)["rejected_messages"]), updates(run_dir), time.monotonic()
    bufs = compressed_arrays(1)
    msgs = (segment_frames(i, 0, 0, [i % SPEC.num_streams], bufs) for i in range(5_000))
    assert flood(addr, msgs, deadline_s=90) == 5_000
    wait_for(
        lambda: (
            int(last_row(run_dir)["rejected_messages"]) - rejected0 >= 5_000 - SPEC.num_streams
            or learner.poll() is not None
        ),
        180,  # each message's header is parsed before it is refused: on a loaded 2-core machine, minutes
        "the made-up ids counted",
    )
    wait_for(lambda: updates(run_dir) >= u0 + 3 or learner.poll() is not None, 60, "updates after the ids")
    assert learner.poll() is None and actors.poll() is None
    largest = max([b for t, b in listener.table_bytes if t >= t0] or [0])
    print(
        f"ids: retirement table up to {largest} bytes (bound {retired_table_bytes(CFG.NumWorkers)}), "
        f"heartbeat gap {listener.max_gap(t0):.2f} s"
    )
    assert 0 < largest <= retired_table_bytes(CFG.NumWorkers)
    assert int(last_row(run_dir)["rejected_messages"]) - rejected0 >= 5_000 - SPEC.num_streams
    assert listener.max_gap(t0) < 5.0


def test_frames_over_the_size_cap_never_reach_the_learner(live) -> None:
    """A frame above ZMQ_MAXMSGSIZE costs its sender the connection before ZeroMQ buffers it; a
    message whose arrays declare more than the largest segment is dropped and counted."""
    addr, run_dir, learner, actors, listener = live
    u = updates(run_dir)
    wait_for(lambda: updates(run_dir) >= u + 2, 60, "two updates")
    counts = [-1]  # whatever an earlier test queued is counted by now: the count stays put for 3 s

    def settled() -> bool:
        before, counts[0] = counts[0], int(last_row(run_dir)["rejected_messages"])
        time.sleep(3.0)
        return before == counts[0]

    wait_for(settled, 120, "the earlier floods counted")
    rejected0, u0 = int(last_row(run_dir)["rejected_messages"]), updates(run_dir)
    frame_too_big = [b"{}", b"\0" * (max_frame_bytes(SPEC) + 1)]
    assert flood(addr, iter([frame_too_big] * 20), deadline_s=10) == 20
    header = {
        "proto": PROTOCOL_VERSION,
        "kind": "segment",
        "compression": "none",
        "actor": 0,
        "streams": list(range(SPEC.num_streams)),
        "num_actors": 1,
        "version": listener.version,
        "run": 1,
        "seq": 0,  # fresh: it is read in full
        "arrays": [{"name": "frames", "dtype": "uint8", "shape": [SPEC.max_message_bytes() + 1]}],
    }
    declared_too_big = [json.dumps(header).encode(), b"\0" * (SPEC.max_message_bytes() + 1)]
    assert flood(addr, iter([declared_too_big]), deadline_s=10) == 1
    wait_for(lambda: int(last_row(run_dir)["rejected_messages"]) > rejected0, 60, "the oversized message counted")
    wait_for(lambda: updates(run_dir) >= u0 + 2, 60, "updates after the big frames")
    assert int(last_row(run_dir)["rejected_messages"]) - rejected0 == 1  # the 20 big frames never arrived
