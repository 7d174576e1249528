#!/usr/bin/env python3
"""Measure every part of the system on this machine, then the whole: a table and a JSON file.

  python bench.py                                        # configs/montezuma.yaml, one actor per spare core
  python bench.py --config configs/smoke.yaml --actors 1 --learner-gpu -1 --seconds 10 --json bench.json
  python bench.py --actors 15 --learner-gpu 0 actor_device=cuda    # the actors' policy step on the GPU too

All figures are agent steps per second unless named (1 agent step = FrameSkip emulator frames).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import zmq

from common.config import Config, ConfigError, dump_yaml, load_config

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
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p.parse_args(argv)


# ---- single-core limits ------------------------------------------------------------------------------------
def bench_ale(cfg: Config, seconds: float) -> float:
    """A bare ALEInterface loop with the env's preprocessing, one process: the emulator's limit."""
    import cv2
    from ale_py import ALEInterface, LoggerMode, roms

    from common.config import rom_name

    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setFloat("repeat_action_probability", cfg.StickyActionProb if cfg.UseStickyAction else 0.0)
    ale.loadROM(str(roms.get_rom_path(rom_name(cfg.EnvName))))
    actions = ale.getLegalActionSet()
    h, w = ale.getScreenDims()
    raw = np.zeros((2, h, w), np.uint8)
    rng = np.random.default_rng(0)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a = actions[rng.integers(len(actions))]
        for i in range(cfg.FrameSkip):
            ale.act(a)
            if i >= cfg.FrameSkip - 2:
                ale.getScreenGrayscale(raw[i - cfg.FrameSkip + 2])
        cv2.resize(np.maximum(raw[0], raw[1]), (cfg.ImageWidth, cfg.ImageHeight), interpolation=cv2.INTER_AREA)
        if ale.game_over():
            ale.reset_game()
        steps += 1
    return steps / (time.perf_counter() - t0)


def policy_step_inputs(cfg: Config, batch: int, device: str = "cpu"):
    """A fresh actor policy (eval mode, on ``device``) and a fixed random uint8 obs batch [batch, S, H, W]
    (seed 0): what every policy-step measurement feeds it (bench_infer, scripts/profile/)."""
    from common.rl.networks import NUM_ACTIONS, PolicyNet

    policy = PolicyNet(NUM_ACTIONS, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth).eval().to(device)
    obs = np.random.default_rng(0).integers(
        0, 255, (batch, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth), dtype=np.uint8
    )
    return policy, obs


def bench_infer(cfg: Config, batch: int, seconds: float) -> float:
    """The actor's own policy step (forward + sampling, at ``actor_precision``) at the actor's batch size, on one
    CPU thread and on ``actor_device`` (a GPU's figure includes the copies to and from it)."""
    from actors.rollout import check_actor_device, sample_actions
    from common.precision import autocast_dtype

    device = check_actor_device(cfg.actor_device)
    # the actor's own precision: its ceiling uses it too
    dtype = autocast_dtype(cfg.actor_precision, device, (cfg.ImageHeight, cfg.ImageWidth))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        policy, obs = policy_step_inputs(cfg, batch, device)
        gen = torch.Generator(device=device).manual_seed(0)
        sample_actions(policy, obs, gen, dtype)  # a GPU's first call pays for its kernels' set-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n == 0:
            sample_actions(policy, obs, gen, dtype)
            n += batch
        return n / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)


# ---- actors into a sink ------------------------------------------------------------------------------------
class Sink:
    """Stands in for the learner: publishes weights once (lag bound lifted), counts what arrives."""

    def __init__(self, cfg: Config):
        from common.transport import free_tcp_address, weights_address

        self.cfg = cfg
        self.addr = free_tcp_address()
        ctx = zmq.Context.instance()
        self.pull = ctx.socket(zmq.PULL)
        self.pull.bind(self.addr)
        self.pub = ctx.socket(zmq.PUB)
        self.pub.bind(weights_address(self.addr))
        self._weights: list | None = None

    def publish(self) -> None:
        """(Re)send version-0 weights, encoded once: late joiners need them, and re-encoding costs CPU."""
        if self._weights is None:
            from common.config import shape_keys
            from common.rl.networks import NUM_ACTIONS, PolicyNet
            from common.wire import encode

            policy = PolicyNet(NUM_ACTIONS, self.cfg.FrameStack, self.cfg.ImageHeight, self.cfg.ImageWidth)
            arrays = {k: v.numpy() for k, v in policy.state_dict().items()}
            meta = {
                "version": 0,
                "warmup_steps": 0,
                "shape_keys": shape_keys(self.cfg),
                "learner_run": 0,
                "retired": [],
            }  # no flow control: the actors' lag bound is lifted for this measurement
            self._weights = encode("weights", meta, arrays)
        self.pub.send_multipart(self._weights)

    def measure(self, seconds: float, settle_segments: int, skip_phases: int = 0) -> dict:
        """Steps/s of segments arriving after the first ``settle_segments``; mean actor phases, except
        those of the first ``skip_phases`` counted segments (an actor reports a segment's phases with
        the next one)."""
        from common.wire import decode

        seen, steps, nbytes, t0, phases = 0, 0, 0, None, {}
        last_pub = 0.0
        deadline = time.monotonic() + seconds + 120
        while time.monotonic() < deadline:
            if time.monotonic() - last_pub > 2.0:
                self.publish()
                last_pub = time.monotonic()
            if not self.pull.poll(100):
                continue
            frames = self.pull.recv_multipart()
            msg = decode(frames)
            seen += 1
            if seen == settle_segments:
                t0 = time.perf_counter()
            elif seen > settle_segments:
                steps += msg.arrays["actions"].size
                nbytes += sum(len(f) for f in frames)
                for k, v in msg.meta.get("timings", {}).items():
                    if seen > settle_segments + skip_phases:
                        phases.setdefault(k, []).append(v)
                if time.perf_counter() - t0 >= seconds:
                    break
        if t0 is None or steps == 0:
            raise RuntimeError("the actors sent too little to measure; raise --seconds")
        dt = time.perf_counter() - t0
        return {
            "steps_per_s": steps / dt,
            "steps": steps,
            "seconds": dt,
            "bytes_per_step": nbytes / steps,
            "phases": {k: float(np.mean(v)) for k, v in phases.items()},
        }

    def drain(self) -> int:
        """Drop what has arrived and not been read; returns how many messages."""
        n = 0
        while self.pull.poll(0):
            self.pull.recv_multipart()
            n += 1
        return n

    def stop(self) -> None:
        from common.wire import encode

        for _ in range(3):
            self.pub.send_multipart(encode("stop", {}, {}))
            time.sleep(0.1)
        self.pull.close(0)
        self.pub.close(0)


def signal_all(procs: list, sig: int) -> None:
    """Send ``sig`` to each child that is still running."""
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, sig)


@contextmanager
def actors_into_sink(cfg: Config, n: int, cfg_dir: Path) -> Iterator[tuple[Sink, list]]:
    """N real actor processes (env + policy + packing + send) pushing into a sink: (sink, their Popen)."""
    from launch import actor_supervisor

    # no lag bound (the sink retires nothing), and no timeout while bench_actor_vs_ceiling holds them paused
    cfg = load_config(None, {**cfg.to_dict(), "max_policy_lag": 1 << 30, "actor_timeout_s": 86400.0})
    path = cfg_dir / f"actors{n}.yaml"
    path.write_text(dump_yaml(cfg))
    sink = Sink(cfg)
    sup = actor_supervisor(path, sink.addr, list(range(n)), n, [], restart_on_learner_gone=False)
    sup.start()
    procs = [c.proc for c in sup.children]
    try:
        yield sink, procs
    finally:
        signal_all(procs, signal.SIGCONT)  # a paused actor could not hear the stop message
        sink.stop()
        sup.stop(grace_s=5)


def bench_actors(cfg: Config, n: int, seconds: float, cfg_dir: Path) -> dict:
    """N real actor processes pushing into a sink: steps/s of them all, and their mean phases."""
    with actors_into_sink(cfg, n, cfg_dir) as (sink, _):
        return sink.measure(seconds, settle_segments=n)


def bench_actor_vs_ceiling(cfg: Config, seconds: float, cfg_dir: Path, rounds: int = 3) -> dict:
    """One real actor process and the two single-core limits of its ceiling, in alternating windows.

    The actor is paused (SIGSTOP) while the bare ALE loop and the bare policy step run, so each has a
    core to itself, and all three see the same machine: on a shared VM the speed of a core drifts by
    10-20% from minute to minute, which made a before/after measurement of the limits misjudge the
    actor's ratio by as much. Each figure is the mean over ``rounds`` windows; the spread is kept.
    """
    k = cfg.NumWorkers
    ale, infer, windows, steps, secs, phases = [], [], [], 0.0, 0.0, []
    with actors_into_sink(cfg, 1, cfg_dir) as (sink, procs):  # it resumes them on the way out
        for i in range(rounds):
            if i:
                sink.drain()  # sent before the pause: not part of this window
                signal_all(procs, signal.SIGCONT)
                # a segment send() had handed to ZeroMQ just before the pause is flushed only now
                time.sleep(0.3)
                sink.drain()
            # the first segment to arrive was started before the pause; the next one reports its phases
            w = sink.measure(seconds / rounds, settle_segments=1, skip_phases=1 if i else 0)
            signal_all(procs, signal.SIGSTOP)
            steps, secs = steps + w["steps"], secs + w["seconds"]
            windows.append(w["steps_per_s"])
            if w["phases"]:
                phases.append(w["phases"])
            ale.append(bench_ale(cfg, seconds / rounds / 2))
            infer.append(bench_infer(cfg, k, seconds / rounds / 2))
    return {
        "steps_per_s": steps / secs,
        "windows": windows,
        "ale": ale,
        "infer": infer,
        "phases": {name: float(np.mean([ph[name] for ph in phases])) for name in phases[0]} if phases else {},
    }


# ---- learner on synthetic batches -------------------------------------------------------------------------
def synthetic_segments(cfg: Config, rng: np.random.Generator):
    from actors.rollout import env_split
    from learner.batch import Segment

    t, h, w = cfg.RolloutSteps, cfg.ImageHeight, cfg.ImageWidth
    k = cfg.NumWorkers
    arrays = {
        "frames": rng.integers(0, 255, (t + 1, k, h, w), dtype=np.uint8),
        "context": rng.integers(0, 255, (cfg.FrameStack - 1, k, h, w), dtype=np.uint8),
        "actions": rng.integers(0, 18, (t, k), dtype=np.uint8),
        "behaviour_logp": np.full((t, k), -np.log(18), np.float32),
        "rewards": (rng.random((t, k)) < 0.01).astype(np.float32),
        "terminated": (rng.random((t, k)) < 0.002).astype(np.uint8),
        "truncated": np.zeros((t, k), np.uint8),
        "trunc_value": np.zeros((t, k), np.float32),
    }
    return [Segment(0, 0, env_split(k, 1, 0), arrays, [])]


def bench_learner(cfg: Config, device: str, seconds: float) -> dict:
    """The real update (assemble + targets + epochs) on synthetic batches of the configured shape."""
    from common.rl.networks import NUM_ACTIONS
    from common.runtime import init_torch_runtime
    from learner.agent import RNDAgent
    from learner.batch import assemble

    agent = RNDAgent(cfg, NUM_ACTIONS, device, init_torch_runtime(cfg, device, "learner"))
    segs = synthetic_segments(cfg, np.random.default_rng(0))
    pin = device.startswith("cuda")
    agent.update(assemble(segs, cfg.FrameStack, pin).to(device))  # warm-up: allocations, autotuning, compiling
    n, t_assemble, t0 = 0, 0.0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n == 0:
        ta = time.perf_counter()
        batch = assemble(segs, cfg.FrameStack, pin)
        t_assemble += time.perf_counter() - ta
        agent.update(batch.to(device))
        n += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {
        "steps_per_s": n * cfg.RolloutSteps * cfg.NumWorkers / dt,
        "updates": n,
        "phases": {"assemble_s": t_assemble / n, "update_s": (dt - t_assemble) / n},
    }


# ---- the whole system ---------------------------------------------------------------------------------------
def bench_e2e(cfg: Config, n: int, device: str, seconds: float, lag: int, cfg_dir: Path) -> dict:
    """The real local system (learner + N actor processes) for ``seconds`` after its first two updates."""
    from common.runtime import init_torch_runtime
    from common.transport import connect_address, free_tcp_address
    from launch import actor_supervisor
    from learner.learner import Learner

    cfg = load_config(None, {**cfg.to_dict(), "max_policy_lag": lag, "NumInitSteps": 0, "checkpoint_every": 1 << 30})
    path = cfg_dir / f"e2e{lag}.yaml"
    path.write_text(dump_yaml(cfg))
    bind = free_tcp_address()
    sup = actor_supervisor(path, connect_address(bind), list(range(n)), n, [], True)
    run_dir = cfg_dir / f"run_lag{lag}"
    learner = Learner(
        cfg,
        run_dir,
        device,
        bind=bind,
        total_steps=1 << 62,
        supervisor=sup,
        tensorboard=False,
        progress=False,  # no progress line: it would interleave with the bench's own output
        runtime=init_torch_runtime(cfg, device, "learner"),
    )
    marks: list[tuple[float, int, dict]] = []

    def mark(row: dict) -> None:  # note time and steps at each update, then stop after `seconds`
        marks.append((time.perf_counter(), row["agent_steps"], row))
        if len(marks) >= 3 and marks[-1][0] - marks[1][0] >= seconds:
            learner.request_stop()

    learner.on_update.append(mark)
    watchdog = threading.Timer(seconds * 4 + 300, learner.request_stop)
    watchdog.start()
    sup.start()
    try:
        learner.train()
    finally:
        watchdog.cancel()
        sup.stop()
    if len(marks) < 3:
        raise RuntimeError(f"e2e lag {lag}: fewer than 3 updates; raise --seconds")
    (t1, s1, _), (t2, s2, _) = marks[1], marks[-1]
    rows = [m[2] for m in marks[2:]]
    keys = ("wait_data_s", "learn_s", "actor_infer_s", "actor_env_s", "actor_wait_s", "actor_send_s")
    return {
        "steps_per_s": (s2 - s1) / (t2 - t1),
        "updates": len(marks) - 1,
        "policy_lag_mean": float(np.mean([r["policy_lag_mean"] for r in rows])),
        "phases": {k: float(np.nanmean([r[k] for r in rows])) for k in keys},
    }


def with_envs(cfg: Config, envs: int) -> Config:
    """``cfg`` with ``envs`` envs (NumWorkers), as one actor of it holds them; BatchSize is capped at the
    smaller batch so that the config stays valid (the actor parts never train on it)."""
    return load_config(
        None, {**cfg.to_dict(), "NumWorkers": envs, "BatchSize": min(cfg.BatchSize, envs * cfg.RolloutSteps)}
    )


def wire_bytes(cfg: Config) -> dict:
    """Bytes per agent step of a real segment (real Montezuma frames), uncompressed and with zstd."""
    from actors.rollout import build_collector
    from common.wire import encode

    k = min(cfg.NumWorkers, 8)
    col = build_collector(with_envs(cfg, k), 0, 1)
    arrays, episodes = col.collect()
    meta = {
        "actor": 0,
        "streams": list(range(k)),
        "num_actors": 1,
        "version": 0,
        "run": 0,
        "seq": 0,
        "episodes": episodes,
    }
    steps = cfg.RolloutSteps * k
    return {c: sum(len(f) for f in encode("segment", meta, arrays, c)) / steps for c in ("none", "zstd")}


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
    from launch import UsageError, default_actors, resolve_device

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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # a TERM (timeout, a job's time limit) runs the clean-ups: actors paused mid-measurement are resumed and stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from launch import UsageError

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
