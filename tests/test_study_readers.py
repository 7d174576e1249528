"""The run-folder readers the study, compare_runs and any other tool read through: each reads back what its
writer wrote, and a damaged line is skipped and counted (a damaged exploration.json is one error naming it)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from common.cells import cell_id
from learner.exploration import ExplorationStats, read_exploration
from learner.logs import METRICS, RunFileError, RunLogger, read_episodes, read_metrics

EPISODE = {"return": 100.0, "length": 80, "rooms": [1, 0], "cells_visited": 12, "actor": 0, "policy_version": 2}


def logged_run(run_dir: Path, updates: int = 3) -> Path:
    """A run folder whose metrics.csv and episodes.jsonl RunLogger wrote: one episode per update."""
    log = RunLogger(run_dir, tensorboard=False, progress=False)
    for u in range(1, updates + 1):
        row = {k: 0.5 * u for k in METRICS}
        row.update(update=u, agent_steps=64 * u, entropy=float("nan"))  # NaN is written as an empty cell
        log.log_update(row)
        log.log_episodes([{**EPISODE, "update": u, "agent_steps": 64 * u}])
    log.close()
    return run_dir


def test_readers_read_back_what_the_writers_wrote(tmp_path: Path):
    run = logged_run(tmp_path / "run")
    rows, skipped = read_metrics(run / "metrics.csv")
    assert skipped == 0 and [r["agent_steps"] for r in rows] == [64, 128, 192]
    assert list(rows[0]) == list(METRICS) and rows[2]["time_s"] == 1.5 and math.isnan(rows[0]["entropy"])
    episodes, skipped = read_episodes(run / "episodes.jsonl")
    assert skipped == 0 and episodes == [{**EPISODE, "update": u, "agent_steps": 64 * u} for u in (1, 2, 3)]
    st = ExplorationStats()
    st.add_episode({"rooms": [1], "cells": [[cell_id(0, 1, 77, 235), 5]], "length": 5})
    st.write_json(run / "exploration.json", update=3, agent_steps=192, episodes=1)
    assert read_exploration(run / "exploration.json") == st.to_json(3, 192, 1)


def test_metrics_tail_reads_the_newest_whole_rows(tmp_path: Path):
    run = logged_run(tmp_path / "run", updates=40)
    full = read_metrics(run / "metrics.csv").rows
    tail, skipped = read_metrics(run / "metrics.csv", tail_bytes=1000)
    assert skipped == 0 and 0 < len(tail) < 40 and tail == full[-len(tail) :]  # the cut first line is not counted
    assert read_metrics(run / "metrics.csv", tail_bytes=10 << 20).rows == full
    (tmp_path / "empty.csv").write_bytes(b"")
    assert read_metrics(tmp_path / "empty.csv") == ([], 0)  # a run that has not written its header yet


def test_damaged_metrics_lines_are_skipped_and_counted(tmp_path: Path):
    run = logged_run(tmp_path / "run")
    path = run / "metrics.csv"
    lines = path.read_bytes().split(b"\r\n")
    header, rows = lines[0], lines[1:-1]
    path.write_bytes(
        b"\r\n".join(
            [
                header,
                rows[0],
                b"\x00\x9f\x92 binary",  # not text
                rows[1].replace(b"128", b"x", 1),  # agent_steps not an integer
                rows[1][: len(rows[1]) // 2],  # a row cut short, then more rows after it
                b",".join(rows[1].split(b",")[:5] + [b"half"] + rows[1].split(b",")[6:]),  # a cell not a number
                b"",  # an empty line: nothing to count
                rows[1],
                rows[2][:-2],  # the last line cut short (no newline): still being written, or killed
            ]
        )
    )
    got, skipped = read_metrics(path)
    assert [r["agent_steps"] for r in got] == [64, 128] and skipped == 5
    path.write_bytes(b"\x00\x01 no header\r\n" + rows[0] + b"\r\n")
    with pytest.raises(RunFileError, match="metrics.csv: not a metrics.csv") as e:
        read_metrics(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "line",
    [
        b"[1, 2]",
        b'"x"',
        b"{}",
        b"null",
        b'{"return": 1.0}',  # no agent_steps
        b'{"return": "1", "agent_steps": 64}',
        b'{"return": true, "agent_steps": 64}',
        b'{"return": NaN, "agent_steps": 64}',
        b'{"return": 1.0, "agent_steps": -1}',
        b'{"return": 1.0, "agent_steps": 64.5}',
        b'{"return": 1.0, "agent_steps": 64, "rooms": "12"}',
        b'{"return": 1.0, "agent_steps": 64, "length": "80"}',
        b"\x00\xff\xfe\x9f binary",
        b'{"return": 1.0, "agent_st',
    ],
)
def test_an_episode_line_that_is_not_a_record_is_skipped_and_counted(tmp_path: Path, line: bytes):
    run = logged_run(tmp_path / "run")
    whole = (run / "episodes.jsonl").read_bytes()
    (run / "episodes.jsonl").write_bytes(whole.replace(b"\n", b"\n" + line + b"\n", 1) + b"\n" + line)
    episodes, skipped = read_episodes(run / "episodes.jsonl")
    assert [e["agent_steps"] for e in episodes] == [64, 128, 192] and skipped == 2  # in the middle, and last


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (None, "cut short or not JSON"),  # the file cut in half
        (b"\x00\xff binary", "cut short or not JSON"),
        (b"[1, 2]", "not an exploration record"),
        (b'{"rooms": {}}', "not an exploration record"),
        (b'{"rooms": {}, "cells": [{"level": 0, "room": 1}]}', "not an exploration record"),
    ],
)
def test_a_damaged_exploration_json_is_one_error_naming_it(tmp_path: Path, text: bytes | None, why: str):
    st = ExplorationStats()
    st.add_episode({"rooms": [1], "cells": [[cell_id(0, 1, 77, 235), 5]], "length": 5})
    path = tmp_path / "exploration.json"
    st.write_json(path, update=3, agent_steps=192, episodes=1)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2] if text is None else text)
    with pytest.raises(RunFileError) as e:
        read_exploration(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {why}") and "\n" not in msg
    assert json.loads(whole)["cells"]  # the whole file was a record
