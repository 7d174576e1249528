"""ZeroMQ addresses, keys and sockets shared by the learner and the actors.

The learner is given one address (``--bind``); segments arrive on it (PULL) and weights leave on
the next port (PUB). Actors are given that same address (``--learner``) and derive the other.

With keys (``launch.py keys DIR``, the files ``zmq.auth.create_certificates`` writes) both channels
use CURVE: the learner is the CURVE server of both, and its ZAP handler (pyzmq's
``ThreadAuthenticator``) admits only the actor public keys in ``DIR/authorized/``. An actor watches
its sockets' handshakes (``zmq.utils.monitor``) so that a refusal ends it at once, with its reason.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

_TCP = re.compile(r"^tcp://(?P<host>[^:/]+|\[[^\]]+\]):(?P<port>\d+)$")


def parse_tcp(addr: str) -> tuple[str, int]:
    m = _TCP.match(addr)
    if not m:
        raise ValueError(f"address {addr!r}: expected tcp://HOST:PORT or ipc://PATH")
    port = int(m["port"])
    if not 0 < port < 65535:
        raise ValueError(f"address {addr!r}: port must be in 1..65534 (the next port carries weights)")
    return m["host"], port


def weights_address(addr: str) -> str:
    """The PUB address that goes with a learner's segment address."""
    if addr_is_ipc(addr):
        return addr + ".weights"
    host, port = parse_tcp(addr)
    return f"tcp://{host}:{port + 1}"


def connect_address(bind_addr: str) -> str:
    """A bind address as local actors must dial it (a wildcard host becomes loopback)."""
    if addr_is_ipc(bind_addr):
        return bind_addr
    host, port = parse_tcp(bind_addr)
    return f"tcp://{'127.0.0.1' if host in ('*', '0.0.0.0') else host}:{port}"


def addr_is_ipc(addr: str) -> bool:
    return addr.startswith("ipc://")


def is_local(addr: str) -> bool:
    """True where the learner runs on this machine (no point compressing)."""
    if addr_is_ipc(addr):
        return True
    host, _ = parse_tcp(addr)
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def learner_listening(addr: str, timeout_s: float = 1.0) -> bool:
    """Whether the learner's address still takes connections: False once nothing listens there (a
    refused TCP connection, a missing ipc socket file: the learner ended); True when a connection is
    accepted (a paused learner's kernel still accepts) or the attempt times out or finds no route (a
    cut network). The probe connection is closed at once, before any ZeroMQ handshake."""
    import socket

    if addr_is_ipc(addr):
        return Path(addr[len("ipc://") :]).exists()
    host, port = parse_tcp(addr)
    try:
        socket.create_connection((host.strip("[]"), port), timeout=timeout_s).close()
    except ConnectionRefusedError:
        return False
    except OSError:  # a timeout, an unreachable host or network: the learner may be there
        return True
    return True


def free_tcp_address(host: str = "127.0.0.1") -> str:
    """A tcp address whose port and port+1 are both free now (for local runs and tests)."""
    import socket

    for _ in range(100):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port >= 65534:
            continue
        with socket.socket() as s2:
            try:
                s2.bind((host, port + 1))
            except OSError:
                continue
        return f"tcp://{host}:{port}"
    raise RuntimeError("no free pair of tcp ports found")


def send_with_timeout(sock: zmq.Socket, frames: list, timeout_s: float) -> bool:
    """Send multipart without blocking forever; False if the peer could not take it in time.

    Copies the frames: ZeroMQ sends later, from its own thread, and callers reuse their buffers
    (a zero-copy send of a reused buffer ships whatever it holds by then)."""
    if sock.poll(int(timeout_s * 1000), zmq.POLLOUT) == 0:
        return False
    sock.send_multipart(frames, copy=True)
    return True


# ---- keys ------------------------------------------------------------------------------------------
LEARNER_CERT = "learner"  # DIR/learner.key (public), DIR/learner.key_secret (both halves)
ACTOR_CERT = "actor"
AUTHORIZED = "authorized"  # DIR/authorized/*.key: the actor public keys the learner admits


class KeysError(ValueError):
    """A keys folder that cannot be used; the text is one line naming the file."""


@dataclass(frozen=True)
class LearnerKeys:
    public: bytes
    secret: bytes = field(repr=False)  # never in a log line or a traceback
    authorized: Path


@dataclass(frozen=True)
class ActorKeys:
    public: bytes
    secret: bytes = field(repr=False)
    learner_public: bytes


def create_keys(key_dir: Path) -> list[Path]:
    """Write the learner's and the actors' key pairs and ``authorized/`` (with actor.key) into
    ``key_dir``; returns the files written. Refuses to overwrite: the other machine holds copies.

    The pairs are written in a private temporary folder and moved in once their secret files are
    0600, so a secret is never readable by others, not even for a moment."""
    key_dir = Path(key_dir)
    names = [f"{n}{ext}" for n in (LEARNER_CERT, ACTOR_CERT) for ext in (".key", ".key_secret")]
    taken = [n for n in names + [AUTHORIZED] if (key_dir / n).exists()]
    if taken:
        raise KeysError(f"{key_dir / taken[0]} exists; not overwriting keys (remove them or choose another folder)")
    try:
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=key_dir, prefix=".keys-"))  # mode 0700
    except OSError as e:
        raise KeysError(f"{key_dir}: cannot create the keys folder ({e.strerror})") from None
    try:
        for name in (LEARNER_CERT, ACTOR_CERT):
            zmq.auth.create_certificates(tmp, name)
            os.chmod(tmp / f"{name}.key_secret", 0o600)
        (tmp / AUTHORIZED).mkdir()
        shutil.copy(tmp / f"{ACTOR_CERT}.key", tmp / AUTHORIZED / f"{ACTOR_CERT}.key")
        for name in names + [AUTHORIZED]:
            os.replace(tmp / name, key_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [key_dir / n for n in names] + [key_dir / AUTHORIZED / f"{ACTOR_CERT}.key"]


@overload
def _load(path: Path, secret: Literal[True]) -> tuple[bytes, bytes]: ...
@overload
def _load(path: Path, secret: Literal[False]) -> tuple[bytes, bytes | None]: ...
def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise KeysError(f"{path}: no such key file (create keys with: python launch.py keys DIR)")
    if secret:
        check_private(path)
    try:
        public, sec = zmq.auth.load_certificate(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise KeysError(f"{path}: not a key file ({type(e).__name__})") from None
    if len(public) != 40 or (secret and (sec is None or len(sec) != 40)):
        raise KeysError(f"{path}: not a {'secret ' if secret else ''}key file of zmq.auth's format")
    return public, sec


def check_private(path: Path) -> None:
    """A secret key file that group or others may open is refused, as ssh refuses such keys: anyone
    who read it could pose as its owner."""
    bits = stat.S_IMODE(path.stat().st_mode)
    if bits & 0o077:
        raise KeysError(f"{path}: mode {bits:04o} lets group or others open this secret key; run chmod 600 {path}")


def load_learner_keys(key_dir: Path) -> LearnerKeys:
    """The learner's pair and its authorized actor keys; each file is checked here, so a bad one is
    one line now rather than every actor refused later."""
    key_dir = Path(key_dir)
    public, secret = _load(key_dir / f"{LEARNER_CERT}.key_secret", secret=True)
    authorized = key_dir / AUTHORIZED
    found = sorted(authorized.glob("*.key")) if authorized.is_dir() else []
    if not found:
        raise KeysError(f"{authorized}: holds no actor public keys (*.key); every actor would be refused")
    for f in found:
        _load(f, secret=False)
    return LearnerKeys(public, secret, authorized)


def load_actor_keys(key_dir: Path) -> ActorKeys:
    """An actor's pair and the learner's public key."""
    key_dir = Path(key_dir)
    public, secret = _load(key_dir / f"{ACTOR_CERT}.key_secret", secret=True)
    learner_public, _ = _load(key_dir / f"{LEARNER_CERT}.key", secret=False)
    return ActorKeys(public, secret, learner_public)


def needs_keys(bind_addr: str) -> bool:
    """A learner bound here can be reached from other machines (anything but loopback or ipc)."""
    return not is_local(bind_addr)


# ---- the learner's sockets -----------------------------------------------------------------------------
@dataclass
class LearnerSockets:
    pull: zmq.Socket
    pub: zmq.Socket
    auth: ThreadAuthenticator | None

    def close(self) -> None:
        for s in (self.pull, self.pub):
            s.close(linger=None)
        if self.auth is not None:
            self.auth.stop()


def _curve_server(sock: zmq.Socket, keys: LearnerKeys) -> None:
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def bind_learner(
    ctx: zmq.Context, addr: str, keys: LearnerKeys | None, max_frame_bytes: int, recv_queue: int
) -> LearnerSockets:
    """PULL on ``addr`` for segments, PUB on the next port for weights and heartbeats.

    ``max_frame_bytes`` (ZMQ_MAXMSGSIZE): ZeroMQ drops the connection of a peer that sends a larger
    frame before buffering it. ``recv_queue`` (RCVHWM): whole messages ZeroMQ queues per peer.
    The authenticator starts before either socket binds: a CURVE server with no ZAP handler on its
    context would admit any client key."""
    auth = None
    if keys is not None:
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=str(keys.authorized))
    pull = pub = None
    try:
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
        pull.setsockopt(zmq.RCVHWM, recv_queue)
        pull.setsockopt(zmq.LINGER, 0)
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, 2)  # only the newest weights matter
        pub.setsockopt(zmq.LINGER, 1000)
        pub.setsockopt(zmq.MAXMSGSIZE, 1 << 16)  # subscribers send nothing but subscriptions
        if keys is not None:
            _curve_server(pull, keys)
            _curve_server(pub, keys)
        pull.bind(addr)
        pub.bind(weights_address(addr))
    except BaseException:
        for s in (pull, pub):
            if s is not None:
                s.close(linger=0)
        if auth is not None:
            auth.stop()
        raise
    return LearnerSockets(pull, pub, auth)


# ---- the actor's sockets -------------------------------------------------------------------------------
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
NO_DETAIL_FAILURES = 3  # a learner that cannot decrypt our hello just hangs up: refused if it keeps doing so
ZAP_DENIED = 400


def handshake_refusal(event: int, value: int, failures_in_a_row: int, has_keys: bool) -> tuple[str | None, int]:
    """One handshake event -> (why the learner refused us, or None; failures in a row since a success).

    An unknown key is a ZAP denial (status 400). Encryption on one side only is a mechanism mismatch.
    A wrong learner key shows only as handshakes the learner cuts without detail, so it counts as a
    refusal after NO_DETAIL_FAILURES in a row (one may be a link that dropped mid-handshake)."""
    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return None, 0
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH and value == ZAP_DENIED:
        return "this actor's public key is not in the learner's authorized/ folder", failures_in_a_row + 1
    keyless = "the learner runs with --keys and this actor has none (pass --keys DIR)"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            why = keyless if not has_keys else "this actor has keys and the learner runs without them"
            return why, failures_in_a_row + 1
        return f"the CURVE handshake failed (protocol error 0x{value:x})", failures_in_a_row + 1
    n = failures_in_a_row + 1
    if n < NO_DETAIL_FAILURES:
        return None, n
    if not has_keys:  # the learner may notice the mismatch first and just hang up
        return keyless, n
    return f"{n} handshakes in a row cut by the learner (is {LEARNER_CERT}.key this learner's public key?)", n


class HandshakeWatch:
    """Reads the handshake events of an actor's sockets; ``refusal()`` says why the learner refused."""

    def __init__(self, sockets: list[zmq.Socket], has_keys: bool):
        self.has_keys = has_keys
        self.watched = [(s, s.get_monitor_socket(HANDSHAKE_EVENTS)) for s in sockets]
        self.failures = [0] * len(self.watched)

    def refusal(self) -> str | None:
        for i, (_, mon) in enumerate(self.watched):
            while mon.poll(0):
                ev = recv_monitor_message(mon)
                why, self.failures[i] = handshake_refusal(ev["event"], ev["value"], self.failures[i], self.has_keys)
                if why is not None:
                    return why
        return None

    def close(self) -> None:
        for sock, mon in self.watched:
            if not sock.closed:
                sock.disable_monitor()
            mon.close(linger=0)


def curve_client(sock: zmq.Socket, keys: ActorKeys) -> None:
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.learner_public
