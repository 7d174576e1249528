"""At lag 0, with the learner's weights, an actor's log-probs are the learner's, bit for bit (rho exactly 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.rollout import sample_actions
from common.rl.networks import NUM_ACTIONS, PolicyNet
from common.runtime import actor_dtype, conv_layout
from learner.agent import RNDAgent

CHUNK = 256  # the learner's scoring chunk on the CPU (common/runtime.py INFER_CHUNK)


def actor_copy(agent: RNDAgent, cfg) -> tuple[PolicyNet, torch.dtype | None, torch.memory_format]:
    """The policy as an actor holds it: built on its own, the weights loaded as a weights message hands them
    over (numpy arrays), in the layout its collector picks."""
    policy = PolicyNet(NUM_ACTIONS, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth).eval()
    dtype = actor_dtype(cfg, "cpu")
    fmt = conv_layout(torch.device("cpu"), dtype)
    policy.to(memory_format=fmt)
    arrays = {k: v.detach().cpu().numpy() for k, v in agent.policy.state_dict().items()}
    policy.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in arrays.items()})
    return policy, dtype, fmt


def both_logps(precision: str, hw: int, actor_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the actors' logp, the learner's) of the actions the actors sampled, on CHUNK random observations."""
    from common.config import load_config

    cfg = load_config(None, {"learner_precision": precision, "actor_precision": precision, "ImageHeight": hw,
                             "ImageWidth": hw, "NumWorkers": 16, "BatchSize": 512})  # fmt: skip
    agent = RNDAgent(cfg, NUM_ACTIONS)
    policy, dtype, fmt = actor_copy(agent, cfg)
    assert dtype == agent.amp_dtype and fmt == agent.policy_format  # the same rules decide both
    obs = np.random.default_rng(hw).integers(0, 256, (CHUNK, cfg.FrameStack, hw, hw), dtype=np.uint8)
    gen = torch.Generator().manual_seed(1)
    acts, mus = [], []
    for lo in range(0, CHUNK - CHUNK % actor_batch, actor_batch):
        a, mu = sample_actions(policy, obs[lo : lo + actor_batch], gen, dtype, fmt)
        acts.append(a)
        mus.append(mu)
    actions = torch.from_numpy(np.concatenate(acts))
    with torch.no_grad():
        logits = agent.run_policy(torch.from_numpy(obs))  # one scoring chunk of the learner
    pi = torch.log_softmax(logits.logits, -1)[: len(actions)].gather(1, actions[:, None]).squeeze(1)
    return torch.from_numpy(np.concatenate(mus)), pi


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("actor_batch", [8, 16])
def test_actor_logp_is_the_learners_bit_for_bit(precision, actor_batch) -> None:
    """At 84x84 (fp32 then runs channels-last on both sides, bf16 in the default layout) and the actors'
    batches of 8 and 16 env streams."""
    mu, pi = both_logps(precision, 84, actor_batch)
    assert torch.equal(mu, pi), f"max |logp diff| {(mu - pi).abs().max().item():.3g}"
    assert torch.exp(pi - mu).eq(1.0).all()  # V-trace's rho


def test_odd_actor_batches_agree_to_rounding() -> None:
    """MKL's matrix products may round a row's sums differently for some batch sizes (here 1 to 3, 5, 7 and 9
    rows): the logits then differ in their last bits, never more."""
    mu, pi = both_logps("bf16", 84, 9)
    torch.testing.assert_close(mu, pi, rtol=0, atol=1e-5)
