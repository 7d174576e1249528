"""Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438, eq. 16). Pure, time-major."""

from __future__ import annotations

import torch

from common.rl.scan import affine_scan


@torch.no_grad()
def gae(
    rewards: torch.Tensor, values: torch.Tensor, bootstrap_value: torch.Tensor, discounts: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(lambda) advantages and returns.

    Args: rewards, values, discounts [T, B] (discounts = gamma * (1 - cut)); bootstrap_value [B] = V(x_T).
    Returns: (advantages [T, B], returns [T, B] = advantages + values).
    A_t = delta_t + gamma_t * lam * A_{t+1}, delta_t = r_t + gamma_t V(x_{t+1}) - V(x_t).
    """
    if not (rewards.shape == values.shape == discounts.shape) or bootstrap_value.shape != values.shape[1:]:
        raise ValueError(
            f"gae: shapes rewards {tuple(rewards.shape)}, values {tuple(values.shape)}, "
            f"discounts {tuple(discounts.shape)}, bootstrap {tuple(bootstrap_value.shape)} disagree"
        )
    values_tp1 = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
    deltas = rewards + discounts * values_tp1 - values
    adv = affine_scan(deltas, discounts * lam)  # A_t = delta_t + gamma_t lam A_{t+1}, A_T = 0
    return adv, adv + values


def extrinsic_stream(
    rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor, trunc_value: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Learning rewards and discounts of the extrinsic stream, all [T, B].

    Rewards are clipped to [-1, 1] (the raw score is only logged). The stream is cut at game over
    (discount 0, nothing to bootstrap) and at the time limit, where the next observation already
    belongs to a new episode; there the value of the final observation, ``trunc_value``, is added
    as gamma * V(x_final), so a truncation is bootstrapped rather than treated as an ending.
    """
    clipped = rewards.clamp(-1.0, 1.0) + gamma * trunc_value * truncated
    discounts = gamma * (1.0 - terminated) * (1.0 - truncated)
    return clipped, discounts
