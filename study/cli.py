"""A study: a grid of ordinary training runs, then a report with figures that compares them.

  python study.py run runs/extcoeff                                  # the report's study: ExtCoeff 2, 1, 0
  python study.py run runs/s --config configs/smoke.yaml --axis ExtCoeff=2,0 --total-steps 4096 --gpus none
  python study.py run runs/s --arm ExtCoeff=2 --arm ExtCoeff=0 --arm IntCoeff=0,ExtCoeff=2 --seeds 3
  python study.py run runs/s --dry-run                               # print each run's command, run nothing
  python study.py run runs/s --seeds 4 --gpus 0,1 --per-gpu 2        # 4 runs at a time, 2 on each GPU
  python study.py report runs/s --eval-episodes 5                    # runs/s/report/report.md and figures
  python study.py run runs/s_a --seeds 4 --shard 1/2                 # host A's half of the grid; host B:
  python study.py run runs/s_b --seeds 4 --shard 2/2                 #   the other half, in its own folder
  python study.py report runs/s_a runs/s_b                           # one report of both halves

``run`` starts each run as ``launch.py`` would be started by hand, one folder per run under
STUDY_DIR named by its axis values and seed; a finished run is skipped and an interrupted one is
resumed, so the same command continues a study; one ``run`` at a time works in a folder
(STUDY_DIR/study.lock). ``report`` reads the run folders (of one folder, or of several shards of one
grid) and writes ``report.md``, ``summary.json`` and PNG figures (matplotlib) beside it.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from common.config import ConfigError
from study import REPO, StudyError
from study.folders import check_folders, check_shard_folder, run_state, write_study_file
from study.lock import StudyLock
from study.plan import DEFAULT_CONFIG, RunSpec, build_plan, next_command, parse_shard, set_actors, take_shard
from study.report import write_report
from study.scheduler import Scheduler, actors_share, child_env, slots_for, usable_cores


def cmd_run(args: argparse.Namespace) -> int:
    """``study.py run``: lock the folder, plan the grid (this host's shard of it), check its folders, then
    print (--dry-run) or run every run."""
    # launch.py runs in the repo's folder: every path it is given must mean the same there
    args.config = Path(args.config or DEFAULT_CONFIG).resolve()
    args.study_dir = args.study_dir.resolve()
    args.shard = parse_shard(args.shard) if args.shard else None
    if args.parallel is not None and args.parallel < 1:
        raise StudyError("--parallel must be >= 1")
    if args.actors is not None and args.actors < 1:
        raise StudyError("--actors must be >= 1")
    slots = slots_for(args.gpus, args.parallel, args.per_gpu)
    with StudyLock(args.study_dir):
        check_shard_folder(args.study_dir, args.shard)
        grid = build_plan(args)
        specs = take_shard(grid, args.shard)
        # the runs at a time share the cores: never more actors in all than cores (see actors_share)
        set_actors(specs, args.actors, actors_share(usable_cores(), min(len(slots), len(specs))))
        check_folders(specs)
        write_study_file(args, specs, grid)
        return dry_run(specs, slots) if args.dry_run else run_grid(args, specs, slots)


def dry_run(specs: list[RunSpec], slots: list[str | None]) -> int:
    """Each run's command as a cluster scheduler would start it (finished runs named as skipped)."""
    for i, spec in enumerate(specs):
        state = run_state(spec)
        gpu = slots[i % len(slots)]
        cmd = next_command(spec, state, gpu)
        pin = f"CUDA_VISIBLE_DEVICES={child_env(gpu)['CUDA_VISIBLE_DEVICES']} " if gpu is not None else ""
        print(f"# {spec.name}: finished, skipped" if state == "finished" else pin + shlex.join(cmd))
    return 0


def run_grid(args: argparse.Namespace, specs: list[RunSpec], slots: list[str | None]) -> int:
    """Run every run of ``specs`` on ``slots`` until done, failed or stopped (Ctrl-C, SIGTERM)."""
    sched = Scheduler(specs, slots)
    where = "the CPU" if slots[0] is None else "GPU " + ",".join(dict.fromkeys(s for s in slots if s is not None))
    shard = f", shard {args.shard[0]}/{args.shard[1]} of the grid" if args.shard else ""
    print(
        f"study: {len(specs)} runs in {args.study_dir}{shard} ({sched.done} finished already), "
        f"{len(slots)} at a time on {where}",
        flush=True,
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sched.stop())
    code = sched.loop()
    if sched.failed:
        print(
            f"study: {len(sched.failed)} run(s) failed: {', '.join(sched.failed)}; rerun to retry them", file=sys.stderr
        )
    return code


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    """``study.py run``'s options."""
    r = sub.add_parser("run", help="run (or continue) the grid")
    r.add_argument("study_dir", type=Path)
    r.add_argument("--config", help=f"YAML config of every run (default: {DEFAULT_CONFIG.relative_to(REPO)})")
    r.add_argument(
        "--axis",
        action="append",
        default=[],
        metavar="KEY=v1,v2,...",
        help="a config key and its values; several axes are crossed (default: ExtCoeff=2,1,0)",
    )
    r.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="KEY=v[,KEY=v...]",
        help="one configuration given by several keys; arms are crossed with the axes",
    )
    r.add_argument("--seeds", type=int, default=1, help="seeds per configuration: seed=0..N-1")
    r.add_argument("--total-steps", type=int, help="agent steps per run (default: the config's)")
    r.add_argument(
        "--gpus",
        help="GPUs to spread runs over, numbered as this shell sees them (CUDA_VISIBLE_DEVICES): 0,1 | none "
        "(default: every visible GPU, else none)",
    )
    r.add_argument("--per-gpu", type=int, help="runs at a time on each listed GPU (default 1)")
    r.add_argument("--parallel", type=int, help="runs at a time in all (with --gpus none: default 1)")
    r.add_argument(
        "--actors",
        type=int,
        help="actor processes per run (default: the cores divided among the runs at a time, one kept for each "
        "run's learner: max(1, (cores - K) // K) for K runs at a time, at most the run's NumWorkers)",
    )
    r.add_argument(
        "--shard",
        metavar="K/N",
        help="run only shard K of N of the grid: its runs K, K+N, K+2N, ... (from 1, in --dry-run's order without "
        "--shard); give each host's shard its own STUDY_DIR and merge them with study.py report DIR DIR ...",
    )
    r.add_argument("--dry-run", action="store_true", help="print each run's command and run nothing")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    """``study.py report``'s options."""
    rp = sub.add_parser("report", help="write report.md, summary.json and figures from the run folders")
    rp.add_argument(
        "study_dirs",
        type=Path,
        nargs="+",
        metavar="STUDY_DIR",
        help="a study folder, or several folders of one grid (its shards) to merge into one report",
    )
    rp.add_argument("--out", type=Path, help="output folder (default: the first STUDY_DIR's report/)")
    rp.add_argument(
        "--eval-episodes", type=int, default=3, help="eval.py episodes per run's newest checkpoint (0: none)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Both commands' arguments; ``run``'s key=value overrides may come before or after its options."""
    p = argparse.ArgumentParser(
        prog="study.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    add_run_parser(sub)
    add_report_parser(sub)
    args, extra = p.parse_known_args(argv)  # key=value may also follow the options
    unknown = [a for a in extra if args.cmd != "run" or a.startswith("-") or "=" not in a]
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.cmd == "run":
        args.overrides += extra
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line; a bad study or config is one line on stderr and exit code 2."""
    try:
        args = parse_args(argv)
        if args.cmd == "run":
            return cmd_run(args)
        return write_report(args.study_dirs, args.out or args.study_dirs[0] / "report", args.eval_episodes)
    except (StudyError, ConfigError) as e:
        print(f"study: error: {e}", file=sys.stderr)
        return 2
