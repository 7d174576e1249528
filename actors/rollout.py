"""Rollout collection for one actor: K envs stepped on the CPU with a policy copy on ``actor_device``
(the CPU by default). No sockets here.

A segment holds T agent steps of K env streams in the wire layout (``common.wire.SegmentSpec``):
only the newest frame of each observation is kept (the learner rebuilds the stacks), plus the
older frames of the first observation's stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from actors.env import AtariEnv, make_env
from common.config import Config, ConfigError
from common.episodes import episode_arrays
from common.rl.networks import NUM_ACTIONS, PolicyNet
from common.runtime import actor_dtype, conv_layout
from common.timing import Timings
from common.wire import SegmentSpec, env_split


@torch.inference_mode()  # cheaper than no_grad: no version counters, no views tracked
def sample_actions(
    policy: PolicyNet,
    obs: np.ndarray,
    gen: torch.Generator,
    dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[np.ndarray, np.ndarray]:
    """The actor's policy step: uint8 obs [K, S, H, W] -> (actions [K], their log-probs [K]) as CPU arrays.

    The logits are the learner's (``PolicyNet.step_logits``): the trunk under ``dtype`` autocast (None: fp32)
    from an input in ``memory_format``, the policy head in fp32. The softmax, the sample and the log-probs are
    fp32, so the log-probs sent are exactly those of the distribution that sampled (V-trace's mu), and at lag 0
    those the learner scores. It runs where ``gen`` lives, which is where the policy lives; on the CPU the
    moves are no-ops."""
    logits = policy.step_logits(torch.from_numpy(obs).to(gen.device), dtype, memory_format)
    logp_all = torch.log_softmax(logits, -1)
    a = torch.multinomial(logp_all.exp(), 1, generator=gen)
    return a.squeeze(1).cpu().numpy(), logp_all.gather(1, a).squeeze(1).cpu().numpy()


class RolloutCollector:
    """Steps ``envs`` with ``policy``; buffers are preallocated once from ``spec``."""

    def __init__(
        self,
        envs: list[AtariEnv],
        stream_ids: list[int],
        policy: PolicyNet,
        spec: SegmentSpec,
        seed: int = 0,
        dtype: torch.dtype | None = None,
    ):
        if len(envs) != len(stream_ids):
            raise ValueError("one stream id per env")
        self.envs, self.streams, self.policy, self.spec = envs, list(stream_ids), policy, spec
        self.dtype = dtype  # the policy step's autocast dtype (None: fp32); bootstrap values stay fp32
        self.memory_format = conv_layout(next(policy.parameters()).device, dtype)  # the learner's rule
        # weights in the layout the learner's convs use; torch's stubs omit memory_format
        policy.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.gen = torch.Generator(device=next(policy.parameters()).device).manual_seed(seed)  # where the policy is
        self.rng = np.random.default_rng(seed)
        k = len(envs)
        self.buffers = {n: np.zeros(shape, dtype) for n, (dtype, shape) in spec.segment_arrays(k).items()}
        self.obs = np.zeros((k, spec.frame_stack, spec.height, spec.width), np.uint8)  # [K, S, H, W]
        for i, (env, s) in enumerate(zip(envs, stream_ids, strict=True)):
            env.stack = self.obs[i]  # each env shifts its frames straight into the policy's batch: no copies
            env.reset(seed=seed + s)
        self.timings = Timings()  # phases "infer" and "env"; the actor reports and resets them

    def _act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return sample_actions(self.policy, obs, self.gen, self.dtype, self.memory_format)

    @torch.inference_mode()
    def _value_ext(self, obs: np.ndarray) -> np.ndarray:
        return self.policy(torch.from_numpy(obs).to(self.gen.device)).value_ext.cpu().numpy()

    def warmup(self, steps: int) -> Iterator[np.ndarray]:
        """Random-action steps for the observation normaliser: yields frames [n <= T, K, H, W]."""
        t_max, k = self.spec.rollout_steps, len(self.envs)
        done = 0
        while done < steps:
            n = min(t_max, steps - done)
            frames = np.empty((n, k, self.spec.height, self.spec.width), np.uint8)
            for t in range(n):
                for i, env in enumerate(self.envs):
                    _, term, trunc = env.advance(int(self.rng.integers(env.action_space.n)))
                    if term or trunc:
                        env.reset()
                    frames[t, i] = env.stack[-1]
            done += n
            yield frames

    def collect(self) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        """One segment: (arrays in the wire layout, its finished-episode records among them as arrays,
        ``common/episodes.py``; the records themselves)."""
        b, obs = self.buffers, self.obs
        episodes: list[dict[str, Any]] = []
        b["trunc_value"][:] = 0.0
        b["frames"][0] = obs[:, -1]
        b["context"][:] = obs[:, :-1].transpose(1, 0, 2, 3)
        for t in range(self.spec.rollout_steps):
            with self.timings.time("infer"):
                actions, logp = self._act(obs)
            b["actions"][t], b["behaviour_logp"][t] = actions, logp
            with self.timings.time("env"):
                truncated_obs = self._step_envs(t, actions, episodes)
            if truncated_obs:  # bootstrap the extrinsic stream through the time limit
                idx = [i for i, _ in truncated_obs]
                with self.timings.time("infer"):
                    b["trunc_value"][t, idx] = self._value_ext(np.stack([o for _, o in truncated_obs]))
            b["frames"][t + 1] = obs[:, -1]
        return {**b, **episode_arrays(episodes)}, episodes

    def _step_envs(self, t: int, actions: np.ndarray, episodes: list) -> list[tuple[int, np.ndarray]]:
        """Advance every env one step; record rewards/flags at row t; reset finished envs."""
        b, truncated_obs = self.buffers, []
        for i, env in enumerate(self.envs):
            r, term, trunc = env.advance(int(actions[i]))
            b["rewards"][t, i], b["terminated"][t, i], b["truncated"][t, i] = r, term, trunc
            if term or trunc:
                episodes.append({"stream": self.streams[i], "t": t, **env.episode_stats()})
                if trunc:
                    truncated_obs.append((i, env.stack.copy()))
                env.reset()
        return truncated_obs


def build_collector(
    cfg: Config, actor_id: int, num_actors: int, incarnation: int = 0, rank: int = 0
) -> RolloutCollector:
    """Actor ``actor_id``'s envs (its share of the NumWorkers streams) and a fresh policy copy on
    ``cfg.actor_device``. Env seeds follow the stream id and change with each restart (``incarnation``)
    and with the learner ``rank`` the actor serves (the formula is the ``seed`` key's doc).
    Raises ConfigError when that device is not here."""
    device = check_actor_device(cfg.actor_device)
    streams = env_split(cfg.NumWorkers, num_actors, actor_id)
    seed = cfg.seed * 100_003 + 1_000_000_007 * rank + 1_000_003 * incarnation
    envs = [make_env(cfg, seed=seed + s) for s in streams]
    policy = PolicyNet(NUM_ACTIONS, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth).eval().to(device)
    spec = SegmentSpec.from_config(cfg, NUM_ACTIONS)
    return RolloutCollector(
        envs,
        streams,
        policy,
        spec,
        seed=seed + 7919 * (actor_id + 1),
        dtype=actor_dtype(cfg, device),
    )


def check_actor_device(device: str) -> str:
    """``device`` (a verified ``actor_device``) if this machine has it; ConfigError otherwise."""
    if device == "cpu":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"config key actor_device: {device} but no CUDA device is available here; use cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"config key actor_device: {device} but only {torch.cuda.device_count()} CUDA device(s)")
    return device
