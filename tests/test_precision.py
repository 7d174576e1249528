"""The precision rule (bf16 autocast where the hardware has native bf16) and what it must not change:
the actors' log-probs are those of the distribution that sampled, and the learner's outputs stay fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.rollout import sample_actions
from common import precision
from common.config import load_config
from common.precision import autocast, autocast_dtype
from common.rl.networks import NUM_ACTIONS, PolicyNet, RNDModel, scaled_obs
from learner.agent import RNDAgent
from learner.batch import assemble
from learner.synthetic import synthetic_segments


def test_explicit_choices_hold_on_any_device() -> None:
    for dev in ("cpu", "cuda"):
        assert autocast_dtype("fp32", dev, (84, 84)) is None
        assert autocast_dtype("bf16", dev, (44, 44)) is torch.bfloat16


def test_auto_is_bf16_on_cuda() -> None:
    assert autocast_dtype("auto", "cuda", (44, 44)) is torch.bfloat16
    assert autocast_dtype("auto", torch.device("cuda", 1), (84, 84)) is torch.bfloat16


@pytest.mark.parametrize(
    "caps, want",
    [
        ({"avx512_bf16": True, "amx_bf16": False}, torch.bfloat16),
        ({"avx512_bf16": False, "amx_bf16": True}, torch.bfloat16),
        ({"avx512_bf16": False, "amx_bf16": False, "avx512": True}, None),
        ({}, None),
    ],
)
def test_auto_on_cpu_follows_native_bf16(monkeypatch, caps, want) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    assert precision.cpu_has_native_bf16() is (want is not None)
    assert autocast_dtype("auto", "cpu", (84, 84)) is want


def test_auto_on_cpu_takes_fp32_for_frames_smaller_than_84x84(monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    assert autocast_dtype("auto", "cpu", (84, 84)) is torch.bfloat16
    assert autocast_dtype("auto", "cpu", (96, 80)) is torch.bfloat16
    assert autocast_dtype("auto", "cpu", (84, 83)) is None
    assert autocast_dtype("auto", "cpu", (44, 44)) is None
    assert autocast_dtype("bf16", "cpu", (44, 44)) is torch.bfloat16


def test_no_region_without_a_dtype() -> None:
    x = torch.randn(3, 5)
    w = torch.randn(5, 2)
    with autocast("cpu", None):
        assert (x @ w).dtype == torch.float32
    with autocast("cpu", torch.bfloat16):
        assert (x @ w).dtype == torch.bfloat16


def _obs(k: int, h: int = 44, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (k, 4, h, h), dtype=np.uint8)


def test_bf16_actor_sends_the_log_probs_of_the_distribution_that_sampled() -> None:
    """mu must be exact for V-trace: the log-prob sent for each action is that action's log-prob
    under the (bf16-trunk) logits that drew it, as the learner computes them, not the fp32 policy's."""
    torch.manual_seed(0)
    net = PolicyNet(NUM_ACTIONS, 4, 44, 44).eval()
    obs = _obs(64)
    actions, logp = sample_actions(net, obs, torch.Generator().manual_seed(3), torch.bfloat16)
    with torch.inference_mode():
        logits = net.step_logits(torch.from_numpy(obs), torch.bfloat16, torch.contiguous_format)
    want = torch.log_softmax(logits.float(), -1).gather(1, torch.from_numpy(actions)[:, None]).squeeze(1)
    assert logp.dtype == np.float32
    np.testing.assert_array_equal(logp, want.numpy())
    # the same draw (same generator state) as fp32 would make from nearly the same probabilities
    with torch.inference_mode():
        fp32 = torch.log_softmax(net.logits(torch.from_numpy(obs)), -1)
    near = fp32.gather(1, torch.from_numpy(actions)[:, None]).squeeze(1).numpy()
    assert np.abs(near - logp).max() < 0.05
    assert not np.array_equal(near, logp)  # bf16 did run: its rounding shows


def test_bf16_actor_samples_the_distribution() -> None:
    """Over many draws the bf16 step's actions follow its own probabilities."""
    torch.manual_seed(1)
    net = PolicyNet(NUM_ACTIONS, 4, 44, 44).eval()
    with torch.no_grad():  # a peaked policy, so the frequencies are far from uniform
        net.pi_head.weight.mul_(300.0)
    obs = np.repeat(_obs(1, seed=5), 4000, axis=0)
    actions, logp = sample_actions(net, obs, torch.Generator().manual_seed(0), torch.bfloat16)
    probs = np.zeros(NUM_ACTIONS)
    probs[actions] = np.exp(logp)  # every draw of one action reports the same log-prob
    freq = np.bincount(actions, minlength=NUM_ACTIONS) / len(actions)
    assert probs.max() > 0.1  # uniform is 1/18
    assert np.abs(freq - probs)[freq > 0].max() < 0.03


def test_collector_takes_the_actor_precision() -> None:
    from actors.rollout import build_collector

    for setting, want in (("fp32", None), ("bf16", torch.bfloat16)):
        cfg = load_config("configs/smoke.yaml", {"actor_precision": setting})
        assert build_collector(cfg, 0, 1).dtype is want


def test_learner_bf16_on_cpu_keeps_outputs_fp32_and_close() -> None:
    base = load_config("configs/smoke.yaml", {"learner_precision": "fp32"})
    half = load_config("configs/smoke.yaml", {"learner_precision": "bf16"})
    a, b = RNDAgent(base, NUM_ACTIONS), RNDAgent(half, NUM_ACTIONS)
    b.policy.load_state_dict(a.policy.state_dict())
    obs = torch.from_numpy(_obs(8, base.ImageHeight))
    with torch.no_grad():
        x, y = a.run_policy(obs), b.run_policy(obs)
    for got, ref in zip(y, x, strict=True):
        assert got.dtype == torch.float32
        assert torch.allclose(got, ref, atol=0.02, rtol=0.05)
    assert not torch.equal(y.logits, x.logits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_scaled_obs_is_the_fp32_quotient_rounded_once(dtype, memory_format) -> None:
    obs = torch.from_numpy(_obs(6, 84))
    got = scaled_obs(obs, dtype, memory_format)
    assert got.dtype == dtype and got.is_contiguous(memory_format=memory_format)
    assert torch.equal(got, obs.float().mul_(1.0 / 255.0).to(dtype))


def test_bf16_features_equal_autocast_of_the_fp32_input() -> None:
    """The trunk fed a bf16 input computes exactly what autocast computed from the fp32 one."""
    net = PolicyNet(NUM_ACTIONS).to(memory_format=torch.channels_last)
    obs = torch.from_numpy(_obs(8, 84))
    fp32_in = obs.contiguous(memory_format=torch.channels_last).float().mul_(1.0 / 255.0)
    with torch.no_grad(), autocast("cpu", torch.bfloat16):
        want = net.trunk(fp32_in)
        got = net.features(obs, torch.bfloat16, torch.channels_last)
    assert torch.equal(got, want)


def test_rnd_bf16_training_autocasts_the_predictor_alone() -> None:
    """Under ``rnd_train_precision: bf16`` the predictor's matmuls run in bf16 and its gradient is close to
    fp32's; the target, the error and the intrinsic-reward pass are fp32 as before."""
    rnd = RNDModel(44, 44)
    x = torch.randn(16, 1, 44, 44)
    params = list(rnd.predictor.parameters())
    exact = rnd(x)
    half = rnd(x, torch.bfloat16)
    assert exact.dtype == half.dtype == torch.float32
    assert not torch.equal(half, exact)  # the predictor did compute in bf16
    torch.testing.assert_close(half, exact, rtol=0.05, atol=1e-4)
    for g, w in zip(torch.autograd.grad(half.mean(), params), torch.autograd.grad(exact.mean(), params), strict=True):
        assert g.dtype == torch.float32
        assert float((g - w).norm() / w.norm()) < 0.1
    with torch.no_grad():
        assert torch.equal(rnd(x), exact)  # the default path is the plain fp32 error


def test_rnd_bf16_training_leaves_the_intrinsic_reward_fp32(small_cfg) -> None:
    cfgs = [small_cfg(rnd_train_precision=p) for p in ("fp32", "bf16")]
    a, b = (RNDAgent(c, NUM_ACTIONS) for c in cfgs)
    assert (a.rnd_train_dtype, b.rnd_train_dtype) == (None, torch.bfloat16)
    batch = assemble(synthetic_segments(cfgs[0], np.random.default_rng(0)), cfgs[0].FrameStack)
    assert torch.equal(a.intrinsic_rewards(batch), b.intrinsic_rewards(batch))
    idx = torch.arange(8)
    assert not torch.equal(a.predictor_loss(batch, idx), b.predictor_loss(batch, idx))
