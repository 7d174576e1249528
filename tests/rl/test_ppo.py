"""PPO's clipped surrogate against a slow reference (Schulman et al. 2017, eq. 7), and the learner's
choice of the ratio's reference policy: under V-trace the surrogate's gradient at the start of an
update must be IMPALA's policy gradient, rho_s grad log pi(a_s) A_s (Espeholt et al. 2018, eq. 4),
with one importance weight per sample, not two."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import load_config
from common.rl.networks import NUM_ACTIONS
from common.rl.ppo import clipped_surrogate
from learner.agent import RNDAgent
from learner.batch import assemble
from learner.synthetic import synthetic_segments

REPO = Path(__file__).resolve().parents[2]


def surrogate_reference(logp, logp_ref, adv, eps):
    """Python floats: (loss, d loss / d logp_i). L = -(1/N) sum_i min(r_i A_i, clip(r_i) A_i), r_i = e^(logp_i -
    logp_ref_i); the derivative is -(1/N) r_i A_i where the unclipped term is the smaller one, else 0."""
    n = len(logp)
    loss, grad = 0.0, []
    for lp, lr, a in zip(logp, logp_ref, adv, strict=True):
        r = np.exp(lp - lr)
        unclipped, clipped = r * a, min(max(r, 1 - eps), 1 + eps) * a
        loss -= min(unclipped, clipped) / n
        grad.append(-r * a / n if unclipped <= clipped else 0.0)
    return loss, grad


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("eps", [0.1, 0.2])
def test_clipped_surrogate_matches_reference(seed: int, eps: float) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 64  # ratios spread over [e^-0.5, e^0.5]: every branch (clipped above/below, A of either sign) occurs
    logp_ref = -torch.rand(n, generator=g, dtype=torch.float64) * 3
    logp = (logp_ref + (torch.rand(n, generator=g, dtype=torch.float64) - 0.5)).requires_grad_(True)
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    out = clipped_surrogate(logp, logp_ref, adv, eps)
    out.loss.backward()
    ref_loss, ref_grad = surrogate_reference(logp.tolist(), logp_ref.tolist(), adv.tolist(), eps)
    assert out.loss.item() == pytest.approx(ref_loss, abs=1e-12)
    torch.testing.assert_close(logp.grad, torch.tensor(ref_grad, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    r = out.ratio.detach()
    assert ((r > 1 + eps) & (adv > 0)).any() and ((r < 1 - eps) & (adv < 0)).any()  # clipping was exercised
    assert (logp.grad == 0).any()


def test_clipped_surrogate_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="must all be"):
        clipped_surrogate(torch.zeros(4), torch.zeros(3), torch.zeros(4), 0.1)


# ---- the learner's ratio reference ------------------------------------------------------------------------
def make_agent_and_batch(vtrace: bool) -> tuple[RNDAgent, object]:
    """A small agent whose loss is the surrogate alone (no value, entropy; RND touches only the predictor),
    and a batch whose behaviour log-probs are far from the learner's policy (an actor one update behind)."""
    t, k, h, w, s = 8, 3, 44, 44, 4
    cfg = load_config(
        REPO / "configs" / "smoke.yaml",
        {
            "NumWorkers": k,
            "RolloutSteps": t,
            "ImageHeight": h,
            "ImageWidth": w,
            "BatchSize": t * k,
            "UseVTraceCorrection": vtrace,
            "normalize_advantages": False,
            "value_coeff": 0.0,
            "PPOEntropyCoeff": 0.0,
            "vtrace_rho_bar": 1.0,
        },
    )
    agent = RNDAgent(cfg, NUM_ACTIONS, "cpu")
    rng = np.random.default_rng(0)
    segments = synthetic_segments(cfg, rng)
    arrays = segments[0].arrays
    arrays["behaviour_logp"][:] = np.log(rng.uniform(0.01, 0.2, (t, k)))  # pi_0 is near 1/18
    arrays["rewards"][:] = rng.random((t, k)) < 0.3  # denser than bench's, for advantages of both signs
    return agent, assemble(segments, s, False)


def policy_grads(agent: RNDAgent, loss: torch.Tensor) -> list[torch.Tensor]:
    params = list(agent.policy.parameters())
    return [
        g if g is not None else torch.zeros_like(p)
        for g, p in zip(torch.autograd.grad(loss, params, allow_unused=True), params, strict=True)
    ]


@pytest.mark.parametrize("perturb", [0.0, 0.05])
@pytest.mark.parametrize("vtrace", [True, False])
def test_surrogate_gradient_and_clipping(vtrace: bool, perturb: float) -> None:
    """At theta_0 (perturb 0), V-trace: the gradient is -(1/N) sum_i A_i grad log pi(a_i), A_i = rho_i (...) already
    holding the one importance weight, and no sample is clipped. GAE: PPO's -(1/N) sum_i (pi_0/mu)_i A_i grad log
    pi(a_i) over the samples whose ratio pi_0/mu is not already clipped. After the policy has moved (perturb > 0),
    the ratio is pi_theta / pi_0 (V-trace) or pi_theta / mu (GAE): the clip fraction and the gradient follow it."""
    agent, batch = make_agent_and_batch(vtrace)
    tg, _ = agent.compute_targets(batch)
    target_logp, _, _ = agent.score(batch)
    mu_logp = batch.behaviour_logp.reshape(-1)
    ref = target_logp.reshape(-1) if vtrace else mu_logp
    torch.testing.assert_close(tg.logp_ref, ref)
    assert (target_logp.reshape(-1) - mu_logp).abs().max() > 0.5  # mu is far from pi_0: the two forms differ
    if perturb:
        with torch.no_grad():  # the policy moves after the targets were computed, as in later minibatches
            g = torch.Generator().manual_seed(1)
            agent.policy.pi_head.weight.add_(torch.randn(agent.policy.pi_head.weight.shape, generator=g) * perturb)

    n = batch.T * batch.B
    idx = torch.arange(n)
    loss, info = agent.minibatch_loss(batch, idx, tg)
    got = policy_grads(agent, loss)

    logp = torch.log_softmax(agent.run_policy(batch.obs(idx)).logits, -1).gather(1, batch.actions.reshape(-1, 1))
    logp = logp.squeeze(1)
    ratio = torch.exp(logp.detach() - ref)
    eps, adv = agent.cfg.PPORewardEps, tg.advantages
    clipped = (ratio - 1).abs() > eps
    assert float(info["clip_fraction"]) == pytest.approx(float(clipped.float().mean()), abs=1e-6)
    if vtrace and not perturb:
        assert not clipped.any()
    elif vtrace:
        assert 0 < clipped.float().mean() < 1  # the clipping branches were exercised
    active = ratio * adv <= ratio.clamp(1 - eps, 1 + eps) * adv  # where the min picks the unclipped term
    want = policy_grads(agent, -(active * ratio * adv * logp).sum() / n)
    for g_, w in zip(got, want, strict=True):
        torch.testing.assert_close(g_, w, rtol=1e-4, atol=1e-7)
    assert sum(float(w.abs().sum()) for w in want) > 0
