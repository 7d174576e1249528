"""The wire's field checks, apart from the message layout (``common/wire.py``): typed scalars, and the
actor-reported records of a segment (its phase timings, its episodes and their exploration cells). Each
failure raises ``WireError`` with a one-line reason. No sockets here."""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import numpy as np

from common.cells import MAX_CELL, MAX_EPISODE_CELLS, bucket_count, cell_parts

ACTOR_PHASES = ("infer", "env", "wait", "send")
MAX_ABS_VALUE = 1e6  # rewards and values an Atari score can produce, with margin
MAX_EPISODE_LENGTH = 1 << 31  # agent steps; MaxStepsPerEpisode is at most 1e6
EPISODE_FIELDS = {"stream", "t", "return", "length", "rooms", "cells"}  # what an env's episode stats may hold


class WireError(ValueError):
    """A message that fails decoding or validation; the text is one line."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A finite JSON number of sane size (a 400-digit int would overflow float math later)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e15 and math.isfinite(v)


def _require(cond: bool, why: str) -> None:
    if not cond:
        raise WireError(why)


def _int(meta: dict, key: str, lo: int = 0, hi: int = 1 << 62) -> int:
    v: Any = meta.get(key)  # a decoded JSON value: its type is what the checks below establish
    _require(_is_int(v) and lo <= v <= hi, f"field {key!r}={v!r} out of range")
    return v


def _check_timings(tm: Any) -> None:
    """Optional actor phase seconds of its previous segment: {phase: seconds}."""
    _require(isinstance(tm, dict) and len(tm) <= 8, "field 'timings' is not a small object")
    for k, v in tm.items():
        _require(k in ACTOR_PHASES, f"unknown actor phase {k!r}")
        _require(_is_number(v) and v >= 0, f"bad actor phase seconds for {k!r}")


def _check_episodes(eps: Any, streams: list[int], ended: np.ndarray) -> None:
    """One record per episode end of the segment (``ended`` [T, K]: terminated or truncated), no more."""
    _require(isinstance(eps, list), "field 'episodes' is not a list")
    column = {s: i for i, s in enumerate(streams)}
    seen = set()
    for e in eps:
        _require(isinstance(e, dict), "episode record is not an object")
        _require(set(e) <= EPISODE_FIELDS, "episode record has unknown fields")  # a fixed text: it is logged
        _require(_is_int(e.get("stream")) and e["stream"] in column, "episode record of a stream not in this segment")
        _require(_is_int(e.get("t")) and 0 <= e["t"] < ended.shape[0], "episode record step out of range")
        _require(bool(ended[e["t"], column[e["stream"]]]), "episode record where the segment has no episode end")
        _require((e["stream"], e["t"]) not in seen, "two episode records of one episode end")
        seen.add((e["stream"], e["t"]))
        r, ln = e.get("return"), e.get("length")
        _require(_is_number(r), "bad episode return")
        _require(_is_int(ln) and 0 < ln <= MAX_EPISODE_LENGTH, "bad episode length")
        rooms = e.get("rooms", [])
        _require(
            isinstance(rooms, list)
            and all(_is_int(x) and 0 <= x <= 255 for x in rooms)
            and all(a < b for a, b in pairwise(rooms)),
            "bad episode rooms",
        )
        _check_cells(e.get("cells", []), ln)


def _check_cells(cells: Any, length: int) -> None:
    """[[cell id, steps], ...]: at most MAX_EPISODE_CELLS, ids increasing, steps adding up to the length."""
    _require(isinstance(cells, list), "episode cells is not a list")
    _require(len(cells) <= MAX_EPISODE_CELLS, f"episode lists more than {MAX_EPISODE_CELLS} cells")
    _require(
        all(
            isinstance(c, list)
            and len(c) == 2
            and _is_int(c[0])
            and 0 <= c[0] <= MAX_CELL
            and _is_int(c[1])
            and c[1] > 0
            for c in cells
        ),
        "episode cells are not [cell id, steps] pairs",
    )
    _require(all(max(cell_parts(c[0])[2:]) < bucket_count() for c in cells), "episode cell bucket out of range")
    _require(all(a[0] < b[0] for a, b in pairwise(cells)), "episode cell ids are not increasing")
    _require(not cells or sum(c[1] for c in cells) == length, "episode cell steps do not add up to its length")
