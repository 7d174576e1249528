"""V-trace off-policy targets (Espeholt et al. 2018, "IMPALA", arXiv 1802.01561, section 4.1).

Pure and time-major: tensors in, a NamedTuple of tensors out; no config, no globals.

Two forms of the policy advantage A_s, both weighted by rho_s:
  "impala": rho_s (r_s + gamma_s v_{s+1} - V(x_s)), the paper's (section 4.2). With pi = mu it is the
            one-step advantage on the lambda-returns, which equals GAE(lambda) only at lambda = 1.
  "gae":    rho_s (r_s + gamma_s V(x_{s+1}) - V(x_s) + gamma_s lambda (v_{s+1} - V(x_{s+1}))). With pi = mu,
            rho_bar >= 1 and c_bar >= 1, v_{s+1} - V(x_{s+1}) is GAE's A_{s+1}, so A_s is GAE(lambda)'s
            A_s = delta_s + gamma_s lambda A_{s+1} exactly: the advantage PPO uses in the RND paper's
            code. At lambda = 1 it is the "impala" form.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from common.rl.scan import affine_scan

ADVANTAGE_FORMS = ("gae", "impala")


class VTraceReturns(NamedTuple):
    vs: torch.Tensor  # [T, B] value targets v_s
    pg_advantages: torch.Tensor  # [T, B] the policy advantages A_s of the chosen form


def truncated_ratios(behaviour_logp: torch.Tensor, target_logp: torch.Tensor, bar: float) -> torch.Tensor:
    """min(bar, pi/mu), elementwise: truncated from above, never bounded from below. [T, B] -> [T, B]."""
    return torch.clamp(torch.exp(target_logp - behaviour_logp), max=bar)


@torch.no_grad()
def vtrace(
    behaviour_logp: torch.Tensor,
    target_logp: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    discounts: torch.Tensor,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    lam: float = 1.0,
    advantage: str = "gae",
) -> VTraceReturns:
    """V-trace targets and policy-gradient advantages.

    Args (T = time, B = batch of env streams, time-major):
        behaviour_logp: [T, B] log mu(a_s | x_s) of the actions taken, from the actor's policy.
        target_logp: [T, B] log pi(a_s | x_s) under the learner's policy.
        rewards: [T, B] r_s.
        values: [T, B] V(x_s) under the learner's value function.
        bootstrap_value: [B] V(x_T).
        discounts: [T, B] gamma_s; gamma * (1 - episode end) where the stream is cut.
        rho_bar, c_bar: truncation levels; rho_s = min(rho_bar, pi/mu), c_s = lam * min(c_bar, pi/mu).
        lam: the trace coefficient lambda (IMPALA remark 2); lam=1 is the paper's main form.
        advantage: "gae" or "impala", the form of A_s (module docstring); v_T = V(x_T) in both.

    v_s = V(x_s) + sum_{t>=s} gamma^{t-s} (prod_{i=s}^{t-1} c_i) delta_t V,
    delta_t V = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)), computed by the backward recursion
    v_s - V(x_s) = delta_s V + gamma_s c_s (v_{s+1} - V(x_{s+1})).
    With pi = mu, rho_bar >= 1 and c_bar >= 1, v_s are the GAE(lam) returns.
    """
    _check_shapes(behaviour_logp, target_logp, rewards, values, bootstrap_value, discounts)
    if advantage not in ADVANTAGE_FORMS:
        raise ValueError(f"vtrace: advantage must be one of {ADVANTAGE_FORMS}, got {advantage!r}")
    rhos = truncated_ratios(behaviour_logp, target_logp, rho_bar)
    cs = lam * truncated_ratios(behaviour_logp, target_logp, c_bar)
    values_tp1 = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
    deltas = rhos * (rewards + discounts * values_tp1 - values)

    vs = affine_scan(deltas, discounts * cs) + values  # v_s - V(x_s) = delta_s + gamma_s c_s (v_{s+1} - V(x_{s+1}))
    vs_tp1 = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)], dim=0)  # v_T = V(x_T)
    if advantage == "impala":
        next_value = vs_tp1
    else:  # V(x_{s+1}) + lambda (v_{s+1} - V(x_{s+1}))
        next_value = values_tp1 + lam * (vs_tp1 - values_tp1)
    pg_advantages = rhos * (rewards + discounts * next_value - values)
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)


def _check_shapes(behaviour_logp, target_logp, rewards, values, bootstrap_value, discounts) -> None:
    if values.dim() != 2:
        raise ValueError(f"values must be [T, B], got {tuple(values.shape)}")
    for name, x in (
        ("behaviour_logp", behaviour_logp),
        ("target_logp", target_logp),
        ("rewards", rewards),
        ("discounts", discounts),
    ):
        if x.shape != values.shape:
            raise ValueError(f"{name} must have shape {tuple(values.shape)}, got {tuple(x.shape)}")
    if bootstrap_value.shape != values.shape[1:]:
        raise ValueError(f"bootstrap_value must be [B]={tuple(values.shape[1:])}, got {tuple(bootstrap_value.shape)}")
