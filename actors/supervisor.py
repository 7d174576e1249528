"""Starts actor processes and restarts the ones that die (a crash, a kill), counting restarts."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

EXIT_OK = 0  # the learner said stop
EXIT_LEARNER_GONE = 3  # the learner went silent past actor_timeout_s
EXIT_REFUSED = 4  # the learner refused this actor's key (or its keys could not be read): a restart cannot help
EXIT_FAILED = 1  # the actors kept dying at start
EXIT_MISMATCH = 5  # the actor's config differs from the learner's: a restart cannot help either
EXIT_DUPLICATE = 6  # another live process holds this actor id: the learner refused this one
QUICK_DEATH_S = 5.0
PROBE_S = 5.0  # how long the actors role listens for a learner an actor gave up on (it beats every second)
MAX_QUICK_DEATHS = 5
REPO = Path(__file__).resolve().parents[1]  # actors run from the repo root, which puts it first on sys.path


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
    learner_alive: Callable[[], bool] | None = None  # asked when an actor gave up on its learner (see poll)
    restarts: int = 0
    refused: int = 0  # actors the learner refused
    finished: int = 0  # actors the learner told to stop
    mismatched: int = 0  # actors whose config differs from the learner's
    duplicated: int = 0  # actors refused because another live process holds their actor id
    gave_up_on_learner: int = 0  # actors that gave up on a learner that was gone
    notes: list[str] = field(default_factory=list)  # why each actor that will not run again ended
    children: list[_Child] = field(default_factory=list)
    stopping: bool = False

    def _spawn(self, actor_id: int, incarnation: int) -> subprocess.Popen:
        # own session: a Ctrl-C at the terminal reaches the launcher, which then stops actors cleanly
        return subprocess.Popen(self.make_cmd(actor_id, incarnation), cwd=self.cwd, start_new_session=True)

    def start(self) -> None:
        for i in self.actor_ids:
            self.children.append(_Child(i, self._spawn(i, 0), time.monotonic()))

    def poll(self) -> int:
        """Restart children that died; returns the number of restarts so far.

        An actor that gave up on a silent learner is restarted when ``restart_on_learner_gone``, or when
        ``learner_alive()`` (asked at most once per pass) says the learner is heard after all: the
        silence was the actor's own (it was stopped, its link dropped)."""
        if self.stopping:
            return self.restarts
        alive: bool | None = None
        for c in self.children:
            if c.done or c.proc.poll() is None:
                continue
            rc = c.proc.returncode
            if rc == EXIT_LEARNER_GONE and not self.restart_on_learner_gone:
                if alive is None:
                    alive = self.learner_alive is not None and self.learner_alive()
                if not alive:
                    self._retire(c, f"actor {c.actor_id} gave up on a silent learner (exit {rc})")
                    self.gave_up_on_learner += 1
                    continue
            if rc == EXIT_OK:
                c.done = True
                self.finished += 1
                continue
            if rc == EXIT_REFUSED:  # the actor said why, in one line
                self._retire(c, f"the learner refused actor {c.actor_id}'s key")
                self.refused += 1
                continue
            if rc == EXIT_MISMATCH:
                self._retire(c, f"actor {c.actor_id}'s config differs from the learner's")
                self.mismatched += 1
                continue
            if rc == EXIT_DUPLICATE:
                self._retire(c, f"another live process holds actor id {c.actor_id}")
                self.duplicated += 1
                continue
            self._restart(c, rc)
        return self.restarts

    def _retire(self, c: _Child, why: str) -> None:
        c.done = True
        self.notes.append(why)

    def _restart(self, c: _Child, rc: int) -> None:
        c.quick_deaths = c.quick_deaths + 1 if time.monotonic() - c.started < QUICK_DEATH_S else 0
        if c.quick_deaths >= MAX_QUICK_DEATHS:
            self._retire(c, f"actor {c.actor_id} keeps dying at start (exit {rc})")
            print(
                f"supervisor: actor {c.actor_id} keeps dying at start (exit {rc}); not restarting it",
                file=sys.stderr,
                flush=True,
            )
            return
        c.incarnation += 1
        self.restarts += 1
        print(
            f"supervisor: actor {c.actor_id} exited with {rc}; restarting (restart #{self.restarts})",
            file=sys.stderr,
            flush=True,
        )
        c.proc, c.started = self._spawn(c.actor_id, c.incarnation), time.monotonic()

    def gave_up(self) -> str | None:
        """Why no actor is left running, once none is and the learner told none to stop; else None."""
        if self.stopping or not self.children or not self.all_done() or self.finished:
            return None
        return "every actor has stopped: " + "; ".join(self.notes)

    def exit_code(self) -> int:
        """The actors role's exit code once all are done: 0 if the learner told them to stop (training
        ended), else why they ended: refused, gave up on the learner, or kept dying."""
        if self.refused:
            return EXIT_REFUSED
        if self.mismatched:
            return EXIT_MISMATCH
        if self.duplicated:
            return EXIT_DUPLICATE
        if self.finished:
            return EXIT_OK
        return EXIT_LEARNER_GONE if self.gave_up_on_learner else EXIT_FAILED

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


def learner_heard(learner_addr: str, keys_dir: Path | None, wait_s: float = PROBE_S) -> bool:
    """Whether the learner at ``learner_addr`` is heard on its weights channel within ``wait_s``: a
    heartbeat or weights message that decodes (nothing is unpickled). A live learner sends one at
    least every second; a stop message means it is ending, which counts as not heard."""
    import zmq

    from common.transport import curve_client, load_actor_keys, weights_address
    from common.wire import MAX_HEADER_BYTES, WireError, decode

    sub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 4)
    try:
        if keys_dir is not None:
            curve_client(sub, load_actor_keys(keys_dir))
        sub.connect(weights_address(learner_addr))
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            if not sub.poll(int(left * 1000) + 1, zmq.POLLIN):
                continue
            frames = sub.recv_multipart()
            if len(frames[0]) > MAX_HEADER_BYTES:
                continue
            try:
                kind = decode(frames).kind
            except WireError:
                continue
            if kind in ("heartbeat", "weights"):
                return True
            if kind == "stop":
                return False
        return False
    finally:
        sub.close()


def actor_command(
    cfg_path: Path | None,
    learner_addr: str,
    actor_id: int,
    total: int,
    incarnation: int,
    *,
    keys_dir: Path | None = None,
    overrides: Sequence[str] = (),
    speaks: bool = False,
) -> list[str]:
    """The command line of one actor process (``python -m actors.main ...``), ``overrides`` last. Without
    ``cfg_path`` the actor runs with the learner's config alone; ``speaks``: it reports waits on a
    silent learner (one actor per machine)."""
    keys = ["--keys", str(keys_dir.resolve())] if keys_dir is not None else []
    reports = ["--report-waits"] if speaks else []
    config = ["--config", str(cfg_path)] if cfg_path is not None else []
    return [
        sys.executable,
        "-m",
        "actors.main",
        *config,
        "--learner",
        learner_addr,
        "--actor-id",
        str(actor_id),
        "--num-actors",
        str(total),
        "--incarnation",
        str(incarnation),
        *keys,
        *reports,
        *overrides,
    ]


def actor_supervisor(
    cfg_path: Path | None,
    learner_addr: str,
    ids: list[int],
    total: int,
    *,
    restart_on_learner_gone: bool,
    overrides: Sequence[str] = (),
    keys_dir: Path | None = None,
    learner_alive: Callable[[], bool] | None = None,
) -> ActorSupervisor:
    """A supervisor (not started) of the actors ``ids`` of ``total``, each reading ``cfg_path`` and sending
    to ``learner_addr``. ``learner_alive()``: asked, when ``restart_on_learner_gone`` is off, whether an
    actor that gave up on its learner should be restarted after all."""

    def cmd(actor_id: int, incarnation: int) -> list[str]:
        speaks = actor_id == ids[0]  # one line a minute per machine while the learner is silent
        return actor_command(
            cfg_path, learner_addr, actor_id, total, incarnation, keys_dir=keys_dir, overrides=overrides, speaks=speaks
        )

    return ActorSupervisor(
        cmd, ids, cwd=str(REPO), restart_on_learner_gone=restart_on_learner_gone, learner_alive=learner_alive
    )


def supervise_until_done(sup: ActorSupervisor, poll_s: float = 0.5) -> bool:
    """Start ``sup``'s actors and restart those that die until the learner stops them, none is left, or
    SIGINT/SIGTERM arrives; then stop them all. Returns whether a signal ended it."""
    sup.start()
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:  # noqa: ARG001
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop["now"] and not sup.all_done():
        sup.poll()
        time.sleep(poll_s)
    sup.stop(grace_s=0.0 if stop["now"] else 5.0)
    return stop["now"]
