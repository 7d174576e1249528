"""Normalisers as state (they live in the checkpoint): a running mean/std and RND's reward filter.

RND (Burda et al. 2018, arXiv 1810.12894, section 2.4): observations fed to the target and predictor
are whitened per pixel by a running mean/std and clipped; the intrinsic reward is divided by a
running std of the *discounted intrinsic return*, which a forward filter accumulates along time,
separately for each env stream, with its state carried from batch to batch.
"""

from __future__ import annotations

import torch

from common.rl.scan import affine_scan


class RunningMeanStd:
    """Running mean and variance over the leading axis, merged with Chan et al.'s parallel formula."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4, device: str | torch.device = "cpu"):
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.var = torch.ones(shape, dtype=torch.float64, device=device)
        self.count = torch.tensor(epsilon, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, x: torch.Tensor, chunk: int = 1024) -> None:
        """x: [N, *shape] (any dtype); merges its moments into the running ones, ``chunk`` rows at a time,
        so that a batch of 16k frames never becomes a gigabyte of float64 at once."""
        x = x.reshape(-1, *self.mean.shape)
        for lo in range(0, x.shape[0], chunk):
            c = x[lo : lo + chunk].to(self.mean.device, torch.float64)
            var, mean = torch.var_mean(c, dim=0, unbiased=False)
            self.update_from_moments(mean, var, c.shape[0])

    @torch.no_grad()
    def update_from_moments(self, batch_mean: torch.Tensor, batch_var: torch.Tensor, batch_count: float) -> None:
        delta = batch_mean - self.mean
        total = self.count + batch_count
        new_mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta.pow(2) * self.count * batch_count / total
        self.mean, self.var, self.count = new_mean, m2 / total, total

    @property
    def std(self) -> torch.Tensor:
        return torch.sqrt(self.var)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k in ("mean", "var", "count"):
            if state[k].shape != getattr(self, k).shape:
                raise ValueError(f"normaliser {k}: shape {tuple(state[k].shape)} != {tuple(getattr(self, k).shape)}")
        self.mean = state["mean"].to(self.mean.device, torch.float64)
        self.var = state["var"].to(self.var.device, torch.float64)
        self.count = state["count"].to(self.count.device, torch.float64)


class RewardForwardFilter:
    """Per-stream discounted sum of intrinsic rewards, run forward along time: R_t = gamma * R_{t-1} + r_t.

    The state is one float per env stream, indexed by global stream id, so segments from different
    actors may arrive in any order; each stream's own segments arrive in time order. It stays float64 on
    ``device`` (the learner's, CUDA included), and the sum along time is a parallel scan (common/rl/scan.py).
    """

    def __init__(self, num_streams: int, gamma: float, device: str | torch.device = "cpu"):
        self.gamma = gamma
        self.state = torch.zeros(num_streams, dtype=torch.float64, device=device)

    @torch.no_grad()
    def __call__(self, rewards: torch.Tensor, stream_ids: torch.Tensor) -> torch.Tensor:
        """rewards [T, B] of the streams ``stream_ids`` [B] (distinct) -> discounted returns [T, B]."""
        if rewards.dim() != 2 or stream_ids.shape != rewards.shape[1:]:
            raise ValueError(
                f"filter: rewards [T, B] and stream_ids [B] expected, got "
                f"{tuple(rewards.shape)} and {tuple(stream_ids.shape)}"
            )
        ids = stream_ids.to(self.state.device, torch.long)
        r = rewards.to(self.state.device, torch.float64)
        out = affine_scan(r, torch.full_like(r, self.gamma), self.state[ids], reverse=False)
        if len(out):
            self.state[ids] = out[-1]
        return out.to(rewards.dtype)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"state": self.state.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["state"].shape != self.state.shape:
            raise ValueError(
                f"reward filter: {tuple(state['state'].shape)} streams in checkpoint, "
                f"{tuple(self.state.shape)} configured (NumWorkers changed?)"
            )
        self.state = state["state"].to(self.state.device, torch.float64).clone()  # never alias the caller's dict
