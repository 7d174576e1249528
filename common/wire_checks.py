"""The wire's field checks, apart from the message layout (``common/wire.py``): typed scalars, and the
actor's phase timings of a segment (its episode records are arrays: ``common/episodes.py``). Each
failure raises ``WireError`` with a one-line reason. No sockets here."""

from __future__ import annotations

import math
from typing import Any

ACTOR_PHASES = ("infer", "env", "wait", "send")
MAX_ABS_VALUE = 1e6  # rewards and values an Atari score can produce, with margin


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
