"""Episode records on the wire: four arrays of a segment, not JSON, so that what a segment's header
costs to parse stays small and fixed however much its episodes carry.

An actor's episode records (``actors/rollout.py``: stream, step t in the segment, raw-score return,
length, and where the env knows them the rooms entered and the exploration cells with the steps
spent in each, ``common/cells.py``) go out as

- ``episodes``        float64 [E, 4]: stream, t, length, return (the first three integers);
- ``episode_counts``  uint32 [E, 2]: rooms and cells of each record;
- ``episode_rooms``   uint8 [R]: every record's rooms in turn, each record's increasing;
- ``episode_cells``   uint32 [C, 2]: every record's [cell id, steps] in turn, ids increasing.

A segment holds one record per episode end and no other. Within a stream, an episode that ends
after another in the same segment began right after it, so its length is the steps between the two
ends; an episode has at most min(256, length + 1) rooms and min(MAX_EPISODE_CELLS, length) cells.
So one stream of one segment carries at most T records, 256 + 2T rooms and MAX_EPISODE_CELLS + T
cells (``episode_array_bytes``). Checked with numpy, a segment's records cost a few array passes,
not a Python loop per cell. No sockets here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common.cells import MAX_EPISODE_CELLS, bucket_count
from common.wire_checks import _require

MAX_EPISODE_LENGTH = 1 << 31  # agent steps; MaxStepsPerEpisode is at most 1e6
MAX_RETURN = 1e15  # a raw score; float math on larger ones overflows later
MAX_ROOMS = 256  # room numbers are bytes
ARRAYS = ("episodes", "episode_counts", "episode_rooms", "episode_cells")


def episode_array_bytes(t: int, k: int) -> int:
    """Most bytes of the four arrays of a segment of ``k`` streams of ``t`` steps."""
    return k * (t * (32 + 8) + MAX_ROOMS + 2 * t + 8 * (MAX_EPISODE_CELLS + t))


def episode_arrays(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """An actor's episode records -> the four arrays (records without rooms or cells have none)."""
    rooms = [r.get("rooms", []) for r in records]
    cells = [r.get("cells", []) for r in records]
    info = [[r["stream"], r["t"], r["length"], r["return"]] for r in records]
    return {
        "episodes": np.array(info, np.float64).reshape(-1, 4),
        "episode_counts": np.array([[len(a), len(b)] for a, b in zip(rooms, cells, strict=True)], np.uint32).reshape(
            -1, 2
        ),
        "episode_rooms": np.array([x for a in rooms for x in a], np.uint8),
        "episode_cells": np.array([c for b in cells for c in b], np.uint32).reshape(-1, 2),
    }


def check_episode_arrays(a: dict[str, np.ndarray], streams: list[int], ended: np.ndarray) -> None:
    """The four arrays against the rules above; ``ended`` bool [T, K] marks the segment's episode ends
    (terminated or truncated) of its ``streams``. Raises WireError, its text one fixed line (it is logged)."""
    ep, counts, rooms, cells = (a[n] for n in ARRAYS)
    _require(ep.dtype == np.float64 and ep.ndim == 2 and ep.shape[1] == 4, "array 'episodes' is not float64 [E, 4]")
    n = ep.shape[0]
    _require(counts.dtype == np.uint32 and counts.shape == (n, 2), "array 'episode_counts' is not uint32 [E, 2]")
    _require(rooms.dtype == np.uint8 and rooms.ndim == 1, "array 'episode_rooms' is not uint8 [R]")
    _require(cells.dtype == np.uint32 and cells.ndim == 2 and cells.shape[1] == 2, "array 'episode_cells' not [C, 2]")
    _require(n == int(ended.sum()), "not one episode record per episode end")
    _require(bool(np.isfinite(ep).all()), "episode records hold non-finite numbers")
    ints = ep[:, :3]
    _require(bool((ints == np.floor(ints)).all()), "episode stream, step or length is not an integer")
    _require(bool((np.abs(ep[:, 3]) < MAX_RETURN).all()), "bad episode return")
    length = ep[:, 2]
    _require(bool(((length > 0) & (length <= MAX_EPISODE_LENGTH)).all()), "bad episode length")
    col, t = _columns(ep, streams, ended)
    _check_lengths(col, t, length)
    _check_counts(counts, length, len(rooms), len(cells))
    _check_runs(rooms.astype(np.int64), counts[:, 0], "episode rooms are not increasing")
    _check_cells(cells, counts[:, 1], length)


def _columns(ep: np.ndarray, streams: list[int], ended: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each record's column in the segment and step, once each is an episode end of the segment."""
    lut = np.full(max(streams) + 1, -1, np.int64)
    lut[streams] = np.arange(len(streams))
    stream, t = ep[:, 0], ep[:, 1]
    _require(bool(((stream >= 0) & (stream < len(lut))).all()), "episode record of a stream not in this segment")
    col = lut[stream.astype(np.int64)]
    _require(bool((col >= 0).all()), "episode record of a stream not in this segment")
    _require(bool(((t >= 0) & (t < ended.shape[0])).all()), "episode record step out of range")
    t = t.astype(np.int64)
    _require(bool(ended[t, col].all()), "episode record where the segment has no episode end")
    _require(len(np.unique(t * len(streams) + col)) == len(t), "two episode records of one episode end")
    return col, t


def _check_lengths(col: np.ndarray, t: np.ndarray, length: np.ndarray) -> None:
    """An episode that ends after another of its stream in the segment is the steps between the two."""
    order = np.lexsort((t, col))
    c, s, ln = col[order], t[order], length[order]
    later = c[1:] == c[:-1]
    _require(bool((ln[1:][later] == (s[1:] - s[:-1])[later]).all()), "episode length is not the steps since its start")


def _check_counts(counts: np.ndarray, length: np.ndarray, rooms: int, cells: int) -> None:
    n_rooms, n_cells = counts[:, 0].astype(np.int64), counts[:, 1].astype(np.int64)
    _require(bool((n_rooms <= np.minimum(MAX_ROOMS, length + 1)).all()), "more episode rooms than allowed")
    _require(bool((n_cells <= np.minimum(MAX_EPISODE_CELLS, length)).all()), "more episode cells than allowed")
    _require(int(n_rooms.sum()) == rooms and int(n_cells.sum()) == cells, "episode counts do not match their arrays")


def _check_runs(values: np.ndarray, sizes: np.ndarray, why: str) -> None:
    """``values`` holds consecutive runs of ``sizes``; each run must be strictly increasing."""
    if len(values) < 2:
        return
    first = np.zeros(len(values), bool)
    starts = np.cumsum(sizes.astype(np.int64))[:-1]
    first[starts[starts < len(values)]] = True
    _require(bool(((np.diff(values) > 0) | first[1:]).all()), why)


def _check_cells(cells: np.ndarray, sizes: np.ndarray, length: np.ndarray) -> None:
    """[cell id, steps] runs: ids increasing with buckets in range, steps positive and adding up to
    their episode's length."""
    if len(cells) == 0:
        return
    ids, steps = cells[:, 0].astype(np.int64), cells[:, 1].astype(np.int64)
    nb = bucket_count()
    _require(bool((((ids >> 8) & 0xFF) < nb).all() and ((ids & 0xFF) < nb).all()), "episode cell bucket out of range")
    _require(bool((steps > 0).all()), "episode cell steps are not positive")
    _check_runs(ids, sizes, "episode cell ids are not increasing")
    has = sizes > 0
    starts = np.concatenate([[0], np.cumsum(sizes.astype(np.int64))[:-1]])[has]
    sums = np.add.reduceat(steps, starts)
    _require(bool((sums == length[has]).all()), "episode cell steps do not add up to its length")


def episode_records(a: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Checked arrays -> the records as the actor made them, in the order sent: Python numbers, rooms
    and cells only where a record has some, and cells as a view of the uint32 [n, 2] array (made into
    Python ints only for an episode that is counted: ``learner/exploration.py``)."""
    ep, counts = a["episodes"], a["episode_counts"].astype(np.int64)
    rooms, cells = a["episode_rooms"].tolist(), a["episode_cells"]
    out, r0, c0 = [], 0, 0
    for (stream, t, length, ret), (nr, nc) in zip(ep.tolist(), counts.tolist(), strict=True):
        rec: dict[str, Any] = {"stream": int(stream), "t": int(t), "return": ret, "length": int(length)}
        if nr:
            rec["rooms"] = rooms[r0 : r0 + nr]
        if nc:
            rec["cells"] = cells[c0 : c0 + nc]
        out.append(rec)
        r0, c0 = r0 + nr, c0 + nc
    return out


def plain_record(record: dict[str, Any]) -> dict[str, Any]:
    """An episode record with its cells as Python lists, as JSON takes it (another rank's records
    travel to rank 0 as JSON)."""
    cells = record.get("cells")
    return {**record, "cells": cells.tolist()} if isinstance(cells, np.ndarray) else record
