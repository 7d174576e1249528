"""Run-wide exploration counts: rooms and cells from episode stats, in metrics, checkpoints and exploration.json."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from common.cells import MAX_EPISODE_CELLS, cell_id, cell_parts
from common.episodes import episode_arrays
from common.wire import encode
from learner import exploration
from learner.checkpoint import load_checkpoint
from learner.exploration import ExplorationStats
from learner.learner import Learner
from learner.serial import SerialRunner

REPO = Path(__file__).resolve().parents[1]


def test_counts_rooms_by_episode_and_cells_by_step():
    st = ExplorationStats()
    a, b = cell_id(0, 1, 77, 235), cell_id(0, 2, 10, 200)
    assert st.add_episode({"rooms": [1], "cells": [[a, 5]], "length": 5}) == (1, 1)
    assert st.add_episode({"rooms": [1, 2], "cells": [[a, 3], [b, 4]], "length": 7}) == (2, 2)
    assert st.add_episode({"return": 0.0, "length": 3}) == (0, 0)  # a game without rooms or cells
    assert st.room_episodes == Counter({1: 2, 2: 1})
    assert st.cell_steps == Counter({a: 8, b: 4})
    assert st.room_steps() == Counter({1: 8, 2: 4})
    assert (st.rooms_visited, st.cells_visited) == (2, 2)
    js = st.to_json(update=3, agent_steps=15, episodes=3)
    assert js["rooms"] == {"1": {"episodes": 2, "steps": 8}, "2": {"episodes": 1, "steps": 4}}
    assert js["cells"] == [
        {"level": 0, "room": 1, "x_bucket": 9, "y_bucket": 29, "steps": 8},
        {"level": 0, "room": 2, "x_bucket": 1, "y_bucket": 25, "steps": 4},
    ]
    again = ExplorationStats()
    again.load(st.state())
    assert again.cell_steps == st.cell_steps and again.room_episodes == st.room_episodes


def test_run_wide_cells_are_capped(monkeypatch):
    monkeypatch.setattr(exploration, "MAX_RUN_CELLS", 3)
    st = ExplorationStats()
    st.add_episode({"cells": [[c, 1] for c in range(5)], "length": 5})
    st.add_episode({"cells": [[0, 2], [9, 1]], "length": 3})
    assert st.cells_visited == 3 and st.cells_dropped == 3
    assert st.cell_steps[0] == 3  # a known cell still counts past the cap


def test_learner_logs_saves_and_resumes_cell_counts(small_cfg, tmp_path: Path):
    cfg = small_cfg(EpochSteps=1, MaxStepsPerEpisode=5, ImageHeight=48, ImageWidth=48)
    runner = SerialRunner(cfg, tmp_path / "a", num_actors=1)
    seen: Counter[int] = Counter()
    orig = runner.learner._record_episodes

    def spy(segments):
        for s in segments:
            for e in s.episodes:
                seen.update({c: n for c, n in e["cells"]})
        orig(segments)

    runner.learner._record_episodes = spy
    rows = runner.run(3)
    assert seen, "5-step episodes must have ended in 24 steps"
    assert runner.learner.exploration.cell_steps == seen
    assert rows[-1]["cells_visited_total"] == len(seen)
    assert rows[-1]["cells_per_episode_mean"] >= 1
    assert all(cell_parts(c).room == 1 for c in seen)
    runner.learner.logger.close()
    with open(tmp_path / "a" / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert int(last["cells_visited_total"]) == len(seen)
    episodes = [json.loads(ln) for ln in (tmp_path / "a" / "episodes.jsonl").read_text().splitlines()]
    assert all("cells" not in e and e["cells_visited"] >= 1 for e in episodes)

    runner.learner.save()
    js = json.loads((tmp_path / "a" / "exploration.json").read_text())
    assert js["cells_visited_total"] == len(seen) and js["update"] == 3
    assert sum(c["steps"] for c in js["cells"]) == sum(seen.values())
    assert js["rooms"]["1"]["steps"] == sum(seen.values())

    resumed = Learner(cfg, tmp_path / "b", "cpu", bind=None, resume=load_checkpoint(tmp_path / "a"), tensorboard=False)
    assert resumed.exploration.cell_steps == seen
    assert resumed.exploration.room_episodes == runner.learner.exploration.room_episodes
    assert list(resumed.recent) == list(runner.learner.recent)


def _segment_with_episode(runner: SerialRunner, episode: dict) -> list[bytes]:
    i, col = runner.collectors[0]
    arrays = {k: v.copy() for k, v in col.collect()[0].items()}
    arrays["terminated"][:], arrays["truncated"][:] = 0, 0
    arrays["terminated"][0, 0] = 1  # the segment's one episode end, where its record says
    arrays.update(episode_arrays([{"stream": col.streams[0], "t": 0, **episode}]))
    meta = {"actor": i, "streams": col.streams, "num_actors": len(runner.collectors), "version": 0, "run": 0, "seq": 0}
    return encode("segment", meta, arrays)


@pytest.mark.parametrize("n", [MAX_EPISODE_CELLS + 1, 1_000_000])
def test_a_message_claiming_too_many_cells_is_refused_and_counted(small_cfg, tmp_path: Path, n: int):
    cfg = small_cfg(NumInitSteps=0, EpochSteps=1, MaxStepsPerEpisode=5)
    runner = SerialRunner(cfg, tmp_path, num_actors=1)
    ids = sorted(
        cell_id(lv, r, 8 * x, 8 * y)
        for lv in range(n // 2**18 + 1)
        for r in range(256)
        for x in range(32)
        for y in range(32)
    )[:n]
    ep = {"return": 0.0, "length": n, "rooms": [1], "cells": [[c, 1] for c in ids]}
    runner.learner.handle(_segment_with_episode(runner, ep))
    assert runner.learner.counters["rejected_messages"] == 1
    assert not runner.learner.pending and runner.learner.exploration.cells_visited == 0
    fine = {"return": 0.0, "length": 2, "rooms": [1], "cells": [[0, 1], [1, 1]]}
    runner.learner.handle(_segment_with_episode(runner, fine))
    assert runner.learner.counters["rejected_messages"] == 1 and len(runner.learner.pending) == 1
