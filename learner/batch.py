"""Validated segments -> one time-major batch on the learner's device. No sockets here.

The wire carries one new frame per step; observations are rebuilt here as index arrays into the
batch's frames, so stacks are gathered per minibatch and never materialised whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch


@dataclass
class Segment:
    """One validated segment message: K streams x T steps, collected with policy ``version``."""

    actor: int
    version: int
    streams: list[int]
    arrays: dict[str, np.ndarray]
    episodes: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)  # the actor's phase seconds, previous segment
    run: int = 0  # the actor process's random id
    seq: int = 0  # its segment number


@dataclass
class Batch:
    """T steps of B streams. ``frames`` [(S-1) + T + 1, B, H, W]: time index S-1+t is obs_t's newest frame."""

    frames: torch.Tensor  # uint8 [S-1+T+1, B, H, W]
    obs_index: torch.Tensor  # long [T+1, B, S]: flat indices into frames.view(-1, H, W)
    actions: torch.Tensor  # long [T, B]
    behaviour_logp: torch.Tensor  # float [T, B]
    rewards: torch.Tensor  # float [T, B] raw score
    terminated: torch.Tensor  # float [T, B]
    truncated: torch.Tensor  # float [T, B]
    trunc_value: torch.Tensor  # float [T, B]
    streams: torch.Tensor  # long [B]
    segment_sizes: list[int]  # streams per segment, in arrival order (for the per-stream filter)
    versions: list[int]  # policy version of each segment

    def to(self, device: torch.device | str) -> Batch:
        """The batch's tensors on ``device``; copies from pinned memory are non-blocking."""
        dev = torch.device(device)
        if dev.type == "cpu":
            return self
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor) and k != "streams":  # streams index the CPU reward filter
                moved[k] = v.to(dev, non_blocking=True)
        return Batch(**moved)

    @property
    def T(self) -> int:
        return self.actions.shape[0]

    @property
    def B(self) -> int:
        return self.actions.shape[1]

    def obs(self, t_b_flat: torch.Tensor) -> torch.Tensor:
        """Stacked observations for flat (t * B + b) positions: uint8 [M, S, H, W]."""
        frames = self.frames.view(-1, *self.frames.shape[2:])
        return frames[self.obs_index.view(-1, self.obs_index.shape[-1])[t_b_flat]]

    def next_frames(self, t_b_flat: torch.Tensor) -> torch.Tensor:
        """Newest frame of obs_{t+1} for flat positions t * B + b (t < T): uint8 [M, H, W]."""
        s = self.obs_index.shape[-1]
        frames = self.frames.view(-1, *self.frames.shape[2:])
        return frames[t_b_flat + s * self.B]


def stack_indices(episode_start: torch.Tensor, frame_stack: int) -> torch.Tensor:
    """Which frame each stack slot holds.

    episode_start: bool [T+1, B], True where obs_t is the first observation of an episode (its stack
    is S copies of its own frame). Returns long [T+1, B, S] of flat indices into the frame array of
    shape [(S-1) + T + 1, B, ...] (slot S-1 is the newest frame). Before the segment, the actor's
    context frames are already correct, so only starts inside the segment clamp the window.
    """
    t1, b = episode_start.shape
    s = frame_stack
    t = torch.arange(t1).unsqueeze(1).expand(t1, b)
    start_at = torch.where(episode_start, t, torch.full_like(t, -s))
    last_start = torch.cummax(start_at, dim=0).values  # [T+1, B]
    tau = t.unsqueeze(-1) - (s - 1) + torch.arange(s)  # frame time of each slot, [T+1, B, S]
    time_index = torch.maximum(tau, last_start.unsqueeze(-1)) + (s - 1)
    return time_index * b + torch.arange(b).view(1, b, 1)


STEP_ARRAYS = {  # per-step arrays [T, K] of a segment -> the dtype the batch holds them in
    "actions": torch.long,
    "behaviour_logp": torch.float32,
    "rewards": torch.float32,
    "terminated": torch.float32,
    "truncated": torch.float32,
    "trunc_value": torch.float32,
}


def _gather(segments: list[Segment], names: tuple[str, ...], dtype: torch.dtype, pin: bool) -> torch.Tensor:
    """The segments' arrays ``names`` stacked along time, the segments side by side along the stream axis:
    one host tensor [sum of the arrays' T, B, ...] (page-locked if ``pin``), each value copied (and cast) once."""
    first = [segments[0].arrays[n] for n in names]
    rows = sum(a.shape[0] for a in first)
    width = sum(sg.arrays[names[0]].shape[1] for sg in segments)
    shape = (rows, width, *first[0].shape[2:])
    if pin:  # CUDA's caching host allocator: page-locked, and reused from batch to batch
        out = torch.empty(shape, dtype=dtype, pin_memory=True)
    else:  # numpy's malloc reuses the last batch's freed pages (torch.empty here page-faulted afresh, 3-5x slower)
        out = torch.from_numpy(np.empty(shape, torch.empty((), dtype=dtype).numpy().dtype))
    dst, col = out.numpy(), 0
    for sg in segments:
        k, row = sg.arrays[names[0]].shape[1], 0
        for n in names:
            a = sg.arrays[n]
            dst[row : row + a.shape[0], col : col + k] = a
            row += a.shape[0]
        col += k
    return out


def assemble(segments: list[Segment], frame_stack: int, pin: bool = False) -> Batch:
    """Place segments side by side along the stream axis into host tensors (page-locked if ``pin``): each
    array is copied once, straight into its place, pinned or not.

    frames [(S-1) + T+1, B, H, W]: the context frames (the older frames of each first observation's stack),
    then the segment's T+1 newest frames. A batch never holds one stream twice."""
    streams = [s for sg in segments for s in sg.streams]
    if len(set(streams)) != len(streams):  # each stream's reward filter runs over its columns in order
        raise ValueError(f"a batch would hold stream {next(s for s in streams if streams.count(s) > 1)} twice")
    step = {n: _gather(segments, (n,), dtype, pin) for n, dtype in STEP_ARRAYS.items()}
    ends = np.concatenate([(sg.arrays["terminated"] | sg.arrays["truncated"]) for sg in segments], axis=1)
    start = np.zeros((ends.shape[0] + 1, ends.shape[1]), dtype=bool)
    start[1:] = ends
    return Batch(
        frames=_gather(segments, ("context", "frames"), torch.uint8, pin),
        obs_index=stack_indices(torch.from_numpy(start), frame_stack),
        **step,
        streams=torch.tensor(streams, dtype=torch.long),
        segment_sizes=[len(sg.streams) for sg in segments],
        versions=[sg.version for sg in segments],
    )
