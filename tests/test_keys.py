"""The secure link: key files, CURVE on both channels, who the learner admits, and the refusals."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
import zmq.auth

from common.transport import (
    ActorKeys,
    HandshakeWatch,
    KeysError,
    bind_learner,
    create_keys,
    curve_client,
    free_tcp_address,
    handshake_refusal,
    load_actor_keys,
    load_learner_keys,
    weights_address,
)

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")
PY = sys.executable


def launch(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """launch.py's main in this process (what is tested here happens before any process is started)."""
    from launch import main

    capsys.readouterr()
    rc = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A learner's folder, and the folders of a good actor, an unknown actor and one with the wrong learner key."""
    root = tmp_path_factory.mktemp("keys")
    good, other = root / "good", root / "other"
    create_keys(good)
    create_keys(other)
    folders = {"learner": good, "actor": good}
    for name, actor_from, learner_from in (("unknown_actor", other, good), ("wrong_learner", good, other)):
        d = root / name
        d.mkdir()
        for f in ("actor.key", "actor.key_secret"):
            (d / f).write_bytes((actor_from / f).read_bytes())
        (d / "actor.key_secret").chmod(0o600)
        (d / "learner.key").write_bytes((learner_from / "learner.key").read_bytes())
        folders[name] = d
    return folders


def test_keys_command_writes_both_pairs_with_private_secrets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = tmp_path / "k"
    p = launch(capsys, "keys", str(d))
    assert p.returncode == 0, p.stderr
    for name in ("learner", "actor"):
        public, secret = zmq.auth.load_certificate(d / f"{name}.key_secret")
        assert len(public) == len(secret) == 40
        assert zmq.auth.load_certificate(d / f"{name}.key") == (public, None)
        assert mode(d / f"{name}.key_secret") == 0o600
    assert mode(d) == 0o700
    assert (d / "authorized" / "actor.key").read_bytes() == (d / "actor.key").read_bytes()
    assert list((d / "authorized").iterdir()) == [d / "authorized" / "actor.key"]
    assert not [f for f in d.iterdir() if f.name.startswith(".")]  # no temporary folder left behind
    for f in ("learner.key", "actor.key", "actor.key_secret"):  # what the actors' machine needs
        assert f in p.stdout
    assert "learner.key_secret never leaves" in p.stdout
    before = {f: f.read_bytes() for f in d.rglob("*") if f.is_file()}
    again = launch(capsys, "keys", str(d))
    assert again.returncode == 2 and "not overwriting" in one_line(again.stderr)
    assert {f: f.read_bytes() for f in d.rglob("*") if f.is_file()} == before


def test_key_folders_are_checked_in_one_line(tmp_path: Path, keys: dict[str, Path]) -> None:
    assert load_learner_keys(keys["learner"]).authorized == keys["learner"] / "authorized"
    assert isinstance(load_actor_keys(keys["actor"]), ActorKeys)
    with pytest.raises(KeysError, match="learner.key_secret: no such key file"):
        load_learner_keys(keys["unknown_actor"])  # an actor's folder holds no learner secret
    empty = tmp_path / "empty"
    create_keys(empty)
    (empty / "authorized" / "actor.key").unlink()
    with pytest.raises(KeysError, match="holds no actor public keys"):
        load_learner_keys(empty)
    (empty / "actor.key_secret").write_text('metadata\ncurve\n    public-key = "short"\n')
    with pytest.raises(KeysError, match="actor.key_secret: not a"):
        load_actor_keys(empty)


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o620])
def test_a_secret_key_others_can_open_is_refused_naming_chmod_600(
    tmp_path: Path, capsys: pytest.CaptureFixture, bits: int
) -> None:
    """As ssh refuses such keys. Before, both ends used them without a word."""
    d = tmp_path / "k"
    create_keys(d)
    for name, load in (("learner", load_learner_keys), ("actor", load_actor_keys)):
        secret = d / f"{name}.key_secret"
        secret.chmod(bits)
        with pytest.raises(KeysError) as e:
            load(d)
        assert "chmod 600" in str(e.value) and str(secret) in str(e.value) and "\n" not in str(e.value)
        secret.chmod(0o600)
        load(d)
    (d / "learner.key_secret").chmod(bits)
    p = launch(capsys, "--role", "learner", "--config", SMOKE, "--keys", str(d), "--run-dir", str(tmp_path / "run"))
    assert p.returncode == 2 and "chmod 600" in one_line(p.stderr)
    assert not (tmp_path / "run").exists()


def test_a_learner_reachable_from_outside_needs_keys_or_insecure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    for role, bind in (("learner", "tcp://0.0.0.0:5555"), ("local", "tcp://10.1.2.3:5555")):
        p = launch(
            capsys, "--role", role, "--config", SMOKE, "--bind", bind, "--learner-gpu", "-1", "--run-dir", str(run_dir)
        )
        line = one_line(p.stderr)
        assert p.returncode == 2 and "--keys" in line and "--insecure" in line and bind in line
        assert not run_dir.exists()  # refused before anything was written
    p = launch(capsys, "--role", "learner", "--config", SMOKE, "--keys", str(tmp_path), "--insecure")
    assert p.returncode == 2 and "exclude each other" in one_line(p.stderr)


def test_handshake_events_name_the_refusal() -> None:
    auth_denied = handshake_refusal(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, 0, True)[0]
    assert "authorized" in auth_denied
    keyless = handshake_refusal(
        zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH, 0, False
    )[0]
    assert "--keys" in keyless
    n, why = 0, None
    for _ in range(2):  # one cut handshake may be a dropped link: no verdict yet
        why, n = handshake_refusal(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 32, n, True)
        assert why is None
    why, n = handshake_refusal(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 32, n, True)
    assert "learner.key" in why and n == 3
    assert "--keys" in handshake_refusal(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 32, 2, False)[0]
    assert handshake_refusal(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0, 2, True) == (None, 0)


def _client(ctx: zmq.Context, kind: int, addr: str, keys: ActorKeys | None) -> tuple[zmq.Socket, HandshakeWatch]:
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    if kind == zmq.SUB:
        s.setsockopt(zmq.SUBSCRIBE, b"")
    if keys is not None:
        curve_client(s, keys)
    watch = HandshakeWatch([s], has_keys=keys is not None)
    s.connect(addr)
    return s, watch


def test_curve_admits_only_authorized_actors_on_both_channels(keys: dict[str, Path]) -> None:
    """In one process over loopback: the good actor's messages arrive and it hears the weights; each
    refused one gets nothing in, hears nothing, and its handshake watch names the refusal in < 5 s."""
    addr = free_tcp_address()
    ctx = zmq.Context()
    sockets = bind_learner(ctx, addr, load_learner_keys(keys["learner"]), max_frame_bytes=1 << 20, recv_queue=4)
    cases = {"actor": None, "unknown_actor": "authorized", "wrong_learner": "learner.key", "keyless": "--keys"}
    clients = {}
    try:
        for name in cases:
            k = load_actor_keys(keys[name]) if name != "keyless" else None
            clients[name] = (_client(ctx, zmq.PUSH, addr, k), _client(ctx, zmq.SUB, weights_address(addr), k))
        deadline = time.monotonic() + 5
        verdicts: dict[str, str] = {}
        while time.monotonic() < deadline and len(verdicts) < 3:
            for name, ((_push, pw), (_sub, sw)) in clients.items():
                why = pw.refusal() or sw.refusal()
                if why is not None:
                    verdicts[name] = why
            time.sleep(0.05)
        for name, needle in cases.items():
            if needle is None:
                assert name not in verdicts
            else:
                assert needle in verdicts[name], (name, verdicts.get(name))
        for name, ((push, _), _) in clients.items():
            try:
                push.send(json.dumps({"from": name}).encode(), zmq.NOBLOCK)
            except zmq.Again:  # a refused PUSH has no peer to queue for
                assert cases[name] is not None
        got = []
        while sockets.pull.poll(1000):
            got.append(json.loads(sockets.pull.recv())["from"])
        assert got == ["actor"]
        for _ in range(20):  # PUB drops until the subscription has arrived
            sockets.pub.send(b"weights")
            if clients["actor"][1][0].poll(100):
                break
        assert clients["actor"][1][0].recv() == b"weights"
        assert not any(clients[n][1][0].poll(0) for n in cases if cases[n] is not None)
    finally:
        for (push, pw), (sub, sw) in clients.values():
            pw.close()
            sw.close()
            push.close()
            sub.close()
        sockets.close()
        ctx.term()


def _actor(
    actors_role_cmd: Callable[..., list[str]],
    addr: str,
    keys_dir: Path | None,
    actor_id: int,
    total: int,
    role: bool,
) -> subprocess.Popen:
    """An actors role (the launcher and its actor), or one bare actor process."""
    over = ["MaxStepsPerEpisode=10", "actor_timeout_s=300"]  # a refusal must not wait for the timeout
    if role:
        args = actors_role_cmd(addr, 1, "--actor-offset", str(actor_id), "--total-actors", str(total), *over)
    else:
        args = [
            "-m",
            "actors.main",
            "--config",
            SMOKE,
            "--learner",
            addr,
            "--actor-id",
            str(actor_id),
            "--num-actors",
            str(total),
            *over,
        ]
    if keys_dir is not None:
        args += ["--keys", str(keys_dir)]
    return subprocess.Popen([PY, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_keyed_roles_train_and_refused_actors_exit_with_their_reason(
    tmp_path: Path, keys: dict[str, Path], learner_role_cmd, actors_role_cmd
) -> None:
    """A learner role and a good actors role with keys train over TCP on loopback; a keyless actors
    role, an actor with an unknown key and one with a wrong learner key each get 0 segments in and
    exit 4 with one line saying why, from the handshake (their actor_timeout_s is 300 s)."""
    addr, run_dir = free_tcp_address(), tmp_path / "run"
    learner = subprocess.Popen(
        [PY, *learner_role_cmd(addr, run_dir, 192, "--keys", str(keys["learner"]), "MaxStepsPerEpisode=10")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    refused = {
        "keyless": (None, "has none", True),
        "unknown_actor": (keys["unknown_actor"], "authorized", False),
        "wrong_learner": (keys["wrong_learner"], "learner.key", False),
    }
    procs = {}
    try:
        t0 = time.monotonic()
        for i, (name, (k, _, role)) in enumerate(refused.items()):
            procs[name] = _actor(actors_role_cmd, addr, k, i + 1, 4, role)
        good = _actor(actors_role_cmd, addr, keys["actor"], 0, 1, role=True)
        for name, (_, needle, role) in refused.items():
            _, err = procs[name].communicate(timeout=120)
            assert procs[name].returncode == 4, err
            lines = [ln for ln in err.strip().splitlines() if ln.strip()]
            assert "Traceback" not in err and len(lines) == (2 if role else 1), err
            assert "the learner refused this actor's key" in lines[0] and needle in lines[0], lines[0]
            if role:  # the launcher's summary of how its actors ended
                assert "refused" in lines[1], lines[1]
        assert time.monotonic() - t0 < 120
        _, good_err = good.communicate(timeout=120)
        assert good.returncode == 0, good_err
        out, err = learner.communicate(timeout=60)
        assert learner.returncode == 0, err
        assert "(CURVE)" in out
    finally:
        for p in (learner, *procs.values()):
            p.kill()
    import csv

    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert int(rows[-1]["agent_steps"]) == 192 and int(rows[-1]["rejected_messages"]) == 0
    episodes = [json.loads(x) for x in (run_dir / "episodes.jsonl").read_text().splitlines()]
    assert episodes and {e["actor"] for e in episodes} == {0}  # actors 1..3 (the refused ones) got nothing in
