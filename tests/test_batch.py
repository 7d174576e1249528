"""learner/batch.py: observations rebuilt from one frame per step must equal the env's real frame stacks.

A slow reference simulates what an actor does (actors/rollout.py RolloutCollector.collect, layout from
common/wire.py SegmentSpec): an env keeps a stack of S frames (reset: S copies of the reset frame; step:
shift in the new frame), the segment keeps the newest frame of obs_0 .. obs_T plus the older S-1 frames of
obs_0's stack, and per-step terminated/truncated flags. Every frame carries a unique id in its pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.wire import SegmentSpec
from learner.batch import Segment, assemble, stack_indices

H, W = 4, 5  # small and non-square
NONE, TERM, TRUNC = 0, 1, 2


class FakeStackEnv:
    """The frame-stack behaviour of actors/env.py AtariEnv, with frames that encode (stream, frame id)."""

    def __init__(self, stream: int, frame_stack: int):
        self.stream, self.next_id = stream, 0
        self.stack = np.zeros((frame_stack, H, W), np.uint8)

    def _frame(self) -> np.ndarray:
        i, self.next_id = self.next_id, self.next_id + 1
        f = np.full((H, W), (3 * i + 5 * self.stream) % 251, np.uint8)
        f[0, 0], f[0, 1], f[0, 2] = self.stream, i % 256, i // 256
        return f

    def reset(self) -> None:
        self.stack[:] = self._frame()

    def advance(self) -> None:
        self.stack[:-1] = self.stack[1:]
        self.stack[-1] = self._frame()


def prehistory(env: FakeStackEnv, steps: int, ends: set[int] = frozenset()) -> None:
    """Reset, then ``steps`` steps before the first segment, resetting after the steps in ``ends``."""
    env.reset()
    for k in range(steps):
        env.advance()
        if k in ends:
            env.reset()


def collect(envs: list[FakeStackEnv], flags: np.ndarray, spec: SegmentSpec, rng: np.random.Generator):
    """One segment, as RolloutCollector.collect builds it. flags [T, K] in {NONE, TERM, TRUNC}.

    Returns (arrays in the wire layout, reference observations uint8 [T+1, K, S, H, W]).
    """
    k = len(envs)
    a = {n: np.zeros(shape, dtype) for n, (dtype, shape) in spec.segment_arrays(k).items()}
    obs = np.stack([e.stack for e in envs])
    a["frames"][0] = obs[:, -1]
    a["context"][:] = obs[:, :-1].transpose(1, 0, 2, 3)
    ref = [obs.copy()]
    for t in range(spec.rollout_steps):
        a["actions"][t] = rng.integers(spec.num_actions, size=k)
        a["behaviour_logp"][t] = -rng.uniform(0.1, 3.0, size=k)
        a["rewards"][t] = rng.integers(0, 2, size=k) * 100.0
        for i, env in enumerate(envs):
            env.advance()
            term, trunc = flags[t, i] == TERM, flags[t, i] == TRUNC
            a["terminated"][t, i], a["truncated"][t, i] = term, trunc
            if trunc:
                a["trunc_value"][t, i] = rng.normal()
            if term or trunc:
                env.reset()
            obs[i] = env.stack
        a["frames"][t + 1] = obs[:, -1]
        ref.append(obs.copy())
    return a, np.stack(ref)


def _random_flags(rng, t, k, p=0.35):
    f = np.where(rng.random((t, k)) < p, np.where(rng.random((t, k)) < 0.5, TERM, TRUNC), NONE)
    return f.astype(np.int64)


def _scenario(frame_stack: int, t_max: int, seed: int = 0):
    """Two actors (streams [0, 1, 2] and [5, 3]) and two consecutive segments each.

    Stream 0: obs_0 is an episode start; ends at t=0 and consecutive ends at t=1, 2 (when T allows).
    Stream 1: episode started 1 step before the segment (context = copies of the reset frame + 1 new frame);
              ends at the last step of segment 1, so segment 2's obs_0 is a reset stack.
    Stream 2: episode started 2 steps before the segment; no ends.
    Streams 5, 3: long random histories and random ends (p = 0.35).
    """
    rng = np.random.default_rng(seed)
    spec = SegmentSpec(rollout_steps=t_max, frame_stack=frame_stack, height=H, width=W, num_actions=18, num_streams=8)
    envs_a = [FakeStackEnv(s, frame_stack) for s in (0, 1, 2)]
    envs_b = [FakeStackEnv(s, frame_stack) for s in (5, 3)]
    prehistory(envs_a[0], 3, ends={2})
    prehistory(envs_a[1], 4, ends={2})
    prehistory(envs_a[2], 2)
    prehistory(envs_b[0], 11, ends={3, 4, 8})
    prehistory(envs_b[1], 9)
    flags_a = np.zeros((t_max, 3), np.int64)
    flags_a[:3, 0] = [TERM, TRUNC, TERM][:t_max]
    flags_a[t_max - 1, 1] = TRUNC
    segments = []
    for round_ in range(2):
        fa = flags_a if round_ == 0 else _random_flags(rng, t_max, 3)
        arrays_a, ref_a = collect(envs_a, fa, spec, rng)
        arrays_b, ref_b = collect(envs_b, _random_flags(rng, t_max, 2), spec, rng)
        segments.append(
            (
                (Segment(actor=0, version=10 + round_, streams=[0, 1, 2], arrays=arrays_a, episodes=[]), ref_a),
                (Segment(actor=1, version=20 + round_, streams=[5, 3], arrays=arrays_b, episodes=[]), ref_b),
            )
        )
    return segments


def _check_batch(batch, segs_and_refs, frame_stack, t_max, perm_seed=0):
    segs = [s for s, _ in segs_and_refs]
    ref = np.concatenate([r for _, r in segs_and_refs], axis=1)  # [T+1, B, S, H, W]
    b = ref.shape[1]
    assert batch.T == t_max and batch.B == b
    assert batch.frames.shape == (frame_stack - 1 + t_max + 1, b, H, W) and batch.frames.dtype == torch.uint8
    assert batch.obs_index.shape == (t_max + 1, b, frame_stack)

    every = torch.arange((t_max + 1) * b)
    got = batch.obs(every).numpy().reshape(t_max + 1, b, frame_stack, H, W)
    for t in range(t_max + 1):
        for j in range(b):
            np.testing.assert_array_equal(got[t, j], ref[t, j], err_msg=f"obs_{t} of stream column {j}")

    perm = torch.from_numpy(np.random.default_rng(perm_seed).permutation((t_max + 1) * b)[: max(1, b * t_max // 2)])
    got_mb = batch.obs(perm).numpy()
    for m, p in enumerate(perm.tolist()):
        np.testing.assert_array_equal(got_mb[m], ref[p // b, p % b])

    nxt = batch.next_frames(torch.arange(t_max * b)).numpy().reshape(t_max, b, H, W)
    np.testing.assert_array_equal(nxt, ref[1:, :, -1])
    nxt_mb = batch.next_frames(perm[perm < t_max * b]).numpy()
    for m, p in enumerate(perm[perm < t_max * b].tolist()):
        np.testing.assert_array_equal(nxt_mb[m], ref[p // b + 1, p % b, -1])

    cat = {n: np.concatenate([s.arrays[n] for s in segs], axis=1) for n in segs[0].arrays}
    assert batch.actions.dtype == torch.long and np.array_equal(batch.actions.numpy(), cat["actions"])
    for n in ("behaviour_logp", "rewards", "trunc_value"):
        np.testing.assert_array_equal(getattr(batch, n).numpy(), cat[n])
    for n in ("terminated", "truncated"):
        assert getattr(batch, n).dtype == torch.float32
        np.testing.assert_array_equal(getattr(batch, n).numpy(), cat[n].astype(np.float32))
    assert batch.streams.tolist() == [i for s in segs for i in s.streams]
    assert batch.segment_sizes == [len(s.streams) for s in segs]
    assert batch.versions == [s.version for s in segs]


@pytest.mark.parametrize("frame_stack", [1, 2, 4])
@pytest.mark.parametrize("t_max", [1, 3, 8])
def test_assemble_rebuilds_every_stacked_observation(frame_stack, t_max):
    for segs in _scenario(frame_stack, t_max, seed=frame_stack * 10 + t_max):
        _check_batch(assemble([sg for sg, _ in segs], frame_stack), list(segs), frame_stack, t_max)


@pytest.mark.parametrize("seed", range(4))
def test_assemble_random_histories(seed):
    """Many streams, random episode ends (dense), three consecutive segments per stream."""
    rng = np.random.default_rng(100 + seed)
    s, t_max, k = 4, 6, 5
    spec = SegmentSpec(rollout_steps=t_max, frame_stack=s, height=H, width=W, num_actions=18, num_streams=k)
    envs = [FakeStackEnv(i, s) for i in range(k)]
    for env in envs:
        prehistory(env, int(rng.integers(0, 7)), ends=set(rng.integers(0, 7, size=2).tolist()))
    for round_ in range(3):
        arrays, ref = collect(envs, _random_flags(rng, t_max, k, p=0.5), spec, rng)
        seg = Segment(actor=0, version=round_, streams=list(range(k)), arrays=arrays, episodes=[])
        _check_batch(assemble([seg], s), [(seg, ref)], s, t_max, perm_seed=seed)


def test_segment_order_is_stream_column_order():
    a, b = _scenario(4, 5)[0]
    _check_batch(assemble([b[0], a[0]], 4), [b, a], 4, 5)


def test_scenario_covers_the_edge_cases():
    """Guards the test data: the cases the docstring promises are really in it."""
    (a1, ref_a1), _ = _scenario(4, 8)[0]
    ctx = a1.arrays["context"]  # [S-1, K, H, W]
    assert all(np.array_equal(ctx[i, 0], a1.arrays["frames"][0, 0]) for i in range(3))  # obs_0 a reset stack
    assert np.array_equal(ctx[0, 1], ctx[2, 1]) and not np.array_equal(ctx[2, 1], a1.arrays["frames"][0, 1])
    ends = a1.arrays["terminated"] | a1.arrays["truncated"]
    assert ends[:3, 0].all() and ends[-1, 1] and not ends[:, 2].any()
    (a2, ref_a2), _ = _scenario(4, 8)[1]
    assert (ref_a2[0, 1] == ref_a2[0, 1, -1]).all()  # segment 2 starts stream 1 with a reset stack


def test_stack_indices_by_hand():
    """S=3, T=3, B=2; column 0 has an episode start at obs_2, column 1 none. Frame row r holds time r-(S-1)."""
    start = torch.tensor([[False, False], [False, False], [True, False], [False, False]])
    idx = stack_indices(start, 3)
    rows = idx // 2  # the frame-array row; the column must be b
    assert (idx % 2 == torch.tensor([0, 1]).view(1, 2, 1)).all()
    assert rows[:, 0].tolist() == [[0, 1, 2], [1, 2, 3], [4, 4, 4], [4, 4, 5]]
    assert rows[:, 1].tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]


def test_stack_indices_consecutive_starts():
    start = torch.tensor([[False], [True], [True], [False], [False], [False]])
    rows = stack_indices(start, 4)[:, 0].tolist()
    # row = time + 3: obs_1 and obs_2 are starts; obs_3 = [2, 2, 2, 3]; obs_5 = [2, 3, 4, 5]
    assert rows == [[0, 1, 2, 3], [4, 4, 4, 4], [5, 5, 5, 5], [5, 5, 5, 6], [5, 5, 6, 7], [5, 6, 7, 8]]
