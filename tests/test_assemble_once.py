"""learner/batch.py assemble: one copy into place gives the batch the two-copy concatenation gave."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.wire import SegmentSpec
from learner.batch import Segment, assemble, stack_indices


def concat_assemble(segments: list[Segment], frame_stack: int) -> dict[str, torch.Tensor]:
    """The previous assemble (numpy concatenation, then tensors), kept as the reference."""
    cat = {n: np.concatenate([sg.arrays[n] for sg in segments], axis=1) for n in segments[0].arrays}
    ends = (cat["terminated"] | cat["truncated"]).astype(bool)
    start = np.zeros((ends.shape[0] + 1, ends.shape[1]), dtype=bool)
    start[1:] = ends
    return {
        "frames": torch.from_numpy(np.concatenate([cat["context"], cat["frames"]], axis=0)),
        "obs_index": stack_indices(torch.from_numpy(start), frame_stack),
        "actions": torch.from_numpy(cat["actions"]).long(),
        "behaviour_logp": torch.from_numpy(cat["behaviour_logp"]),
        "rewards": torch.from_numpy(cat["rewards"]),
        "terminated": torch.from_numpy(cat["terminated"]).float(),
        "truncated": torch.from_numpy(cat["truncated"]).float(),
        "trunc_value": torch.from_numpy(cat["trunc_value"]),
    }


def random_segments(frame_stack: int, sizes: list[int], t: int = 6, hw: int = 5, seed: int = 0) -> list[Segment]:
    rng = np.random.default_rng(seed)
    spec = SegmentSpec(rollout_steps=t, height=hw, width=hw, frame_stack=frame_stack, num_actions=18, num_streams=64)
    out, stream = [], 0
    for v, k in enumerate(sizes):
        arrays = {}
        for name, (dtype, shape) in spec.segment_arrays(k).items():
            if dtype == np.float32:
                arrays[name] = rng.standard_normal(shape).astype(np.float32)
            else:
                hi = 2 if name in ("terminated", "truncated") else 18 if name == "actions" else 256
                arrays[name] = rng.integers(0, hi, shape, dtype=np.uint8)
        out.append(Segment(actor=v, version=v, streams=list(range(stream, stream + k)), arrays=arrays, episodes=[]))
        stream += k
    return out


@pytest.mark.parametrize("frame_stack", [1, 4])
@pytest.mark.parametrize("sizes", [[3], [2, 5, 1], [8] * 16])
def test_assemble_equals_the_concatenation(frame_stack, sizes) -> None:
    segs = random_segments(frame_stack, sizes, seed=len(sizes))
    batch, ref = assemble(segs, frame_stack), concat_assemble(segs, frame_stack)
    for name, want in ref.items():
        got = getattr(batch, name)
        assert got.dtype == want.dtype and torch.equal(got, want), name
    assert batch.frames.is_contiguous() and batch.segment_sizes == sizes
    assert batch.streams.tolist() == list(range(sum(sizes)))
