"""The actor process: collect segments with weights at most ``max_policy_lag`` updates old, push them.

Sockets: PUSH segments to the learner's address, SUB to its weights channel (address + 1 port).
The learner owns all learning state; an actor holds only envs and a policy copy.
"""
from __future__ import annotations

import logging
import sys
import time
from collections import deque

import torch
import zmq

from actors.env import make_env
from actors.rollout import RolloutCollector, env_split
from common.config import Config, shape_keys
from common.networks import PolicyNet, policy_param_spec
from common.transport import is_local, send_with_timeout, weights_address
from common.wire import SegmentSpec, WireError, decode, encode, validate_weights

log = logging.getLogger("actor")


class ActorStop(Exception):
    """The learner said stop (``clean``), or went silent; the text says which."""

    def __init__(self, why: str, clean: bool = False):
        super().__init__(why)
        self.clean = clean


def segment_spec(cfg: Config, num_actions: int = 18) -> SegmentSpec:
    return SegmentSpec(cfg.RolloutSteps, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth, num_actions,
                       cfg.NumWorkers)


class WeightsReceiver:
    """Keeps the policy at the newest weights heard on the SUB socket."""

    def __init__(self, sock: zmq.Socket, policy: PolicyNet, timeout_s: float, shape_keys: dict | None = None):
        self.sock, self.policy, self.timeout_s = sock, policy, timeout_s
        self.shape_keys = shape_keys
        self.param_spec = policy_param_spec(policy)
        self.version = -1
        self.warmup_steps = 0
        self.last_heard = time.monotonic()
        self.rejected = 0

    def poll(self, wait_s: float = 0.0) -> None:
        """Drain what is queued (waiting up to ``wait_s`` for the first); load only the newest weights."""
        newest = None
        timeout_ms = int(wait_s * 1000)
        while self.sock.poll(timeout_ms, zmq.POLLIN):
            timeout_ms = 0
            frames = self.sock.recv_multipart()
            self.last_heard = time.monotonic()
            try:
                msg = decode(frames)
                if msg.kind == "stop":
                    raise ActorStop("learner finished training", clean=True)
                if msg.kind == "heartbeat":  # liveness only; it has refreshed last_heard
                    continue
                self._check_shape_keys(msg.meta.get("shape_keys"))
                validate_weights(msg, self.param_spec)
            except WireError as e:
                self.rejected += 1
                log.warning("dropped a bad message from the learner: %s", e)
                continue
            if newest is None or msg.meta["version"] >= newest.meta["version"]:
                newest = msg
        if newest is not None and newest.meta["version"] != self.version:
            state = {k: torch.from_numpy(v.copy()) for k, v in newest.arrays.items()}
            self.policy.load_state_dict(state)
            self.version = newest.meta["version"]
        if newest is not None:
            self.warmup_steps = newest.meta["warmup_steps"]
        self.check_alive()

    def _check_shape_keys(self, theirs: object) -> None:
        """A learner configured with other shapes would reject every segment: say so and stop."""
        if self.shape_keys is None or theirs == self.shape_keys:
            return
        if not isinstance(theirs, dict):
            raise WireError("weights without shape_keys")
        diff = [f"{k} {theirs.get(k)!r} (learner) != {v!r} (actor)" for k, v in self.shape_keys.items()
                if theirs.get(k) != v]
        raise ActorStop("config mismatch with the learner: " + "; ".join(diff))

    def wait_for(self, version: int) -> None:
        while self.version < version:
            self.poll(wait_s=0.5)

    def check_alive(self) -> None:
        silent = time.monotonic() - self.last_heard
        if silent > self.timeout_s:
            raise ActorStop(f"no message from the learner for {silent:.0f} s (actor_timeout_s); giving up")


def required_version(sent_versions: deque[int], max_lag: int) -> int:
    """Before a new segment: the weights must be newer than those of the segment max_lag+1 back.

    max_lag=0: wait for the update that consumed the previous segment (synchronous);
    max_lag=1: one segment may be collected while the learner learns on the previous one.
    """
    if len(sent_versions) <= max_lag:
        return 0
    return sent_versions[-(max_lag + 1)] + 1


def forget_if_learner_restarted(sent_versions: deque[int], version: int) -> None:
    """Weights older than segments already sent mean the learner resumed from an older checkpoint:
    the lag history belongs to the old run (keeping it would wait forever for a version it passed)."""
    if sent_versions and version < max(sent_versions):
        sent_versions.clear()


def run_actor(cfg: Config, actor_id: int, num_actors: int, learner_addr: str, incarnation: int = 0) -> int:
    """Actor main loop; returns a process exit code. One torch thread: actors are many, cores few."""
    torch.set_num_threads(1)
    streams = env_split(cfg.NumWorkers, num_actors, actor_id)
    seed = cfg.seed * 100_003 + 1_000_003 * incarnation
    envs = [make_env(cfg, seed=seed + s) for s in streams]
    policy = PolicyNet(envs[0].action_space.n, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth).eval()
    spec = segment_spec(cfg, envs[0].action_space.n)
    collector = RolloutCollector(envs, streams, policy, spec, seed=seed + 7919 * (actor_id + 1))
    compression = cfg.wire_compression
    if compression == "auto":
        compression = "none" if is_local(learner_addr) else "zstd"

    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 4)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(learner_addr)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(weights_address(learner_addr))
    weights = WeightsReceiver(sub, policy, cfg.actor_timeout_s, shape_keys(cfg))

    def send(kind: str, meta: dict, arrays: dict) -> None:
        frames = encode(kind, {"actor": actor_id, "streams": streams, **meta}, arrays, compression)
        deadline = time.monotonic() + cfg.actor_timeout_s
        while not send_with_timeout(push, frames, 0.5):
            weights.poll()  # a stop message may be waiting
            if time.monotonic() > deadline:
                raise ActorStop(f"the learner took no data for {cfg.actor_timeout_s:.0f} s; giving up")

    try:
        weights.wait_for(0)
        if weights.warmup_steps:
            for frames in collector.warmup(weights.warmup_steps):
                send("warmup", {}, {"frames": frames})
        sent: deque[int] = deque(maxlen=cfg.max_policy_lag + 1)
        seq, last_split = 0, {}
        timings = collector.timings  # one phase table: infer, env (collector), wait, send (here)
        while True:
            with timings.time("wait"):
                weights.poll()
                forget_if_learner_restarted(sent, weights.version)
                weights.wait_for(required_version(sent, cfg.max_policy_lag))
            version = weights.version
            arrays, episodes = collector.collect()
            meta = {"version": version, "seq": seq, "episodes": episodes, "timings": last_split}
            with timings.time("send"):
                send("segment", meta, arrays)
            last_split = timings.split()  # travels with the next segment
            sent.append(version)
            seq += 1
    except ActorStop as e:
        print(f"actor {actor_id}: {e}", file=sys.stderr, flush=True)
        return 0 if e.clean else 3
    except KeyboardInterrupt:
        return 0
    finally:
        push.close(linger=0)
        sub.close()

