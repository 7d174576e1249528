"""PPO's clipped surrogate (Schulman et al. 2017, arXiv 1707.06347, eq. 7). Pure: tensors in, tensors out.

Which policy the ratio is taken against matters once data is off-policy. Under V-trace the learner's
advantages already carry the truncated importance weight rho_s = min(rho_bar, pi_0/mu) (in both of
common/rl/vtrace.py's advantage forms), where pi_0 is the learner's policy at the start of the update and mu the
actor's. The ratio is then pi_theta/pi_0, so that at theta = theta_0 the surrogate's gradient is
IMPALA's, rho_s grad log pi(a_s) A_s, and the trust region is around pi_0 (as IMPACT does, Luo et al.
2020, arXiv 1912.00167). A ratio pi_theta/mu on top of rho would weight each sample by about
(pi_0/mu)^2: twice. Without V-trace (plain GAE) the reference is mu, as in on-policy PPO.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Surrogate(NamedTuple):
    loss: torch.Tensor  # [] the clipped surrogate, negated for minimisation
    ratio: torch.Tensor  # [N] pi_theta / pi_ref
    log_ratio: torch.Tensor  # [N]


def clipped_surrogate(logp: torch.Tensor, logp_ref: torch.Tensor, advantages: torch.Tensor, eps: float) -> Surrogate:
    """-mean_i min(r_i A_i, clip(r_i, 1 - eps, 1 + eps) A_i) with r_i = exp(logp_i - logp_ref_i).

    logp: [N] log pi_theta(a_i | x_i), differentiable; logp_ref, advantages: [N], constants.
    """
    if not (logp.shape == logp_ref.shape == advantages.shape) or logp.dim() != 1:
        raise ValueError(
            f"clipped_surrogate: shapes logp {tuple(logp.shape)}, logp_ref {tuple(logp_ref.shape)}, "
            f"advantages {tuple(advantages.shape)} must all be [N]"
        )
    log_ratio = logp - logp_ref
    ratio = torch.exp(log_ratio)
    loss = -torch.min(ratio * advantages, ratio.clamp(1.0 - eps, 1.0 + eps) * advantages).mean()
    return Surrogate(loss, ratio, log_ratio)
