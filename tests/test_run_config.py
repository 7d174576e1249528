"""One config per run: the learner sends its resolved config and rank with its weights; actors run with
it, and a config of their own that differs outside LOCAL_KEYS stops them (exit 5)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from actors.actor import ActorStop, WeightsReceiver, startup_config
from actors.supervisor import EXIT_MISMATCH
from common.config import LOCAL_KEYS, Config, config_differences, fields
from common.rl.networks import NUM_ACTIONS, PolicyNet
from common.wire import MAX_HEADER_BYTES, WireError, decode, encode, validate_weights, weights_config

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def weights_msg(cfg: Config, rank: int = 0, **meta_over) -> list[bytes]:
    """A weights message as ``Learner.publish_weights`` lays it out, for ``cfg`` at ``rank``."""
    policy = PolicyNet(NUM_ACTIONS, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth)
    meta = {"version": 0, "warmup_steps": 0, "learner_run": 7, "retired": [], "config": cfg.to_dict(), "rank": rank}
    meta.update(meta_over)
    return encode("weights", meta, {k: v.numpy() for k, v in policy.state_dict().items()})


def test_weights_carry_the_config_and_rank(small_cfg) -> None:
    cfg = small_cfg(StickyActionProb=0.1)
    msg = decode(weights_msg(cfg, rank=3))
    got, rank = weights_config(msg)
    assert got == cfg and rank == 3
    policy = PolicyNet(NUM_ACTIONS, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth)
    meta = validate_weights(msg, [(k, tuple(v.shape)) for k, v in policy.state_dict().items()])
    assert meta.config == cfg and meta.rank == 3


@pytest.mark.parametrize(
    "over, why",
    [
        ({"rank": 1024}, "rank"),
        ({"rank": -1}, "rank"),
        ({"rank": True}, "rank"),
        ({"config": None}, "without the learner's config"),
        ({"config": [1, 2]}, "without the learner's config"),
        ({"config": {"NoSuchKey": 1}}, "unknown key"),
        ({"config": {"NumWorkers": "128"}}, "not a int"),  # text is not parsed as YAML off the wire
        ({"config": {"NumWorkers": 1.5}}, "not a int"),
        ({"config": {"UseStickyAction": 1}}, "not a bool"),
        ({"config": {"StickyActionProb": 2.0}}, "StickyActionProb"),  # out of range: from_dict's check
        ({"config": {"LearningRate": [1e-4]}}, "not a float"),
        ({"config": {"EnvName": "NotAGame-v4"}}, "EnvName"),
    ],
)
def test_a_bad_config_is_a_wire_error(small_cfg, over: dict, why: str) -> None:
    msg = decode(weights_msg(small_cfg(), **over))
    with pytest.raises(WireError, match=why):
        weights_config(msg)


def test_a_config_over_the_header_cap_is_refused(small_cfg) -> None:
    frames = weights_msg(small_cfg(), config={"EnvName": "x" * MAX_HEADER_BYTES})
    with pytest.raises(WireError, match="exceeds"):
        decode(frames)


def test_local_keys_are_keys_and_differences_name_both_values() -> None:
    names = {f.name for f in fields(Config)}
    assert set(LOCAL_KEYS) <= names
    learner = Config()
    own = {**learner.to_dict(), "StickyActionProb": 0.1, "seed": 3, "actor_precision": "fp32", "checkpoint_every": 7}
    assert config_differences(learner, own) == [
        "StickyActionProb 0.25 (learner) != 0.1 (actor)",
        "seed 0 (learner) != 3 (actor)",
    ]
    with pytest.raises(ActorStop, match="StickyActionProb 0.25 .learner. != 0.1 .actor.") as e:
        startup_config(learner, own)
    assert e.value.exit_code == EXIT_MISMATCH
    ok = startup_config(learner, {"actor_precision": "fp32", "checkpoint_every": 7})
    assert ok.actor_precision == "fp32" and ok.checkpoint_every == learner.checkpoint_every  # the actor's own keys only


def test_receiver_builds_from_the_first_weights_and_refuses_a_changed_config(small_cfg, fake_sub) -> None:
    cfg = small_cfg()
    built = []

    def build(learner_cfg: Config, rank: int):
        built.append((learner_cfg, rank))
        return PolicyNet(NUM_ACTIONS, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth), learner_cfg

    rx = WeightsReceiver(fake_sub, None, timeout_s=60, build=build)
    fake_sub.queue.append(weights_msg(cfg, rank=2))
    rx.poll()
    assert rx.version == 0 and built == [(cfg, 2)] and rx.rank == 2
    fake_sub.queue.append(weights_msg(cfg, rank=2, version=1))
    rx.poll()
    assert rx.version == 1 and len(built) == 1
    fake_sub.queue.append(weights_msg(small_cfg(MaxStepsPerEpisode=11), rank=2, version=2))
    with pytest.raises(ActorStop, match="MaxStepsPerEpisode 11 .learner. != 10 .actor.") as e:
        rx.poll()
    assert e.value.exit_code == EXIT_MISMATCH


def test_ranks_never_share_seeds(small_cfg) -> None:
    from actors.rollout import build_collector

    cfg = small_cfg()
    a, b = build_collector(cfg, 0, 1, rank=0), build_collector(cfg, 0, 1, rank=1)
    assert a.gen.initial_seed() != b.gen.initial_seed()
    assert b.gen.initial_seed() - a.gen.initial_seed() == 1_000_000_007


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([PY, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_actors_take_the_learners_config_over_tcp(
    tmp_path: Path,
    learner_role_cmd: Callable[..., list[str]],
    actors_role_cmd: Callable[..., list[str]],
    bare_actors_role_cmd: Callable[..., list[str]],
) -> None:
    """A conflicting key is refused (exit 5, named with both values); no config, or a differing local key,
    trains."""
    from common.transport import free_tcp_address

    addr = free_tcp_address()
    run_dir = tmp_path / "run"
    learner = subprocess.Popen(
        [PY, *learner_role_cmd(addr, run_dir, 128, "seed=5")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        bad = _run(actors_role_cmd(addr, 1, "StickyActionProb=0.1", "seed=5"), timeout=120)
        assert bad.returncode == EXIT_MISMATCH, bad.stderr
        assert "StickyActionProb 0.25 (learner) != 0.1 (actor)" in bad.stderr
        two = ["--total-actors", "2"]
        bare = subprocess.Popen(
            [PY, *bare_actors_role_cmd(addr, 1, *two)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        local = _run(bare_actors_role_cmd(addr, 1, *two, "--actor-offset", "1", "actor_precision=fp32"), timeout=180)
        assert local.returncode == 0, local.stderr
        assert bare.wait(timeout=60) == 0
        _, err = learner.communicate(timeout=60)
        assert learner.returncode == 0, err
    finally:
        learner.kill()
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[-1].split(",")[1] == "128"  # agent_steps: both actors' streams trained the run
