"""Exploration cells: where an agent has been, as one small int per place.

A cell is (level, room, x bucket, y bucket) of the player's position, the standard exploration
measure on Montezuma's Revenge (Go-Explore's domain-knowledge cells). Which RAM bytes hold those
four numbers is an env fact and lives in ``actors/env.py``; this module only fixes the cell's
format, so that actors, the wire, the learner and the study report agree on it.

The bucket is 8 RAM position units. In 5 random-action episodes of the first room (2,842 steps)
the player's x ran over [24, 145] and y over [148, 252], so a room holds about 16 x 14 buckets.
At 8 units, standing or jittering on the spot counts once, while the top platform, each ladder,
the rope and each floor fall in different cells. Those 5 episodes visited 43 cells at 16 units,
125 at 8 and 317 at 4: 16 units merges places a curious agent tells apart within a room, 4
mostly counts small steps.
"""

from __future__ import annotations

from typing import NamedTuple

CELL_BUCKET = 8  # RAM position units per bucket, in x and in y
MAX_CELL = (1 << 32) - 1  # level, room, x bucket, y bucket: one byte each
MAX_EPISODE_CELLS = 4096  # distinct cells one episode's stats may list (on the wire)


class Cell(NamedTuple):
    level: int
    room: int
    x_bucket: int
    y_bucket: int


def cell_id(level: int, room: int, x: int, y: int) -> int:
    """Raw RAM values (each 0..255) -> the packed cell id (level, room, x // bucket, y // bucket)."""
    return (level << 24) | (room << 16) | ((x // CELL_BUCKET) << 8) | (y // CELL_BUCKET)


def cell_parts(cid: int) -> Cell:
    """Packed cell id -> its four parts."""
    return Cell((cid >> 24) & 0xFF, (cid >> 16) & 0xFF, (cid >> 8) & 0xFF, cid & 0xFF)


def bucket_count() -> int:
    """Buckets per axis: positions are bytes, 0..255."""
    return 256 // CELL_BUCKET
