"""The actor process: collect segments with weights at most ``max_policy_lag`` updates old, push them.

Sockets: PUSH segments to the learner's address, SUB to its weights channel (address + 1 port),
both CURVE clients of the learner when the actor has keys. The learner owns all learning state; an
actor holds only envs and a policy copy.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import torch
import zmq

from actors.patience import Patience
from actors.rollout import build_collector
from actors.supervisor import EXIT_DUPLICATE, EXIT_LEARNER_GONE, EXIT_MISMATCH, EXIT_OK, EXIT_REFUSED
from common.config import Config, ConfigError, actor_config, config_differences
from common.flow import ActorGate
from common.rl.networks import PolicyNet, policy_param_spec
from common.runtime import init_torch_runtime
from common.transport import (
    ActorKeys,
    HandshakeWatch,
    KeysError,
    curve_client,
    is_local,
    learner_listening,
    load_actor_keys,
    send_with_timeout,
    weights_address,
)
from common.wire import (
    FlowMeta,
    Message,
    WeightsMeta,
    WireError,
    decode,
    encode,
    validate_heartbeat,
    validate_weights,
    weights_config,
)

log = logging.getLogger("actor")
LISTEN_BEFORE_GIVING_UP_S = 2.0  # two of the learner's heartbeat periods
SEND_TRY_S = 0.5
PROBE_EVERY_S = 2.0  # how often a waiting actor checks that its silent learner's address still listens


class ActorStop(Exception):
    """The learner said stop (``clean``), went silent, or refused this actor; the text says which."""

    def __init__(self, why: str, clean: bool = False, exit_code: int = EXIT_LEARNER_GONE):
        super().__init__(why)
        self.clean = clean
        self.exit_code = EXIT_OK if clean else exit_code


PolicyBuilder = Callable[[Config, int], tuple[PolicyNet, Config]]


class WeightsReceiver:
    """Keeps the policy at the newest weights heard on the SUB socket, and hands what the learner
    reports to this actor's flow-control ``gate`` (``common/flow.py`` ``ActorGate``: what was sent,
    what is retired, whether one more segment keeps the lag bound).

    Without a ``policy``, ``build(learner config, rank) -> (policy, the config the actor runs with)``
    makes it from the first weights' config; later weights must then carry the same config and rank."""

    def __init__(
        self,
        sock: zmq.Socket,
        policy: PolicyNet | None,
        timeout_s: float,
        actor_id: int = 0,
        run_id: int = 0,
        watch: HandshakeWatch | None = None,
        build: PolicyBuilder | None = None,
        patience: Patience | None = None,
        listening: Callable[[], bool] | None = None,
    ):
        self.sock, self.policy, self.watch = sock, policy, watch
        self.patience = patience or Patience(timeout_s, timeout_s)  # without one: a silent learner is gone
        self.listening = listening  # whether the learner's address still listens (None: taken as not)
        self._probed: tuple[float, bool] = (-PROBE_EVERY_S, False)  # (when, what) the last probe said
        self.build = build
        self.config: Config | None = None  # set by build: the learner's config, with this actor's local keys
        self.rank = 0
        self.gate = ActorGate(actor_id, run_id)
        self.param_spec = policy_param_spec(policy) if policy is not None else []
        self.warmup_steps = 0
        self.warmed_for: int | None = None  # the learner run this actor sent its warm-up frames to
        self.last_heard = time.monotonic()  # the newest message that passed validation
        self.rejected = 0
        self.refused_in_a_row = 0  # messages refused since the last valid one
        self.last_refusal = ""

    @property
    def version(self) -> int:
        """The version of the weights the policy holds; -1 before any."""
        return self.gate.version

    @property
    def learner_run(self) -> int | None:
        """The run id of the learner whose weights the policy holds."""
        return self.gate.learner_run

    def poll(self, wait_s: float = 0.0) -> None:
        """Drain what is queued (waiting up to ``wait_s`` for the first), then check the learner is alive."""
        self._drain(wait_s)
        self.check_alive()

    def _drain(self, wait_s: float) -> None:
        """Read what is queued (waiting up to ``wait_s`` for the first); load only the newest weights,
        then count the heartbeats' retirements (the gate takes only those the held weights cover)."""
        newest: tuple[Message, WeightsMeta] | None = None
        beats: list[FlowMeta] = []
        timeout_ms = int(wait_s * 1000)
        while self.sock.poll(timeout_ms, zmq.POLLIN):
            timeout_ms = 0
            try:
                msg, meta = self._read(self.sock.recv_multipart())
            except WireError as e:
                self._refused(e)
                continue
            self._heard()
            self._check_refused(meta if isinstance(meta, FlowMeta) else meta.flow)
            if isinstance(meta, FlowMeta):
                beats.append(meta)
            elif self.gate.supersedes(meta.flow, newest[1].flow if newest is not None else None):
                newest = (msg, meta)
        if newest is not None:
            self._load(*newest)
        for beat in beats:
            self.gate.hear_heartbeat(beat)

    def _read(self, frames: list[bytes]) -> tuple[Message, FlowMeta | WeightsMeta]:
        """Decode and validate a heartbeat (-> its FlowMeta) or weights (-> WeightsMeta); a stop ends
        the actor, anything else raises WireError."""
        msg = decode(frames)
        if msg.kind == "stop":
            raise ActorStop("learner finished training", clean=True)
        if msg.kind == "heartbeat":
            return msg, validate_heartbeat(msg)
        if self.policy is None or self.config is not None:
            self._take_config(*weights_config(msg))
        return msg, validate_weights(msg, self.param_spec)

    def _check_refused(self, flow: FlowMeta) -> None:
        """The learner refused this process: another live one holds its actor id (``ActorRuns``). A
        restart would be refused the same way, so it exits with its own code."""
        if (self.gate.actor_id, self.gate.run_id) in flow.refused:
            raise ActorStop(
                f"the learner refused this actor: another live process sends segments as actor {self.gate.actor_id} "
                "(two actors roles with overlapping --actor-offset?); this one stops",
                exit_code=EXIT_DUPLICATE,
            )

    def _heard(self) -> None:
        self.last_heard = time.monotonic()
        self.refused_in_a_row = 0

    def _refused(self, e: WireError) -> None:
        """A message from the learner that fails validation: logged when the reason changes."""
        self.rejected += 1
        self.refused_in_a_row += 1
        if str(e) != self.last_refusal:
            log.warning("dropped a bad message from the learner: %s", e)
        self.last_refusal = str(e)

    def _load(self, msg: Message, meta: WeightsMeta) -> None:
        """Hold these weights: the policy's parameters (unless it holds them already), the warm-up the
        learner asks for, and the gate's view of the learner."""
        if not self.gate.holds(meta.flow):
            assert self.policy is not None  # _take_config built it from these weights' config
            self.policy.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in msg.arrays.items()})
        self.warmup_steps = meta.warmup_steps
        self.gate.hold_weights(meta.flow)

    def _take_config(self, cfg: Config, rank: int) -> None:
        """The first weights' config builds the policy; a later one that differs (a learner restarted
        with another config or rank) stops the actor: its envs and seeds were made for the first."""
        if self.policy is None:
            if self.build is None:
                raise ActorStop("no policy to load the learner's weights into", exit_code=EXIT_MISMATCH)
            self.policy, self.config = self.build(cfg, rank)
            self.rank, self.param_spec = rank, policy_param_spec(self.policy)
            self.patience.timeout_s = self.config.actor_timeout_s
            self.patience.pause_s = self.config.learner_pause_s
            return
        assert self.config is not None  # built with the policy
        diff = config_differences(cfg, self.config.to_dict())
        diff += [f"rank {rank} (learner) != {self.rank} (actor)"] if rank != self.rank else []
        if diff:
            raise ActorStop(
                "the learner's config changed since this actor started: " + "; ".join(diff), exit_code=EXIT_MISMATCH
            )

    def needs_warmup(self) -> bool:
        """The learner whose weights this actor holds asks for warm-up frames and has none from it yet:
        a fresh learner started behind running actors warms up its normaliser like the first one."""
        return self.warmup_steps > 0 and self.learner_run != self.warmed_for

    def wait_for_weights(self) -> None:
        while self.version < 0:
            self.poll(wait_s=0.5)

    def wait_until_gate_opens(self, max_lag: int) -> None:
        """Block until starting one more segment keeps the lag bound (``ActorGate.can_start``)."""
        while not self.gate.can_start(max_lag):
            self.poll(wait_s=0.5)

    @property
    def timeout_s(self) -> float:
        return self.patience.timeout_s

    def silent_s(self) -> float:
        """Seconds since the last message from the learner that passed validation."""
        return time.monotonic() - self.last_heard

    def _learner_listening(self) -> bool:
        """``listening()``, asked at most every PROBE_EVERY_S (each asks costs a TCP connection)."""
        if self.listening is None:
            return False
        when, said = self._probed
        if time.monotonic() - when >= PROBE_EVERY_S:
            said = self.listening()
            self._probed = (time.monotonic(), said)
        return said

    def check_alive(self) -> None:
        """Stop on a refused handshake at once; after ``actor_timeout_s`` without a usable message if
        nothing listens at the learner's address any more, else after ``learner_pause_s``
        (``actors/patience.py``)."""
        why = self.watch.refusal() if self.watch is not None else None
        if why is not None:
            raise ActorStop(f"the learner refused this actor's key: {why}", exit_code=EXIT_REFUSED)
        if self.silent_s() > self.timeout_s:
            # the silence may be this process's own (it was stopped, or busy): the learner's messages can
            # still be in the kernel or ZeroMQ's I/O thread, so read what comes before judging
            self._drain(LISTEN_BEFORE_GIVING_UP_S)
        silent = self.silent_s()
        linked = silent > self.timeout_s and self._learner_listening()
        line = self.patience.report(silent, linked)
        if line is not None:
            print(f"actor {self.gate.actor_id}: {line}", file=sys.stderr, flush=True)
        if silent <= self.timeout_s:
            return
        if self.refused_in_a_row:
            raise ActorStop(
                f"refused every message from the learner for {silent:.0f} s ({self.refused_in_a_row} "
                f"messages; last: {self.last_refusal}); giving up"
            )
        why = self.patience.give_up(silent, linked)
        if why is not None:
            raise ActorStop(why)


def run_actor(
    own: dict | None,
    actor_id: int,
    num_actors: int,
    learner_addr: str,
    incarnation: int = 0,
    keys_dir: Path | None = None,
    speaks: bool = False,
) -> int:
    """Actor main loop; returns a process exit code. The actor runs with the config of its learner's
    first weights; ``own``, the values its command line gave (None: none), must agree with it outside
    LOCAL_KEYS (else it exits EXIT_MISMATCH), and its ACTOR_KEYS win. One torch thread: actors are
    many, cores few. ``speaks``: this actor prints a line a minute while its learner is silent (one
    actor per machine does)."""
    torch.set_num_threads(1)
    try:
        keys = load_actor_keys(keys_dir) if keys_dir is not None else None
    except KeysError as e:
        print(f"actor {actor_id}: --keys: {e}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    push, sub, watch = connect_sockets(learner_addr, keys)
    built: dict = {}

    def build(learner_cfg: Config, rank: int) -> tuple[PolicyNet, Config]:
        cfg = startup_config(learner_cfg, own)
        init_torch_runtime(cfg, cfg.actor_device, "actor", threads=1)
        try:
            built["collector"] = build_collector(cfg, actor_id, num_actors, incarnation, rank)
        except (ConfigError, ValueError) as e:  # a device not here, more actors than envs: a restart cannot help
            raise ActorStop(f"cannot run the learner's config here: {e}", exit_code=EXIT_MISMATCH) from None
        return built["collector"].policy, cfg

    run_id = secrets.randbits(62)  # tells this process's segments from an earlier incarnation's
    timeout_s = (own or {}).get("actor_timeout_s", Config.actor_timeout_s)
    pause_s = (own or {}).get("learner_pause_s", Config.learner_pause_s)
    patience = Patience(timeout_s, pause_s, speaks=speaks)
    weights = WeightsReceiver(
        sub,
        None,
        timeout_s,
        actor_id,
        run_id,
        watch,
        build=build,
        patience=patience,
        listening=lambda: learner_listening(learner_addr),
    )
    try:
        weights.wait_for_weights()
        return collect_and_send(weights, built["collector"], push, (actor_id, num_actors), learner_addr, run_id)
    except ActorStop as e:
        print(f"actor {actor_id}: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        watch.close()
        push.close(linger=0)
        sub.close()


def startup_config(learner_cfg: Config, own: dict | None) -> Config:
    """The config this actor runs with: the learner's, and its own ACTOR_KEYS where it gave values;
    ActorStop(EXIT_MISMATCH) naming every other key it gave that differs from the learner's."""
    if own is None:
        return learner_cfg
    diff = config_differences(learner_cfg, own)
    if diff:
        raise ActorStop("config differs from the learner's: " + "; ".join(diff), exit_code=EXIT_MISMATCH)
    return actor_config(learner_cfg, own)


def collect_and_send(
    weights: WeightsReceiver, collector, push: zmq.Socket, place: tuple[int, int], learner_addr: str, run_id: int
) -> NoReturn:
    """Collect and push segments until the learner says stop (ActorStop). ``place``: (actor id, actors the
    streams are split over), which every message declares."""
    actor_id, num_actors = place
    cfg = weights.config
    assert cfg is not None  # the first weights' config built the collector
    streams = collector.streams
    compression = cfg.wire_compression
    if compression == "auto":
        compression = "none" if is_local(learner_addr) else "zstd"

    def send(kind: str, meta: dict, arrays: dict) -> None:
        frames = encode(
            kind, {"actor": actor_id, "streams": streams, "num_actors": num_actors, **meta}, arrays, compression
        )
        tried = 0.0  # time spent trying, not wall time: a stopped (SIGSTOP) actor has not been refused
        while not send_with_timeout(push, frames, SEND_TRY_S):
            tried += SEND_TRY_S
            weights.poll()  # a stop message may be waiting
            # a learner heard but taking nothing is gone for this actor; a silent one is check_alive's
            if tried > cfg.actor_timeout_s and weights.silent_s() <= cfg.actor_timeout_s:
                raise ActorStop(f"the learner took no data for {cfg.actor_timeout_s:.0f} s; giving up")

    last_split: dict[str, float] = {}
    timings = collector.timings  # one phase table: infer, env (collector), wait, send (here)
    while True:
        with timings.time("wait"):
            weights.poll()
            weights.wait_until_gate_opens(cfg.max_policy_lag)
        if weights.needs_warmup():  # the first learner, or a fresh one that took over
            warm_up(collector, weights, send)
        seq = weights.gate.next_seq()
        arrays, _ = collector.collect()  # its episode records travel among the arrays
        meta = {"version": weights.version, "run": run_id, "seq": seq, "timings": last_split}
        with timings.time("send"):
            send("segment", meta, arrays)
        weights.gate.sent(seq)
        last_split = timings.split()  # travels with the next segment


def warm_up(collector, weights: WeightsReceiver, send: Callable[[str, dict, dict], None]) -> None:
    """Random-action frames for the normaliser of the learner that asked (``weights.needs_warmup``)."""
    learner_run = weights.learner_run
    for frames in collector.warmup(weights.warmup_steps):
        send("warmup", {}, {"frames": frames})
        weights.poll()  # a stop may come during a long warm-up
    weights.warmed_for = learner_run


def connect_sockets(learner_addr: str, keys: ActorKeys | None) -> tuple[zmq.Socket, zmq.Socket, HandshakeWatch]:
    """PUSH to the learner, SUB to its weights; CURVE clients with ``keys``. The watch is attached
    before connecting so that no handshake event is missed."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 4)
    push.setsockopt(zmq.LINGER, 2000)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        curve_client(push, keys)
        curve_client(sub, keys)
    watch = HandshakeWatch([push, sub], has_keys=keys is not None)
    push.connect(learner_addr)
    sub.connect(weights_address(learner_addr))
    return push, sub, watch
