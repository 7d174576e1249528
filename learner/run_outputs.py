"""Where a learner run's outputs go: its run dir (a fresh one refuses another run's files; a default name
never collides), the console's copy in RUN_DIR/launch.log, and the optional Weights & Biases mirror."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from common.cli import UsageError
from common.config import Config

RUN_FILES = ("checkpoints", "metrics.csv", "episodes.jsonl")  # what a run that trained has written


def default_run_dir(args: argparse.Namespace, cfg: Config) -> bool:
    """Whether the run dir is the default runs/<game>-<time>, named by no flag or key."""
    return not (args.resume or args.run_dir or cfg.SavePath)


def check_fresh_run_dir(run_dir: Path) -> None:
    """A new run may not take over a run dir that holds another run's checkpoints: its logs would be
    overwritten or mixed. An empty folder, or one holding only a config, is fine, and so is the folder
    of a run stopped before its first checkpoint (there is nothing to resume): it is reused, its logs
    replaced, and one line says so."""
    held = [name for name in RUN_FILES if _holds_data(run_dir / name)]
    if "checkpoints" in held:
        raise UsageError(
            f"run dir {run_dir} already holds a run ({', '.join(held)}); continue it with "
            f"--resume {run_dir}, or pass another --run-dir"
        )
    if held:
        print(
            f"launch: run dir {run_dir} holds the logs of a run stopped before its first checkpoint (nothing to "
            f"resume): starting afresh there, its {' and '.join(held)} replaced",
            file=sys.stderr,
            flush=True,
        )


def _holds_data(path: Path) -> bool:
    if path.is_dir():
        return any(path.glob("*.pt"))
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        lines = f.read(1 << 16).splitlines()
    return len(lines) > (1 if path.suffix == ".csv" else 0)  # metrics.csv: a row beyond its header


MAX_RUN_DIR_SUFFIX = 1000


def make_run_dir(run_dir: Path, unique: bool = False) -> Path:
    """Create the run dir; returns it. ``unique`` (a default name): created exclusively, as NAME, else
    NAME-2, NAME-3, ..., so that runs started in the same second never share one; otherwise an existing
    folder is used as it is (``check_fresh_run_dir`` has judged it)."""
    names = [run_dir] + [run_dir.with_name(f"{run_dir.name}-{i}") for i in range(2, MAX_RUN_DIR_SUFFIX)]
    for path in names if unique else [run_dir]:
        try:
            path.mkdir(parents=True, exist_ok=not unique)
            check_writable(path)
            return path
        except FileExistsError:
            if unique:
                continue
            raise UsageError(f"run dir {path}: a file of that name is in the way; pass --run-dir") from None
        except OSError as e:
            raise UsageError(f"run dir {path}: cannot create it ({e.strerror}); pass --run-dir") from None
    raise UsageError(f"run dir {run_dir}: it and {MAX_RUN_DIR_SUFFIX - 2} suffixed names exist; pass --run-dir")


def check_writable(run_dir: Path) -> None:
    """UsageError unless ``run_dir`` takes files (it may exist on a read-only filesystem)."""
    try:
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as e:
        raise UsageError(f"run dir {run_dir}: cannot write there ({e.strerror}); pass --run-dir") from None


_console_log = None  # the ConsoleTee of this run's launch.log, once the run dir exists
_wandb = None  # the WandbMirror of a run with wandb_project


def open_console_log(run_dir: Path) -> None:
    """From here on, this process's stdout and stderr, and its actor processes', also go to
    RUN_DIR/launch.log (appended: a resumed run continues it). ``main`` closes it."""
    from learner.console import ConsoleTee

    global _console_log
    path = run_dir / "launch.log"
    if _console_log is None and not stdout_is(path):  # study.py sends a run's console there itself
        _console_log = ConsoleTee(path)


def stdout_is(path: Path) -> bool:
    """Whether this process's stdout is the file ``path`` already."""
    try:
        out, there = os.fstat(1), path.stat()
    except OSError:
        return False
    return (out.st_dev, out.st_ino) == (there.st_dev, there.st_ino)


def attach_wandb(learner, cfg: Config) -> None:
    """With wandb_project, mirror each metrics row and the config to Weights & Biases; ``main`` closes it."""
    if not cfg.wandb_project:
        return
    from learner.wandb_mirror import WandbMirror

    global _wandb
    try:
        _wandb = WandbMirror(cfg.wandb_project, learner.run_dir, cfg.to_dict())
    except RuntimeError as e:
        raise UsageError(f"--wandb {cfg.wandb_project}: {e}") from None
    learner.on_update.append(_wandb.log)


def close_run_outputs() -> None:
    global _console_log, _wandb
    if _wandb is not None:
        _wandb.close()
        _wandb = None
    if _console_log is not None:
        _console_log.close()
        _console_log = None


# ---- roles -------------------------------------------------------------------------------------------------
def run_plan(cfg: Config, total: int, warm: bool) -> str:
    """What the run will do, for its start line."""
    per_update = cfg.NumWorkers * cfg.RolloutSteps
    warmup = "" if warm or not cfg.NumInitSteps else f"a warm-up of {cfg.NumInitSteps * cfg.NumWorkers:,} frames, then "
    return (
        f"{warmup}{total:,} agent steps ({-(-total // per_update):,} updates of {per_update:,}); "
        "a time estimate follows the first updates"
    )
