"""Starts actor processes and restarts the ones that die (a crash, a kill), counting restarts."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

EXIT_OK = 0  # the learner said stop
EXIT_LEARNER_GONE = 3  # the learner went silent past actor_timeout_s
EXIT_REFUSED = 4  # the learner refused this actor's key (or its keys could not be read): a restart cannot help
QUICK_DEATH_S = 5.0
MAX_QUICK_DEATHS = 5


@dataclass
class _Child:
    actor_id: int
    proc: subprocess.Popen
    started: float
    incarnation: int = 0
    quick_deaths: int = 0
    done: bool = False


@dataclass
class ActorSupervisor:
    """``make_cmd(actor_id, incarnation)`` gives the command line of one actor process."""

    make_cmd: Callable[[int, int], list[str]]
    actor_ids: list[int]
    cwd: str | None = None
    restart_on_learner_gone: bool = True
    restarts: int = 0
    refused: int = 0  # actors the learner refused
    children: list[_Child] = field(default_factory=list)
    stopping: bool = False

    def _spawn(self, actor_id: int, incarnation: int) -> subprocess.Popen:
        # own session: a Ctrl-C at the terminal reaches the launcher, which then stops actors cleanly
        return subprocess.Popen(self.make_cmd(actor_id, incarnation), cwd=self.cwd, start_new_session=True)

    def start(self) -> None:
        for i in self.actor_ids:
            self.children.append(_Child(i, self._spawn(i, 0), time.monotonic()))

    def poll(self) -> int:
        """Restart children that died; returns the number of restarts so far."""
        if self.stopping:
            return self.restarts
        for c in self.children:
            if c.done or c.proc.poll() is None:
                continue
            rc = c.proc.returncode
            if rc == EXIT_OK or (rc == EXIT_LEARNER_GONE and not self.restart_on_learner_gone):
                c.done = True
                continue
            if rc == EXIT_REFUSED:  # the actor said why, in one line
                c.done = True
                self.refused += 1
                continue
            c.quick_deaths = c.quick_deaths + 1 if time.monotonic() - c.started < QUICK_DEATH_S else 0
            if c.quick_deaths >= MAX_QUICK_DEATHS:
                c.done = True
                print(f"supervisor: actor {c.actor_id} keeps dying at start (exit {rc}); not restarting it",
                      file=sys.stderr, flush=True)
                continue
            c.incarnation += 1
            self.restarts += 1
            print(f"supervisor: actor {c.actor_id} exited with {rc}; restarting (restart #{self.restarts})",
                  file=sys.stderr, flush=True)
            c.proc, c.started = self._spawn(c.actor_id, c.incarnation), time.monotonic()
        return self.restarts

    def all_done(self) -> bool:
        return all(c.done for c in self.children)

    def stop(self, grace_s: float = 10.0) -> None:
        """Wait ``grace_s`` for children to exit on their own (after a stop message), then terminate."""
        self.stopping = True
        deadline = time.monotonic() + grace_s
        for c in self.children:
            try:
                c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.terminate()
        for c in self.children:
            try:
                c.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()
