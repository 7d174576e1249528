"""The console's time: the waiting line before the first update, the no-actor note, the progress fields
(elapsed, percent, steps/s over the last minute, ETA) and the run's one-time estimate."""

from __future__ import annotations

import io
from pathlib import Path

from learner.console import RunStatus, duration
from learner.logs import RunLogger

REPO = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def status(clock: Clock, **kw) -> tuple[RunStatus, io.StringIO]:
    out = io.StringIO()
    args = {"total_steps": 1_000_000, "num_streams": 8, "warmup_frames": 800, "listen": "tcp://0.0.0.0:5555"}
    return RunStatus(**{**args, **kw}, clock=clock, out=out), out


def test_duration() -> None:
    assert duration(12.7) == "0:00:12"
    assert duration(3_725) == "1:02:05"
    assert duration(93_784) == "1d 2:03:04"


def test_waiting_line_shows_warmup_and_streams_every_few_seconds() -> None:
    clock = Clock()
    st, out = status(clock)
    st.waiting(0)
    assert out.getvalue() == "0:00:00 | warm-up 0/800 frames (0%) | env streams heard 0/8\n"
    clock.t += 2
    st.hear([0, 1, 2])
    st.waiting(300)
    assert out.getvalue().count("\n") == 1  # not again within STATUS_EVERY_S
    clock.t += 4
    st.waiting(300)
    assert out.getvalue().splitlines()[-1] == "0:00:06 | warm-up 300/800 frames (38%) | env streams heard 3/8"
    clock.t += 5
    st.waiting(800)
    assert out.getvalue().splitlines()[-1].endswith("warm-up done, waiting for the first batch | env streams heard 3/8")
    assert "no actor heard" not in out.getvalue()


def test_a_learner_nobody_reaches_says_where_it_listens() -> None:
    clock = Clock()
    st, out = status(clock, curve=True)
    for _ in range(40):
        clock.t += 1
        st.waiting(0)
    notes = [ln for ln in out.getvalue().splitlines() if "no actor heard" in ln]
    assert notes == [
        "status: no actor heard for 30 s; the learner listens on tcp://0.0.0.0:5555, it expects CURVE keys (--keys)"
    ]
    st2, out2 = status(clock)
    clock.t += 31
    st2.waiting(0)
    assert "it expects no keys (plaintext)" in out2.getvalue()


def test_progress_fields_rate_over_the_last_minute_and_eta() -> None:
    clock = Clock()
    st, _ = status(clock)
    first = st.fields(1_000, 10.0)
    assert first == "0:00:10 |   0.1% |        - steps/s | ETA -"  # one update: no rate yet, not nan
    for _ in range(12):  # 1,000 steps every 10 s: 100 steps/s
        clock.t += 10
        fields = st.fields(st._rates[-1][1] + 1_000, clock.t - 90)
    assert st.rate() == 100.0
    assert st._rates[-1][0] - st._rates[0][0] <= 60 + 10  # the window keeps about a minute
    assert fields == f"0:02:10 |   1.3% |      100 steps/s | ETA {duration((1_000_000 - 13_000) / 100)}"
    clock.t += 10
    st.fields(st._rates[-1][1] + 4_000, 140.0)  # a faster minute moves the rate
    assert st.rate() > 100.0


def test_estimate_once_after_the_rate_is_measured() -> None:
    clock = Clock()
    st, _ = status(clock)
    st.fields(0, 0.0)
    assert st.estimate(0) is None
    clock.t += 10
    st.fields(1_000, 10.0)
    assert st.estimate(1_000) is None  # measured over 10 s only
    clock.t += 30
    st.fields(4_000, 40.0)
    est = st.estimate(4_000)
    assert est == "status: at 100 agent steps/s the run's 1,000,000 steps take about 2:46:40 in all (2:46:00 from now)"
    assert st.estimate(4_000) is None


def test_progress_line_in_a_file(tmp_path: Path, capsys) -> None:
    logger = RunLogger(tmp_path, tensorboard=False)
    row = {"update": 1, "agent_steps": 512, "time_s": 3.0, "rooms_visited_total": 1, "policy_lag_mean": 0.0}
    logger.progress(row, 1024)
    logger.close()
    line = capsys.readouterr().out.strip()
    assert "steps/s" in line and "nan" not in line and "50.0%" in line and "ETA -" in line and "0:00:03" in line


def test_streams_heard_from_segments_and_warmup_frames(small_cfg, socketless_io) -> None:
    """The I/O thread marks the env streams of each segment it files, warm-up moments carry theirs, and
    the waiting line counts both (a resumed run asks for no warm-up: its actors are heard by segments)."""
    import numpy as np

    from common.episodes import episode_arrays
    from common.rl.networks import NUM_ACTIONS
    from common.wire import SegmentSpec, encode
    from learner.learner_io import merge_moments, parse_message

    cfg = small_cfg(NumWorkers=4)
    spec = SegmentSpec.from_config(cfg, NUM_ACTIONS)
    io, rejected, _ = socketless_io(cfg, 0)
    arrays = {n: np.full(s, -1.0 if n == "behaviour_logp" else 0, d) for n, (d, s) in spec.segment_arrays(2).items()}
    arrays.update(episode_arrays([]))
    meta = {"actor": 1, "streams": [2, 3], "num_actors": 2, "version": 0, "run": 5, "seq": 0}
    io.admit(encode("segment", {**meta, "timings": {}}, arrays))
    assert not rejected and list(io.heard) == [0, 0, 1, 1]
    frames = np.zeros((2, 1, cfg.ImageHeight, cfg.ImageWidth), np.uint8)
    a = parse_message(encode("warmup", {"actor": 0, "streams": [0], "num_actors": 4}, {"frames": frames}), spec)
    b = parse_message(encode("warmup", {"actor": 2, "streams": [2], "num_actors": 4}, {"frames": frames}), spec)
    assert merge_moments(a, b).streams == {0, 2}
    clock = Clock()
    st, out = status(clock, num_streams=4)
    st.hear(a.streams)
    st.waiting(2, io.heard)
    assert out.getvalue().endswith("env streams heard 3/4\n")
