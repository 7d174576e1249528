"""Checkpoints: atomic writes (temp file + rename) into RUN_DIR/checkpoints/, latest.pt always the newest.

A checkpoint is a dict of tensors and plain Python values, loaded with ``weights_only=True``, and
only under a torch whose ``weights_only`` loader has no known holes (MIN_TORCH).
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from learner.checkpoint_size import ArchiveFault, inspect_archive, size_fault

FORMAT = "fast-rnd-checkpoint"
FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
_NUMBERED = re.compile(r"^ckpt_(\d+)\.pt$")
# torch.load(weights_only=True) could run code or corrupt memory on crafted files before 2.6
# (CVE-2025-32434) and before 2.10 (CVE-2026-24747); checkpoints come from other people's runs.
MIN_TORCH = (2, 10)


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint; one line says why."""


class CheckpointWriteError(Exception):
    """A checkpoint that could not be written (the disk is full, the folder is gone); one line says
    why and where. The atomic writes leave latest.pt as it was."""


def write_fault(e: OSError, where: Path, ckpt_dir: Path) -> CheckpointWriteError:
    """The one line of a failed write into ``where`` (a folder or file) while checkpointing ``ckpt_dir``."""
    full = e.errno in (errno.ENOSPC, errno.EDQUOT)
    why = f"the disk is full ({e.strerror})" if full else (e.strerror or str(e) or type(e).__name__)
    latest = ckpt_dir / "latest.pt"
    kept = f"{latest} holds the last checkpoint written" if latest.is_file() else "no checkpoint has been written yet"
    return CheckpointWriteError(f"cannot write the checkpoint: {why} at {where}; {kept}")


def _atomic_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(run_dir: Path, state: dict[str, Any], update: int, keep: int) -> Path:
    """Write ckpt_<update>.pt and latest.pt atomically; keep the newest ``keep`` numbered ones.
    An OSError (a full disk) is one CheckpointWriteError line."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    try:
        return _save(ckpt_dir, state, update, keep)
    except OSError as e:
        raise write_fault(e, ckpt_dir, ckpt_dir) from None
    except RuntimeError as e:  # torch's zip writer may report a failed write as its own error
        if isinstance(e.__context__, OSError):
            raise write_fault(e.__context__, ckpt_dir, ckpt_dir) from None
        raise


def _save(ckpt_dir: Path, state: dict[str, Any], update: int, keep: int) -> Path:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    path = ckpt_dir / f"ckpt_{update:08d}.pt"
    _atomic_save(payload, path)
    # latest.pt: a hard link to the numbered file, swapped in by rename (falls back to a second write)
    tmp_link = ckpt_dir / f".latest.{os.getpid()}.tmp"
    try:
        if tmp_link.exists():
            tmp_link.unlink()
        os.link(path, tmp_link)
        os.replace(tmp_link, ckpt_dir / "latest.pt")
    except OSError:
        _atomic_save(payload, ckpt_dir / "latest.pt")
    numbered = sorted(p for p in ckpt_dir.iterdir() if _NUMBERED.match(p.name))
    for old in numbered[:-keep]:
        old.unlink()
    return path


_TEMP = re.compile(r"^(ckpt_\d+\.pt|latest\.pt)\w+\.tmp$|^\.latest\.\d+\.tmp$")  # what _atomic_save and _save make


def remove_stale_temps(ckpt_dir: Path) -> int:
    """Remove the temporary files of checkpoint writes that never finished (a process killed while it
    wrote); returns how many. Only for a run dir no live process writes to: a resumed one."""
    if not ckpt_dir.is_dir():
        return 0
    stale = [p for p in ckpt_dir.iterdir() if _TEMP.match(p.name) and p.is_file()]
    for p in stale:
        p.unlink()
    return len(stale)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run dir, a checkpoints dir or a file -> the checkpoint file."""
    p = Path(path)
    for cand in (p, p / "checkpoints" / "latest.pt", p / "latest.pt"):
        if cand.is_file():
            return cand
    if (p / "config.yaml").is_file():  # a run dir: its run stopped before its first checkpoint
        raise CheckpointError(
            f"no checkpoint in run dir {path}: its run stopped before writing its first one, so there is "
            f"nothing to resume; start it again without --resume (launch.py --run-dir {path} reuses the folder)"
        )
    raise CheckpointError(f"no checkpoint at {path} (looked for the file, checkpoints/latest.pt, latest.pt)")


def check_torch_version(version: str) -> None:
    """Refuse to unpickle anything under a torch older than MIN_TORCH (or one whose version is unreadable)."""
    m = re.match(r"^(\d+)\.(\d+)", version)
    if m is None or (int(m[1]), int(m[2])) < MIN_TORCH:
        floor = ".".join(map(str, MIN_TORCH))
        raise CheckpointError(
            f"torch {version} is older than {floor}: its weights_only loader can run code from a "
            f"crafted checkpoint (CVE-2025-32434, CVE-2026-24747); install torch>={floor}"
        )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; a truncated, foreign or unsafe file raises CheckpointError. Nothing
    it declares is inflated or read before its size is known to fit its config (``checkpoint_size``)."""
    check_torch_version(str(torch.__version__))
    file = resolve_checkpoint(path)
    with open(file, "rb") as f:
        if f.read(4) != ZIP_MAGIC:
            raise CheckpointError(f"{file}: not a checkpoint (not a PyTorch zip archive)")
    try:
        records = inspect_archive(file)
    except ArchiveFault as e:
        raise CheckpointError(f"{file}: refused: {e}") from None
    shapes = _torch_load(file, "meta")  # the pickle alone: tensors get their shapes, no storage is read
    why = _format_fault(shapes) or size_fault(shapes, records)
    if why is not None:
        raise CheckpointError(f"{file}: {why}")
    data = _torch_load(file, map_location)
    why = _format_fault(data)
    if why is not None:
        raise CheckpointError(f"{file}: {why}")
    why = contents_fault(data)
    if why is not None:
        raise CheckpointError(f"{file}: inconsistent checkpoint: {why}")
    return data


def _format_fault(data: Any) -> str | None:
    """Why ``data`` is not a checkpoint of this format (None if it is)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return "not a checkpoint of this project"
    if data.get("format_version") != FORMAT_VERSION:
        return f"checkpoint format {data.get('format_version')}, expected {FORMAT_VERSION}"
    for key in CHECKPOINT_PARTS:
        if key not in data:
            return f"checkpoint lacks {key!r}"
    return None


def _torch_load(file: Path, map_location: str | torch.device) -> Any:
    """``torch.load`` with ``weights_only``; any failure is one CheckpointError line. With ``map_location``
    "meta" the pickle is read and the tensors get their shapes, but no storage is read."""
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds for bad files (zip, unpickling, EOF)
        first = (str(e).strip() or type(e).__name__).splitlines()[0].split(". ")[0]
        raise CheckpointError(f"{file}: truncated, corrupt or unsafe checkpoint ({first[:120]})") from None


CHECKPOINT_PARTS = ("config", "agent", "counters")
AGENT_PARTS = ("policy", "rnd", "optimizer", "obs_rms", "reward_rms", "reward_filter", "rng", "torch_rng")
REQUIRED_COUNTERS = ("update", "agent_steps")


def contents_fault(data: dict[str, Any]) -> str | None:
    """What makes a checkpoint of the right format unusable (None if nothing): a missing part, a
    counter that is not a count, or a config the saved tensors do not fit. The networks' own shapes
    are checked where they are loaded (``learner.agent.load_network``)."""
    cfg, agent, counters = data["config"], data["agent"], data["counters"]
    if not isinstance(cfg, dict):
        return "its config is not a mapping"
    if not isinstance(agent, dict):
        return "its agent is not a mapping"
    missing = [k for k in AGENT_PARTS if k not in agent]
    if missing:
        return f"its agent lacks {', '.join(missing)}"
    if not isinstance(counters, dict) or any(k not in counters for k in REQUIRED_COUNTERS):
        return f"its counters lack {' or '.join(REQUIRED_COUNTERS)}"
    for k, v in counters.items():
        if type(v) is not int or v < 0:  # not isinstance: a bool is an int, and no count
            return f"counter {k!r} is {v!r}, not a count"
    if not isinstance(data.get("obs_rms_ready", False), bool):
        return "obs_rms_ready is not true or false"
    return _shape_fault(cfg, agent)


def _shape_fault(cfg: dict[str, Any], agent: dict[str, Any]) -> str | None:
    """The config's frame size and env count against the normalisers' tensors."""
    obs = agent["obs_rms"]
    mean = obs.get("mean") if isinstance(obs, dict) else None
    if not isinstance(mean, torch.Tensor):
        return "its observation normaliser holds no mean tensor"
    want = (cfg.get("ImageHeight"), cfg.get("ImageWidth"))
    if tuple(mean.shape) != want:
        return (
            f"its config says ImageHeight x ImageWidth = {want[0]} x {want[1]}, its observation normaliser "
            f"is {' x '.join(map(str, mean.shape))}"
        )
    filt = agent["reward_filter"]
    state = filt.get("state") if isinstance(filt, dict) else None
    if not isinstance(state, torch.Tensor) or tuple(state.shape) != (cfg.get("NumWorkers"),):
        shape = list(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
        return f"its config says NumWorkers = {cfg.get('NumWorkers')}, its reward filter holds {shape} streams"
    return None
