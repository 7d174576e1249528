"""common/rl/scan.py and its users against the Python loops they replaced, kept here as the references."""

from __future__ import annotations

import pytest
import torch

from common.rl.normalize import RewardForwardFilter
from common.rl.returns import gae
from common.rl.scan import affine_scan
from common.rl.vtrace import truncated_ratios, vtrace


def loop_scan(a, b, init=None, reverse=True):
    acc = torch.zeros_like(a[0]) if init is None else init.expand_as(a[0]).clone()
    out = torch.empty_like(a)
    order = range(a.shape[0] - 1, -1, -1) if reverse else range(a.shape[0])
    for t in order:
        acc = a[t] + b[t] * acc
        out[t] = acc
    return out


def loop_vtrace_vs(behaviour_logp, target_logp, rewards, values, bootstrap_value, discounts, lam):
    """The backward loop vtrace() ran before the scan (rho_bar = c_bar = 1)."""
    rhos = truncated_ratios(behaviour_logp, target_logp, 1.0)
    cs = lam * truncated_ratios(behaviour_logp, target_logp, 1.0)
    values_tp1 = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
    deltas = rhos * (rewards + discounts * values_tp1 - values)
    acc = torch.zeros_like(bootstrap_value)
    vs_minus_v = torch.empty_like(values)
    for t in range(values.shape[0] - 1, -1, -1):
        acc = deltas[t] + discounts[t] * cs[t] * acc
        vs_minus_v[t] = acc
    return vs_minus_v + values


def loop_gae(rewards, values, bootstrap_value, discounts, lam):
    values_tp1 = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
    deltas = rewards + discounts * values_tp1 - values
    adv = torch.empty_like(values)
    acc = torch.zeros_like(bootstrap_value)
    for t in range(values.shape[0] - 1, -1, -1):
        acc = deltas[t] + discounts[t] * lam * acc
        adv[t] = acc
    return adv


def loop_filter(state, rewards, gamma):
    acc, out = state.clone(), torch.empty_like(rewards)
    for t in range(rewards.shape[0]):
        acc = acc * gamma + rewards[t]
        out[t] = acc
    return out, acc


TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=2e-6, atol=2e-6)}


def _cuts(shape, prob, gen, dtype):
    """gamma * (1 - cut): exact zeros where an episode ends."""
    return 0.99 * (torch.rand(shape, generator=gen) > prob).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("steps", [1, 2, 3, 7, 8, 128, 129])
@pytest.mark.parametrize("reverse", [True, False])
@pytest.mark.parametrize("with_init", [False, True])
def test_scan_is_the_loop(dtype, steps, reverse, with_init) -> None:
    gen = torch.Generator().manual_seed(steps)
    a = torch.randn(steps, 5, generator=gen, dtype=dtype)
    b = _cuts((steps, 5), 0.2, gen, dtype) * torch.rand(steps, 5, generator=gen, dtype=dtype)
    init = torch.randn(5, generator=gen, dtype=dtype) if with_init else None
    out = affine_scan(a, b, init, reverse)
    assert out.dtype == dtype and out.shape == a.shape
    torch.testing.assert_close(out, loop_scan(a, b, init, reverse), **TOL[dtype])


def test_a_zero_b_cuts_the_chain_exactly() -> None:
    """b_s = 0 at an episode's end: what lies beyond it cannot reach x_s, not even as a rounding error."""
    a = torch.randn(16, 3, dtype=torch.float64)
    b = torch.full((16, 3), 0.97, dtype=torch.float64)
    b[9] = 0.0
    a2 = a.clone()
    a2[10:] += 1e6
    torch.testing.assert_close(affine_scan(a, b)[:10], affine_scan(a2, b)[:10], rtol=0, atol=0)


def test_scan_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="affine_scan"):
        affine_scan(torch.zeros(4, 2), torch.zeros(4, 3))


def _rollout(steps, streams, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (steps, streams)
    mu = 0.3 * torch.randn(shape, generator=gen, dtype=dtype)
    pi = mu + 0.5 * torch.randn(shape, generator=gen, dtype=dtype)
    rewards = torch.randn(shape, generator=gen, dtype=dtype)
    values = torch.randn(shape, generator=gen, dtype=dtype)
    boot = torch.randn(streams, generator=gen, dtype=dtype)
    return mu, pi, rewards, values, boot, _cuts(shape, 0.02, gen, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("streams", [16, 128])  # the learner's shapes: T = 128 for 16 and 128 env streams
def test_vtrace_and_gae_are_the_loops_at_the_learners_shapes(dtype, streams) -> None:
    mu, pi, rewards, values, boot, discounts = _rollout(128, streams, dtype, seed=streams)
    vs = vtrace(mu, pi, rewards, values, boot, discounts, lam=0.95).vs
    torch.testing.assert_close(vs, loop_vtrace_vs(mu, pi, rewards, values, boot, discounts, 0.95), **TOL[dtype])
    adv, ret = gae(rewards, values, boot, discounts, 0.95)
    torch.testing.assert_close(adv, loop_gae(rewards, values, boot, discounts, 0.95), **TOL[dtype])
    torch.testing.assert_close(ret, adv + values, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_filter_is_the_loop_and_carries_its_state(dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    filt = RewardForwardFilter(32, 0.99)
    ref_state = torch.zeros(32, dtype=torch.float64)
    for ids in (torch.arange(16), torch.arange(16, 32), torch.randperm(32, generator=gen)[:16]):
        r = torch.rand(128, 16, generator=gen, dtype=torch.float64).to(dtype)
        out = filt(r, ids)
        want, ref_state[ids] = loop_filter(ref_state[ids], r.double(), 0.99)
        assert out.dtype == dtype
        torch.testing.assert_close(out, want.to(dtype), **TOL[dtype])
        torch.testing.assert_close(filt.state, ref_state, rtol=1e-12, atol=1e-12)
