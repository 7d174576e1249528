"""The parts bench.py measures, each on its own: the two single-core limits of an actor (emulator, policy
step), real actor processes pushing into a sink that stands in for the learner, the learner's update on
synthetic batches, the whole local system, and the wire's bytes per agent step.

All figures are agent steps per second unless named (1 agent step = FrameSkip emulator frames).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import zmq

from actors.supervisor import actor_supervisor
from common.config import Config, dump_yaml, load_config
from learner.synthetic import policy_step_inputs, synthetic_segments

REPO = Path(__file__).resolve().parent


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
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.pull = ctx.socket(zmq.PULL)
        self.pull.bind(self.addr)
        self.pub = ctx.socket(zmq.PUB)
        self.pub.bind(weights_address(self.addr))
        self._weights: list | None = None

    def publish(self) -> None:
        """(Re)send version-0 weights, encoded once: late joiners need them, and re-encoding costs CPU."""
        if self._weights is None:
            from common.rl.networks import NUM_ACTIONS, PolicyNet
            from common.wire import encode

            policy = PolicyNet(NUM_ACTIONS, self.cfg.FrameStack, self.cfg.ImageHeight, self.cfg.ImageWidth)
            arrays = {k: v.numpy() for k, v in policy.state_dict().items()}
            meta = {
                "version": 0,
                "warmup_steps": 0,
                "config": self.cfg.to_dict(),
                "rank": 0,
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

        seen, steps, nbytes = 0, 0, 0
        t0: float | None = None
        phases: dict[str, list[float]] = {}
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
                if t0 is not None and time.perf_counter() - t0 >= seconds:
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
    # no lag bound (the sink retires nothing), and no timeout while bench_actor_vs_ceiling holds them paused
    cfg = load_config(overrides={**cfg.to_dict(), "max_policy_lag": 1 << 30, "actor_timeout_s": 86400.0})
    path = cfg_dir / f"actors{n}.yaml"
    path.write_text(dump_yaml(cfg))
    sink = Sink(cfg)
    sup = actor_supervisor(path, sink.addr, list(range(n)), n, restart_on_learner_gone=False)
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
    from learner.learner import Learner

    cfg = load_config(
        overrides={**cfg.to_dict(), "max_policy_lag": lag, "NumInitSteps": 0, "checkpoint_every": 1 << 30}
    )
    path = cfg_dir / f"e2e{lag}.yaml"
    path.write_text(dump_yaml(cfg))
    bind = free_tcp_address()
    sup = actor_supervisor(path, connect_address(bind), list(range(n)), n, restart_on_learner_gone=True)
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
        overrides={**cfg.to_dict(), "NumWorkers": envs, "BatchSize": min(cfg.BatchSize, envs * cfg.RolloutSteps)}
    )


def wire_bytes(cfg: Config) -> dict:
    """Bytes per agent step of a real segment (real Montezuma frames), uncompressed and with zstd."""
    from actors.rollout import build_collector
    from common.wire import encode

    k = min(cfg.NumWorkers, 8)
    col = build_collector(with_envs(cfg, k), 0, 1)
    arrays, _ = col.collect()  # its episode records travel among the arrays
    meta = {
        "actor": 0,
        "streams": list(range(k)),
        "num_actors": 1,
        "version": 0,
        "run": 0,
        "seq": 0,
    }
    steps = cfg.RolloutSteps * k
    return {c: sum(len(f) for f in encode("segment", meta, arrays, c)) / steps for c in ("none", "zstd")}


# ---- the learner at several ranks ---------------------------------------------------------------------------
def bench_learner_ranks(
    config: str, overrides: list[str], ranks: int, gpus: list[int] | None, seconds: float, threads: int
) -> dict:
    """The learner alone at ``ranks`` ranks, one process each (``learner/rank_bench.py``), each updating on
    its own synthetic batch of the configured shape with ``threads`` torch threads, on GPU ``gpus[r]`` or
    the CPU; their gradients averaged as in training. Returns rank 0's figures (samples/s over all ranks)."""
    from learner.spawn import free_port_block, rank_environ

    port = free_port_block(1)
    with tempfile.TemporaryDirectory(prefix="rnd-ranks-") as tmp:
        out = Path(tmp) / "ranks.json"
        procs = []
        for r in range(ranks):
            device = f"cuda:{gpus[r]}" if gpus else "cpu"
            cmd = [sys.executable, "-m", "learner.rank_bench", "--config", config, "--seconds", str(seconds)]
            cmd += ["--device", device, "--threads", str(threads), "--out", str(out), *overrides]
            env = rank_environ(r, ranks, port) if ranks > 1 else {**os.environ}
            procs.append(subprocess.Popen(cmd, cwd=REPO, env={**env, "OMP_NUM_THREADS": str(threads)}))
        codes = [p.wait(timeout=seconds * 10 + 600) for p in procs]
        if any(codes):
            raise RuntimeError(f"learner ranks exited with {codes}")
        return json.loads(out.read_text())
