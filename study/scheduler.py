"""The runs of a study as subprocesses: a free slot (a GPU, or a share of the CPU) starts the next run,
one progress line covers them all, and Ctrl-C / SIGTERM stops each at a checkpoint.

Each run is ``launch.py`` in its own session with its output in its folder's ``launch.log``; the study
itself never trains, so a run started here is the same run a person would start by hand.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from study import REPO, StudyError
from study.folders import last_agent_steps, run_state, write_run_file
from study.plan import RunSpec, next_command, shown

PROGRESS_S = 10.0  # seconds between progress lines when stdout is a file (a terminal redraws every second)


def slots_for(gpus: str | None, parallel: int | None, per_gpu: int | None = None) -> list[str | None]:
    """The places a run can go, one run each at a time: ``per_gpu`` (default 1) per listed GPU, interleaved so
    that runs spread over the GPUs first, at most ``parallel`` in all; or ``parallel`` CPU slots for ``none``.
    A GPU is named by its index among the GPUs this process sees (``gpu_env`` maps it to the child's)."""
    import torch

    if per_gpu is not None and per_gpu < 1:
        raise StudyError("--per-gpu must be >= 1")
    if gpus is None:
        gpus = ",".join(str(i) for i in range(torch.cuda.device_count())) or "none"
    if gpus == "none":
        if per_gpu is not None:
            raise StudyError("--per-gpu needs GPUs; with --gpus none, --parallel sets the runs at a time")
        return [None] * (parallel or 1)
    ids = [g.strip() for g in gpus.split(",")]
    if not all(g.isdigit() for g in ids) or len(set(ids)) != len(ids):
        raise StudyError(f"--gpus {gpus!r}: expected GPU indices like 0,1 or none")
    have = torch.cuda.device_count()
    if max(int(g) for g in ids) >= have:
        raise StudyError(f"--gpus {gpus}: this machine has {have} CUDA device(s); use --gpus none for the CPU")
    slots: list[str | None] = [g for _ in range(per_gpu or 1) for g in ids]
    return slots[:parallel] if parallel else slots


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or taskset may narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 2


def actors_share(cores: int, concurrent: int) -> int:
    """Actors per run when ``concurrent`` runs share ``cores``: each run keeps one core for its learner (a GPU
    learner too keeps a core busy feeding its GPU) and an equal share of the rest for its actors, at least one:
    max(1, (cores - concurrent) // concurrent)."""
    return max(1, (cores - concurrent) // concurrent)


def visible_device(gpu: str, parent: str | None) -> str:
    """What a child's CUDA_VISIBLE_DEVICES must hold for GPU ``gpu`` as this process numbers it: with
    ``parent`` (this process's CUDA_VISIBLE_DEVICES, e.g. "2,3") set, index 1 is that list's entry "3"."""
    if parent is None:
        return gpu
    entries = [e.strip() for e in parent.split(",") if e.strip()]
    if int(gpu) >= len(entries):
        raise StudyError(f"GPU {gpu}: CUDA_VISIBLE_DEVICES={parent} shows this study {len(entries)} GPU(s)")
    return entries[int(gpu)]


def child_env(gpu: str | None) -> dict[str, str]:
    """A run on GPU ``gpu`` sees that GPU alone, so its learner and any actor_device=cuda actors share it."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible_device(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return env


def fmt_duration(s: float) -> str:
    """Seconds as H:MM:SS; ``?`` for NaN or infinity (no rate yet)."""
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@dataclass
class Running:
    """A started run: its process, the slot it holds and whether it has been asked to stop."""

    spec: RunSpec
    proc: subprocess.Popen
    gpu: str | None
    started: float  # time.monotonic() at start
    signalled: bool = False


class Scheduler:
    """Starts runs on free slots (one per GPU, or ``parallel`` on the CPU) and prints one progress line."""

    def __init__(self, specs: list[RunSpec], slots: list[str | None]):
        self.todo = [s for s in specs if run_state(s) != "finished"]
        self.specs, self.free = specs, list(slots)
        self.running: list[Running] = []
        self.done = len(specs) - len(self.todo)
        self.failed: list[str] = []
        self.stopping = False
        self._t0, self._steps0 = time.monotonic(), sum(self.steps_done().values())
        self._last_print = 0.0
        self._tty = sys.stdout.isatty()

    def steps_done(self) -> dict[str, int]:
        """Each run's agent steps so far (its metrics.csv), up to its total."""
        return {s.name: min(last_agent_steps(s.run_dir), s.total_steps) for s in self.specs}

    def start(self, spec: RunSpec, gpu: str | None) -> None:
        """Start ``spec`` on slot ``gpu``: fresh (its folder emptied) or resumed, its output to launch.log."""
        state = run_state(spec)
        if state == "fresh" and spec.run_dir.exists():  # no checkpoint: nothing in it can be continued
            shutil.rmtree(spec.run_dir)
        cmd = next_command(spec, state, gpu)
        write_run_file(spec, status="running", started=time.time(), launched=shown(cmd))
        log = open(spec.run_dir / "launch.log", "a")
        log.write(f"# study: {shown(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at the terminal reaches the study, which stops each run in turn
            cwd=REPO,
            env=child_env(gpu),
        )
        log.close()
        self.running.append(Running(spec, proc, gpu, time.monotonic()))

    def reap(self) -> None:
        """Record each run that ended (finished, stopped or failed) and free its slot."""
        for r in [r for r in self.running if r.proc.poll() is not None]:
            self.running.remove(r)
            self.free.append(r.gpu)
            steps = last_agent_steps(r.spec.run_dir)
            ok = r.proc.returncode == 0 and steps >= r.spec.total_steps
            write_run_file(
                r.spec,
                status="finished" if ok else ("stopped" if self.stopping else "failed"),
                returncode=r.proc.returncode,
                agent_steps=steps,
            )
            if ok:
                self.done += 1
            elif not self.stopping:
                self.failed.append(r.spec.name)
                print(
                    f"\nstudy: run {r.spec.name} ended with code {r.proc.returncode} at {steps:,} agent steps; "
                    f"see {r.spec.run_dir / 'launch.log'}",
                    file=sys.stderr,
                    flush=True,
                )

    def loop(self) -> int:
        """Run until every run ended or a stop: 0 all finished, 1 some failed, 130 stopped."""
        while self.todo or self.running:
            if self.stopping:
                self.signal_all()  # a child started just before the signal hears it too
            self.reap()
            while self.todo and self.free and not self.stopping:
                self.start(self.todo.pop(0), self.free.pop(0))
            self.progress()
            if self.stopping and not self.running:
                break
            time.sleep(0.5)
        self.progress(force=True)
        print(flush=True)
        return 130 if self.stopping else (1 if self.failed else 0)

    def stop(self) -> None:
        """Ctrl-C / SIGTERM: each launch.py finishes its update and checkpoints, so a rerun resumes."""
        if not self.stopping:
            print(
                "\nstudy: stopping; each run checkpoints first (the same command resumes the study)",
                file=sys.stderr,
                flush=True,
            )
        self.stopping = True
        self.signal_all()

    def signal_all(self) -> None:
        """SIGTERM to every running run, once each (launch.py checkpoints on the first, stops at once on a second)."""
        for r in self.running:
            if r.proc.poll() is None and not r.signalled:
                r.proc.send_signal(signal.SIGTERM)
                r.signalled = True

    def progress(self, force: bool = False) -> None:
        """One line: on a terminal it redraws in place, in a file a new line every PROGRESS_S."""
        now = time.monotonic()
        if not force and now - self._last_print < (1.0 if self._tty else PROGRESS_S):
            return
        self._last_print = now
        steps = self.steps_done()  # each metrics.csv read once a line
        live = [s for s in self.specs if s.name not in self.failed]  # failed runs no longer count towards the ETA
        total = sum(s.total_steps for s in live)
        done = sum(steps[s.name] for s in live)
        rate = (sum(steps.values()) - self._steps0) / max(now - self._t0, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("nan")
        line = (
            f"study: {self.done}/{len(self.specs)} runs done, {len(self.running)} running | "
            f"steps {done:,}/{total:,} | {rate:,.0f} steps/s | ETA {fmt_duration(eta)}"
        )
        print("\r" + line if self._tty else line, end="" if self._tty else "\n", flush=True)
