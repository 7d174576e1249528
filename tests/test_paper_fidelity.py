"""The learner follows the RND paper's released code (github.com/openai/random-network-distillation):
the combined advantage goes to PPO unstandardised, V-trace's advantage is GAE's form, the batch's mean
truncated importance weight is logged, and a checkpoint of the earlier 3x3 policy conv is refused in one line."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import load_config
from common.rl.networks import NUM_ACTIONS, PolicyNet
from common.rl.returns import extrinsic_stream
from common.rl.vtrace import vtrace
from learner.agent import RNDAgent
from learner.batch import assemble
from learner.checkpoint import CheckpointError, save_checkpoint
from learner.logs import METRICS
from learner.synthetic import synthetic_segments

REPO = Path(__file__).resolve().parents[1]


def small_agent(**overrides) -> tuple[RNDAgent, object]:
    """An agent on 44x44 frames and a batch whose behaviour log-probs differ from the learner's (rho != 1)."""
    t, k = 8, 3
    cfg = load_config(
        REPO / "configs" / "smoke.yaml",
        {"NumWorkers": k, "RolloutSteps": t, "ImageHeight": 44, "ImageWidth": 44, "BatchSize": t * k, **overrides},
    )
    agent = RNDAgent(cfg, NUM_ACTIONS, "cpu")
    rng = np.random.default_rng(0)
    segments = synthetic_segments(cfg, rng)
    arrays = segments[0].arrays
    arrays["behaviour_logp"][:] = np.log(rng.uniform(0.02, 0.1, (t, k)))  # pi_0 is near 1/18 = 0.056
    arrays["rewards"][:] = rng.random((t, k)) < 0.3
    return agent, assemble(segments, cfg.FrameStack, False)


def test_combined_advantage_is_not_standardised_by_default() -> None:
    """Default: A = ExtCoeff A_ext + IntCoeff A_int as is; normalize_advantages: true standardises that same A."""
    agent, batch = small_agent()
    assert agent.cfg.normalize_advantages is False
    other = copy.deepcopy(agent)
    other.cfg = dataclasses.replace(agent.cfg, normalize_advantages=True)
    raw, _ = agent.compute_targets(batch)
    std, _ = other.compute_targets(batch)
    assert raw.advantages.mean().abs() > 0.5  # far from standardised already
    want = (raw.advantages - raw.advantages.mean()) / (raw.advantages.std() + 1e-8)
    torch.testing.assert_close(std.advantages, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std.vs_ext, raw.vs_ext)


@pytest.mark.parametrize("form", ["gae", "impala"])
def test_stream_targets_use_the_configured_advantage_form(form: str) -> None:
    agent, batch = small_agent(vtrace_advantage=form)
    target_logp, v_ext, _ = agent.score(batch)
    rew, disc = extrinsic_stream(batch.rewards, batch.terminated, batch.truncated, batch.trunc_value, 0.999)
    vs, adv = agent.stream_targets(batch.behaviour_logp, target_logp, rew, v_ext, disc, 0.95)
    want = vtrace(batch.behaviour_logp, target_logp, rew, v_ext[:-1], v_ext[-1], disc, lam=0.95, advantage=form)
    other = vtrace(
        batch.behaviour_logp,
        target_logp,
        rew,
        v_ext[:-1],
        v_ext[-1],
        disc,
        lam=0.95,
        advantage="impala" if form == "gae" else "gae",
    )
    torch.testing.assert_close(adv, want.pg_advantages, rtol=0, atol=0)
    torch.testing.assert_close(vs, want.vs, rtol=0, atol=0)
    assert not torch.allclose(adv, other.pg_advantages)


def test_vtrace_rho_mean_is_the_batchs_mean_truncated_weight() -> None:
    agent, batch = small_agent(vtrace_rho_bar=1.0)
    target_logp, _, _ = agent.score(batch)
    ratios = torch.exp(target_logp - batch.behaviour_logp)
    assert (ratios > 1).any() and (ratios < 1).any()  # both sides of rho_bar
    want = float(ratios.clamp(max=1.0).mean())
    metrics = agent.update(batch)
    assert metrics["vtrace_rho_mean"] == pytest.approx(want, rel=1e-6)
    assert metrics["vtrace_rho_mean"] < 1.0
    assert METRICS["vtrace_rho_mean"] == "losses"


def test_vtrace_rho_mean_is_one_when_the_actor_is_the_learner() -> None:
    agent, batch = small_agent()
    target_logp, _, _ = agent.score(batch)
    batch.behaviour_logp.copy_(target_logp)  # lag 0 with the same numerics
    _, stats = agent.compute_targets(batch)
    assert stats.vtrace_rho_mean == pytest.approx(1.0, abs=1e-6)


# ---- checkpoints of the earlier layout (3x3 third policy conv) ------------------------------------------------
def old_layout_checkpoint(run_dir: Path) -> Path:
    """A real learner state with the policy's third conv and first fc as they were: [64, 64, 3, 3], [256, 3136]."""
    from learner.learner import Learner

    cfg = load_config(REPO / "configs" / "smoke.yaml")
    learner = Learner(cfg, run_dir / "unused", "cpu", bind=None, tensorboard=False)
    state = learner.state()
    policy = state["agent"]["policy"]
    assert policy["trunk.0.4.weight"].shape == (64, 64, 4, 4) and policy["trunk.1.weight"].shape == (256, 2304)
    policy["trunk.0.4.weight"] = torch.zeros(64, 64, 3, 3)
    policy["trunk.1.weight"] = torch.zeros(256, 3136)
    learner.close()
    return save_checkpoint(run_dir, state, 5, 2)


def test_old_policy_layout_refused_by_the_agent(tmp_path: Path) -> None:
    path = old_layout_checkpoint(tmp_path)
    data = torch.load(path, weights_only=True)
    agent = RNDAgent(load_config(REPO / "configs" / "smoke.yaml"), NUM_ACTIONS, "cpu")
    with pytest.raises(CheckpointError, match=r"policy network does not fit.*trunk\.0\.4\.weight is \[64, 64, 3, 3\]"):
        agent.load_state_dict(data["agent"])


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_old_policy_layout_refused_by_resume_and_eval_in_one_line(tmp_path: Path) -> None:
    path = old_layout_checkpoint(tmp_path)
    before = path.read_bytes()
    for p in (run("launch.py", "--resume", str(tmp_path), "--learner-gpu", "-1"), run("eval.py", str(path))):
        assert p.returncode == 2, (p.stdout, p.stderr)
        lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
        assert "policy network does not fit" in lines[0] and "trunk.0.4.weight" in lines[0], lines[0]
    assert path.read_bytes() == before  # nothing lost


# ---- the seed key's doc ------------------------------------------------------------------------------------------
def test_actor_seeds_are_the_ones_the_seed_doc_names() -> None:
    """seed's doc: actor i in its k-th restart samples actions from seed*100003 + 1000003*k + 7919*(i+1) and
    seeds env stream s with that + s; the learner initialises from seed and draws minibatches from seed + 1."""
    from actors.rollout import build_collector

    cfg = load_config(REPO / "configs" / "smoke.yaml", {"seed": 5, "ImageHeight": 44, "ImageWidth": 44})
    actor, restart = 1, 3
    collector = build_collector(cfg, actor_id=actor, num_actors=2, incarnation=restart)
    base = 5 * 100003 + 1000003 * restart + 7919 * (actor + 1)
    assert collector.gen.initial_seed() == base
    assert collector.streams == [2, 3]
    assert [env.ale.getInt("random_seed") for env in collector.envs] == [base + s for s in collector.streams]
    agent = RNDAgent(cfg, NUM_ACTIONS, "cpu")
    assert agent.gen.initial_seed() == 6
    torch.manual_seed(5)
    want = PolicyNet(NUM_ACTIONS, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth)  # first thing built from seed
    torch.testing.assert_close(agent.policy.state_dict(), want.state_dict(), rtol=0, atol=0)
