"""What a run counts and reports about itself, apart from learning: counters, episodes, exploration
counts, rejected messages by reason, the step rate, and the wall time and actor restarts summed over
resumed sessions. One object, checkpointed with the learner (``RunStats.state`` / ``restore``).

The I/O thread counts rejected and dropped messages while the main thread counts the rest, so the
counters change under one lock.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np

from common.wire import WireError
from learner.exploration import ExplorationStats

MAX_REJECT_REASONS = 64  # distinct faults logged; later new ones are counted under OTHER_REASONS
OTHER_REASONS = "other"
RECENT_EPISODES = 100  # the episode means of the metrics are over this many most recent episodes
STEP_RATE_WINDOW = 10  # steps_per_second is over this many most recent updates
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def reject_reason(e: WireError) -> str:
    """What makes two rejections the same fault: the whole reason with its numbers masked, so that
    different faults of one array log apart while one fault with changing sizes or ids logs once."""
    return _NUMBER.sub("#", str(e))


def actor_phases(segments: list[Any]) -> dict[str, float]:
    """Mean seconds per segment of each actor phase, as the actors reported them."""
    out = {}
    for phase in ("infer", "env", "wait", "send"):
        vals = [s.timings[phase] for s in segments if phase in s.timings]
        out[f"actor_{phase}_s"] = float(np.mean(vals)) if vals else float("nan")
    return out


def policy_lags(segments: list[Any], version: int) -> dict[str, float]:
    """How stale the segments of the update that just made ``version`` were: versions between the
    weights each used and the update's start (``version - 1``)."""
    lags = [version - 1 - s.version for s in segments]
    return {"policy_lag_mean": float(np.mean(lags)), "policy_lag_max": int(max(lags))}


class Supervisor(Protocol):
    """What the learner needs of the actor supervisor of its machine (local mode): restarts, and why none is left."""

    restarts: int  # actor processes restarted so far

    def poll(self) -> int: ...  # restarts dead children; returns restarts so far

    def gave_up(self) -> str | None: ...  # why no actor is left, once none is


class EpisodeSource(Protocol):
    """What episode records need of a segment: its sender, its policy version and its episodes."""

    actor: int
    version: int
    episodes: list[dict[str, Any]]


class RunStats:
    """Counters (agent_steps, rejected_messages, dropped_stale_segments, episodes, warmup_frames; the
    update count is the learner's version), the run-wide exploration counts, the recent episodes
    (return, length, rooms, cells), rejections by reason, and time and restarts across resumes."""

    def __init__(self, restarts: Callable[[], int] = lambda: 0):
        self.counters: dict[str, int] = {
            "agent_steps": 0,
            "rejected_messages": 0,
            "dropped_stale_segments": 0,
            "episodes": 0,
            "warmup_frames": 0,
        }
        self.exploration = ExplorationStats()
        self.recent: deque[tuple[float, int, int, int]] = deque(maxlen=RECENT_EPISODES)
        self.rejected_by_reason: Counter[str] = Counter()
        self.elapsed_before, self.restarts_before = 0.0, 0
        self._restarts = restarts  # actor restarts by this process's supervisor
        self._step_times: deque[tuple[float, int]] = deque(maxlen=STEP_RATE_WINDOW + 1)
        self._start = time.monotonic()
        self._lock = threading.Lock()

    # ---- counting ----------------------------------------------------------------------------------
    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to counter ``key`` (any thread)."""
        with self._lock:
            self.counters[key] += n

    def snapshot(self, version: int) -> dict[str, int]:
        """The counters as checkpoints name them: the update (``version``) first, then the rest."""
        with self._lock:
            return {"update": version, **self.counters}

    def note_rejection(self, reason: str) -> tuple[str, bool]:
        """Count one rejected message of ``reason``; returns the reason it is tabled under (OTHER_REASONS
        once MAX_REJECT_REASONS are known: a peer varying its faults must not grow the table) and
        whether it is the first of its kind."""
        with self._lock:
            self.counters["rejected_messages"] += 1
            if reason not in self.rejected_by_reason and len(self.rejected_by_reason) >= MAX_REJECT_REASONS:
                reason = OTHER_REASONS
            first = self.rejected_by_reason[reason] == 0
            self.rejected_by_reason[reason] += 1
        return reason, first

    def record_episodes(self, segments: Iterable[EpisodeSource], version: int) -> list[dict[str, Any]]:
        """Count the segments' episodes (exploration, recent means, the episodes counter); returns one
        record per episode for episodes.jsonl, cells replaced by their count."""
        records = []
        for seg in segments:
            for e in seg.episodes:
                rooms, cells = self.exploration.add_episode(e)
                self.recent.append((float(e["return"]), int(e["length"]), rooms, cells))
                record = {k: v for k, v in e.items() if k != "cells"}  # the run-wide counts keep the cells
                if "cells" in e:
                    record["cells_visited"] = cells
                records.append(
                    {
                        **record,
                        "update": version,
                        "agent_steps": self.counters["agent_steps"],
                        "actor": seg.actor,
                        "policy_version": seg.version,
                    }
                )
        self.count("episodes", len(records))
        return records

    # ---- reporting ---------------------------------------------------------------------------------
    def episode_means(self) -> dict[str, float]:
        """Means over the recent episodes (NaN before any): return, length, rooms, cells."""
        recent = np.array(self.recent, dtype=np.float64).reshape(-1, 4)
        names = ("episode_return_mean", "episode_length_mean", "rooms_per_episode_mean", "cells_per_episode_mean")
        return {n: recent[:, i].mean() if len(recent) else float("nan") for i, n in enumerate(names)}

    def steps_per_second(self) -> float:
        """Note the agent steps now (once per update); the rate over the last STEP_RATE_WINDOW updates."""
        self._step_times.append((time.monotonic(), self.counters["agent_steps"]))
        (t0, s0), (t1, s1) = self._step_times[0], self._step_times[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else float("nan")

    def elapsed_s(self) -> float:
        """Training wall time, summed over resumed sessions."""
        return self.elapsed_before + time.monotonic() - self._start

    def forget_totals(self) -> None:
        """Zero what a learner rank other than 0 counts as its own share (rank 0 holds the run's totals)."""
        for k in ("rejected_messages", "dropped_stale_segments", "episodes"):
            self.counters[k] = 0
        self.restarts_before = 0

    def actor_restarts(self) -> int:
        """Actor restarts, summed over resumed sessions."""
        return self.restarts_before + self._restarts()

    # ---- checkpoints -------------------------------------------------------------------------------
    def state(self, version: int) -> dict[str, Any]:
        """The checkpoint's counters (with the update, ``version``), exploration, recent_episodes,
        elapsed_s and actor_restarts entries."""
        return {
            "counters": self.snapshot(version),
            "exploration": self.exploration.state(),
            "recent_episodes": [list(r) for r in self.recent],
            "elapsed_s": self.elapsed_s(),
            "actor_restarts": self.actor_restarts(),
        }

    def restore(self, data: dict[str, Any]) -> int:
        """Take a checkpoint's entries (see ``state``); returns its update count."""
        counters = {k: int(v) for k, v in data["counters"].items()}
        update = counters.pop("update", 0)
        self.counters.update(counters)
        self.exploration.load(data["exploration"])
        self.recent.extend((float(a), int(b), int(c), int(d)) for a, b, c, d in data["recent_episodes"])
        self.elapsed_before = float(data.get("elapsed_s", 0.0))
        self.restarts_before = int(data.get("actor_restarts", 0))
        return update
