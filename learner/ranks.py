"""What a learner rank shares with the others when a run has several: the metrics row rank 0 logs, the
episode records it counts, and each rank's own part of a checkpoint (its streams' reward filters and its
random state). The collectives are ``learner/distributed.py``'s; this module only says what goes in them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from common.episodes import plain_record
from learner.agent import NonFiniteLoss, RNDAgent
from learner.batch import Batch, Segment
from learner.checkpoint import CheckpointError
from learner.distributed import Dist, RankLost
from learner.run_stats import RunStats

# a run-wide total: each rank counts its own share
SUMMED = ("rejected_messages", "dropped_stale_segments", "actor_restarts")
# already run-wide on rank 0: its counters are global, and it counted every rank's episodes
FROM_RANK0 = (
    "update",
    "agent_steps",
    "frames",
    "time_s",
    "episode_return_mean",
    "episode_length_mean",
    "rooms_per_episode_mean",
    "cells_per_episode_mean",
    "episodes",
    "rooms_visited_total",
    "cells_visited_total",
    "steps_per_second",
)
RANK_COUNTERS = ("rejected_messages", "dropped_stale_segments", "warmup_frames")  # each rank's own


@dataclass
class RankEpisodes:
    """Another rank's segment as episode records need it: sender, policy version, episodes."""

    actor: int
    version: int
    episodes: list[dict[str, Any]]


def rank_update(dist: Dist, agent: RNDAgent, batch: Batch, merge_warmup: bool) -> dict[str, float]:
    """One rank's update: the ranks' warm-up normalisers merged first when ``merge_warmup`` (the first
    update of a fresh run); a failed collective (a rank died mid-update) becomes RankLost naming it."""
    try:
        if merge_warmup:
            agent.merge_warmup()
        return agent.update(batch)
    except (NonFiniteLoss, RankLost):
        raise
    except RuntimeError as e:  # DDP's all-reduce in the backward pass reports a dead peer this way
        raise RankLost(dist.lost_ranks()) from e


def gather_episodes(dist: Dist, stats: RunStats, segments: list[Segment], version: int) -> list[list[dict[str, Any]]]:
    """Every rank's episodes of this update, counted by rank 0 (one collective): rank 0 gets their
    records, rank by rank, each with its ``rank``; the other ranks get nothing."""
    every = dist.gather_json([[s.actor, s.version, [plain_record(e) for e in s.episodes]] for s in segments])
    if dist.rank != 0:
        return []
    out = []
    for r, segs in enumerate(every):
        sources = [RankEpisodes(a, v, eps) for a, v, eps in segs]
        out.append([{**e, "rank": r} for e in stats.record_episodes(sources, version)])
    return out


def merge_row(dist: Dist, row: dict[str, Any]) -> dict[str, Any]:
    """The run's metrics row from every rank's (one collective): totals summed, the lag's maximum, rank
    0's run-wide counts, and the mean over ranks of the rest (losses, rewards, timings)."""
    keys = [k for k, v in row.items() if isinstance(v, (int, float))]
    table = torch.stack(dist.gather(torch.tensor([float(row[k]) for k in keys], dtype=torch.float64)))
    out = dict(row)
    for i, k in enumerate(keys):
        col = table[:, i]
        if k in SUMMED:
            out[k] = int(col.sum())
        elif k == "policy_lag_max":
            out[k] = int(col.max())
        elif k not in FROM_RANK0:
            out[k] = float(col.nanmean())
    return out


def shared_checksum(agent: RNDAgent) -> torch.Tensor:
    """sha256 of what every rank must hold alike: the networks, the optimizer's moments and both running
    normalisers, byte for byte. uint8 [32]."""
    h = hashlib.sha256()
    tensors = [*agent.policy.state_dict().values(), *agent.rnd.state_dict().values()]
    for st in agent.optimizer.state.values():
        tensors += [v for v in st.values() if isinstance(v, torch.Tensor)]
    for rms in (agent.obs_rms, agent.reward_rms):
        tensors += [rms.mean, rms.var, rms.count]
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return torch.frombuffer(bytearray(h.digest()), dtype=torch.uint8)


def rank_part(agent: RNDAgent) -> dict[str, torch.Tensor]:
    """What only this rank holds: its streams' reward filter state and its random state (CPU tensors),
    and the checksum of what it holds in common with the others."""
    return {
        "reward_filter": agent.reward_filter.state.detach().cpu().clone(),
        "rng": agent.gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "checksum": shared_checksum(agent),
    }


class RanksDiverged(RuntimeError):
    """Two learner ranks hold different weights or normalisers, which data parallelism rules out."""


def gather_parts(dist: Dist, agent: RNDAgent) -> list[dict[str, Any]]:
    """Every rank's ``rank_part``, in rank order, in the checkpoint's layout; raises RanksDiverged when
    the ranks' checksums of what they hold alike differ."""
    mine = rank_part(agent)
    columns = {k: dist.gather(v) for k, v in mine.items()}
    sums = columns["checksum"]
    differ = [r for r in range(dist.world) if not torch.equal(sums[r], sums[0])]
    if differ:
        raise RanksDiverged(
            f"learner rank {', '.join(map(str, differ))} holds other weights or normalisers than rank 0"
        )
    return [
        {
            "reward_filter": {"state": columns["reward_filter"][r]},
            "rng": columns["rng"][r],
            "torch_rng": columns["torch_rng"][r],
            "checksum": sums[r],
        }
        for r in range(dist.world)
    ]


def check_world(data: dict[str, Any], world: int) -> list[dict[str, Any]] | None:
    """The per-rank parts of a checkpoint written by as many ranks as this run has (None for one rank);
    a checkpoint of another rank count is refused in one line."""
    saved = data.get("world_size", 1)
    if saved != world:
        raise CheckpointError(
            f"the checkpoint was written by {saved} learner rank(s) and this run has {world}: each rank owns "
            f"its env streams' reward filters, so resume with {saved} rank(s)"
        )
    if world == 1:
        return None
    parts = data.get("rank_states")
    if not isinstance(parts, list) or len(parts) != world or not all(isinstance(p, dict) for p in parts):
        raise CheckpointError(f"the checkpoint says {world} learner ranks but does not hold each rank's part")
    return parts


def load_part(agent: RNDAgent, part: dict[str, Any]) -> None:
    """This rank's part of a checkpoint: its reward filters and random state."""
    agent.reward_filter.load_state_dict(part["reward_filter"])
    agent.gen.set_state(part["rng"])
    torch.set_rng_state(part["torch_rng"])


def global_counters(dist: Dist, counters: dict[str, int], restarts: int) -> tuple[dict[str, int], int]:
    """The run-wide totals of the per-rank counters and of the actor restarts (one collective)."""
    local = torch.tensor([float(counters[k]) for k in RANK_COUNTERS] + [float(restarts)], dtype=torch.float64)
    total = dist.sum(local)
    out = dict(counters)
    out.update({k: int(total[i]) for i, k in enumerate(RANK_COUNTERS)})
    return out, int(total[-1])
