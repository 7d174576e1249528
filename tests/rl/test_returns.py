"""common/rl/returns.py against a slow GAE in the paper's notation (Schulman et al. 2016, eq. 16).

A_t = sum_{l=0}^{T-1-t} (prod_{k=t}^{t+l-1} gamma_k lam) delta_{t+l},  delta_t = r_t + gamma_t V(x_{t+1}) - V(x_t),
with per-step discounts gamma_t (0 at an episode cut) and V(x_T) the bootstrap value.
"""

from __future__ import annotations

import pytest
import torch

from common.rl.returns import gae


def gae_reference(rewards, values, bootstrap_value, discounts, lam):
    r, v, g, boot = rewards.tolist(), values.tolist(), discounts.tolist(), bootstrap_value.tolist()
    n_t, n_b = len(v), len(v[0])
    adv = [[0.0] * n_b for _ in range(n_t)]
    for b in range(n_b):
        big_v = [v[t][b] for t in range(n_t)] + [boot[b]]
        delta = [r[t][b] + g[t][b] * big_v[t + 1] - big_v[t] for t in range(n_t)]
        for t in range(n_t):
            total = 0.0
            for j in range(n_t - t):
                coef = 1.0
                for k in range(t, t + j):
                    coef *= g[k][b] * lam
                total += coef * delta[t + j]
            adv[t][b] = total
    return adv


def monte_carlo_return(rewards, bootstrap_value, discounts):
    """G_t = sum_k (prod_{j=t}^{k-1} gamma_j) r_k + (prod_{j=t}^{T-1} gamma_j) V(x_T)."""
    r, g, boot = rewards.tolist(), discounts.tolist(), bootstrap_value.tolist()
    n_t, n_b = len(r), len(r[0])
    out = [[0.0] * n_b for _ in range(n_t)]
    for b in range(n_b):
        for t in range(n_t):
            total, disc = 0.0, 1.0
            for k in range(t, n_t):
                total += disc * r[k][b]
                disc *= g[k][b]
            out[t][b] = total + disc * boot[b]
    return out


def _inputs(T, B, seed, gamma=0.99, cut_prob=0.3, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, B, generator=gen, dtype=dtype)
    values = torch.randn(T, B, generator=gen, dtype=dtype)
    bootstrap = torch.randn(B, generator=gen, dtype=dtype)
    cuts = (torch.rand(T, B, generator=gen) < cut_prob).to(dtype)
    if T >= 3:
        cuts[T // 2, 0] = 1.0  # always a cut in the middle
    return rewards, values, bootstrap, gamma * (1.0 - cuts)


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
@pytest.mark.parametrize("T,B", [(1, 1), (7, 3), (16, 5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_paper_reference(lam, T, B, seed):
    rewards, values, bootstrap, discounts = _inputs(T, B, seed)
    adv, ret = gae(rewards, values, bootstrap, discounts, lam)
    expected = torch.tensor(gae_reference(rewards, values, bootstrap, discounts, lam), dtype=torch.float64)
    torch.testing.assert_close(adv, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ret, expected + values, rtol=1e-10, atol=1e-10)


def test_matches_reference_float32():
    rewards, values, bootstrap, discounts = _inputs(10, 4, seed=7, dtype=torch.float32)
    adv, _ = gae(rewards, values, bootstrap, discounts, 0.95)
    expected = torch.tensor(gae_reference(rewards, values, bootstrap, discounts, 0.95), dtype=torch.float32)
    torch.testing.assert_close(adv, expected, rtol=1e-5, atol=1e-5)


def test_lambda_zero_is_one_step_td():
    rewards, values, bootstrap, discounts = _inputs(9, 4, seed=2)
    adv, ret = gae(rewards, values, bootstrap, discounts, 0.0)
    values_tp1 = torch.cat([values[1:], bootstrap.unsqueeze(0)])
    torch.testing.assert_close(adv, rewards + discounts * values_tp1 - values, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ret, rewards + discounts * values_tp1, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cut_prob", [0.0, 0.3])
def test_lambda_one_is_monte_carlo_with_bootstrap(cut_prob):
    rewards, values, bootstrap, discounts = _inputs(11, 4, seed=3, cut_prob=cut_prob)
    adv, ret = gae(rewards, values, bootstrap, discounts, 1.0)
    g = torch.tensor(monte_carlo_return(rewards, bootstrap, discounts), dtype=torch.float64)
    torch.testing.assert_close(ret, g, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(adv, g - values, rtol=1e-10, atol=1e-10)


def test_cut_stops_the_bootstrap():
    """A cut at the last step: the return there is the reward alone, whatever V(x_T) is."""
    rewards, values, bootstrap, discounts = _inputs(5, 2, seed=4, cut_prob=0.0)
    discounts[-1] = 0.0
    _, ret1 = gae(rewards, values, bootstrap, discounts, 0.95)
    _, ret2 = gae(rewards, values, bootstrap + 100.0, discounts, 0.95)
    torch.testing.assert_close(ret1, ret2, rtol=0, atol=1e-12)
    torch.testing.assert_close(ret1[-1], rewards[-1], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "bad",
    [
        dict(rewards=torch.zeros(4, 4)),
        dict(values=torch.zeros(5, 2)),
        dict(discounts=torch.zeros(5)),
        dict(bootstrap_value=torch.zeros(4)),
        dict(bootstrap_value=torch.zeros(1, 3)),
    ],
    ids=["rewards", "values", "discounts", "bootstrap_wide", "bootstrap_2d"],
)
def test_shape_validation(bad):
    kw = dict(
        rewards=torch.zeros(5, 3),
        values=torch.zeros(5, 3),
        bootstrap_value=torch.zeros(3),
        discounts=torch.zeros(5, 3),
        lam=0.95,
    )
    gae(**kw)  # the good shapes pass
    with pytest.raises(ValueError):
        gae(**{**kw, **bad})
