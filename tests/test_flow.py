"""Flow control alone (common/flow.py): the learner's ledger, the actor's gate, the replay check. No sockets."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from common.flow import RUNS_KEPT_PER_ACTOR, ActorGate, LearnerLedger, SeenSegments, note_newest_seq
from common.wire import FlowMeta


@dataclass
class Seg:
    """A segment as flow control sees it."""

    actor: int
    run: int
    seq: int


def beat(version: int, learner_run: int, retired: list) -> FlowMeta:
    return FlowMeta(version, learner_run, tuple(tuple(t) for t in retired))


# ---- the replay check and the bounded per-actor tables ----------------------------------------------------------
def test_seen_segments_keep_the_newest_runs_of_each_actor() -> None:
    seen = SeenSegments()
    assert seen.first_time(0, 1, 0) and seen.first_time(0, 1, 1) and not seen.first_time(0, 1, 1)
    for run in range(2, 2 + RUNS_KEPT_PER_ACTOR):
        assert seen.first_time(0, run, 0)
    assert len(seen.newest[0]) == RUNS_KEPT_PER_ACTOR and 1 not in seen.newest[0]  # the oldest run went
    assert seen.first_time(1, 1, 0)  # another actor id has runs of its own


def test_note_newest_seq_keeps_the_newest_seq_and_the_runs_noted_last() -> None:
    runs: dict[int, int] = {}
    note_newest_seq(runs, 7, 3)
    note_newest_seq(runs, 7, 1)  # an older seq never lowers it
    assert runs == {7: 3}
    for run in range(RUNS_KEPT_PER_ACTOR):
        note_newest_seq(runs, run, 0)
    assert 7 not in runs and len(runs) == RUNS_KEPT_PER_ACTOR
    note_newest_seq(runs, 0, 5)  # noting a run again makes it the newest
    note_newest_seq(runs, 99, 0)
    assert list(runs) == [2, 3, 0, 99] and runs[0] == 5


# ---- the learner's ledger --------------------------------------------------------------------------------------
def test_ledger_reports_retirements_with_the_version_that_consumed_them() -> None:
    ledger = LearnerLedger(num_workers=2, version=4, run_id=9)
    assert ledger.flow_meta() == FlowMeta(4, 9, ())
    assert ledger.advance([Seg(0, 5, 0), Seg(1, 6, 2)]) == 5
    assert ledger.flow_meta() == FlowMeta(5, 9, ((0, 5, 0), (1, 6, 2)))
    ledger.retire([Seg(0, 5, 1)])  # a drop retires without an update
    assert ledger.version == 5 and ledger.flow_meta().retired == ((0, 5, 1), (1, 6, 2))
    assert ledger.flow_meta().wire() == {"version": 5, "learner_run": 9, "retired": [[0, 5, 1], [1, 6, 2]]}


def test_ledger_table_stays_bounded() -> None:
    """Actor ids outside [0, NumWorkers) are not noted; each id keeps its RUNS_KEPT_PER_ACTOR newest runs."""
    ledger = LearnerLedger(num_workers=2)
    ledger.retire([Seg(2, 1, 0), Seg(-1, 1, 0)])
    assert ledger.retired == {}
    ledger.retire([Seg(0, run, 0) for run in range(10)])
    assert list(ledger.retired[0]) == list(range(10 - RUNS_KEPT_PER_ACTOR, 10))
    assert ledger.run_id != LearnerLedger(num_workers=2).run_id  # each learner process draws its own


def test_ledger_never_reports_a_retirement_with_the_version_before_its_update() -> None:
    """The race fixed by reading the version with the retirements: a heartbeat (another thread) read
    between an update and its retirements must not see the retirement with the old version."""
    ledger, stop, bad = LearnerLedger(num_workers=1, run_id=1), threading.Event(), []

    def heartbeats() -> None:
        while not stop.is_set():
            flow = ledger.flow_meta()
            if flow.retired and flow.retired[0][2] >= flow.version:  # seq u is consumed by update u -> u + 1
                bad.append(flow)

    reader = threading.Thread(target=heartbeats)
    reader.start()
    try:
        for seq in range(2000):
            ledger.advance([Seg(0, 3, seq)])
    finally:
        stop.set()
        reader.join()
    assert not bad and ledger.flow_meta() == FlowMeta(2000, 1, ((0, 3, 1999),))


# ---- the actor's gate ------------------------------------------------------------------------------------------
def test_actor_flow_control_keeps_the_lag_bound() -> None:
    """An actor may have at most max_policy_lag segments that the learner has not retired yet."""
    gate = ActorGate(actor_id=3, run_id=11)
    gate.hold_weights(beat(0, learner_run=1, retired=[]))
    assert gate.version == 0 and gate.unretired() == 0
    gate.sent(1)  # two segments (0, 1) sent
    assert gate.unretired() == 2 and not gate.can_start(1)  # lag 1 allows no third one yet
    gate.hold_weights(beat(1, learner_run=1, retired=[[3, 11, 0], [3, 99, 7], [4, 11, 9]]))
    assert gate.unretired() == 1 and gate.can_start(1)  # only its own (actor 3, run 11) retirements count
    gate.hear_heartbeat(beat(5, learner_run=1, retired=[[3, 11, 1]]))
    assert gate.unretired() == 1  # a heartbeat ahead of the weights this actor holds does not count yet
    gate.hold_weights(beat(5, learner_run=1, retired=[[3, 11, 0]]))
    gate.hear_heartbeat(beat(5, learner_run=1, retired=[[3, 11, 1]]))
    assert gate.unretired() == 0
    gate.hear_heartbeat(beat(5, learner_run=2, retired=[[3, 11, 9]]))  # another learner's heartbeat: not counted
    assert gate.retired == 1 and gate.next_seq() == 2


def test_actor_forgets_flow_state_when_the_learner_restarts() -> None:
    gate = ActorGate(actor_id=0, run_id=5)
    gate.hold_weights(beat(105, learner_run=1, retired=[[0, 5, 40]]))
    gate.sent(42)
    assert gate.unretired() == 2
    new = beat(100, learner_run=2, retired=[])  # resumed from an older checkpoint
    assert gate.is_new_learner(new) and gate.supersedes(new, beat(105, learner_run=1, retired=[]))
    gate.hold_weights(new)
    assert gate.version == 100 and gate.unretired() == 0  # the new learner will never report seqs 41, 42
    assert gate.retired_floor == 42 and gate.retired == -1


def test_the_same_version_of_another_learner_run_is_not_held() -> None:
    gate = ActorGate(actor_id=0, run_id=5)
    gate.hold_weights(beat(0, learner_run=1, retired=[]))
    assert gate.holds(beat(0, 1, [])) and not gate.holds(beat(1, 1, []))
    assert not gate.holds(beat(0, 2, []))  # a fresh learner's version 0: other weights


def test_newest_weights_of_one_drain() -> None:
    """Of the weights read in one drain the newest version is held, or a new learner run's whatever its version."""
    gate = ActorGate(actor_id=0, run_id=5)
    gate.hold_weights(beat(7, learner_run=1, retired=[]))
    assert gate.supersedes(beat(3, 1, []), None)
    assert gate.supersedes(beat(8, 1, []), beat(8, 1, [])) and not gate.supersedes(beat(7, 1, []), beat(8, 1, []))
    assert gate.supersedes(beat(2, 4, []), beat(8, 1, []))


def test_a_heartbeat_between_an_update_and_its_weights_keeps_the_lag_bound() -> None:
    """The regression of tests/test_learner.py on the ledger and the gate alone: update 0 -> 1 consumed
    segment 0 and its weights are not out yet; a heartbeat now must not let the actor, still holding
    version 0, start a segment that would only be consumed at update 2."""
    ledger, gate = LearnerLedger(num_workers=1), ActorGate(actor_id=0, run_id=0)
    gate.hold_weights(ledger.flow_meta())
    gate.sent(1)  # segments 0 and 1, both with version 0: as many as lag 1 allows in flight
    ledger.advance([Seg(0, 0, 0)])
    gate.hear_heartbeat(ledger.flow_meta())
    assert gate.version == 0 and gate.unretired() == 2  # no segment 2 with version-0 weights: too stale at update 2
    gate.hold_weights(ledger.flow_meta())  # the weights of update 1
    assert gate.version == 1 and gate.unretired() == 1  # with version 1 it may start segment 2
