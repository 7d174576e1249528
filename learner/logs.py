"""Run-dir logs: metrics.csv (one row per update), TensorBoard, episodes.jsonl, a live console line.

Every metric has one stable bare name (the CSV column) and one namespace; its TensorBoard tag is
``namespace/name``. The CSV columns are fixed by ``METRICS`` so that resumed runs append cleanly.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import secrets
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

# name -> namespace, in CSV column order
METRICS: dict[str, str] = {
    "update": "charts",
    "agent_steps": "charts",
    "frames": "charts",
    "time_s": "perf",
    "ext_reward_per_rollout": "charts",
    "int_reward_per_rollout": "charts",
    "episode_return_mean": "charts",
    "episode_length_mean": "charts",
    "episodes": "charts",
    "rooms_visited_total": "charts",
    "rooms_per_episode_mean": "charts",
    "cells_visited_total": "charts",
    "cells_per_episode_mean": "charts",
    "policy_loss": "losses",
    "value_loss": "losses",
    "entropy": "losses",
    "rnd_loss": "losses",
    "approx_kl": "losses",
    "clip_fraction": "losses",
    "explained_var_ext": "losses",
    "explained_var_int": "losses",
    "grad_norm": "losses",
    "vtrace_rho_mean": "losses",
    "int_reward_raw_mean": "rnd",
    "reward_rms_std": "rnd",
    "obs_rms_mean": "rnd",
    "policy_lag_mean": "perf",
    "policy_lag_max": "perf",
    "steps_per_second": "perf",
    "wait_data_s": "perf",
    "learn_s": "perf",
    "actor_infer_s": "perf",
    "actor_env_s": "perf",
    "actor_wait_s": "perf",
    "actor_send_s": "perf",
    "rejected_messages": "perf",
    "dropped_stale_segments": "perf",
    "actor_restarts": "perf",
}


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
        heard = bool(self.streams) or warmup_frames > 0
        if not heard and not self._said_nobody and now - self.start >= NOBODY_HEARD_S and self.listen:
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


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def _keep_rows_up_to(path: Path, update: int, update_of: Any, header: bool) -> None:
    """Rewrite ``path`` without the rows whose update number is above ``update``."""
    lines = path.read_text().splitlines(keepends=True)
    head, body = (lines[:1], lines[1:]) if header else ([], lines)
    kept = [ln for ln in body if ln.strip() and update_of(ln) <= update]
    if len(kept) != len(body):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("".join(head + kept))
        tmp.replace(path)


class RunLogger:
    """Owns the run dir's log files; a resumed run continues them."""

    def __init__(
        self,
        run_dir: Path,
        resume_update: int | None = None,
        tensorboard: bool = True,
        purge_step: int | None = None,
        progress: bool = True,
        status: RunStatus | None = None,
    ):
        """``resume_update``: continue the logs of a run resumed at that update (rows after it, written
        after its checkpoint by a run that then died, are dropped so that none appears twice).
        ``progress``: print the live console line (off: ``progress`` prints nothing; the files are kept as ever).
        ``status``: the run's time and waiting lines (default: one knowing only what ``progress`` is told)."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        csv_path, ep_path = self.run_dir / "metrics.csv", self.run_dir / "episodes.jsonl"
        resuming = resume_update is not None and csv_path.exists()
        if resuming:
            _keep_rows_up_to(csv_path, resume_update, lambda line: int(line.split(",", 1)[0]), header=True)
            if ep_path.exists():
                _keep_rows_up_to(ep_path, resume_update, lambda line: int(json.loads(line)["update"]), header=False)
        self._csv_file = open(csv_path, "a" if resuming else "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=list(METRICS), extrasaction="ignore")
        if not resuming:
            self._csv.writeheader()
        self._episodes = open(ep_path, "a" if resuming else "w")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge_step)
        self.status = status if status is not None else RunStatus(0, 0, 0, show=progress)
        self._tty = self.status.tty
        self._show_progress = progress
        self._last_print = -math.inf

    def log_update(self, row: dict[str, Any]) -> None:
        unknown = set(row) - set(METRICS)
        if unknown:
            raise KeyError(f"metrics without a registered name: {sorted(unknown)}")
        self._csv.writerow({k: _fmt(v) for k, v in row.items()})
        self._csv_file.flush()
        if self._tb is not None:
            step = int(row["agent_steps"])
            for tag, v in tags(row).items():
                self._tb.add_scalar(tag, v, step)

    def log_episodes(self, records: list[dict[str, Any]]) -> None:
        for r in records:
            self._episodes.write(json.dumps(r) + "\n")
        if records:
            self._episodes.flush()

    def progress(self, row: dict[str, Any], total_steps: int) -> None:
        """One live line: on a terminal it redraws in place; in a file, one line every 10 s; none if off.
        Its time fields (``RunStatus.fields``) count every update, printed or not."""
        st = self.status
        st.total_steps = total_steps
        times = st.fields(int(row["agent_steps"]), float(row.get("time_s", 0.0)))
        if not self._show_progress:
            return
        estimate = st.estimate(int(row["agent_steps"]))
        if estimate is not None:
            print(("\n" if self._tty else "") + estimate, flush=True)
        now = time.monotonic()
        if not self._tty and now - self._last_print < FILE_PROGRESS_EVERY_S:
            return
        self._last_print = now
        ret = row.get("episode_return_mean", float("nan"))
        ret = f"{ret:8.1f}" if not math.isnan(ret) else f"{'-':>8}"  # no episode has ended yet
        line = (
            f"update {row['update']:>6} | steps {row['agent_steps']:>12,}/{total_steps:,} | {times} | "
            f"return {ret} | rooms {row['rooms_visited_total']:>3} | "
            f"cells {row.get('cells_visited_total', 0):>4} | lag {row['policy_lag_mean']:.2f}"
        )
        print("\r" + line if self._tty else line, end="" if self._tty else "\n", flush=True)

    def close(self) -> None:
        if self._tty and self._show_progress:  # end the line redrawn in place
            print(flush=True)
        self._csv_file.close()
        self._episodes.close()
        if self._tb is not None:
            self._tb.close()


WANDB_ID_FILE = "wandb_run_id.txt"  # a resumed run continues its W&B run


def tags(row: dict[str, Any]) -> dict[str, float]:
    """A metrics row as TensorBoard names it: ``namespace/name`` -> value, for the numbers that are
    not NaN, less the step counters (``update`` and ``agent_steps``, TensorBoard's step)."""
    return {
        f"{METRICS[k]}/{k}": v
        for k, v in row.items()
        if k not in ("update", "agent_steps") and isinstance(v, (int, float)) and not math.isnan(v)
    }


def wandb_missing() -> str | None:
    """Why Weights & Biases cannot be used here (its package is not installed), or None."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        return 'the wandb package is not installed (pip install -e ".[wandb]")'
    return None


class WandbMirror:
    """Mirrors each metrics row to a Weights & Biases run in ``project``, under the TensorBoard tags at
    step ``agent_steps``, and the run's config. Its files go to RUN_DIR/wandb; WANDB_MODE=offline keeps
    them there only. A resumed run continues the W&B run whose id RUN_DIR/wandb_run_id.txt holds."""

    def __init__(self, project: str, run_dir: Path, config: dict[str, Any]):
        import wandb

        id_file = Path(run_dir) / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        try:
            self.run = wandb.init(
                project=project, dir=str(run_dir), name=Path(run_dir).name, id=run_id, resume="allow", config=config
            )
        except Exception as e:  # no login, no network: W&B's own errors are of many types
            raise RuntimeError(f"wandb.init: {type(e).__name__}: {e}") from None
        id_file.write_text(run_id + "\n")

    def log(self, row: dict[str, Any]) -> None:
        self.run.log(tags(row), step=int(row["agent_steps"]))

    def close(self) -> None:
        self.run.finish()


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
