"""The study's report: report.md with its tables and figures, summary.json (one object per run) and
``eval.py`` run on each run's newest checkpoint, all written into one folder.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from study import REPO, StudyError
from study.figures import CURVES, write_figures
from study.folders import RUN_FILE, read_run_file
from study.runs import RunData, group_runs, load_studies, run_summary


# ---- checkpoints played --------------------------------------------------------------------------------
def evaluate_run(run: RunData, out: Path, episodes: int) -> dict:
    """eval.py on the run's newest checkpoint: N sticky-action episodes, the best one's GIF, an intrinsic trace."""
    if not (run.run_dir / "checkpoints" / "latest.pt").is_file():
        return {"error": "no checkpoint"}
    files = {
        "json": out / f"{run.name}_eval.json",
        "best_gif": out / f"{run.name}_best.gif",
        "int_trace": out / f"{run.name}_int_trace.png",
    }
    cmd = [
        sys.executable,
        str(REPO / "eval.py"),
        str(run.run_dir),
        "--episodes",
        str(episodes),
        "--seed",
        "0",
        "--json",
        str(files["json"]),
        "--best-gif",
        str(files["best_gif"]),
        "--int-trace",
        str(files["int_trace"]),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"eval.py exited {done.returncode}"}
    ev = json.loads(files["json"].read_text())
    return {
        "episodes": len(ev["episodes"]),
        "return_mean": ev["return_mean"],
        "return_max": ev["return_max"],
        "length_mean": ev["length_mean"],
        "rooms_visited": ev.get("rooms_visited"),
        "update": ev["update"],
        "best_gif": files["best_gif"].name,
        "int_trace": files["int_trace"].name,
        "int_trace_peaks": ev["int_trace"]["peaks"],
    }


# ---- report.md -----------------------------------------------------------------------------------------
def fmt_num(x: float | None, digits: int = 3) -> str:
    """A number for a table: thousands separated from 100 up and for integers, else ``digits`` significant."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 or float(x).is_integer() else f"{x:.{digits}g}"


def fmt_spread(values: list) -> str:
    """'mean [min, max]' over seeds (just the value for one seed); '-' for none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return fmt_num(vals[0])
    return f"{fmt_num(float(np.mean(vals)))} [{fmt_num(min(vals))}, {fmt_num(max(vals))}]"


def answers_table(groups: dict[str, list[RunData]], summary: dict[str, dict]) -> list[str]:
    """The markdown table of the answers: one row per configuration, its seeds as mean [min, max]."""
    cols = [
        ("agent steps", "agent_steps"),
        ("final return", "final_episode_return_mean"),
        ("best episode", "best_episode_return"),
        ("rooms", "rooms_visited_total"),
        ("cells", "cells_visited_total"),
        ("steps to first reward", "steps_to_first_reward"),
        ("wall s to first reward", "wall_s_to_first_reward"),
        ("wall s", "wall_s"),
        ("steps/s", "steps_per_s"),
    ]
    lines = ["| configuration | seeds | " + " | ".join(c for c, _ in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for label, runs in groups.items():
        rows = [summary[r.name] for r in runs]
        cells = []
        for _, key in cols:
            vals = [row[key] for row in rows]
            none = sum(v is None for v in vals)
            text = fmt_spread(vals)
            if key.endswith("first_reward") and none:
                text = f"none in {none}/{len(vals)}" + ("" if none == len(vals) else f"; {text}")
            cells.append(text)
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def eval_table(runs: list[RunData], summary: dict[str, dict]) -> list[str]:
    """The markdown table of eval.py's results: one row per run (its error, if eval.py could not play it)."""
    lines = [
        "| run | checkpoint update | episodes | return mean | best return | length mean | rooms | best episode |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        ev = summary[r.name].get("eval") or {}
        if "error" in ev:
            lines.append(f"| {r.name} | {ev['error']} | | | | | | |")
        elif ev:
            lines.append(
                f"| {r.name} | {ev['update']} | {ev['episodes']} | {fmt_num(ev['return_mean'])} | "
                f"{fmt_num(ev['return_max'])} | {fmt_num(ev['length_mean'])} | {ev['rooms_visited']} | "
                f"![best]({ev['best_gif']}) |"
            )
    return lines


def report_lines(
    title: str,
    command: str,
    groups: dict[str, list[RunData]],
    summary: dict[str, dict],
    figures: dict[str, str],
    eval_episodes: int,
    missing: list[str],
) -> list[str]:
    """report.md as lines: the runs, the answers, the figures and, with ``eval_episodes``, eval.py's table."""
    runs = [r for rs in groups.values() for r in rs]
    out = runs_section(title, command, runs, summary, missing)
    out += [
        "",
        "## Answers",
        "",
        "Per configuration; several seeds read as mean [min, max]. *final return* is the mean return of the last "
        "100 episodes at the end; *best episode* the highest return of any episode; *rooms* and *cells* are "
        "run totals (a cell is a level, room and 8x8 RAM-unit position bucket); *steps to first reward* the "
        "agent steps at which the first episode with a nonzero return was consumed.",
        "",
    ]
    out += answers_table(groups, summary)
    out += figures_section(figures)
    if eval_episodes:
        out += eval_section(runs, summary, eval_episodes)
    return out + [""]


def runs_section(
    title: str, command: str, runs: list[RunData], summary: dict[str, dict], missing: list[str]
) -> list[str]:
    """The report's title, the command that wrote it, and each run with its command (and the grid's runs that
    are not in the report, if any)."""
    out = [
        f"# Study: {title}",
        "",
        f"Written by `{command}` from the run folders "
        f"below; every number comes from their `metrics.csv`, `episodes.jsonl` and `exploration.json`, "
        "and from `eval.py` on their newest checkpoints.",
        "",
        "## Runs",
        "",
    ]
    for r in runs:
        info = read_run_file(r.run_dir)
        out.append(
            f"- `{r.name}` ({info.get('status', '?')}, {summary[r.name]['agent_steps']:,} agent steps): "
            f"`{info.get('command', '?')}`" + damage_note(r)
        )
    if missing:
        names = ", ".join(f"`{n}`" for n in missing)
        out += ["", f"Runs of the grid not in this report (no folder given holds a metrics.csv row of them): {names}"]
    return out


def damage_note(run: RunData) -> str:
    """What the report left out of a run's files: damaged lines skipped, a file it could not read ('' if none)."""
    notes = [f"{n} damaged line{'s' * (n > 1)} of `{f}` skipped" for f, n in run.skipped.items() if n]
    notes += [f"`{f}` unreadable, so the run is not in the maps" for f in run.unreadable]
    return f" ({'; '.join(notes)})" if notes else ""


def figures_section(figures: dict[str, str]) -> list[str]:
    """The curves, the room map and the heat maps that were drawn."""
    out = [
        "",
        "## Curves",
        "",
        "Mean over seeds, the band from the lowest to the highest seed, against agent steps.",
        "",
    ]
    out += [f"![{key}]({figures[key]})" for key, _ in CURVES if key in figures]
    out += ["", "## Where the agents went", ""]
    if "room_map" in figures:
        out += [
            "Agent steps spent in each room of the first level, the mean over seeds (grey: never entered).",
            "",
            f"![room map]({figures['room_map']})",
            "",
        ]
    if "heat_maps" in figures:
        out += [
            "Agent steps per position cell (mean over seeds) in each configuration's most visited rooms of "
            "the first level.",
            "",
            f"![heat maps]({figures['heat_maps']})",
            "",
        ]
    return out


def eval_section(runs: list[RunData], summary: dict[str, dict], eval_episodes: int) -> list[str]:
    """eval.py's table of each run's newest checkpoint and the intrinsic-reward traces."""
    out = [
        "## Checkpoints played",
        "",
        f"`eval.py` on each run's newest checkpoint, {eval_episodes} episodes with sticky actions, seed 0; "
        "the GIF is the best of them.",
        "",
    ]
    out += eval_table(runs, summary)
    out += [
        "",
        "Intrinsic reward of each step of the first eval episode, with the frames at its highest peaks:",
        "",
    ]
    out += [
        f"![{r.name}]({summary[r.name]['eval']['int_trace']})"
        for r in runs
        if "int_trace" in (summary[r.name].get("eval") or {})
    ]
    return out


def write_report(study_dirs: list[Path], out: Path, eval_episodes: int) -> int:
    """report.md, summary.json and the figures of the study in ``study_dirs`` (one folder, or the folders of one
    grid's shards, merged), into ``out``."""
    if eval_episodes < 0:
        raise StudyError("--eval-episodes must be >= 0")
    runs, missing = load_studies(study_dirs)
    if not runs:
        where = " or ".join(str(d) for d in study_dirs)
        raise StudyError(f"{where} holds no run folders with a {RUN_FILE} and a metrics.csv row")
    for r in runs:
        for why in r.unreadable.values():  # e.g. a cut exploration.json: one line, and the report goes on
            print(f"study report: {why}; the report goes on without this run's maps", file=sys.stderr)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StudyError(f"--out {out}: cannot create it ({e.strerror})") from None
    groups = group_runs(runs)
    summary = {r.name: run_summary(r) for r in runs}
    for r in runs if eval_episodes else []:
        print(f"study report: playing {r.name}'s newest checkpoint ({eval_episodes} episodes)", flush=True)
        summary[r.name]["eval"] = evaluate_run(r, out, eval_episodes)
    figures = write_figures(groups, out)
    (out / "summary.json").write_text(json.dumps(list(summary.values()), indent=2))
    out_flag = "" if out == study_dirs[0] / "report" else f" --out {out}"
    command = f"python study.py report {' '.join(str(d) for d in study_dirs)}{out_flag} --eval-episodes {eval_episodes}"
    (out / "report.md").write_text(
        "\n".join(report_lines(study_dirs[0].name, command, groups, summary, figures, eval_episodes, missing))
    )
    print(f"study report: {out / 'report.md'} ({len(runs)} runs, {len(figures)} figures)")
    return 0
