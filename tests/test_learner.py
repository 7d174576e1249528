"""The learner's pieces: stream handling, staleness, reward treatment, the predictor mask, checkpoints."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from common.rl.returns import extrinsic_stream
from common.wire import encode
from learner.batch import Segment
from learner.checkpoint import load_checkpoint, save_checkpoint
from learner.learner import Learner
from learner.learner_io import LearnerIO, parse_message
from learner.serial import SerialRunner


def test_extrinsic_stream_clips_cuts_and_bootstraps() -> None:
    r = torch.tensor([[100.0], [-3.0], [0.5], [0.0]])
    term = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    trunc = torch.tensor([[0.0], [0.0], [1.0], [0.0]])
    tv = torch.tensor([[0.0], [0.0], [2.0], [0.0]])
    rew, disc = extrinsic_stream(r, term, trunc, tv, 0.99)
    assert rew[:, 0].tolist() == pytest.approx([1.0, -1.0, 0.5 + 0.99 * 2.0, 0.0])
    assert disc[:, 0].tolist() == pytest.approx([0.99, 0.0, 0.0, 0.99])


def test_serial_training_runs_and_logs_raw_score(small_cfg, tmp_path: Path) -> None:
    cfg = small_cfg()
    runner = SerialRunner(cfg, tmp_path, num_actors=2)
    rows = runner.run(2)
    assert [r["update"] for r in rows] == [1, 2]
    assert rows[-1]["agent_steps"] == 2 * cfg.NumWorkers * cfg.RolloutSteps
    for r in rows:
        assert np.isfinite([r["policy_loss"], r["value_loss"], r["rnd_loss"], r["entropy"]]).all()
    assert runner.learner.counters["warmup_frames"] == cfg.NumInitSteps * cfg.NumWorkers
    assert runner.learner.obs_rms_ready


def _segment_frames(runner: SerialRunner, version: int) -> list[bytes]:
    i, col = runner.collectors[0]
    arrays, _ = col.collect()
    return encode(
        "segment",
        {
            "actor": i,
            "streams": col.streams,
            "num_actors": 1,
            "version": version,
            "run": 0,
            "seq": 0,
        },
        arrays,
    )


def test_stale_segments_are_dropped_and_counted(small_cfg, tmp_path: Path) -> None:
    """The I/O thread keeps only segments fresh enough for the version that will consume them."""
    cfg = small_cfg(max_policy_lag=1, NumWorkers=1)
    runner = SerialRunner(cfg, tmp_path, num_actors=1)
    stale = []
    pf = LearnerIO(
        None,
        None,
        runner.learner.spec,
        cfg.NumWorkers,
        cfg.FrameStack,
        cfg.max_policy_lag,
        pin=False,
        on_reject=lambda e: None,
        on_stale=stale.append,
        version=5,
    )
    for v in (3, 4, 5):
        pf.pending.append(parse_message(_segment_frames(runner, v), runner.learner.spec))
    pf._maybe_assemble()
    assert pf._ready is None  # not enabled before the normaliser is warm; stale ones already gone
    assert [len(x) for x in stale] == [1] and [s.version for s in pf.pending] == [4, 5]
    pf.enabled = True
    pf._maybe_assemble()
    batch, segments = pf.get(version=5, timeout=1)
    assert [s.version for s in segments] == [4] and batch.B == 1
    assert pf.consume_version == 6  # taking a batch sets the version the next one is consumed at
    pf._version = pf.consume_version = 7  # two updates later: version 5 is too old now
    pf._maybe_assemble()
    assert [len(x) for x in stale] == [1, 1] and not pf.pending


def test_a_heartbeat_between_an_update_and_its_weights_keeps_the_lag_bound(
    small_cfg, tmp_path: Path, fake_sub, weights_frames
) -> None:
    """Regression: the learner retired a consumed segment before it published that update's weights,
    and a heartbeat sent in between carried the old version with the new retirement. An actor holding
    the old weights then started a segment with them, which arrived one update too stale and was
    dropped (1 segment of 1,000 in a 2M-step run of configs/montezuma_cpu_check.yaml). The real learner
    and receiver here; ``tests/test_flow.py`` replays it on the ledger and the gate alone."""
    from actors.actor import WeightsReceiver

    cfg = small_cfg(max_policy_lag=1, NumWorkers=1)
    runner = SerialRunner(cfg, tmp_path, num_actors=1)
    learner, (_, col) = runner.learner, runner.collectors[0]

    def weights() -> list[bytes]:  # what publish_weights sends, without the I/O thread
        flow = learner.ledger.flow_meta()
        return weights_frames(learner.agent.policy, flow.version, flow.learner_run, flow.retired)

    rx = WeightsReceiver(fake_sub, col.policy, timeout_s=60, actor_id=0, run_id=0)
    rx.sock.queue.append(weights())
    rx.poll()
    runner.collect()
    runner.collect()  # segments 0 and 1, both with version 0: as many as lag 1 allows in flight
    rx.gate.sent(1)
    first = [s for s in learner.pending if s.seq == 0]
    learner.step_on(first)  # update 0 -> 1 consumes segment 0; its weights are not published yet
    io = LearnerIO(
        None,
        None,
        learner.spec,
        1,
        cfg.FrameStack,
        1,
        pin=False,
        on_reject=lambda e: None,
        on_stale=lambda s: None,
        heartbeat_meta=learner.ledger.flow_meta,
    )
    rx.sock.queue.append(io.heartbeat_frames())
    rx.poll()
    assert rx.version == 0 and rx.gate.unretired() == 2  # no segment 2 with version-0 weights: too stale at update 2
    rx.sock.queue.append(weights())
    rx.poll()
    assert rx.version == 1 and rx.gate.unretired() == 1  # with version 1 it may start segment 2


def test_ext_raw_score_is_logged_but_clipped_for_learning(small_cfg, tmp_path: Path) -> None:
    cfg = small_cfg(NumWorkers=1)
    runner = SerialRunner(cfg, tmp_path, num_actors=1)
    runner.sync_weights()
    runner.warmup()
    i, col = runner.collectors[0]
    arrays, _ = col.collect()
    arrays = {k: v.copy() for k, v in arrays.items()}
    arrays["rewards"][:] = 0
    arrays["rewards"][2, 0] = 100.0  # a key in Montezuma
    seg = Segment(i, 0, col.streams, arrays, [])
    row = runner.learner.step_on([seg])
    assert row["ext_reward_per_rollout"] == pytest.approx(100.0)


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.state_dict().values()]


def test_checkpoint_resumes_exactly(small_cfg, tmp_path: Path) -> None:
    """Resume continues exactly: the same next update from a restored learner as from the original."""
    cfg = small_cfg()
    runner = SerialRunner(cfg, tmp_path / "a", num_actors=1)
    runner.run(2)
    path = runner.learner.save()
    assert path.name == "ckpt_00000002.pt"
    runner.collect()
    segments = copy.deepcopy(list(runner.learner.pending))
    runner.learner.pending.clear()

    data = load_checkpoint(tmp_path / "a")
    resumed = Learner(cfg, tmp_path / "b", "cpu", bind=None, resume=data, tensorboard=False)
    assert resumed.counters == runner.learner.counters
    assert torch.equal(resumed.agent.reward_filter.state, runner.learner.agent.reward_filter.state)
    assert torch.equal(resumed.agent.obs_rms.mean, runner.learner.agent.obs_rms.mean)

    row_a = runner.learner.step_on(copy.deepcopy(segments))
    row_b = resumed.step_on(copy.deepcopy(segments))
    for k in ("policy_loss", "value_loss", "rnd_loss", "int_reward_per_rollout", "approx_kl"):
        assert row_a[k] == row_b[k], k
    for pa, pb in zip(_params(runner.learner.agent.policy), _params(resumed.agent.policy), strict=True):
        assert torch.equal(pa, pb)
    for pa, pb in zip(_params(runner.learner.agent.rnd), _params(resumed.agent.rnd), strict=True):
        assert torch.equal(pa, pb)


def small_state(update: int) -> dict:
    """The smallest state load_checkpoint accepts: every agent part, counters, normalisers that fit a
    config that verifies (its networks' sizes bound the checkpoint's)."""
    agent = {k: {} for k in ("policy", "rnd", "optimizer", "reward_rms", "rng", "torch_rng")}
    agent.update(obs_rms={"mean": torch.zeros(44, 45)}, reward_filter={"state": torch.zeros(1)})
    return {
        "config": {"ImageHeight": 44, "ImageWidth": 45, "NumWorkers": 1, "BatchSize": 16},
        "agent": agent,
        "counters": {"update": update, "agent_steps": 0},
    }


def test_checkpoint_files_rotate_and_latest_is_newest(tmp_path: Path) -> None:
    for u in range(1, 6):
        save_checkpoint(tmp_path, small_state(u), u, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["ckpt_00000004.pt", "ckpt_00000005.pt", "latest.pt"]
    assert load_checkpoint(tmp_path)["counters"]["update"] == 5


def test_target_network_never_changes_in_training(small_cfg, tmp_path: Path) -> None:
    cfg = small_cfg(NumWorkers=1)
    runner = SerialRunner(cfg, tmp_path, num_actors=1)
    before = _params(runner.learner.agent.rnd.target)
    pred_before = _params(runner.learner.agent.rnd.predictor)
    runner.run(1)
    assert all(torch.equal(a, b) for a, b in zip(before, _params(runner.learner.agent.rnd.target), strict=True))
    predictor = _params(runner.learner.agent.rnd.predictor)
    assert not all(torch.equal(a, b) for a, b in zip(pred_before, predictor, strict=True))


def test_bf16_autocast_policy_keeps_results(small_cfg, tmp_path: Path) -> None:
    """The bf16 path (default on CUDA) gives the same targets and losses as fp32 up to bf16 rounding."""
    cfg32 = small_cfg(NumWorkers=1, learner_precision="fp32")
    runner = SerialRunner(cfg32, tmp_path / "a", num_actors=1)
    runner.run(1)
    runner.collect()
    segments = list(runner.learner.pending)
    state = runner.learner.agent.state_dict()
    from learner.agent import RNDAgent
    from learner.batch import assemble

    results = {}
    for prec in ("fp32", "bf16"):
        agent = RNDAgent(small_cfg(NumWorkers=1, learner_precision=prec), 18)
        agent.load_state_dict(copy.deepcopy(state))
        batch = assemble(copy.deepcopy(segments), cfg32.FrameStack)
        logp, v_ext, v_int = agent.score(batch)
        results[prec] = (logp, v_ext, v_int)
    for a, b in zip(results["fp32"], results["bf16"], strict=True):
        torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)
    assert not torch.equal(results["fp32"][0], results["bf16"][0])  # bf16 really ran


@pytest.mark.slow
def test_compiled_learner_matches_eager(small_cfg, tmp_path: Path) -> None:
    """learner_compile: the torch.compile path runs and scores like eager (slow: compiling takes minutes on CPU)."""
    cfg = small_cfg(NumWorkers=1, learner_precision="fp32")
    runner = SerialRunner(cfg, tmp_path, num_actors=1)
    runner.run(1)
    runner.collect()
    segments = list(runner.learner.pending)
    state = runner.learner.agent.state_dict()
    from learner.agent import RNDAgent
    from learner.batch import assemble

    out = {}
    for comp in (False, True):
        agent = RNDAgent(small_cfg(NumWorkers=1, learner_precision="fp32", learner_compile=comp), 18)
        agent.load_state_dict(copy.deepcopy(state))
        out[comp] = agent.score(assemble(copy.deepcopy(segments), cfg.FrameStack))
        agent.update(assemble(copy.deepcopy(segments), cfg.FrameStack))  # backward through the compiled graph
    for a, b in zip(out[False], out[True], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_checkpoints_refused_under_a_torch_below_the_floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """weights_only loading had code-execution holes before torch 2.10: an older torch loads nothing."""
    from learner.checkpoint import CheckpointError, check_torch_version

    save_checkpoint(tmp_path, small_state(1), 1, keep=1)
    assert load_checkpoint(tmp_path)["counters"]["update"] == 1
    for ok in ("2.10.0", "2.11.0+cu128", "2.13.0+cpu", "3.0.0"):
        check_torch_version(ok)
    monkeypatch.setattr(torch, "__version__", "2.9.1+cpu")
    with pytest.raises(CheckpointError, match=r"torch 2\.9\.1\+cpu is older than 2\.10.*CVE-2026-24747"):
        load_checkpoint(tmp_path)
    for old in ("2.5.1", "1.13.1", "nightly"):
        with pytest.raises(CheckpointError, match="torch>=2.10"):
            check_torch_version(old)
