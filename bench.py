#!/usr/bin/env python3
"""Measure every part of the system on this machine, then the whole: a table and a JSON file.

  python bench.py                                        # configs/montezuma.yaml, one actor per spare core
  python bench.py --config configs/smoke.yaml --actors 1 --learner-gpu -1 --seconds 10 --json bench.json
  python bench.py --actors 15 --learner-gpu 0 actor_device=cuda    # the actors' policy step on the GPU too

All figures are agent steps per second unless named (1 agent step = FrameSkip emulator frames). The parts
themselves are measured in bench_parts.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench_parts import (
    bench_actor_vs_ceiling,
    bench_actors,
    bench_e2e,
    bench_learner,
    bench_learner_ranks,
    wire_bytes,
    with_envs,
)
from common.cli import UsageError, default_actors, resolve_device
from common.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO / "configs" / "montezuma.yaml"
SKIPPABLE = {"actors_total", "learner", "e2e_sync", "e2e_async"}  # the single actor and its limits always run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--actors", type=int, help="actor processes (default: one per spare core)")
    p.add_argument("--learner-gpu", type=int, help="GPU of the learner, -1 = CPU (default: 0 if any)")
    p.add_argument("--seconds", type=float, default=30.0, help="measuring time of each part")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: " + ",".join(sorted(SKIPPABLE)))
    p.add_argument(
        "--learner-ranks",
        metavar="1,2",
        help="only the learner alone at each listed rank count, on the CPU (one thread per rank), in rounds",
    )
    p.add_argument("--learner-gpus", metavar="0,1", help="with --learner-ranks: rank r on GPU r of this list")
    p.add_argument("--rounds", type=int, default=1, help="with --learner-ranks: rounds over the rank counts")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p.parse_args(argv)


# ---- report --------------------------------------------------------------------------------------------------
def targets(r: dict, learner_has_gpu: bool) -> dict:
    """The project's speed targets, each with value, bound and verdict: an actor process at >= 0.85 of
    its single-core ceiling; <= 8,192 wire bytes per agent step uncompressed; end to end, async at
    >= 0.85 min(actors, learner) and >= 1.3x sync with the learner on a GPU, or >= 0.85 / (1/actors +
    1/learner) where learner and actors share the CPU."""
    out = {}

    def add(name: str, value: float | None, bound: float | None) -> None:
        if value is not None and bound is not None:
            out[name] = {"value": value, "bound": bound, "ok": bool(value >= bound)}

    add("actor_vs_ceiling", r.get("actor_steps_per_s_per_process"), 0.85 * r["actor_ceiling_steps_per_s"])
    if r.get("wire_bytes_per_step") is not None:
        out["wire_bytes_per_step"] = {
            "value": r["wire_bytes_per_step"],
            "bound": 8192,
            "ok": r["wire_bytes_per_step"] <= 8192,
        }
    a, lrn, e2e = r.get("actors_total_steps_per_s"), r.get("learner_steps_per_s"), r.get("e2e_async_steps_per_s")
    if a and lrn and e2e:
        if learner_has_gpu:
            add("e2e_async_vs_parts", e2e, 0.85 * min(a, lrn))
            if r.get("e2e_sync_steps_per_s"):
                add("e2e_async_vs_sync", e2e, 1.3 * r["e2e_sync_steps_per_s"])
        else:
            add("e2e_async_vs_shared_cpu", e2e, 0.85 / (1 / a + 1 / lrn))
    return out


def print_table(r: dict) -> None:
    print(
        f"\nbench on {r['device']} | {r['cpu_count']} cores | {r['actors']} actors | {r['envs']} envs | "
        f"actor policy on {r['actor_device']} | config {r['config']}"
    )
    for k, v in r.items():
        if isinstance(v, float):
            print(f"  {k:<34} {v:>12,.1f}")
    for name, t in r["targets"].items():
        print(
            f"  target {name:<27} {t['value']:>12,.1f}  {'>=' if name != 'wire_bytes_per_step' else '<='} "
            f"{t['bound']:,.1f}  {'ok' if t['ok'] else 'MISSED'}"
        )


def setup(args: argparse.Namespace) -> tuple[Config, str, int, set[str]]:
    """The config, the learner's device, the actor count and the parts to skip; UsageError on bad input."""
    from actors.rollout import check_actor_device

    try:
        cfg = load_config(args.config, args.overrides)
        device = resolve_device(args.learner_gpu)
        check_actor_device(cfg.actor_device)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    n = args.actors or default_actors(cfg)
    skip = set(filter(None, args.skip.split(",")))
    if skip - SKIPPABLE:
        raise UsageError(
            f"--skip: unknown part(s) {','.join(sorted(skip - SKIPPABLE))}; choose from {','.join(sorted(SKIPPABLE))}"
        )
    return cfg, device, n, skip


def machine_facts(args: argparse.Namespace, cfg: Config, device: str, n: int) -> dict:
    """The head of the results: config, devices, cores, actors, envs, seconds, and the wire's bytes per step."""
    shown = Path(args.config).resolve()
    shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown
    r: dict = {
        "config": str(shown),
        "device": torch.cuda.get_device_name(device)
        if "cuda" in device
        else f"cpu ({platform.processor() or platform.machine()})",
        "cpu_count": os.cpu_count(),
        "actors": n,
        "envs": cfg.NumWorkers,
        "envs_per_actor": -(-cfg.NumWorkers // n),
        "seconds": args.seconds,
        "actor_device": cfg.actor_device,
    }
    wb = wire_bytes(cfg)
    r["wire_bytes_per_step"], r["wire_bytes_per_step_zstd"] = wb["none"], wb["zstd"]
    return r


def measure_single_core(cfg: Config, r: dict, phases: dict, seconds: float, tmpd: Path) -> None:
    """One actor process and its two single-core limits (emulator, policy step), into ``r`` and ``phases``."""
    one = bench_actor_vs_ceiling(with_envs(cfg, r["envs_per_actor"]), seconds, tmpd)
    r["actor_steps_per_s_per_process"], phases["actor"] = one["steps_per_s"], one["phases"]
    ale, infer = one["ale"], one["infer"]
    r["ale_steps_per_s_per_core"], r["infer_samples_per_s_per_core"] = float(np.mean(ale)), float(np.mean(infer))
    r["actor_ceiling_steps_per_s"] = 1 / (1 / r["ale_steps_per_s_per_core"] + 1 / r["infer_samples_per_s_per_core"])
    r["single_core_spread"] = {"ale": ale, "infer": infer, "actor": one["windows"]}


def measure_parts(
    cfg: Config,
    device: str,
    n: int,
    skip: set[str],
    r: dict,
    phases: dict,
    seconds: float,
    tmpd: Path,
    save_partial: Callable[[], None],
) -> None:
    """All actors, the learner alone, and the whole system at lag 0 and 1 (less those in ``skip``);
    ``save_partial()`` after each, so that a bench stopped by a time limit keeps what it measured."""
    if "actors_total" not in skip:
        all_ = bench_actors(cfg, n, seconds, tmpd)
        r["actors_total_steps_per_s"], phases["actors_total"] = all_["steps_per_s"], all_["phases"]
        save_partial()
    if "learner" not in skip:
        lr = bench_learner(cfg, device, seconds)
        r["learner_steps_per_s"], phases["learner"] = lr["steps_per_s"], lr["phases"]
        save_partial()
    for lag, key in ((0, "e2e_sync"), (1, "e2e_async")):
        if key in skip:
            continue
        e = bench_e2e(cfg, n, device, seconds, lag, tmpd)
        r[f"{key}_steps_per_s"], phases[key] = e["steps_per_s"], e["phases"]
        if lag == 1:
            r["policy_lag_mean"] = e["policy_lag_mean"]
        save_partial()


def rank_scaling(args: argparse.Namespace) -> dict:
    """The learner alone at each rank count of ``--learner-ranks``, alternating in ``--rounds`` rounds
    (this machine drifts minute to minute): samples/s over all ranks per round, and each count's median
    ratio to the first count's. A fixed batch per rank (the config's), one torch thread per rank on the CPU."""
    counts = [int(x) for x in args.learner_ranks.split(",")]
    gpus = [int(x) for x in args.learner_gpus.split(",")] if args.learner_gpus else None
    if gpus is not None and max(counts) > len(gpus):
        raise UsageError(f"--learner-ranks {args.learner_ranks}: more ranks than --learner-gpus {args.learner_gpus}")
    rounds: list[dict[int, float]] = []
    for k in range(args.rounds):
        got = {}
        for r in counts:
            res = bench_learner_ranks(args.config, args.overrides, r, gpus, args.seconds, threads=1)
            got[r] = res["samples_per_s"]
            print(f"round {k + 1}: {r} rank(s): {got[r]:,.1f} samples/s ({res['updates']} updates)", flush=True)
        rounds.append(got)
    ratio = {r: float(np.median([g[r] / g[counts[0]] for g in rounds])) for r in counts}
    return {"config": args.config, "gpus": gpus, "seconds": args.seconds, "rounds": rounds, "median_ratio": ratio}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.learner_ranks:
        try:
            r = rank_scaling(args)
        except (UsageError, ValueError) as e:
            print(f"bench: error: {e}", file=sys.stderr)
            return 2
        for n, x in r["median_ratio"].items():
            print(f"learner at {n} rank(s): {x:.2f}x the first count (median over {args.rounds} rounds)")
        if args.json:
            Path(args.json).write_text(json.dumps(r, indent=2))
        return 0
    # a TERM (timeout, a job's time limit) runs the clean-ups: actors paused mid-measurement are resumed and stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cfg, device, n, skip = setup(args)
    except UsageError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    r = machine_facts(args, cfg, device, n)
    phases: dict = {}

    def save_partial() -> None:  # after each part: a bench stopped by a time limit keeps what it measured
        if args.json:
            Path(args.json).write_text(json.dumps({**r, "phases": phases, "partial": True}, indent=2))

    with tempfile.TemporaryDirectory(prefix="rnd-bench-") as tmp:
        measure_single_core(cfg, r, phases, args.seconds, Path(tmp))
        save_partial()
        measure_parts(cfg, device, n, skip, r, phases, args.seconds, Path(tmp), save_partial)
    r["phases"] = phases
    r["targets"] = targets(r, "cuda" in device)
    print_table(r)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
