"""One timing context manager for named phases (cf. sample-factory timing.add_time, torchbeast prof.Timings)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class Timings:
    """Accumulates wall seconds per phase name; ``split()`` returns and resets them."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def time(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.totals[phase] += time.perf_counter() - t0

    def split(self) -> dict[str, float]:
        out = dict(self.totals)
        self.totals.clear()
        return out
