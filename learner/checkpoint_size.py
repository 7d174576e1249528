"""What a checkpoint file may make its reader hold, checked before any tensor is read.

``torch.save`` writes a zip archive whose members are stored, never compressed: the pickle
(``data.pkl``) and one member per tensor storage. A crafted file can declare members far larger than
itself (a deflate stream of zeros inflates about 1000:1) or far larger than any run needs, and
``torch.load`` would inflate or read them before finding anything wrong. So a checkpoint is read in
three steps (``learner/checkpoint.py`` ``load_checkpoint``): its zip directory (``inspect_archive``:
every member stored and within the file, the pickle at most MAX_PICKLE_BYTES); its pickle alone,
every tensor on torch's meta device, so that no storage is read; and, once the storages fit what
the config's networks and statistics need (``size_fault``), the real load.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from learner.exploration import MAX_RUN_CELLS

MAX_RANKS = 1024  # learner ranks whose per-rank parts (reward filter, RNG states) a checkpoint may hold
MAX_MEMBERS = 16 * MAX_RANKS  # zip members: a fresh learner's checkpoint has under 100
# The pickle: the exploration counts (MAX_RUN_CELLS [cell id, steps] pairs, about 17 bytes each
# pickled at most), up to MAX_RANKS per-rank parts (a few tensor references each, about 600 bytes)
# and 1 MiB for the rest: 4 MiB. Such a checkpoint measured 2.9 MB. A hostile pickle this size,
# all one-byte lists, makes the weights-only unpickler hold some 36 bytes per byte.
MAX_PICKLE_BYTES = MAX_RUN_CELLS * 20 + MAX_RANKS * 512 + (1 << 20)
SIZE_MARGIN = 2  # times what a fresh learner's state needs, plus the slack below
SLACK_BYTES = 16 << 20


class ArchiveFault(ValueError):
    """A checkpoint archive that could make its reader inflate or read more than a checkpoint needs."""


def inspect_archive(file: Path) -> dict[str, int]:
    """The archive's tensor storage members (their key) -> their sizes, once its directory is small,
    every member stored (not compressed) and within the file, and the pickle at most MAX_PICKLE_BYTES.
    Raises ArchiveFault with one line."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        # zipfile's own end-record reader (private: the public API reads the whole directory first), so that
        # its claims are checked before the directory is read
        end = zipfile._EndRecData(f)  # type: ignore[attr-defined]
        if end is None:
            raise ArchiveFault("a truncated or corrupt zip archive (it has no end record)")
        members, directory = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
        if members > MAX_MEMBERS or directory > MAX_MEMBERS * 1024:
            raise ArchiveFault(f"its archive lists {members} members, more than {MAX_MEMBERS}")
        try:
            infos = zipfile.ZipFile(f).infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise ArchiveFault(f"a corrupt zip archive ({e})") from None
    records = {}
    for info in infos:
        _check_member(info, size)
        parts = info.filename.split("/")
        if len(parts) == 3 and parts[1] == "data":
            records[parts[2]] = info.file_size
    return records


def _check_member(info: zipfile.ZipInfo, file_size: int) -> None:
    name = info.filename[:80]
    if info.compress_type != zipfile.ZIP_STORED:  # torch.save never compresses
        raise ArchiveFault(
            f"member {name} is compressed (method {info.compress_type}, {info.file_size} bytes inflated); "
            "torch never writes compressed members, refused before inflating"
        )
    if info.file_size != info.compress_size or info.header_offset + info.compress_size > file_size:
        raise ArchiveFault(f"member {name} declares {info.file_size} bytes, more than the file holds")
    if info.filename.endswith("/data.pkl") and info.file_size > MAX_PICKLE_BYTES:
        raise ArchiveFault(f"its pickle has {info.file_size} bytes, more than {MAX_PICKLE_BYTES} (MAX_PICKLE_BYTES)")


def state_budget(cfg: Any) -> tuple[int, int]:
    """(largest storage, all storages) in bytes that a checkpoint of ``cfg`` may hold: SIZE_MARGIN times a
    fresh learner's state, plus SLACK_BYTES. That state is the networks (policy, RND target and
    predictor), Adam's two moments and step of each trained tensor, the observation and reward
    normalisers, and per rank, for up to MAX_RANKS ranks, the reward filter of NumWorkers streams
    and two RNG states. The networks are built on the meta device: nothing is allocated."""
    from common.rl.networks import NUM_ACTIONS, PolicyNet, RNDModel

    with torch.device("meta"):
        policy = PolicyNet(NUM_ACTIONS, cfg.FrameStack, cfg.ImageHeight, cfg.ImageWidth)
        rnd = RNDModel(cfg.ImageHeight, cfg.ImageWidth)
    nets = [_nbytes(t) for t in [*policy.state_dict().values(), *rnd.state_dict().values()]]
    trained = [_nbytes(t) for t in [*policy.parameters(), *rnd.predictor.parameters()]]
    normalisers = 2 * cfg.ImageHeight * cfg.ImageWidth * 8 + 5 * 8
    rng = torch.get_rng_state().numel()
    per_rank = cfg.NumWorkers * 8 + 2 * rng
    fresh = sum(nets) + 2 * sum(trained) + 4 * len(trained) + normalisers + MAX_RANKS * per_rank
    largest = max([*nets, cfg.ImageHeight * cfg.ImageWidth * 8, cfg.NumWorkers * 8, rng])
    return SIZE_MARGIN * largest + SLACK_BYTES, SIZE_MARGIN * fresh + SLACK_BYTES


def _nbytes(t: torch.Tensor) -> int:
    return t.nelement() * t.element_size()


def size_fault(meta_data: dict[str, Any], records: dict[str, int]) -> str | None:
    """Whether the storages of a checkpoint (its pickle loaded with every tensor on the meta device,
    ``meta_data``; its zip members, ``records``) exceed what its config can need (``state_budget``);
    None if they fit. A config that cannot be used is a fault too: the budget comes from it."""
    from common.config import ConfigError, from_dict

    if not isinstance(meta_data["config"], dict):
        return "its config is not a mapping"
    try:
        cfg = from_dict(meta_data["config"])
    except ConfigError as e:
        return f"its config is refused ({e})"
    largest, total = state_budget(cfg)
    declared = [s.untyped_storage().nbytes() for s in _tensors(meta_data)]
    biggest = max([*records.values(), *declared, 0])
    if biggest > largest:
        return f"a tensor of {biggest} bytes, more than the {largest} its config can need"
    if sum(records.values()) > total:
        return f"{sum(records.values())} bytes of tensors, more than the {total} its config can need"
    return None


def _tensors(obj: Any) -> list[torch.Tensor]:
    """The tensors in a checkpoint's nested dicts, lists and tuples, each container visited once (a
    pickle can refer to one list from many places, or from itself)."""
    found, seen, todo = [], set(), [obj]
    while todo:
        x = todo.pop()
        if isinstance(x, torch.Tensor):
            found.append(x)
        elif isinstance(x, (dict, list, tuple)) and id(x) not in seen:
            seen.add(id(x))
            todo.extend(x.values() if isinstance(x, dict) else x)
    return found
