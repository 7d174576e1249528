"""What the learner skips to be cheaper must not change what it computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.rl.networks import NUM_ACTIONS
from learner.agent import RNDAgent, rnd_update_mask
from learner.batch import assemble
from learner.synthetic import synthetic_segments


def masked_reference(agent: RNDAgent, batch, idx: torch.Tensor) -> torch.Tensor:
    """The paper's form: every sample through the predictor, the loss averaged over the masked ones."""
    err = agent.rnd(agent.normalise_frames(batch.next_frames(idx)))
    mask = rnd_update_mask(err.shape[0], agent.cfg.RNDUpdateProportion, agent.gen).to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


@pytest.mark.parametrize("proportion", [0.25, 0.5, 1.0, 0.001])
def test_predictor_loss_on_the_kept_samples_only_matches_the_masked_mean(small_cfg, proportion) -> None:
    cfg = small_cfg(NumWorkers=4, RolloutSteps=16, RNDUpdateProportion=proportion)
    agent = RNDAgent(cfg, NUM_ACTIONS)
    batch = assemble(synthetic_segments(cfg, np.random.default_rng(0)), cfg.FrameStack)
    agent.obs_rms.update(batch.frames.reshape(-1, cfg.ImageHeight, cfg.ImageWidth))
    idx = torch.randperm(batch.T * batch.B, generator=torch.Generator().manual_seed(1))[:48]
    state = agent.gen.get_state()
    params = list(agent.rnd.predictor.parameters())

    want = masked_reference(agent, batch, idx)
    want_grads = torch.autograd.grad(want, params)
    after_reference = agent.gen.get_state()
    agent.gen.set_state(state)
    got = agent.predictor_loss(batch, idx)
    assert torch.equal(agent.gen.get_state(), after_reference)  # the same draws: later masks do not shift
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    if not got.requires_grad:  # no sample kept: 0, and the reference's gradient is 0 too
        assert float(got) == 0.0 and all(not w.any() for w in want_grads)
        return
    for g, w in zip(torch.autograd.grad(got, params), want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
