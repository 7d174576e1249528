"""A learner's checkpoint: what it holds, how it is restored, how it is written. The learner calls these
(``Learner.state``, ``Learner._restore``, ``Learner.save``); ``learner/checkpoint.py`` owns the file format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from learner.checkpoint import save_checkpoint, write_fault
from learner.ranks import check_world, gather_parts, global_counters, load_part

if TYPE_CHECKING:
    from pathlib import Path

    from learner.learner import Learner


def checkpoint_state(learner: Learner) -> dict[str, Any]:
    """Everything a checkpoint holds: config, agent, counters, obs_rms_ready, and the run statistics.
    With several learner ranks (a collective): the weights and optimizer once, each rank's own part in
    ``rank_states``, and the run-wide counters."""
    stats = learner.stats.state(learner.version)
    out = {
        "config": learner.cfg.to_dict(),
        "agent": learner.agent.state_dict(),
        "counters": stats.pop("counters"),
        "obs_rms_ready": learner.obs_rms_ready,
        **stats,
    }
    if learner.dist is not None:
        out["counters"], out["actor_restarts"] = global_counters(
            learner.dist, out["counters"], learner.stats.actor_restarts()
        )
        out["world_size"], out["rank_states"] = learner.world, gather_parts(learner.dist, learner.agent)
    return out


def restore_checkpoint(learner: Learner, data: dict[str, Any]) -> None:
    """The agent (and this rank's own part, with several ranks) and the warm-up state of ``data``; a
    checkpoint of another rank count is refused (``learner/ranks.py`` ``check_world``)."""
    parts = check_world(data, learner.world)
    learner.agent.load_state_dict(data["agent"])
    if parts is not None:
        load_part(learner.agent, parts[learner.rank])
    learner.obs_rms_ready = bool(data["obs_rms_ready"])


def write_checkpoint(learner: Learner, state: dict[str, Any]) -> Path:
    """Write ``state`` and exploration.json into the run dir; an OSError is one CheckpointWriteError line."""
    run_dir = learner.run_dir
    try:
        path = save_checkpoint(run_dir, state, learner.version, learner.cfg.keep_checkpoints)
        learner.stats.exploration.write_json(
            run_dir / "exploration.json",
            learner.version,
            learner.stats.counters["agent_steps"],
            learner.stats.counters["episodes"],
        )
    except OSError as e:  # exploration.json: the checkpoint itself says so in save_checkpoint
        raise write_fault(e, run_dir / "exploration.json", run_dir / "checkpoints") from None
    return path
