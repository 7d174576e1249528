"""Flow control between actors and the learner: the state both sides keep, as plain state machines.

No sockets and no threads here (one lock guards the learner's side, which two threads read); the
learner's I/O thread and the actor's ``WeightsReceiver`` feed these objects what the wire brought.

Terms. The learner's *version* is the number of updates done; the weights published after update
u carry version u, and a segment carries the version of the weights it was collected with. A
segment is identified by (actor id, actor run id, seq): each actor process draws a random run id
and numbers its segments 0, 1, 2, ... in the order it sends them. A segment is *retired* once the
learner has consumed it in an update or dropped it. L = ``max_policy_lag``.

Invariants:

1. Lag bound. Every segment is consumed at most L updates after the weights it used: a segment of
   version v is used only by an update that starts at version c with c - L <= v, and never when v is
   newer than the newest published weights (the learner's I/O thread drops it otherwise, and
   retires it). The gate below makes such drops unnecessary: an actor starts a segment only while at
   most L of its segments are unretired (``ActorGate.can_start``), so at most L earlier segments can
   still be waiting for an update that starts at the version it holds, and batches take segments in
   arrival order.
2. Retirement after the version moved on. ``LearnerLedger.advance`` counts an update and retires the
   segments it consumed in one critical section, and ``LearnerLedger.flow_meta`` reads the version
   with the retirements under the same lock: every report of a retirement carries a version at
   least that of the update that consumed the segment.
3. Retirements count only with the weights they follow. An actor takes the retirements of a weights
   message when it holds those weights, and those of a heartbeat only if the heartbeat comes from
   the learner run whose weights it holds and its version is no newer than theirs
   (``ActorGate.hold_weights``, ``ActorGate.hear_heartbeat``). With 2: when the actor counts a
   segment as retired it already holds weights at least as new as the update that consumed it, so
   a heartbeat sent between an update and its weights cannot open the gate one update too early.
4. Learner restart. Each learner process draws a new run id. An actor that holds weights of a new
   learner run sets its retired floor to the newest seq it has sent (the new learner will never
   report the segments sent to the old one) and forgets the retirements it counted. A restarted
   actor is a new actor run and never counts its predecessor's retirements.
5. Replay dedup. One connection keeps an actor's order, so a segment whose seq is at or below the
   newest seen of its (actor, actor run) is a replay and is refused (``SeenSegments``).

6. Stream ownership. An actor id owns the streams ``env_split(NumWorkers, n, id)`` (``common/wire.py``)
   of the split over n actors its segments declare, and one process at a time holds an actor id:
   each stream comes from one env, so its intrinsic-reward filter and its V-trace recursion follow
   one environment (``ActorRuns``; the learner's I/O thread pins n and checks the streams).

Both tables keep, per actor id, only the RUNS_KEPT_PER_ACTOR runs noted most recently
(``note_newest_seq``), and the learner's only for actor ids below NumWorkers: what a heartbeat
carries stays bounded however often actors restart or peers make up ids. So does the table of
refused runs (at most RUNS_KEPT_PER_ACTOR per actor id).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable
from typing import Protocol

from common.wire import FlowMeta

RUNS_KEPT_PER_ACTOR = 4  # retirement table and replay check: the newest run ids (restarts) of each actor id


class SegmentId(Protocol):
    """What flow control needs of a segment: who sent it, and which one of theirs it is."""

    actor: int
    run: int
    seq: int


def note_newest_seq(runs: dict[int, int], run: int, seq: int) -> None:
    """``runs`` (one actor id's run -> newest seq) takes ``seq`` for ``run`` and moves that run to the end;
    only the RUNS_KEPT_PER_ACTOR most recent runs stay (restarts change the run id)."""
    runs[run] = max(runs.pop(run, -1), seq)
    while len(runs) > RUNS_KEPT_PER_ACTOR:
        runs.pop(next(iter(runs)))


class ActorRuns:
    """Which process (actor run) holds each actor id, on the learner's I/O thread.

    A new run of an actor id whose segment passes validation takes the id over (``take``): that is a
    restart, and the run it replaces is presumed ended. An ended process can still deliver what it
    had sent, at most ``max_lag + 1`` segments (its gate's bound on unretired ones); the segments of a
    replaced run are dropped (and retired, so that a live one keeps sending), and once more than
    ``max_lag + 1`` have come the replaced run is alive: two processes hold one actor id. The later
    run is refused from then on, and the earlier one holds the id again. Per actor id at most
    RUNS_KEPT_PER_ACTOR replaced and RUNS_KEPT_PER_ACTOR refused runs are kept."""

    OK, NEW, REPLACED, REFUSED = "ok", "new", "replaced", "refused"

    def __init__(self, max_lag: int):
        self.limit = max_lag + 1
        self.owner: dict[int, int] = {}  # actor id -> the run holding it
        self.replaced: dict[int, dict[int, int]] = {}  # actor id -> {replaced run: its segments since}
        self.refused: dict[int, dict[int, None]] = {}  # actor id -> runs refused (newest last)

    def judge(self, actor: int, run: int) -> tuple[str, int | None]:
        """A segment of (``actor``, ``run``) arrived: OK (the holder's) or NEW (a run not seen: it takes
        the id over if it passes validation) to read it, REPLACED to drop it, REFUSED to refuse it. With
        OK comes the run now refused, when this segment proved that two processes hold the id."""
        if run in self.refused.get(actor, {}):
            return self.REFUSED, None
        owner = self.owner.get(actor)
        if owner is None or run == owner:
            return (self.NEW if owner is None else self.OK), None
        replaced = self.replaced.get(actor, {})
        if run not in replaced:
            return self.NEW, None
        replaced[run] += 1
        if replaced[run] <= self.limit:
            return self.REPLACED, None
        del replaced[run]
        _keep_newest(self.refused.setdefault(actor, {}), owner, None)
        self.owner[actor] = run
        return self.OK, owner

    def take(self, actor: int, run: int) -> None:
        """A validated segment of ``run``: it holds ``actor`` from now on (a restart replaced the holder)."""
        owner = self.owner.get(actor)
        if owner is not None and owner != run:
            _keep_newest(self.replaced.setdefault(actor, {}), owner, 0)
        self.owner[actor] = run


def _keep_newest(table: dict, key: int, value) -> None:
    """``table[key] = value``, moved to the end; only the RUNS_KEPT_PER_ACTOR newest keys stay."""
    table.pop(key, None)
    table[key] = value
    while len(table) > RUNS_KEPT_PER_ACTOR:
        table.pop(next(iter(table)))


class SeenSegments:
    """The newest seq seen of each (actor, actor run): an actor numbers its segments 0, 1, 2, ... in the
    order it sends them, and one connection keeps that order, so a seq at or below it is a replay.
    Bounded like the retirement table: the newest RUNS_KEPT_PER_ACTOR runs of each actor id."""

    def __init__(self) -> None:
        self.newest: dict[int, dict[int, int]] = {}

    def first_time(self, actor: int, run: int, seq: int) -> bool:
        """Note (actor, run, seq); False if it, or a later seq of that run, was seen before."""
        runs = self.newest.setdefault(actor, {})
        if seq <= runs.get(run, -1):
            return False
        note_newest_seq(runs, run, seq)
        return True


class LearnerLedger:
    """The learner's side: its run id, its policy version and the retired segments, under one lock.

    ``retired`` is actor id -> {actor run id -> newest retired seq}, for actor ids in
    [0, ``num_workers``) and at most RUNS_KEPT_PER_ACTOR runs each. The main thread advances the
    version; the I/O thread retires dropped segments and reads ``flow_meta`` for every heartbeat."""

    def __init__(self, num_workers: int, version: int = 0, run_id: int | None = None):
        self.num_workers = num_workers
        self.run_id = secrets.randbits(62) if run_id is None else run_id  # new per process: actors then reset
        self.retired: dict[int, dict[int, int]] = {}
        self.refused: dict[int, dict[int, None]] = {}  # actor id -> runs refused (two processes, one id)
        self._version = version
        self._lock = threading.Lock()

    @property
    def version(self) -> int:
        """Updates done; the weights published after update u carry version u."""
        with self._lock:
            return self._version

    def advance(self, consumed: Iterable[SegmentId]) -> int:
        """One update done on ``consumed``: the version moves on and those segments are retired in one
        critical section (invariant 2). Returns the new version."""
        with self._lock:
            self._version += 1
            self._retire(consumed)
            return self._version

    def retire(self, dropped: Iterable[SegmentId]) -> None:
        """Segments dropped unused (too stale, or newer than any weights); their actors learn it with
        the next weights or heartbeat."""
        with self._lock:
            self._retire(dropped)

    def refuse(self, actor: int, run: int) -> None:
        """Actor run ``run`` is refused (another live process holds actor id ``actor``); it learns so
        from the next weights or heartbeat and exits. At most RUNS_KEPT_PER_ACTOR kept per actor id."""
        with self._lock:
            if 0 <= actor < self.num_workers:
                _keep_newest(self.refused.setdefault(actor, {}), run, None)

    def _retire(self, segments: Iterable[SegmentId]) -> None:
        for s in segments:
            if 0 <= s.actor < self.num_workers:  # the I/O thread refuses other ids; the table stays bounded
                note_newest_seq(self.retired.setdefault(s.actor, {}), s.run, s.seq)

    def flow_meta(self) -> FlowMeta:
        """What every heartbeat and weights message carries: the version read together with the
        retirements. With the last *published* version instead, a heartbeat sent between an update
        and its weights would report a retirement with the old version, and an actor holding the old
        weights would start a segment with them, one update too stale to be used (invariant 3)."""
        with self._lock:
            retired = tuple((a, r, q) for a, runs in self.retired.items() for r, q in runs.items())
            refused = tuple((a, r) for a, runs in self.refused.items() for r in runs)
            return FlowMeta(self._version, self.run_id, retired, refused)


class ActorGate:
    """One actor process's side: the weights version it holds, what it has sent, what is retired.

    ``sent_seq`` is the newest seq sent; ``retired`` the newest of this (actor id, run id) that the
    learner run ``learner_run`` reported retired; ``retired_floor`` the newest sent before that
    learner run took over. Not thread-safe: the actor's one thread owns it."""

    def __init__(self, actor_id: int, run_id: int):
        self.actor_id, self.run_id = actor_id, run_id
        self.version = -1  # of the weights held; -1 before any
        self.learner_run: int | None = None
        self.retired = -1
        self.retired_floor = -1
        self.sent_seq = -1

    def is_new_learner(self, flow: FlowMeta) -> bool:
        """Whether ``flow`` comes from a learner run other than the one whose weights are held."""
        return flow.learner_run != self.learner_run

    def supersedes(self, flow: FlowMeta, newest: FlowMeta | None) -> bool:
        """Whether weights with ``flow`` replace ``newest``, the best of the weights read so far in one
        drain: no newer version, or a learner run other than the held one (a resumed learner may be older)."""
        return newest is None or flow.version >= newest.version or self.is_new_learner(flow)

    def holds(self, flow: FlowMeta) -> bool:
        """Whether the weights ``flow`` came with are those the actor holds: the same version of the same
        learner run (a fresh learner's version 0 is not an earlier run's version 0)."""
        return flow.version == self.version and not self.is_new_learner(flow)

    def hold_weights(self, flow: FlowMeta) -> None:
        """The actor now holds the weights ``flow`` came with: their retirements count (invariant 3);
        from a new learner run, what was sent before will never be reported (invariant 4)."""
        if self.is_new_learner(flow):
            self.learner_run = flow.learner_run
            self.retired_floor = self.sent_seq
            self.retired = -1
        self.version = flow.version
        self._note_retired(flow.retired)

    def hear_heartbeat(self, flow: FlowMeta) -> None:
        """A heartbeat's retirements count only once the weights they follow are held (invariant 3)."""
        if flow.learner_run == self.learner_run and flow.version <= self.version:
            self._note_retired(flow.retired)

    def _note_retired(self, retired: Iterable[tuple[int, int, int]]) -> None:
        for actor, run, seq in retired:
            if actor == self.actor_id and run == self.run_id:
                self.retired = max(self.retired, seq)

    def sent(self, seq: int) -> None:
        """Segment ``seq`` has gone out."""
        self.sent_seq = seq

    def next_seq(self) -> int:
        """The seq of the next segment."""
        return self.sent_seq + 1

    def unretired(self) -> int:
        """Segments sent and not yet consumed or dropped by the learner (as far as this actor knows)."""
        return self.sent_seq - max(self.retired, self.retired_floor)

    def can_start(self, max_lag: int) -> bool:
        """Whether one more segment keeps the lag bound: at most ``max_lag`` unretired before it."""
        return self.unretired() <= max_lag
