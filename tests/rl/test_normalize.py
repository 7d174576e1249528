"""common/rl/normalize.py: the running mean/std (per pixel and scalar) and RND's per-stream reward forward filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.rl.normalize import RewardForwardFilter, RunningMeanStd

# ---------------------------------------------------------------------------------------------
# RunningMeanStd


def _pixel_batches(seed=0, sizes=(1, 2, 17, 5, 40)):
    """uint8 frames [n, 84, 84] whose per-pixel distributions differ (offset and spread per pixel)."""
    rng = np.random.default_rng(seed)
    offset = rng.uniform(20, 230, size=(84, 84))
    spread = rng.uniform(0.5, 25, size=(84, 84))
    return [np.clip(offset + spread * rng.standard_normal((n, 84, 84)), 0, 255).astype(np.uint8) for n in sizes]


def _scalar_batches(seed=1, sizes=(3, 1, 11, 2, 29, 7)):
    rng = np.random.default_rng(seed)
    return [1000.0 + 3.0 * rng.standard_normal(n) for n in sizes]


def _with_prior(data, eps):
    """Exact moments of the data plus the initial pseudo-sample (mean 0, var 1, weight eps)."""
    total = data.shape[0] + eps
    mean = data.sum(0) / total
    var = (eps * (1.0 + mean**2) + ((data - mean) ** 2).sum(0)) / total
    return mean, var, total


@pytest.mark.parametrize(
    "shape,batches", [((84, 84), _pixel_batches()), ((), _scalar_batches())], ids=["per_pixel", "scalar"]
)
def test_running_mean_std_matches_numpy(shape, batches):
    """Several uneven batches give numpy's mean/var (population) over all the data fed in."""
    rms = RunningMeanStd(shape, epsilon=1e-12)  # a negligible prior: plain numpy moments
    for x in batches:
        rms.update(torch.from_numpy(x))
    data = np.concatenate(batches).astype(np.float64)
    assert rms.mean.shape == shape and rms.var.shape == shape
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-9)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(rms.std.numpy(), data.std(0), rtol=1e-7, atol=1e-9)
    assert rms.count.item() == pytest.approx(data.shape[0], rel=1e-12)


@pytest.mark.parametrize(
    "shape,batches", [((84, 84), _pixel_batches()), ((), _scalar_batches())], ids=["per_pixel", "scalar"]
)
def test_running_mean_std_default_prior(shape, batches):
    """With the default epsilon the result is exact for the data plus a pseudo-sample (mean 0, var 1, weight 1e-4)."""
    rms = RunningMeanStd(shape)
    for x in batches:
        rms.update(torch.from_numpy(x))
    data = np.concatenate(batches).astype(np.float64)
    mean, var, total = _with_prior(data, 1e-4)
    np.testing.assert_allclose(rms.mean.numpy(), mean, rtol=1e-9)
    np.testing.assert_allclose(rms.var.numpy(), var, rtol=1e-9)
    assert rms.count.item() == pytest.approx(total, rel=1e-12)


def test_running_mean_std_leading_axes_are_flattened():
    """[T, B, H, W] counts T*B samples, the same as [T*B, H, W]."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(3, 4, 84, 84), dtype=np.uint8)
    a, b = RunningMeanStd((84, 84)), RunningMeanStd((84, 84))
    a.update(torch.from_numpy(x))
    b.update(torch.from_numpy(x.reshape(12, 84, 84)))
    torch.testing.assert_close(a.mean, b.mean)
    torch.testing.assert_close(a.var, b.var)
    assert a.count.item() == pytest.approx(12 + 1e-4)


def test_running_mean_std_empty_batch_is_a_no_op():
    rms = RunningMeanStd(())
    rms.update(torch.tensor([1.0, 2.0, 4.0]))
    before = rms.state_dict()
    rms.update(torch.zeros(0))
    for k, v in before.items():
        torch.testing.assert_close(getattr(rms, k), v)


def test_running_mean_std_state_dict_round_trip():
    batches = _scalar_batches()
    a = RunningMeanStd(())
    for x in batches[:3]:
        a.update(torch.from_numpy(x))
    state = a.state_dict()
    b = RunningMeanStd(())
    b.load_state_dict(state)
    for k in ("mean", "var", "count"):
        torch.testing.assert_close(getattr(b, k), getattr(a, k), rtol=0, atol=0)
    for x in batches[3:]:  # both continue identically
        a.update(torch.from_numpy(x))
        b.update(torch.from_numpy(x))
    for k in ("mean", "var", "count"):
        torch.testing.assert_close(getattr(b, k), getattr(a, k), rtol=0, atol=0)
    assert not torch.equal(state["count"], a.count)  # the saved dict is a copy, not the live state


def test_running_mean_std_load_rejects_other_shape():
    with pytest.raises(ValueError):
        RunningMeanStd((84, 84)).load_state_dict(RunningMeanStd((42, 42)).state_dict())


# ---------------------------------------------------------------------------------------------
# RewardForwardFilter

GAMMA = 0.99
NUM_STREAMS = 4  # stream 3 never sends anything
# (stream ids, T) per call: interleaved, streams in varying batch positions, each stream's own
# chunks in time order; T != B so that a filter run along the wrong axis cannot agree.
SCHEDULE = [([2, 0], 3), ([0, 1], 3), ([1, 2], 5), ([2], 2), ([0, 1, 2], 4), ([1, 0], 1), ([2, 1, 0], 3)]


def _stream_rewards(seed=0):
    """Per-stream reward sequences long enough for the whole schedule (non-negative, like RND's)."""
    rng = np.random.default_rng(seed)
    need = {s: 0 for s in range(NUM_STREAMS)}
    for ids, t in SCHEDULE:
        for s in ids:
            need[s] += t
    return {s: rng.exponential(1.0, size=n) for s, n in need.items()}


def _reference(seq):
    out, acc = [], 0.0
    for r in seq:
        acc = GAMMA * acc + r
        out.append(acc)
    return np.array(out)


def _run(filt, seqs, schedule=SCHEDULE, pos=None, dtype=torch.float64):
    """Feeds ``schedule`` to ``filt``; returns the outputs stitched per stream and the read positions."""
    pos = dict.fromkeys(seqs, 0) if pos is None else pos
    outs = {s: [] for s in seqs}
    for ids, t in schedule:
        rewards = np.stack([seqs[s][pos[s] : pos[s] + t] for s in ids], axis=1)  # [T, B]
        out = filt(torch.tensor(rewards, dtype=dtype), torch.tensor(ids))
        assert out.shape == rewards.shape and out.dtype == dtype
        for j, s in enumerate(ids):
            outs[s].extend(out[:, j].tolist())
            pos[s] += t
    return {s: np.array(v) for s, v in outs.items()}, pos


def _matches_reference(filt_cls) -> bool:
    seqs = _stream_rewards()
    outs, _ = _run(filt_cls(NUM_STREAMS, GAMMA), seqs)
    return all(np.allclose(outs[s], _reference(seqs[s]), rtol=1e-12, atol=1e-12) for s in seqs)


def test_forward_filter_per_stream_in_any_interleaving():
    seqs = _stream_rewards()
    filt = RewardForwardFilter(NUM_STREAMS, GAMMA)
    outs, _ = _run(filt, seqs)
    for s in range(3):
        np.testing.assert_allclose(outs[s], _reference(seqs[s]), rtol=1e-12, atol=1e-12)
        assert filt.state[s].item() == pytest.approx(_reference(seqs[s])[-1], rel=1e-12)
    assert filt.state[3].item() == 0.0  # a stream never called keeps its state


def test_forward_filter_float32_keeps_dtype():
    seqs = _stream_rewards(seed=5)
    outs, _ = _run(RewardForwardFilter(NUM_STREAMS, GAMMA), seqs, dtype=torch.float32)
    for s in range(3):
        np.testing.assert_allclose(outs[s], _reference(seqs[s]), rtol=1e-5)


class _BatchAxisFilter(RewardForwardFilter):
    """The known bug: the filter run across the batch axis instead of along time."""

    def __call__(self, rewards, stream_ids):
        out = torch.empty_like(rewards)
        acc = torch.zeros(rewards.shape[0], dtype=rewards.dtype)
        for b in range(rewards.shape[1]):
            acc = acc * self.gamma + rewards[:, b]
            out[:, b] = acc
        return out


class _PositionKeyedFilter(RewardForwardFilter):
    """Along time, but state kept per batch position rather than per stream id."""

    def __call__(self, rewards, stream_ids):
        b = rewards.shape[1]
        acc = self.state[:b].clone()
        out = torch.empty(rewards.shape, dtype=torch.float64)
        for t in range(rewards.shape[0]):
            acc = acc * self.gamma + rewards[t].double()
            out[t] = acc
        self.state[:b] = acc
        return out.to(rewards.dtype)


class _NoCarryFilter(RewardForwardFilter):
    """Along time per stream, but restarting from zero every call."""

    def __call__(self, rewards, stream_ids):
        self.state.zero_()
        return super().__call__(rewards, stream_ids)


def test_the_schedule_catches_known_wrong_filters():
    """Guards the test data: these wrong filters must disagree with the reference on SCHEDULE."""
    assert _matches_reference(RewardForwardFilter)
    for wrong in (_BatchAxisFilter, _PositionKeyedFilter, _NoCarryFilter):
        assert not _matches_reference(wrong), wrong.__name__


def test_forward_filter_state_dict_round_trip():
    seqs = _stream_rewards(seed=2)
    whole, _ = _run(RewardForwardFilter(NUM_STREAMS, GAMMA), seqs)
    first = RewardForwardFilter(NUM_STREAMS, GAMMA)
    out1, pos = _run(first, seqs, SCHEDULE[:3])
    pos_saved = dict(pos)
    state = first.state_dict()
    second = RewardForwardFilter(NUM_STREAMS, GAMMA)
    second.load_state_dict(state)
    torch.testing.assert_close(second.state, first.state, rtol=0, atol=0)
    out2, _ = _run(second, seqs, SCHEDULE[3:], pos)
    _run(first, seqs, SCHEDULE[3:], pos_saved)  # the original, run on, ends in the same state
    for s in range(3):
        np.testing.assert_allclose(np.concatenate([out1[s], out2[s]]), whole[s], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(second.state, first.state, rtol=0, atol=0)


def test_forward_filter_state_dict_is_a_copy():
    """Running on after state_dict() must not change the saved tensor."""
    seqs = _stream_rewards(seed=3)
    filt = RewardForwardFilter(NUM_STREAMS, GAMMA)
    _, pos = _run(filt, seqs, SCHEDULE[:3])
    state = filt.state_dict()
    before = state["state"].clone()
    _run(filt, seqs, SCHEDULE[3:], pos)
    assert not torch.equal(filt.state, before)
    torch.testing.assert_close(state["state"], before, rtol=0, atol=0)


def test_forward_filter_load_does_not_alias_the_given_state():
    """Regression: load_state_dict once kept the caller's tensor when it was already float64 on the
    filter's device (``Tensor.to`` returns ``self``), and ``__call__`` then wrote into it in place. So
    running a filter after loading changed the checkpoint dict it was loaded from, and two filters loaded
    from one dict shared one state. Fixed by ``.clone()`` in load_state_dict.
    """
    seqs = _stream_rewards(seed=4)
    src = RewardForwardFilter(NUM_STREAMS, GAMMA)
    _, pos = _run(src, seqs, SCHEDULE[:3])
    state = src.state_dict()
    before = state["state"].clone()
    a, b = RewardForwardFilter(NUM_STREAMS, GAMMA), RewardForwardFilter(NUM_STREAMS, GAMMA)
    a.load_state_dict(state)
    b.load_state_dict(state)
    _run(a, seqs, SCHEDULE[3:], dict(pos))
    torch.testing.assert_close(state["state"], before, rtol=0, atol=0, msg="loaded-from dict was modified")
    torch.testing.assert_close(b.state, before, rtol=0, atol=0, msg="a second filter's state was modified")


def test_running_mean_std_load_does_not_alias_the_given_state():
    batches = _scalar_batches()
    src = RunningMeanStd(())
    src.update(torch.from_numpy(batches[0]))
    state = src.state_dict()
    before = {k: v.clone() for k, v in state.items()}
    a, b = RunningMeanStd(()), RunningMeanStd(())
    a.load_state_dict(state)
    b.load_state_dict(state)
    a.update(torch.from_numpy(batches[1]))
    for k in before:
        torch.testing.assert_close(state[k], before[k], rtol=0, atol=0)
        torch.testing.assert_close(getattr(b, k), before[k], rtol=0, atol=0)


def test_forward_filter_load_rejects_other_stream_count():
    with pytest.raises(ValueError):
        RewardForwardFilter(4, GAMMA).load_state_dict(RewardForwardFilter(3, GAMMA).state_dict())


@pytest.mark.parametrize(
    "rewards,ids",
    [
        (torch.zeros(5), torch.tensor([0])),
        (torch.zeros(5, 2), torch.tensor([0, 1, 2])),
        (torch.zeros(5, 2, 1), torch.tensor([0, 1])),
        (torch.zeros(5, 2), torch.tensor([[0, 1]])),
    ],
    ids=["rewards_1d", "ids_longer", "rewards_3d", "ids_2d"],
)
def test_forward_filter_rejects_bad_shapes(rewards, ids):
    filt = RewardForwardFilter(NUM_STREAMS, GAMMA)
    with pytest.raises(ValueError):
        filt(rewards, ids)
