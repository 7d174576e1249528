"""A study: a grid of ordinary training runs, then a report with figures that compares them.

The package behind ``python3 study.py run|report`` (``study/cli.py`` holds the commands' help):

- ``plan``: the grid of configurations and seeds, each run's folder name and ``launch.py`` command;
- ``folders``: what a study keeps on disk (``study.json``, each run's ``study_run.json``);
- ``scheduler``: the runs as subprocesses on GPU or CPU slots, the progress line, Ctrl-C;
- ``runs``: run folders read back into ``RunData`` and the numbers of ``summary.json``;
- ``figures``: the curves, room maps and heat maps (matplotlib);
- ``report``: ``report.md``, ``summary.json`` and ``eval.py`` on each run's newest checkpoint;
- ``cli``: the command line.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # launch.py and eval.py run from here, as a person would start them


class StudyError(Exception):
    """A bad study command line or study folder: printed as one line, exit code 2."""
