"""Faults of processes, disks and checkpoints: each ends in one clear line, and nothing learnt is lost."""

from __future__ import annotations

import errno
import logging
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import zmq

from actors.actor import ActorStop, WeightsReceiver
from actors.supervisor import EXIT_LEARNER_GONE, EXIT_OK, ActorSupervisor
from common.config import load_config
from common.rl.networks import PolicyNet
from common.transport import free_tcp_address, weights_address
from common.wire import WireError, encode
from learner.checkpoint import CheckpointError, load_checkpoint
from learner.learner import Learner
from learner.serial import SerialRunner

REPO = Path(__file__).resolve().parents[1]


def tiny_cfg(**kw):
    base = {"NumWorkers": 1, "ImageHeight": 44, "ImageWidth": 44, "BatchSize": 16, "NumInitSteps": 4}
    base.update(kw)
    return load_config(REPO / "configs" / "smoke.yaml", base)


class LateSub:
    """A SUB socket whose queued messages reach the socket only once someone listens for a while, as
    when a process resumes after SIGSTOP and ZeroMQ's I/O thread has yet to hand over what the kernel
    holds."""

    def __init__(self, delay_s: float) -> None:
        self.queue: list[list[bytes]] = []
        self.delay_s, self.listened = delay_s, 0.0

    def poll(self, timeout_ms: int, flags: int = 0) -> int:
        if self.queue and self.listened >= self.delay_s:
            return 1
        wait = min(timeout_ms / 1000, max(0.0, self.delay_s - self.listened)) if self.queue else timeout_ms / 1000
        time.sleep(wait)
        self.listened += wait
        return 1 if self.queue and self.listened >= self.delay_s else 0

    def recv_multipart(self) -> list[bytes]:
        return self.queue.pop(0)


# ---- an actor that was stopped, and the actors role --------------------------------------------------
@pytest.fixture(scope="module")
def policy() -> PolicyNet:
    return PolicyNet(18, 4, 44, 44)


def test_a_resumed_actor_reads_what_is_queued_before_judging_silence(policy: PolicyNet, weights_frames) -> None:
    sub = LateSub(delay_s=0.2)
    rx = WeightsReceiver(sub, policy, timeout_s=3.0, actor_id=0, run_id=5)
    sub.queue.append(weights_frames(policy, 0, learner_run=1))
    sub.listened = 1.0
    rx.poll()
    sub.listened = 0.0
    rx.last_heard -= 10.0  # stopped for 10 s, past actor_timeout_s; the learner went on sending
    sub.queue.append(encode("heartbeat", {"version": 0, "learner_run": 1, "retired": []}, {}))
    rx.poll()  # no ActorStop: the heartbeat was there
    assert time.monotonic() - rx.last_heard < 1.0
    rx.last_heard -= 10.0  # and with nothing queued, the actor still gives up
    with pytest.raises(ActorStop, match="no message from the learner"):
        rx.poll()


def test_a_fresh_learner_behind_running_actors_gets_warmup_frames(policy: PolicyNet, weights_frames) -> None:
    sub = LateSub(delay_s=0.0)
    rx = WeightsReceiver(sub, policy, timeout_s=30, actor_id=0, run_id=5)
    sub.queue.append(weights_frames(policy, 0, learner_run=1, warmup_steps=8))
    rx.poll()
    assert rx.needs_warmup()
    rx.warmed_for = rx.learner_run  # what warm_up notes once the frames are sent
    sub.queue.append(weights_frames(policy, 3, learner_run=1, warmup_steps=8))
    rx.poll()
    assert not rx.needs_warmup()  # the same learner, still warming up: frames already sent
    sub.queue.append(weights_frames(policy, 0, learner_run=2, warmup_steps=8))  # a fresh learner took over
    rx.poll()
    assert rx.needs_warmup()
    sub.queue.append(weights_frames(policy, 7, learner_run=3, warmup_steps=0))  # a resumed one: warm already
    rx.poll()
    assert not rx.needs_warmup()


def test_an_actor_loads_a_fresh_learners_weights_of_the_version_it_holds(policy: PolicyNet, weights_frames) -> None:
    """A learner started anew behind running actors publishes version 0 again: the actor must sample
    with those weights, not the earlier run's version 0, or its segments would carry the wrong version."""
    rx = WeightsReceiver(LateSub(delay_s=0.0), policy, timeout_s=30, actor_id=0, run_id=5)
    first, fresh = PolicyNet(18, 4, 44, 44), PolicyNet(18, 4, 44, 44)
    torch.nn.init.zeros_(fresh.pi_head.bias)
    torch.nn.init.ones_(first.pi_head.bias)
    rx.sock.queue.append(weights_frames(first, 0, learner_run=1))
    rx.poll()
    assert torch.equal(policy.pi_head.bias, first.pi_head.bias)
    rx.sock.queue.append(weights_frames(fresh, 0, learner_run=2))
    rx.poll()
    assert rx.learner_run == 2 and torch.equal(policy.pi_head.bias, fresh.pi_head.bias)


def _exits(code_by_incarnation: dict[int, int], default: int):
    def cmd(actor_id: int, incarnation: int) -> list[str]:
        code = code_by_incarnation.get(incarnation, default)
        return [sys.executable, "-c", f"import time, sys; time.sleep(0.05); sys.exit({code})"]

    return cmd


def _supervise(sup: ActorSupervisor, seconds: float = 20.0) -> str | None:
    """Run the actors role's loop until all are done; returns ``gave_up()`` as the loop ended."""
    sup.start()
    deadline = time.monotonic() + seconds
    while not sup.all_done() and time.monotonic() < deadline:
        sup.poll()
        time.sleep(0.05)
    why = sup.gave_up()
    sup.stop(grace_s=1.0)
    return why


def test_actors_role_restarts_an_actor_that_gave_up_while_the_learner_is_heard() -> None:
    asked = []
    sup = ActorSupervisor(
        _exits({0: EXIT_LEARNER_GONE}, EXIT_OK),
        [0, 1],
        restart_on_learner_gone=False,
        learner_alive=lambda: asked.append(1) or True,
    )
    _supervise(sup)
    assert sup.restarts == 2 and asked and sup.exit_code() == 0  # then the learner told them to stop


def test_actors_role_whose_actors_all_gave_up_exits_nonzero() -> None:
    sup = ActorSupervisor(
        _exits({}, EXIT_LEARNER_GONE), [0, 1], restart_on_learner_gone=False, learner_alive=lambda: False
    )
    why = _supervise(sup)
    assert sup.restarts == 0 and sup.exit_code() == EXIT_LEARNER_GONE
    assert "actor 1 gave up on a silent learner" in why


def test_an_actor_whose_config_differs_is_not_restarted_while_the_learner_is_heard() -> None:
    from actors.supervisor import EXIT_MISMATCH

    sup = ActorSupervisor(_exits({}, EXIT_MISMATCH), [0], restart_on_learner_gone=False, learner_alive=lambda: True)
    why = _supervise(sup)
    assert sup.restarts == 0 and sup.exit_code() == EXIT_MISMATCH and "config differs" in why


def test_the_probe_hears_a_live_learner_and_not_a_gone_one() -> None:
    from actors.supervisor import learner_heard

    addr = free_tcp_address()
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.bind(weights_address(addr))
    done = threading.Event()

    def beat() -> None:
        while not done.is_set():
            pub.send_multipart(encode("heartbeat", {"version": 0, "learner_run": 1, "retired": []}, {}))
            time.sleep(0.1)

    t = threading.Thread(target=beat, daemon=True)
    t.start()
    try:
        assert learner_heard(addr, None, wait_s=5.0)
    finally:
        done.set()
        t.join()
        pub.close(linger=0)
    t0 = time.monotonic()
    assert not learner_heard(addr, None, wait_s=0.5)
    assert time.monotonic() - t0 < 3.0


def test_local_learner_checkpoints_and_stops_when_no_actor_is_left(tmp_path: Path) -> None:
    """Before, the learner waited forever for data from actors the supervisor had given up on."""
    sup = ActorSupervisor(_exits({}, 1), [0], restart_on_learner_gone=True)
    learner = Learner(
        tiny_cfg(), tmp_path, "cpu", bind=free_tcp_address(), total_steps=10**9, supervisor=sup, tensorboard=False
    )
    sup.start()
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("row", learner.train()), daemon=True)
    t.start()
    t.join(timeout=60)
    sup.stop(grace_s=1.0)
    assert not t.is_alive(), "the learner kept waiting for actors"
    assert "every actor has stopped" in learner.failure and "keeps dying at start" in learner.failure
    assert load_checkpoint(tmp_path)["counters"]["update"] == 0


# ---- checkpoints, the disk, a non-finite loss, rejected messages ------------------------------------------
@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> SerialRunner:
    """One update, checkpointed; the last test in this file that uses it shuts it down."""
    from common.config import dump_yaml

    runner = SerialRunner(tiny_cfg(), tmp_path_factory.mktemp("trained"))
    runner.run(1)
    runner.learner.save()
    (runner.learner.run_dir / "config.yaml").write_text(dump_yaml(runner.cfg))  # as launch.py writes it
    return runner


def _tampered(trained: Path, tmp_path: Path, change) -> Path:
    data = torch.load(trained / "checkpoints" / "latest.pt", weights_only=True)
    change(data)
    path = tmp_path / "bad.pt"
    torch.save(data, path)
    return path


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda d: d.update(agent={}), "agent lacks policy"),
        (lambda d: d["counters"].update(update=1.5), "counter 'update' is 1.5"),
        (lambda d: d["counters"].update(agent_steps="many"), "counter 'agent_steps'"),
        (lambda d: d["config"].update(ImageHeight=84), "ImageHeight x ImageWidth = 84 x 44"),
        (lambda d: d["config"].update(NumWorkers=8), "NumWorkers = 8"),
    ],
)
def test_inconsistent_checkpoints_are_refused_in_one_line(runner: SerialRunner, tmp_path: Path, change, needle) -> None:
    with pytest.raises(CheckpointError, match="inconsistent checkpoint") as e:
        load_checkpoint(_tampered(runner.learner.run_dir, tmp_path, change))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_rejections_are_logged_once_per_actual_reason(runner: SerialRunner, caplog: pytest.LogCaptureFixture) -> None:
    """Before, the key was the text before the first colon: different faults of one array shared a line."""
    learner = runner.learner
    with caplog.at_level(logging.WARNING, logger="learner"):
        learner.reject(WireError("array 'frames': corrupt zstd data"))
        learner.reject(WireError("array 'frames': 10 bytes, shape [2, 5] needs 20"))
        learner.reject(WireError("array 'frames': 12 bytes, shape [2, 6] needs 24"))  # the same fault again
    assert sum("array 'frames'" in r.getMessage() for r in caplog.records) == 2
    from learner.learner import MAX_REJECT_REASONS

    with caplog.at_level(logging.WARNING, logger="learner"):
        for i in range(3 * MAX_REJECT_REASONS):  # a peer varying its faults
            learner.reject(WireError(f"unknown kind 'k{'x' * i}'"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == MAX_REJECT_REASONS + 1 and len(learner.stats.rejected_by_reason) == MAX_REJECT_REASONS + 1
    assert learner.counters["rejected_messages"] == 3 + 3 * MAX_REJECT_REASONS


def test_a_failed_resume_leaves_the_run_dir_as_it_was(runner: SerialRunner, capsys: pytest.CaptureFixture) -> None:
    """A resume whose override the checkpoint does not fit: before, a traceback, and config.yaml already
    rewritten with the override."""
    import launch

    run_dir = runner.learner.run_dir
    before = (run_dir / "config.yaml").read_text()
    rc = launch.main(["--resume", str(run_dir), "--learner-gpu", "-1", "--actors", "1", "NumWorkers=2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "does not fit this run" in err, err
    assert (run_dir / "config.yaml").read_text() == before


def test_a_second_signal_during_an_update_stops_at_once_and_cleanly(
    runner: SerialRunner, monkeypatch, same_batches, capsys: pytest.CaptureFixture
) -> None:
    """launch.py's learner with real signals, sent from inside its second update (the data comes from
    this process's collector). Before, the second one raised KeyboardInterrupt out of the launcher."""
    import os
    import signal

    import launch
    from learner.agent import RNDAgent
    from learner.batch_source import SocketBatchSource

    runner.collect()
    source = same_batches(runner.source.take(), runner.cfg.FrameStack)
    monkeypatch.setattr(SocketBatchSource, "next_batch", lambda _, version, timeout: source.next_batch(version, 0))
    real_update, calls = RNDAgent.update, []

    def update(self, batch):
        calls.append(1)
        if len(calls) == 2:
            for _ in range(2):  # the first asks to finish the update, the second to stop at once
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)  # the handler runs in between
        return real_update(self, batch)

    monkeypatch.setattr(RNDAgent, "update", update)
    run_dir = runner.learner.run_dir
    before = (run_dir / "checkpoints" / "latest.pt").read_bytes()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        rc = launch.main(
            [
                "--role",
                "learner",
                "--resume",
                str(run_dir),
                "--learner-gpu",
                "-1",
                "--bind",
                free_tcp_address(),
                "--total-steps",
                str(10**9),
            ]
        )
    except KeyboardInterrupt:
        pytest.fail("the second signal raised KeyboardInterrupt")
    err = capsys.readouterr().err
    assert rc == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert "a second signal stops at once" in err  # said by the first one
    assert "stopped at once by signal 15; the update in progress was dropped; " in err
    assert (run_dir / "checkpoints" / "latest.pt").read_bytes() == before  # update 1, the resumed one
    assert signal.getsignal(signal.SIGTERM) is handler and len(calls) == 2  # the launcher's handlers are gone


def test_a_non_finite_loss_stops_the_run_unpublished(runner: SerialRunner, tmp_path: Path, same_batches) -> None:
    """Before, NaN weights went out to every actor (which refused them) and training went on."""
    cfg = tiny_cfg(LearningRate=1.0)  # the config's largest: the losses overflow in the first minibatch
    learner = Learner(
        cfg,
        runner.learner.run_dir,
        "cpu",
        bind=free_tcp_address(),
        total_steps=10**9,
        resume=load_checkpoint(runner.learner.run_dir),
        tensorboard=False,
    )
    for g in learner.agent.optimizer.param_groups:
        g["lr"] = cfg.LearningRate  # the resumed optimizer state brought the old rate back
    runner.collect()
    learner.source = same_batches(runner.source.take(), cfg.FrameStack)
    published = []
    learner.publish_weights = lambda: published.append(learner.version)
    learner.train()
    assert published == [1]  # the weights of update 1 only, from before the failing update
    assert learner.failure.startswith("update 2: non-finite loss") and "value_loss" in learner.failure
    assert "\n" not in learner.failure
    assert all(torch.isfinite(v).all() for v in learner.agent.policy.state_dict().values())
    assert load_checkpoint(runner.learner.run_dir)["counters"]["update"] == 1  # the last good checkpoint


def test_a_full_disk_during_a_checkpoint_is_one_line_and_latest_stays(
    runner: SerialRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from learner.checkpoint import CheckpointWriteError

    learner, ckpt_dir = runner.learner, runner.learner.run_dir / "checkpoints"
    learner.ledger.advance([])  # a new update to checkpoint
    before = (ckpt_dir / "latest.pt").read_bytes()

    def full(obj, f, *a, **kw):
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("learner.checkpoint.torch.save", full)
    with pytest.raises(CheckpointWriteError) as e:
        learner.save()
    msg = str(e.value)
    assert "the disk is full" in msg and str(ckpt_dir) in msg and "\n" not in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__
    learner.shutdown()  # the final checkpoint is not tried again on the full disk
    assert (ckpt_dir / "latest.pt").read_bytes() == before
    assert not list(ckpt_dir.glob("*.tmp"))
