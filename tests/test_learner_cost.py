"""What the learner skips to be cheaper must not change what it computes in expectation: the RND
predictor trains on a fixed-size subset of each minibatch where the release draws a Bernoulli mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.rl.networks import NUM_ACTIONS
from learner.agent import RNDAgent
from learner.batch import assemble
from learner.minibatch import plan_minibatches, predictor_count
from learner.synthetic import synthetic_segments


def bernoulli_weights(m: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """The release's form: each sample kept with probability p, the loss the mean over the kept ones
    (0 if none): the weight of each sample's error. float [m]."""
    mask = (torch.rand(m, generator=gen) < p).double()
    return mask / mask.sum().clamp(min=1.0)


def subset_weights(m: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """The fixed-size subset's weight of each sample's error, drawn as plan_minibatches draws it."""
    sub = plan_minibatches(m, 1, 1, p, gen).predictor[0]
    w = torch.zeros(m, dtype=torch.float64)
    w[sub] = 1.0 / sub.shape[0]
    return w


@pytest.mark.parametrize("m, p", [(48, 0.25), (64, 0.5), (512, 0.25)])
def test_the_fixed_subset_weighs_each_sample_as_the_bernoulli_mask_does_in_expectation(m, p) -> None:
    """The loss and its gradient are sums of per-sample errors and gradients times these weights, so equal
    expected weights (1/m each, up to the mask's chance of keeping nothing) mean an unbiased loss and
    gradient. Checked over many draws of each, to a few standard errors."""
    draws = 6000
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    want = torch.stack([bernoulli_weights(m, p, g1) for _ in range(draws)]).mean(0)
    got = torch.stack([subset_weights(m, p, g2) for _ in range(draws)]).mean(0)
    k = predictor_count(m, p)
    sd = (1.0 / k) * np.sqrt(k / m * (1 - k / m) / draws)  # one weight's standard error over the draws
    assert float((got - 1.0 / m).abs().max()) < 5 * sd
    assert float((want - 1.0 / m).abs().max()) < 6 * sd
    assert abs(float(got.sum()) - 1.0) < 1e-9 and abs(float(want.sum()) - 1.0) < 1e-3


@pytest.mark.parametrize("proportion", [0.25, 0.5, 1.0, 0.001])
def test_predictor_loss_on_the_subset_equals_the_masked_mean_of_every_sample(small_cfg, proportion) -> None:
    """Only the subset goes through the predictor; the loss and gradient are those of the paper's form with
    a mask that keeps exactly that subset."""
    cfg = small_cfg(NumWorkers=4, RolloutSteps=16, RNDUpdateProportion=proportion)
    agent = RNDAgent(cfg, NUM_ACTIONS)
    batch = assemble(synthetic_segments(cfg, np.random.default_rng(0)), cfg.FrameStack)
    agent.obs_rms.update(batch.frames.reshape(-1, cfg.ImageHeight, cfg.ImageWidth))
    idx = torch.randperm(batch.T * batch.B, generator=torch.Generator().manual_seed(1))[:48]
    sub = plan_minibatches(48, 1, 1, proportion, torch.Generator().manual_seed(2)).predictor[0]
    assert sub.shape[0] == predictor_count(48, proportion) >= 1
    params = list(agent.rnd.predictor.parameters())
    err = agent.rnd(agent.normalise_frames(batch.next_frames(idx)))
    mask = torch.zeros(48)
    mask[sub] = 1.0
    want = (err * mask).sum() / mask.sum()
    got = agent.predictor_loss(batch, idx, sub)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    for g, w in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)


def test_the_plan_has_fixed_shapes_and_covers_each_epoch() -> None:
    plan = plan_minibatches(1000, 4, 3, 0.25, torch.Generator().manual_seed(0))
    assert len(plan.samples) == len(plan.predictor) == 12
    for e in range(3):
        epoch = torch.cat(plan.samples[4 * e : 4 * e + 4])
        assert torch.equal(epoch.sort().values, torch.arange(1000))
    assert {p.shape[0] for p in plan.predictor} == {62}  # round(0.25 * 250)
    assert all(len(set(p.tolist())) == p.shape[0] for p in plan.predictor)
