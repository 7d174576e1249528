"""Checkpoints that would take all memory: a zip bomb in the pickle or the largest storage member (a
deflate stream of zeros that claims 1.5 GiB in about 1.5 MB), stored members larger than the config can
need, a pickle over its cap. Each is refused in one line, under 500 MB, before anything is inflated."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

from learner.checkpoint import CheckpointError, load_checkpoint
from learner.checkpoint_size import MAX_PICKLE_BYTES, state_budget

MAX_RSS = 500 << 20
CHUNK = 16 << 20
BOMB_CHUNKS = 96  # 1.5 GiB inflated


def deflated_zeros(prefix: bytes, chunks: int) -> tuple[bytes, int, int]:
    """A raw deflate stream of ``prefix`` then ``chunks`` x 16 MiB of zeros, built without compressing
    them all: after a full flush the compressor's output for the same input repeats. -> (stream, size, crc)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(CHUNK)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    for _ in range(chunks):
        crc = zlib.crc32(zeros, crc)
    return head + block * chunks + c.flush(), len(prefix) + chunks * CHUNK, crc


def write_zip(path: Path, members: list[tuple[str, int, bytes, int, int]]) -> None:
    """A zip archive of (name, method, data as stored, size inflated, crc) members (0 stored, 8 deflate)."""
    central = []
    with open(path, "wb") as out:
        for name, method, data, size, crc in members:
            offset, n = out.tell(), name.encode()
            out.write(struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(data), size, len(n), 0))
            out.write(n + data)
            central.append(
                struct.pack("<4s6H3I", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(data), size)
                + struct.pack("<5H2I", len(n), 0, 0, 0, 0, 0, offset)
                + n
            )
        cd_offset = out.tell()
        cd = b"".join(central)
        out.write(cd)
        out.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(members), len(members), len(cd), cd_offset, 0))


def bomb(checkpoint: Path, out_dir: Path, target: str) -> Path:
    """A copy of ``checkpoint`` in the run dir ``out_dir`` whose pickle (``target`` "pickle") or largest
    storage ("storage") is a deflate bomb; the other members are copied as they are."""
    with zipfile.ZipFile(checkpoint) as z:
        infos = z.infolist()
        storages = [i for i in infos if "/data/" in i.filename]
        victim = (
            next(i for i in infos if i.filename.endswith("/data.pkl"))
            if target == "pickle"
            else max(storages, key=lambda i: i.file_size)
        )
        members = []
        for i in infos:
            data = z.read(i)
            if i is victim:
                stream, size, crc = deflated_zeros(data if target == "pickle" else b"", BOMB_CHUNKS)
                members.append((i.filename, 8, stream, size, crc))
            else:
                members.append((i.filename, 0, data, len(data), zlib.crc32(data)))
    path = out_dir / "checkpoints" / "latest.pt"
    path.parent.mkdir(parents=True)
    write_zip(path, members)
    (out_dir / "config.yaml").write_text((checkpoint.parents[1] / "config.yaml").read_text())
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """checkpoints/latest.pt of one update, with the config.yaml launch.py writes beside it."""
    from common.config import dump_yaml, load_config
    from learner.serial import SerialRunner

    small = {"NumWorkers": 1, "RolloutSteps": 8, "NumInitSteps": 4, "BatchSize": 8, "ImageHeight": 44, "ImageWidth": 44}
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml", small)
    runner = SerialRunner(cfg, tmp_path_factory.mktemp("trained"))
    runner.run(1)
    runner.learner.save()
    runner.learner.close()
    (runner.learner.run_dir / "config.yaml").write_text(dump_yaml(cfg))
    return runner.learner.run_dir / "checkpoints" / "latest.pt"


def test_the_bomb_helper_makes_valid_zips(trained: Path, tmp_path: Path) -> None:
    stream, size, crc = deflated_zeros(b"head", 2)
    assert zlib.decompress(stream, -15) == b"head" + bytes(2 * CHUNK) and crc == zlib.crc32(b"head" + bytes(2 * CHUNK))
    path = bomb(trained, tmp_path / "b", "storage")
    with zipfile.ZipFile(path) as z:  # a readable archive; its bomb is left uninflated here
        big = max(z.infolist(), key=lambda i: i.file_size)
        assert big.compress_type == zipfile.ZIP_DEFLATED and big.file_size == BOMB_CHUNKS * CHUNK


@pytest.mark.parametrize("target", ["pickle", "storage"])
@pytest.mark.parametrize("tool", ["eval.py", "launch.py --resume"])
def test_a_zip_bomb_checkpoint_is_refused_in_one_line_under_500_mb(
    trained: Path, tmp_path: Path, measured_run, target: str, tool: str
) -> None:
    """Before, eval.py and launch.py --resume inflated the member before refusing it."""
    path = bomb(trained, tmp_path / "run", target)
    args = ["eval.py", str(path)] if tool == "eval.py" else ["launch.py", "--resume", str(path.parents[1])]
    got = measured_run(args, timeout_s=120, kill_rss=1 << 30)
    print(f"{tool}, {target} bomb: {got.killed or 'exit ' + str(got.rc)}, peak {got.peak_rss / 2**20:.0f} MiB")
    assert got.killed is None, got.killed
    lines = [ln for ln in got.stderr.strip().splitlines() if ln.strip()]
    assert got.rc == 2 and len(lines) == 1 and "compressed" in lines[0] and "Traceback" not in got.stderr, got.stderr
    assert got.peak_rss < MAX_RSS


def resaved(trained: Path, tmp_path: Path, change) -> Path:
    data = torch.load(trained, weights_only=True)
    change(data)
    path = tmp_path / "big.pt"
    torch.save(data, path)
    return path


def test_stored_tensors_larger_than_the_config_needs_are_refused_before_they_are_read(
    trained: Path, tmp_path: Path
) -> None:
    from common.config import from_dict

    largest, total = state_budget(from_dict(torch.load(trained, weights_only=True)["config"]))
    one = resaved(trained, tmp_path, lambda d: d["agent"].update(extra=torch.zeros(largest // 4 + 1)))
    with pytest.raises(CheckpointError, match=f"a tensor of {largest + 4} bytes, more than the {largest}"):
        load_checkpoint(one)
    many = resaved(
        trained,
        tmp_path,
        lambda d: d.update(extra=[torch.zeros(largest // 8) for _ in range(1 + 2 * total // largest)]),
    )
    with pytest.raises(CheckpointError, match="bytes of tensors, more than the"):
        load_checkpoint(many)
    assert load_checkpoint(trained)["counters"]["update"] == 1  # a real one fits, with room


def test_a_pickle_over_its_cap_is_refused_unread(trained: Path, tmp_path: Path) -> None:
    path = resaved(trained, tmp_path, lambda d: d.update(junk=list(range(MAX_PICKLE_BYTES // 4))))
    with pytest.raises(CheckpointError, match="its pickle has .* bytes, more than"):
        load_checkpoint(path)
