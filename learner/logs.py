"""Run-dir logs: metrics.csv (one row per update), TensorBoard, episodes.jsonl, a live console line.

Every metric has one stable bare name (the CSV column) and one namespace; its TensorBoard tag is
``namespace/name``. The CSV columns are fixed by ``METRICS`` so that resumed runs append cleanly.

``read_metrics`` and ``read_episodes`` read the two files back, for every tool that reads a run
folder. Their one rule for a damaged line (cut short by a killed run, binary, or valid text that is
not a record): it is skipped and counted, and the reader returns the rows with that count.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from learner.console import FILE_PROGRESS_EVERY_S, RunStatus

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


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def _keep_rows_up_to(path: Path, update: int, update_of: Any, header: bool, strictly_increasing: bool) -> list[str]:
    """Rewrite ``path`` for a run resumed at ``update``: a last line without its newline (an append cut
    by a crash or a power cut) is cut off, and so are rows whose update is above ``update`` (written
    after the checkpoint) and, with ``strictly_increasing``, rows whose update is not above the row
    before (so metrics.csv stays in update order with no duplicate). A complete line whose update
    cannot be read is kept as it is: readers skip such lines. Returns what was repaired, in words."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    partial = lines.pop()  # b"" when the file ends with its newline
    head, body = (lines[:1], lines[1:]) if header else ([], lines)
    kept, past, out_of_order, last = [], 0, 0, -1
    for line in body:
        u = _update_or_none(line, update_of)
        if u is not None and u > update:
            past += 1
        elif u is not None and strictly_increasing and u <= last:
            out_of_order += 1
        elif line.strip():
            kept.append(line)
            last = last if u is None else u
    done = [f"cut a partial last line ({len(partial)} bytes)"] if partial else []
    done += [f"dropped {past} rows past update {update}"] if past else []
    done += [f"dropped {out_of_order} rows out of update order"] if out_of_order else []
    if len(kept) != len(body) or partial:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(b"".join(line + b"\n" for line in head + kept))
        tmp.replace(path)
    return [f"{path.name}: {', '.join(done)}"] if done else []


def _update_or_none(line: bytes, update_of: Any) -> int | None:
    try:
        return int(update_of(line.decode("utf-8")))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):  # JSONDecodeError is a ValueError
        return None


def _csv_update(line: str) -> int:
    return int(line.split(",", 1)[0])


def _episode_update(line: str) -> int:
    return json.loads(line)["update"]


STALE_TEMPS = ("metrics.csv.tmp", "episodes.jsonl.tmp", "exploration.json.tmp")  # this module's and exploration's


def repair_for_resume(run_dir: Path, update: int) -> str | None:
    """Make a run dir that a crash or a power cut interrupted fit to continue from the checkpoint of
    ``update``: metrics.csv and episodes.jsonl lose a partial last line and the rows written after
    that checkpoint, and the temporary files of writes that never finished are removed. Returns one
    line saying what was repaired, or None if nothing was."""
    from learner.checkpoint import remove_stale_temps

    done = []
    for name, update_of, header, increasing in (
        ("metrics.csv", _csv_update, True, True),
        ("episodes.jsonl", _episode_update, False, False),
    ):
        if (run_dir / name).is_file():
            done += _keep_rows_up_to(run_dir / name, update, update_of, header, increasing)
    temps = [run_dir / n for n in STALE_TEMPS if (run_dir / n).is_file()]
    for t in temps:
        t.unlink()
    removed = len(temps) + remove_stale_temps(run_dir / "checkpoints")
    done += [f"removed {removed} temporary files of unfinished writes"] if removed else []
    return f"resume: repaired {run_dir}: {'; '.join(done)}" if done else None


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
        if resume_update is not None:
            repaired = repair_for_resume(self.run_dir, resume_update)
            if repaired is not None:
                print(repaired, file=sys.stderr, flush=True)
        resuming = resume_update is not None and csv_path.exists()
        self._csv_file = open(csv_path, "a" if resuming else "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=list(METRICS), extrasaction="ignore")
        if not resuming:
            self._csv.writeheader()
        self._episodes = open(ep_path, "a" if resuming else "w")
        self._tb = None
        if resume_update is None and purge_step is None and any((self.run_dir / "tb").glob("events.*")):
            purge_step = 0  # a run dir reused after a run stopped before its first checkpoint: hide its curves
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


# ---- readers ------------------------------------------------------------------------------------------------
class RunFileError(ValueError):
    """A run-folder file that cannot be read at all (not one damaged line: the whole file); its message is
    one line that names the file."""


class LogRows(NamedTuple):
    """What a reader got from one log file."""

    rows: list[dict[str, Any]]  # the records, in file order
    skipped: int  # non-empty lines that were not records (damaged), left out


def read_metrics(path: Path, tail_bytes: int | None = None) -> LogRows:
    """metrics.csv -> one dict per row (column -> float; an empty cell is NaN), in file order.

    A row counts only if it is whole: its line ends in a newline (the writer ends every row with one, so a
    last line without it was cut or is still being written), it has a cell for every header column, its
    update and agent_steps are non-negative integers and every other cell is a number or empty. Every
    other non-empty line is skipped and counted. An empty file has no rows; a first line that names no
    update and agent_steps columns raises ``RunFileError``.

    ``tail_bytes``: read only about that many bytes from the end (the header still from the top), for a
    cheap look at a long live run; the partial line the tail starts in is neither read nor counted.
    """
    with open(path, "rb") as f:
        head = f.readline()
        body = f.tell()
        start = body if tail_bytes is None else max(body, os.fstat(f.fileno()).st_size - tail_bytes)
        f.seek(max(body, start - 1))  # from the byte before: if it ends a line, no line is cut
        data = f.read()
    if start > body:
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    if not head.endswith(b"\n"):  # no header yet (a run that just started): nothing to read
        return LogRows([], 0)
    columns = _csv_cells(head)
    if columns is None or "update" not in columns or "agent_steps" not in columns:
        raise RunFileError(f"{path}: not a metrics.csv (its first line names no update and agent_steps columns)")
    *lines, cut = data.split(b"\n")
    rows = [row for line in lines if (row := _metrics_row(line, columns)) is not None]
    damaged = sum(1 for line in lines if line.strip()) - len(rows) + (1 if cut.strip() else 0)
    return LogRows(rows, damaged)


def _csv_cells(line: bytes) -> list[str] | None:
    """One CSV line's cells; None if it is not UTF-8 text or not CSV (a NUL byte, say)."""
    try:
        return next(csv.reader([line.decode("utf-8").rstrip("\r\n")]))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None


def _metrics_row(line: bytes, columns: list[str]) -> dict[str, float] | None:
    """A whole metrics row, or None (see ``read_metrics`` for what whole means)."""
    cells = _csv_cells(line)
    if cells is None or len(cells) != len(columns):
        return None
    row = dict(zip(columns, cells, strict=True))
    if not all(row[k].isascii() and row[k].isdigit() for k in ("update", "agent_steps")):
        return None
    try:
        return {k: float(v) if v else math.nan for k, v in row.items()}
    except ValueError:
        return None


def read_episodes(path: Path) -> LogRows:
    """episodes.jsonl -> one dict per episode, in file order.

    A line counts only if it is a JSON object with a finite number ``return`` and a non-negative integer
    ``agent_steps`` (the learner's count when it consumed the episode), and, where present, integers
    ``length`` and ``update`` and ``rooms`` a list of integers or null. Every other non-empty line (cut
    short, binary, or valid JSON that is not such a record: ``[1,2]``, ``"x"``, ``{}``) is skipped and
    counted.
    """
    rows, skipped = [], 0
    for line in Path(path).read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
            record = None
        if _is_episode(record):
            rows.append(record)
        else:
            skipped += 1
    return LogRows(rows, skipped)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_episode(record: Any) -> bool:
    if not isinstance(record, dict):
        return False
    ret, steps, rooms = record.get("return"), record.get("agent_steps"), record.get("rooms")
    return (
        isinstance(ret, (int, float))
        and not isinstance(ret, bool)
        and math.isfinite(ret)
        and isinstance(steps, int)
        and _is_int(steps)
        and steps >= 0
        and all(_is_int(record[k]) for k in ("length", "update") if k in record)
        and (rooms is None or (isinstance(rooms, list) and all(_is_int(r) for r in rooms)))
    )


class NullLogger:
    """The logs of a learner rank other than 0: rank 0 writes the run's files for every rank. ``status``
    follows its warm-up (shown or not, as it was made)."""

    def __init__(self, status: RunStatus):
        self.status = status

    def log_update(self, row: dict[str, Any]) -> None:
        pass

    def log_episodes(self, records: list[dict[str, Any]]) -> None:
        pass

    def progress(self, row: dict[str, Any], total_steps: int) -> None:
        pass

    def close(self) -> None:
        pass


def tags(row: dict[str, Any]) -> dict[str, float]:
    """A metrics row as TensorBoard names it: ``namespace/name`` -> value, for the numbers that are
    not NaN, less the step counters (``update`` and ``agent_steps``, TensorBoard's step)."""
    return {
        f"{METRICS[k]}/{k}": v
        for k, v in row.items()
        if k not in ("update", "agent_steps") and isinstance(v, (int, float)) and not math.isnan(v)
    }
