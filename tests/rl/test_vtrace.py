"""common/rl/vtrace.py against a slow V-trace written in the IMPALA paper's notation (Espeholt et al. 2018, eq. 1).

v_s = V(x_s) + sum_{t=s}^{s+n-1} (prod_{i=s}^{t-1} gamma_i) (prod_{i=s}^{t-1} c_i) delta_t V,
delta_t V = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)), rho_t = min(rho_bar, pi/mu), c_i = lam * min(c_bar, pi/mu),
with n = T - s (the whole segment) and V(x_T) the bootstrap value. The policy-gradient advantage, with
v_T = V(x_T), is IMPALA's rho_s (r_s + gamma_s v_{s+1} - V(x_s)) ("impala"), or
rho_s (r_s + gamma_s V(x_{s+1}) - V(x_s) + gamma_s lambda (v_{s+1} - V(x_{s+1}))) ("gae"), which is
GAE(lambda) (Schulman et al. 2016, eq. 16) when pi = mu.
"""

from __future__ import annotations

import math

import pytest
import torch

from common.rl.returns import gae
from common.rl.vtrace import vtrace


def vtrace_reference(
    behaviour_logp,
    target_logp,
    rewards,
    values,
    bootstrap_value,
    discounts,
    rho_bar=1.0,
    c_bar=1.0,
    lam=1.0,
    advantage="gae",
):
    """Explicit loops over s and t with Python floats; returns (vs, pg_advantages) as nested lists [T][B]."""
    mu, pi, r, v, g = (x.tolist() for x in (behaviour_logp, target_logp, rewards, values, discounts))
    boot = bootstrap_value.tolist()
    n_t, n_b = len(v), len(v[0])
    vs = [[0.0] * n_b for _ in range(n_t)]
    adv = [[0.0] * n_b for _ in range(n_t)]
    for b in range(n_b):
        big_v = [v[t][b] for t in range(n_t)] + [boot[b]]  # V(x_0) .. V(x_T)
        ratio = [math.exp(pi[t][b] - mu[t][b]) for t in range(n_t)]
        rho = [min(rho_bar, ratio[t]) for t in range(n_t)]
        c = [lam * min(c_bar, ratio[t]) for t in range(n_t)]
        delta = [rho[t] * (r[t][b] + g[t][b] * big_v[t + 1] - big_v[t]) for t in range(n_t)]
        for s in range(n_t):
            total = 0.0
            for t in range(s, n_t):
                gamma_prod = 1.0
                c_prod = 1.0
                for i in range(s, t):
                    gamma_prod *= g[i][b]
                    c_prod *= c[i]
                total += gamma_prod * c_prod * delta[t]
            vs[s][b] = big_v[s] + total
        for s in range(n_t):
            v_next = vs[s + 1][b] if s + 1 < n_t else boot[b]
            if advantage == "impala":
                adv[s][b] = rho[s] * (r[s][b] + g[s][b] * v_next - big_v[s])
            else:
                adv[s][b] = rho[s] * (
                    r[s][b] + g[s][b] * big_v[s + 1] - big_v[s] + g[s][b] * lam * (v_next - big_v[s + 1])
                )
    return vs, adv


def _inputs(T, B, seed, dtype=torch.float64, log_ratio_scale=0.8, gamma=0.99, cut_prob=0.3):
    gen = torch.Generator().manual_seed(seed)
    behaviour_logp = -torch.rand(T, B, generator=gen, dtype=dtype) * 3.0
    target_logp = behaviour_logp + torch.randn(T, B, generator=gen, dtype=dtype) * log_ratio_scale
    rewards = torch.randn(T, B, generator=gen, dtype=dtype)
    values = torch.randn(T, B, generator=gen, dtype=dtype)
    bootstrap = torch.randn(B, generator=gen, dtype=dtype)
    cuts = (torch.rand(T, B, generator=gen) < cut_prob).to(dtype)
    if T >= 3:
        cuts[T // 2, 0] = 1.0  # an episode cut in the middle of the segment, always
    discounts = gamma * (1.0 - cuts)
    return behaviour_logp, target_logp, rewards, values, bootstrap, discounts


def _check_against_reference(args, rho_bar, c_bar, lam, advantage="gae", rtol=1e-10, atol=1e-10):
    out = vtrace(*args, rho_bar=rho_bar, c_bar=c_bar, lam=lam, advantage=advantage)
    ref_vs, ref_adv = vtrace_reference(*args, rho_bar=rho_bar, c_bar=c_bar, lam=lam, advantage=advantage)
    dtype = args[0].dtype
    torch.testing.assert_close(out.vs, torch.tensor(ref_vs, dtype=dtype), rtol=rtol, atol=atol)
    torch.testing.assert_close(out.pg_advantages, torch.tensor(ref_adv, dtype=dtype), rtol=rtol, atol=atol)


@pytest.mark.parametrize("T,B", [(1, 1), (5, 3), (12, 4)])
@pytest.mark.parametrize(
    "rho_bar,c_bar,lam", [(1.0, 1.0, 1.0), (1.0, 1.0, 0.95), (0.8, 1.3, 0.9), (2.0, 0.5, 0.7), (1.5, 1.5, 1.0)]
)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("advantage", ["gae", "impala"])
def test_matches_paper_reference(T, B, rho_bar, c_bar, lam, seed, advantage):
    args = _inputs(T, B, seed)
    ratios = torch.exp(args[1] - args[0])
    if T * B >= 10:  # the data must exercise both sides of both truncation levels
        for level in (rho_bar, c_bar, 1.0):
            assert (ratios > level).any() and (ratios < level).any()
    _check_against_reference(args, rho_bar, c_bar, lam, advantage)


@pytest.mark.parametrize("advantage", ["gae", "impala"])
def test_matches_reference_float32(advantage):
    args = _inputs(8, 3, seed=5, dtype=torch.float32)
    _check_against_reference(args, 1.0, 1.0, 0.95, advantage, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("advantage", ["gae", "impala"])
def test_matches_reference_all_cuts_and_no_cuts(advantage):
    for cut_prob in (0.0, 1.0):
        args = _inputs(6, 3, seed=11, cut_prob=cut_prob)
        args = args[:5] + (0.99 * torch.ones_like(args[5]) if cut_prob == 0.0 else torch.zeros_like(args[5]),)
        _check_against_reference(args, 1.0, 1.0, 0.9, advantage)


def test_default_form_is_gae():
    args = _inputs(7, 3, seed=6)
    torch.testing.assert_close(
        vtrace(*args, lam=0.95).pg_advantages, vtrace(*args, lam=0.95, advantage="gae").pg_advantages, rtol=0, atol=0
    )
    assert not torch.allclose(
        vtrace(*args, lam=0.95).pg_advantages, vtrace(*args, lam=0.95, advantage="impala").pg_advantages
    )


@pytest.mark.parametrize("rho_bar,c_bar", [(1.0, 1.0), (0.8, 1.3), (2.0, 0.5)])
def test_forms_agree_at_lambda_one_off_policy(rho_bar, c_bar):
    """At lambda = 1, V(x_{s+1}) + (v_{s+1} - V(x_{s+1})) = v_{s+1}: the two forms are one, whatever pi/mu."""
    args = _inputs(10, 4, seed=8)
    gae_form = vtrace(*args, rho_bar=rho_bar, c_bar=c_bar, lam=1.0, advantage="gae")
    impala_form = vtrace(*args, rho_bar=rho_bar, c_bar=c_bar, lam=1.0, advantage="impala")
    torch.testing.assert_close(gae_form.pg_advantages, impala_form.pg_advantages, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gae_form.vs, impala_form.vs, rtol=0, atol=0)


def test_unknown_advantage_form_refused():
    with pytest.raises(ValueError, match="advantage"):
        vtrace(*_inputs(3, 2, seed=0), advantage="gae2")


def _single(ratio_0, ratio_1=1.0, r=(0.7, -0.4), v=(0.2, 0.9), boot=1.3, g=(0.9, 0.8)):
    """T=2, B=1 inputs with chosen pi/mu ratios."""
    behaviour = torch.tensor([[-1.0], [-2.0]], dtype=torch.float64)
    target = behaviour + torch.log(torch.tensor([[ratio_0], [ratio_1]], dtype=torch.float64))
    return (
        behaviour,
        target,
        torch.tensor([[r[0]], [r[1]]], dtype=torch.float64),
        torch.tensor([[v[0]], [v[1]]], dtype=torch.float64),
        torch.tensor([boot], dtype=torch.float64),
        torch.tensor([[g[0]], [g[1]]], dtype=torch.float64),
    )


def test_rho_below_one_is_not_bounded_below():
    """pi/mu = 0.3 < rho_bar: rho must be 0.3 (a max() or two-sided clamp would give 1)."""
    args = _single(ratio_0=1.0, ratio_1=0.3)
    out = vtrace(*args, rho_bar=1.0, c_bar=1.0, lam=1.0)
    # last step: v_1 = V_1 + rho_1 (r_1 + g_1 V_boot - V_1)
    td_1 = -0.4 + 0.8 * 1.3 - 0.9
    assert out.vs[1, 0].item() == pytest.approx(0.9 + 0.3 * td_1, abs=1e-12)
    assert out.pg_advantages[1, 0].item() == pytest.approx(0.3 * td_1, abs=1e-12)


def test_rho_truncated_from_above():
    args = _single(ratio_0=1.0, ratio_1=3.0)
    out = vtrace(*args, rho_bar=1.5, c_bar=1.0, lam=1.0)
    td_1 = -0.4 + 0.8 * 1.3 - 0.9
    assert out.vs[1, 0].item() == pytest.approx(0.9 + 1.5 * td_1, abs=1e-12)
    assert out.pg_advantages[1, 0].item() == pytest.approx(1.5 * td_1, abs=1e-12)


@pytest.mark.parametrize(
    "ratio_0,c_bar,lam,rho_bar",
    [
        (0.4, 1.0, 0.8, 1.0),  # c below 1 kept as is
        (4.0, 2.0, 0.9, 3.0),  # c truncated at c_bar, rho at rho_bar
        (0.6, 0.5, 1.0, 2.0),
    ],
)  # c_bar < ratio < rho_bar
def test_trace_coefficient_c(ratio_0, c_bar, lam, rho_bar):
    """v_0 - V_0 = delta_0 + gamma_0 c_0 (v_1 - V_1), c_0 = lam * min(c_bar, pi/mu), rho_0 = min(rho_bar, pi/mu)."""
    args = _single(ratio_0=ratio_0, ratio_1=1.0)
    out = vtrace(*args, rho_bar=rho_bar, c_bar=c_bar, lam=lam, advantage="impala")
    rho_0, c_0 = min(rho_bar, ratio_0), lam * min(c_bar, ratio_0)
    delta_1 = min(rho_bar, 1.0) * (-0.4 + 0.8 * 1.3 - 0.9)
    delta_0 = rho_0 * (0.7 + 0.9 * 0.9 - 0.2)
    v_1 = 0.9 + delta_1
    assert out.vs[0, 0].item() == pytest.approx(0.2 + delta_0 + 0.9 * c_0 * delta_1, abs=1e-12)
    assert out.pg_advantages[0, 0].item() == pytest.approx(rho_0 * (0.7 + 0.9 * v_1 - 0.2), abs=1e-12)
    # "gae": the trace in the advantage is lambda, not c_0: rho_0 (r_0 + g_0 V_1 - V_0 + g_0 lam (v_1 - V_1))
    gae_form = vtrace(*args, rho_bar=rho_bar, c_bar=c_bar, lam=lam, advantage="gae")
    assert gae_form.vs[0, 0].item() == pytest.approx(out.vs[0, 0].item(), abs=1e-12)
    want = rho_0 * (0.7 + 0.9 * 0.9 - 0.2 + 0.9 * lam * (v_1 - 0.9))
    assert gae_form.pg_advantages[0, 0].item() == pytest.approx(want, abs=1e-12)


def test_cut_isolates_the_past_from_the_future():
    """With gamma_k = 0, nothing after step k may change v_s or the advantages for s <= k."""
    args = list(_inputs(10, 3, seed=2, cut_prob=0.0))
    k = 4
    args[5][k] = 0.0
    out = vtrace(*args, lam=0.9)
    gen = torch.Generator().manual_seed(9)
    for i in (1, 2, 3):  # target_logp, rewards, values after the cut
        args[i] = args[i].clone()
        args[i][k + 1 :] += torch.randn(args[i][k + 1 :].shape, generator=gen, dtype=args[i].dtype)
    args[4] = args[4] + 5.0  # bootstrap too
    out2 = vtrace(*args, lam=0.9)
    torch.testing.assert_close(out.vs[: k + 1], out2.vs[: k + 1], rtol=0, atol=1e-12)
    torch.testing.assert_close(out.pg_advantages[: k + 1], out2.pg_advantages[: k + 1], rtol=0, atol=1e-12)
    assert not torch.allclose(out.vs[k + 1 :], out2.vs[k + 1 :])


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
@pytest.mark.parametrize("rho_bar,c_bar", [(1.0, 1.0), (1.5, 2.0)])
def test_on_policy_reduces_to_gae(lam, rho_bar, c_bar):
    """pi = mu, rho_bar, c_bar >= 1: v_s are the GAE(lambda) returns and the default ("gae") advantages are GAE's
    for every lambda; IMPALA's form agrees with GAE at lambda = 1 only."""
    behaviour, _, rewards, values, bootstrap, discounts = _inputs(9, 4, seed=3)
    args = (behaviour, behaviour.clone(), rewards, values, bootstrap, discounts)
    out = vtrace(*args, rho_bar=rho_bar, c_bar=c_bar, lam=lam)
    impala = vtrace(*args, rho_bar=rho_bar, c_bar=c_bar, lam=lam, advantage="impala")
    adv, returns = gae(rewards, values, bootstrap, discounts, lam)
    torch.testing.assert_close(out.vs, returns, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(impala.vs, returns, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.pg_advantages, adv, rtol=1e-10, atol=1e-10)
    if lam == 1.0:
        torch.testing.assert_close(impala.pg_advantages, adv, rtol=1e-10, atol=1e-10)
    else:  # IMPALA's advantage is the one-step one on the lambda-returns, not the GAE advantage
        values_tp1 = torch.cat([out.vs[1:], bootstrap.unsqueeze(0)])
        torch.testing.assert_close(
            impala.pg_advantages, rewards + discounts * values_tp1 - values, rtol=1e-10, atol=1e-10
        )
        assert (impala.pg_advantages - adv).abs().max() > 1e-3


def test_on_policy_default_is_ppo_gae_at_the_papers_lambda():
    """The paper's PPO advantage: GAE with lambda = 0.95 on a [128, 8] segment with episode cuts, pi = mu."""
    behaviour, _, rewards, values, bootstrap, discounts = _inputs(128, 8, seed=13, cut_prob=0.01)
    out = vtrace(behaviour, behaviour.clone(), rewards, values, bootstrap, discounts, lam=0.95)
    adv, returns = gae(rewards, values, bootstrap, discounts, 0.95)
    torch.testing.assert_close(out.pg_advantages, adv, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.vs, returns, rtol=1e-10, atol=1e-10)


def test_outputs_carry_no_gradient():
    """The targets are constants for the loss (stop-gradient), even when the inputs require grad."""
    args = [x.clone().requires_grad_(True) for x in _inputs(4, 2, seed=4)]
    out = vtrace(*args)
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad


def _bad_shapes():
    T, B = 5, 3
    good = dict(
        behaviour_logp=torch.zeros(T, B),
        target_logp=torch.zeros(T, B),
        rewards=torch.zeros(T, B),
        values=torch.zeros(T, B),
        bootstrap_value=torch.zeros(B),
        discounts=torch.zeros(T, B),
    )
    cases = {
        "values_1d": dict(values=torch.zeros(T)),
        "values_3d": dict(values=torch.zeros(T, B, 1)),
        "rewards_wide": dict(rewards=torch.zeros(T, B + 1)),
        "behaviour_short": dict(behaviour_logp=torch.zeros(T - 1, B)),
        "target_transposed": dict(target_logp=torch.zeros(B, T)),
        "discounts_short": dict(discounts=torch.zeros(T - 1, B)),
        "bootstrap_wide": dict(bootstrap_value=torch.zeros(B + 1)),
        "bootstrap_2d": dict(bootstrap_value=torch.zeros(1, B)),
    }
    return [pytest.param({**good, **bad}, id=name) for name, bad in cases.items()]


@pytest.mark.parametrize("kwargs", _bad_shapes())
def test_shape_validation(kwargs):
    with pytest.raises(ValueError):
        vtrace(**kwargs)


def test_good_shapes_accepted():
    T, B = 5, 3
    out = vtrace(
        torch.zeros(T, B), torch.zeros(T, B), torch.zeros(T, B), torch.zeros(T, B), torch.zeros(B), torch.zeros(T, B)
    )
    assert out.vs.shape == (T, B) and out.pg_advantages.shape == (T, B)
