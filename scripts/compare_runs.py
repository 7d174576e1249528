"""Compare training runs per agent step: episode return and rooms, binned over the common step range.

    python scripts/compare_runs.py runs/sync runs/async --labels sync,async --bins 10 --markdown cmp.md

Each RUN_DIR needs the ``metrics.csv`` and ``episodes.jsonl`` a training run writes, read by learner/logs.py's
readers (a damaged line, cut short, binary or not a record, is skipped, and a note on stderr counts them),
or is a folder holding the TensorBoard log of CleanRL's ``ppo_rnd_envpool.py`` (its ``runs/`` folder: the
``charts/episodic_return`` and ``charts/SPS`` scalars are read). ``--axis time`` bins by wall seconds
since the run's start instead of agent steps (the summary stays per agent step).
An episode is placed by the learner's agent step count when it was consumed; bins are (lo, hi] in agent
steps, the first one also holding step 0. Bad input: one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from learner.logs import RunFileError, read_episodes, read_metrics

DASH = "–"


class InputError(Exception):
    """Bad command line or run directory; the CLI prints it as one line and exits 2."""


@dataclass
class Run:
    label: str
    metrics: dict[str, np.ndarray]  # CSV column -> (U,) float64 over updates, NaN for empty cells
    steps: np.ndarray  # (N,) int64, agent steps when each episode was consumed
    returns: np.ndarray  # (N,) float64, raw game score
    rooms: list[frozenset[int] | None]  # N entries; None where the episode has no rooms (games without)


@dataclass
class Bin:
    lo: float  # agent steps, exclusive (except for the first bin)
    hi: float  # agent steps, inclusive
    episodes: int
    return_mean: float  # NaN when no episode ended in the bin
    rooms_mean: float  # distinct rooms per episode; NaN when none
    rooms_total: int | None  # distinct rooms seen by the run up to hi; None if no episode has rooms


def note_skipped(path: Path, skipped: int) -> None:
    """Damaged lines the reader left out (learner/logs.py's rule): one note on stderr, the comparison goes on."""
    if skipped:
        print(f"compare_runs: note: {path}: skipped {skipped} damaged line{'s' * (skipped > 1)}", file=sys.stderr)


def load_metrics(path: Path) -> dict[str, np.ndarray]:
    """metrics.csv -> column -> (U,) float64 array over its whole rows; empty cells become NaN."""
    if not path.is_file():
        raise InputError(f"{path}: no such file (not a run directory?)")
    try:
        rows, skipped = read_metrics(path)
    except RunFileError as e:
        raise InputError(str(e)) from None
    note_skipped(path, skipped)
    need = ("agent_steps", "time_s", "steps_per_second", "policy_lag_mean")
    missing = [c for c in need if not rows or c not in rows[0]]
    if not rows or missing:
        raise InputError(f"{path}: no rows" if not rows else f"{path}: missing columns {missing}")
    return {c: np.array([r[c] for r in rows]) for c in rows[0]}


def load_episodes(path: Path) -> tuple[np.ndarray, np.ndarray, list[frozenset[int] | None]]:
    """episodes.jsonl -> (steps (N,) int64, returns (N,) float64, rooms per episode) of its whole records."""
    if not path.is_file():
        raise InputError(f"{path}: no such file (not a run directory?)")
    episodes, skipped = read_episodes(path)
    note_skipped(path, skipped)
    steps = np.array([e["agent_steps"] for e in episodes], dtype=np.int64)
    returns = np.array([e["return"] for e in episodes], dtype=np.float64)
    rooms = [None if e.get("rooms") is None else frozenset(e["rooms"]) for e in episodes]
    return steps, returns, rooms


def load_run(run_dir: Path, label: str) -> Run:
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such directory")
    metrics = load_metrics(run_dir / "metrics.csv")
    if np.isnan(metrics["agent_steps"]).all():
        raise InputError(f"{run_dir / 'metrics.csv'}: no agent_steps in any row")
    return Run(label, metrics, *load_episodes(run_dir / "episodes.jsonl"))


def load_cleanrl_run(run_dir: Path, label: str) -> Run:
    """A folder holding one CleanRL TensorBoard log -> Run: an episode per ``charts/episodic_return`` event (its
    global step, the raw game score), an update per ``charts/SPS`` event (time from the log's first event)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = sorted(run_dir.rglob("events.out.tfevents.*"))
    if len(logs) != 1:
        raise InputError(f"{run_dir}: {len(logs)} TensorBoard logs, need exactly one")
    acc = EventAccumulator(str(logs[0]), size_guidance={"scalars": 0})
    try:
        acc.Reload()
        tags = acc.Tags()["scalars"]
        if "charts/SPS" not in tags:
            raise InputError(f"{logs[0]}: no charts/SPS scalars (not a CleanRL log, or no update finished)")
        sps = acc.Scalars("charts/SPS")
        eps = acc.Scalars("charts/episodic_return") if "charts/episodic_return" in tags else []
    except Exception as e:  # a corrupt log: one line, not a traceback
        if isinstance(e, InputError):
            raise
        raise InputError(f"{logs[0]}: unreadable TensorBoard log ({type(e).__name__}: {e})") from None
    t0 = acc.FirstEventTimestamp()
    metrics = {
        "agent_steps": np.array([e.step for e in sps], dtype=np.float64),
        "time_s": np.array([e.wall_time - t0 for e in sps]),
        "steps_per_second": np.array([e.value for e in sps], dtype=np.float64),
        "policy_lag_mean": np.zeros(len(sps)),
    }
    steps = np.array([e.step for e in eps], dtype=np.int64)
    return Run(label, metrics, steps, np.array([e.value for e in eps], dtype=np.float64), [None] * len(eps))


def load_any_run(run_dir: Path, label: str) -> Run:
    """A training run's folder, or else a CleanRL TensorBoard log's."""
    if not (run_dir / "metrics.csv").is_file() and run_dir.is_dir() and any(run_dir.rglob("events.out.tfevents.*")):
        return load_cleanrl_run(run_dir, label)
    return load_run(run_dir, label)


def on_time_axis(run: Run) -> Run:
    """The run with wall seconds in place of agent steps: each episode at the time its agent step count was
    reached (interpolated between updates), each update at its time_s."""
    m = run.metrics
    ok = ~np.isnan(m["agent_steps"]) & ~np.isnan(m["time_s"])
    t = np.interp(run.steps, m["agent_steps"][ok], m["time_s"][ok])
    return Run(run.label, {**m, "agent_steps": m["time_s"]}, np.round(t).astype(np.int64), run.returns, run.rooms)


def common_steps(runs: list[Run], max_steps: int | None = None) -> int:
    """The agent steps every run reached (the smallest final count), capped at ``max_steps``."""
    stop = min(int(np.nanmax(r.metrics["agent_steps"])) for r in runs)
    return min(stop, max_steps) if max_steps is not None else stop


def bin_index(steps: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N,) agent steps -> (N,) bin index into (lo, hi] bins; -1 outside [0, edges[-1]]."""
    idx = np.searchsorted(edges, steps, side="left") - 1
    idx[steps == edges[0]] = 0  # step 0 belongs to the first bin
    idx[(steps < edges[0]) | (steps > edges[-1])] = -1
    return idx


def bin_run(run: Run, stop: int, bins: int) -> list[Bin]:
    """Split [0, stop] agent steps into ``bins`` equal bins and summarise the run's episodes in each."""
    edges = np.linspace(0.0, stop, bins + 1)
    idx = bin_index(run.steps, edges)
    has_rooms = any(r is not None for r in run.rooms)
    seen: set[int] = set()
    out = []
    for b in range(bins):
        sel = np.flatnonzero(idx == b)
        counts = [len(run.rooms[i]) for i in sel if run.rooms[i] is not None]
        for i in sel:
            seen |= run.rooms[i] or frozenset()  # union, since rooms_visited_total counts distinct rooms
        out.append(
            Bin(
                edges[b],
                edges[b + 1],
                len(sel),
                float(run.returns[sel].mean()) if len(sel) else math.nan,
                float(np.mean(counts)) if counts else math.nan,
                len(seen) if has_rooms else None,
            )
        )
    return out


def summarise(run: Run, bins: list[Bin], stop: int) -> dict[str, float]:
    """Per-run numbers over the common range: rows with agent_steps <= stop, episodes in (0, stop]."""
    m = run.metrics
    used = m["agent_steps"] <= stop
    last = np.flatnonzero(used)[-1] if used.any() else None

    def mean(col: str) -> float:
        v = m[col][used]
        v = v[~np.isnan(v)]
        return float(v.mean()) if len(v) else math.nan

    def wall_rate() -> float:
        """Agent steps per wall second from the first used row to the last (not a mean of per-update rates)."""
        rows = np.flatnonzero(used)
        if len(rows) < 2:
            return math.nan
        dt = m["time_s"][rows[-1]] - m["time_s"][rows[0]]
        return float((m["agent_steps"][rows[-1]] - m["agent_steps"][rows[0]]) / dt) if dt > 0 else math.nan

    late = (run.steps > 0.8 * stop) & (run.steps <= stop)  # episodes in the last 20% of the range
    per_bin = [b.return_mean for b in bins if b.episodes]
    rooms = bins[-1].rooms_total if bins else None
    return {
        "agent_steps": float(m["agent_steps"][last]) if last is not None else math.nan,
        "time_s": float(m["time_s"][last]) if last is not None else math.nan,
        "steps_per_second": wall_rate(),
        "policy_lag_mean": mean("policy_lag_mean"),
        "return_last20": float(run.returns[late].mean()) if late.any() else math.nan,
        "rooms_total": math.nan if rooms is None else float(rooms),
        "return_auc": float(np.mean(per_bin)) if per_bin else math.nan,
    }


def _f(v: float | None, fmt: str) -> str:
    return DASH if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def render(runs: list[Run], binned: list[list[Bin]], summaries: list[dict[str, float]]) -> str:
    """Both markdown tables: bins x (episodes, return, rooms/ep, rooms total) per run, then the summary."""
    head = ["agent steps"] + [f"{r.label} {c}" for r in runs for c in ("episodes", "return", "rooms/ep", "rooms")]
    lines = ["## Return and rooms per agent step", "", "| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for i, b in enumerate(binned[0]):
        cells = [f"{round(b.lo)}–{round(b.hi)}"]
        for bins in binned:
            c = bins[i]
            cells += [str(c.episodes), _f(c.return_mean, ".1f"), _f(c.rooms_mean, ".2f"), _f(c.rooms_total, "d")]
        lines.append("| " + " | ".join(cells) + " |")
    cols = [
        ("agent_steps", ".0f"),
        ("time_s", ".1f"),
        ("steps_per_second", ".1f"),
        ("policy_lag_mean", ".2f"),
        ("return_last20", ".1f"),
        ("rooms_total", ".0f"),
        ("return_auc", ".1f"),
    ]
    names = [
        "agent steps",
        "wall time (s)",
        "steps/s",
        "policy lag",
        "return (last 20%)",
        "rooms",
        "mean binned return",
    ]
    lines += ["", "## Summary", "", "| run | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for r, s in zip(runs, summaries, strict=True):
        lines.append(f"| {r.label} | " + " | ".join(_f(s[k], fmt) for k, fmt in cols) + " |")
    return "\n".join(lines) + "\n"


def time_table(runs: list[Run], bins: int) -> str:
    """The binned table over the wall seconds every run reached, its step columns read as seconds."""
    timed = [on_time_axis(r) for r in runs]
    stop = common_steps(timed)
    binned = [bin_run(r, stop, bins) for r in timed]
    text = render(timed, binned, [summarise(r, b, stop) for r, b in zip(timed, binned, strict=True)])
    return (
        text.split("\n## Summary", 1)[0]
        .replace("per agent step", "per wall second")
        .replace("| agent steps |", "| wall seconds |", 1)
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line on stderr, not usage + error
        raise InputError(message)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(description=__doc__.split("\n", 1)[0])
    p.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR")
    p.add_argument("--labels", help="comma-separated, one per run (default: the directory names)")
    p.add_argument("--bins", type=int, default=10)
    p.add_argument("--max-steps", type=int, help="cap of the compared agent-step range")
    p.add_argument("--axis", choices=("steps", "time"), default="steps", help="bin by agent steps or wall seconds")
    p.add_argument("--markdown", type=Path, metavar="OUT.md", help="also write the tables here")
    try:
        a = p.parse_args(argv)
        if not a.run_dirs:
            raise InputError("give at least one RUN_DIR")
        labels = a.labels.split(",") if a.labels else [d.resolve().name for d in a.run_dirs]
        if len(labels) != len(a.run_dirs):
            raise InputError(f"--labels has {len(labels)} names for {len(a.run_dirs)} runs")
        if a.bins < 1 or (a.max_steps is not None and a.max_steps < 1):
            raise InputError("--bins and --max-steps must be >= 1")
        runs = [load_any_run(d, lab) for d, lab in zip(a.run_dirs, labels, strict=True)]
        stop = common_steps(runs, a.max_steps)
        binned = [bin_run(r, stop, a.bins) for r in runs]
        text = render(runs, binned, [summarise(r, b, stop) for r, b in zip(runs, binned, strict=True)])
        if a.axis == "time":
            text = time_table(runs, a.bins) + "\n## Summary (per agent step)" + text.split("## Summary", 1)[1]
        if a.markdown is not None:
            a.markdown.write_text(text)
    except (InputError, OSError) as e:
        print(f"compare_runs: error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
