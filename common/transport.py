"""ZeroMQ addresses and sockets shared by the learner and the actors.

The learner is given one address (``--bind``); segments arrive on it (PULL) and weights leave on
the next port (PUB). Actors are given that same address (``--learner``) and derive the other.
"""
from __future__ import annotations

import re

import zmq

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
