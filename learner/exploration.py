"""Run-wide exploration statistics: which rooms and cells the agent has visited, and how often.

Episodes bring ``rooms`` (room numbers entered) and ``cells`` ([cell id, agent steps], see
``common/cells.py``) as generic stats; games without them bring neither. The counts are summed
over the whole run, kept in the checkpoint, and written to ``RUN_DIR/exploration.json``.
No sockets and no files here except ``write_json`` and its reader, ``read_exploration``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from common.cells import CELL_BUCKET, cell_parts
from learner.logs import RunFileError

# Distinct cells a run keeps counts for. Montezuma's 3 levels of 24 rooms have a few hundred
# reachable cells per room; past the cap (only a hostile or broken actor gets there) new cells are
# counted in ``cells_dropped`` instead, so the learner's memory stays bounded (about 70 bytes a cell).
MAX_RUN_CELLS = 1 << 17


class ExplorationStats:
    """Visit counts of rooms (episodes that entered each) and of cells (agent steps spent in each)."""

    def __init__(self) -> None:
        self.room_episodes: Counter[int] = Counter()
        self.cell_steps: Counter[int] = Counter()
        self.cells_dropped = 0

    def add_episode(self, episode: dict[str, Any]) -> tuple[int, int]:
        """Count one validated episode record; returns (rooms, cells) it visited. Its cells are
        [cell id, steps] pairs, or a uint32 [n, 2] array as they come off the wire (made into Python
        ints here, on the main thread, for the episodes that are used only)."""
        rooms, cells = episode.get("rooms", []), episode.get("cells", [])
        cells = cells.tolist() if isinstance(cells, np.ndarray) else cells
        self.room_episodes.update(rooms)
        for cid, steps in cells:
            if cid in self.cell_steps or len(self.cell_steps) < MAX_RUN_CELLS:
                self.cell_steps[cid] += steps
            else:
                self.cells_dropped += 1
        return len(rooms), len(cells)

    @property
    def rooms_visited(self) -> int:
        return len(self.room_episodes)

    @property
    def cells_visited(self) -> int:
        return len(self.cell_steps)

    def room_steps(self) -> Counter[int]:
        """Agent steps spent in each room, summed from its cells."""
        out: Counter[int] = Counter()
        for cid, steps in self.cell_steps.items():
            out[cell_parts(cid).room] += steps
        return out

    # ---- state ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Plain ints and lists only: it goes into a ``weights_only`` checkpoint."""
        return {
            "room_episodes": sorted([r, n] for r, n in self.room_episodes.items()),
            "cell_steps": sorted([c, n] for c, n in self.cell_steps.items()),
            "cells_dropped": self.cells_dropped,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.room_episodes = Counter({int(r): int(n) for r, n in state["room_episodes"]})
        self.cell_steps = Counter({int(c): int(n) for c, n in state["cell_steps"]})
        self.cells_dropped = int(state["cells_dropped"])

    def to_json(self, update: int, agent_steps: int, episodes: int) -> dict[str, Any]:
        """The run-wide counts as ``exploration.json`` holds them."""
        room_steps = self.room_steps()
        rooms = sorted(set(self.room_episodes) | set(room_steps))
        cells = [{**cell_parts(c)._asdict(), "steps": n} for c, n in sorted(self.cell_steps.items())]
        return {
            "update": update,
            "agent_steps": agent_steps,
            "episodes": episodes,
            "cell_bucket": CELL_BUCKET,
            "rooms_visited_total": self.rooms_visited,
            "cells_visited_total": self.cells_visited,
            "cells_dropped": self.cells_dropped,
            "rooms": {str(r): {"episodes": self.room_episodes.get(r, 0), "steps": room_steps.get(r, 0)} for r in rooms},
            "cells": cells,
        }

    def write_json(self, path: Path, update: int, agent_steps: int, episodes: int) -> None:
        """Write ``to_json`` atomically (a reader never sees half a file)."""
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(update, agent_steps, episodes)))
        os.replace(tmp, path)


CELL_KEYS = ("level", "room", "x_bucket", "y_bucket", "steps")  # each cell of exploration.json, all integers


def read_exploration(path: Path) -> dict[str, Any]:
    """``RUN_DIR/exploration.json`` as ``to_json`` made it.

    ``write_json`` replaces the file whole, so damage is the whole file's: one cut short, not JSON, or
    not such a record (``cells`` a list of objects with integer ``CELL_KEYS``, ``rooms`` an object)
    raises ``RunFileError`` with one line naming the file. A missing file raises FileNotFoundError.
    """
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError alike
        raise RunFileError(f"{path}: cut short or not JSON ({e})") from None
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list) or not isinstance(data.get("rooms"), dict):
        raise RunFileError(f"{path}: not an exploration record (no cells list and rooms object)")
    for c in cells:
        if not isinstance(c, dict) or not all(
            isinstance(c.get(k), int) and not isinstance(c[k], bool) for k in CELL_KEYS
        ):
            raise RunFileError(f"{path}: not an exploration record (a cell without integer {', '.join(CELL_KEYS)})")
    return data
