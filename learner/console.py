"""What a learner run shows on its console: the waiting line before the first update, the progress line
with elapsed time, percent, recent rate and ETA (``RunStatus``), and the copy of the console kept in the run
dir (``ConsoleTee``, ``RUN_DIR/launch.log``)."""

from __future__ import annotations

import math
import os
import re
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

STATUS_EVERY_S = 5.0  # the waiting line before the first update
FILE_PROGRESS_EVERY_S = 10.0  # the progress line, in a file (on a terminal it redraws at every update)
RATE_WINDOW_S = 60.0  # the progress line's steps/s is over this much of the most recent time
NOBODY_HEARD_S = 30.0  # with no actor heard this long, say where the learner listens
ESTIMATE_AFTER_S = 30.0  # the run's time estimate once the rate has been measured this long


def duration(seconds: float) -> str:
    """12.3 -> '0:00:12'; 93784 -> '1d 2:03:04'."""
    s = max(0, int(seconds))
    days, s = divmod(s, 86_400)
    text = f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}d {text}" if days else text


class RunStatus:
    """What the console tells of a run's time: the waiting line before the first update (warm-up frames
    received of those needed, env streams heard of NumWorkers), one line when no actor is heard for
    ``NOBODY_HEARD_S`` (where the learner listens, with or without CURVE), and the progress fields of
    each update (elapsed, percent, steps/s over the last minute, ETA) with a one-time estimate of the
    run's length. ``clock`` and ``out`` (a text stream) are there for tests."""

    def __init__(
        self,
        total_steps: int,
        num_streams: int,
        warmup_frames: int,
        listen: str | None = None,
        curve: bool = False,
        show: bool = True,
        clock: Any = time.monotonic,
        out: Any = None,
    ):
        self.total_steps, self.num_streams, self.warmup_frames = total_steps, num_streams, warmup_frames
        self.listen, self.curve, self.show, self.clock = listen, curve, show, clock
        self.out = out if out is not None else sys.stdout
        self.tty = console_is_tty(self.out)
        self.start = clock()
        self.streams: set[int] = set()
        self.updates_seen = False
        self._last_wait_print = -math.inf
        self._said_nobody = self._said_estimate = False
        self._rates: deque[tuple[float, int]] = deque()

    def _print(self, line: str, redraw: bool = False) -> None:
        if self.tty and redraw:
            print("\r" + line, end="", file=self.out, flush=True)
        else:
            print(("\n" if self.tty and self.updates_seen else "") + line, file=self.out, flush=True)

    def hear(self, streams: Any) -> None:
        """Env stream ids heard from (in warm-up frames or segments)."""
        self.streams.update(streams)

    def waiting(self, warmup_frames: int, heard: bytes | bytearray = b"") -> None:
        """Before the first update: the waiting line every STATUS_EVERY_S, and the no-actor note once.
        ``heard[s]`` is 1 where a segment of env stream s arrived."""
        if not self.show or self.updates_seen:
            return
        self.hear(s for s, h in enumerate(heard) if h)
        now = self.clock()
        anyone = bool(self.streams) or warmup_frames > 0
        if not anyone and not self._said_nobody and now - self.start >= NOBODY_HEARD_S and self.listen:
            self._said_nobody = True
            keys = "it expects CURVE keys (--keys)" if self.curve else "it expects no keys (plaintext)"
            self._print(
                f"status: no actor heard for {now - self.start:.0f} s; the learner listens on {self.listen}, {keys}"
            )
        if now - self._last_wait_print < STATUS_EVERY_S:
            return
        self._last_wait_print = now
        self._print(self.waiting_line(warmup_frames, now), redraw=True)

    def waiting_line(self, warmup_frames: int, now: float) -> str:
        need = self.warmup_frames
        warm = (
            f"warm-up {min(warmup_frames, need):,}/{need:,} frames ({100 * min(warmup_frames, need) / need:.0f}%)"
            if need and warmup_frames < need
            else "warm-up done, waiting for the first batch"
        )
        return f"{duration(now - self.start)} | {warm} | env streams heard {len(self.streams)}/{self.num_streams}"

    def fields(self, agent_steps: int, elapsed_s: float) -> str:
        """The progress line's time fields for ``agent_steps`` done in ``elapsed_s`` (run-wide)."""
        now = self.clock()
        self.updates_seen = True
        self._rates.append((now, agent_steps))
        while len(self._rates) > 2 and now - self._rates[1][0] >= RATE_WINDOW_S:
            self._rates.popleft()
        rate = self.rate()
        pct = 100 * agent_steps / self.total_steps if self.total_steps else 100.0
        left = max(0, self.total_steps - agent_steps)
        eta = duration(left / rate) if rate else "-"
        return f"{duration(elapsed_s)} | {pct:5.1f}% | {f'{rate:,.0f}' if rate else '-':>8} steps/s | ETA {eta}"

    def rate(self) -> float | None:
        """Steps/s over the last RATE_WINDOW_S (from the oldest update within it); None before two updates."""
        (t0, s0), (t1, s1) = self._rates[0], self._rates[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and len(self._rates) > 1 else None

    def estimate(self, agent_steps: int) -> str | None:
        """Once, when the rate has been measured ESTIMATE_AFTER_S: the run's whole length at that rate."""
        rate = self.rate()
        if self._said_estimate or rate is None or self._rates[-1][0] - self._rates[0][0] < ESTIMATE_AFTER_S:
            return None
        self._said_estimate = True
        whole = self.total_steps / rate
        return (
            f"status: at {rate:,.0f} agent steps/s the run's {self.total_steps:,} steps take about "
            f"{duration(whole)} in all ({duration(max(0, self.total_steps - agent_steps) / rate)} from now)"
        )


class ConsoleTee:
    """Copies what this process writes to its stdout and stderr into ``path`` (appended), at the file
    descriptors, so that child processes that inherit them (the actors) are copied too; the console
    gets everything as before. A line redrawn in place on a terminal (``\\r``) becomes a line of its own
    in the file. Signals and exit codes are the process's as ever: only fds 1 and 2 are replaced by
    pipes, read by one daemon thread each, and ``close`` puts the originals back.

    While the tee runs, fd 1 is a pipe: ``console_is_tty`` says whether the console it feeds is a terminal."""

    def __init__(self, path: Path):
        self.file = open(path, "ab")
        self.lock = threading.Lock()
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = {fd: os.dup(fd) for fd in (1, 2)}
        global _CONSOLE_TTY
        _CONSOLE_TTY = os.isatty(self.saved[1])
        self.threads = []
        for fd in (1, 2):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            t = threading.Thread(target=self._pump, args=(r, self.saved[fd]), name=f"tee-{fd}", daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, r: int, console: int) -> None:
        """Pipe -> the console and the file, until every writer (this process, its children) has closed it."""
        line_ended = True  # whether the last byte this pipe put in the file ended a line
        try:
            while chunk := os.read(r, 1 << 16):
                _write_all(console, chunk)
                text = re.sub(rb"\r+\n?", b"\n", chunk)  # a redraw starts a new line in the file
                text = re.sub(rb"\n{2,}", b"\n", b"\n" * line_ended + text)[line_ended:]
                with self.lock:
                    if self.file.closed:  # close gave up waiting: the console alone from here
                        continue
                    self.file.write(text)
                    self.file.flush()
                line_ended = text.endswith(b"\n") if text else line_ended
        finally:
            os.close(r)

    def close(self, wait_s: float = 2.0) -> None:
        """Put the console back; wait up to ``wait_s`` for what is still in the pipes (children still
        holding them keep their write ends open: their later lines go nowhere)."""
        global _CONSOLE_TTY
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)  # closes this process's write end of the pipe
        for t in self.threads:
            t.join(wait_s)
        for saved in self.saved.values():
            os.close(saved)
        _CONSOLE_TTY = None
        with self.lock:
            self.file.close()


_CONSOLE_TTY: bool | None = None  # set while a ConsoleTee runs: whether its console is a terminal


def console_is_tty(stream: Any) -> bool:
    """Whether ``stream`` shows on a terminal, seen through a running ConsoleTee for sys.stdout/stderr."""
    if _CONSOLE_TTY is not None and stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        return _CONSOLE_TTY
    return stream.isatty()


def _write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd``; a console that went away (a closed terminal) is given up quietly."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass
