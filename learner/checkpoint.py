"""Checkpoints: atomic writes (temp file + rename) into RUN_DIR/checkpoints/, latest.pt always the newest.

A checkpoint is a dict of tensors and plain Python values, loaded with ``weights_only=True``, and
only under a torch whose ``weights_only`` loader has no known holes (MIN_TORCH).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "fast-rnd-checkpoint"
FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
_NUMBERED = re.compile(r"^ckpt_(\d+)\.pt$")
# torch.load(weights_only=True) could run code or corrupt memory on crafted files before 2.6
# (CVE-2025-32434) and before 2.10 (CVE-2026-24747); checkpoints come from other people's runs.
MIN_TORCH = (2, 10)


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint; one line says why."""


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
    """Write ckpt_<update>.pt and latest.pt atomically; keep the newest ``keep`` numbered ones."""
    ckpt_dir = Path(run_dir) / "checkpoints"
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


def resolve_checkpoint(path: str | Path) -> Path:
    """A run dir, a checkpoints dir or a file -> the checkpoint file."""
    p = Path(path)
    for cand in (p, p / "checkpoints" / "latest.pt", p / "latest.pt"):
        if cand.is_file():
            return cand
    raise CheckpointError(f"no checkpoint at {path} (looked for the file, checkpoints/latest.pt, latest.pt)")


def check_torch_version(version: str) -> None:
    """Refuse to unpickle anything under a torch older than MIN_TORCH (or one whose version is unreadable)."""
    m = re.match(r"^(\d+)\.(\d+)", version)
    if m is None or (int(m[1]), int(m[2])) < MIN_TORCH:
        floor = ".".join(map(str, MIN_TORCH))
        raise CheckpointError(f"torch {version} is older than {floor}: its weights_only loader can run code from a "
                              f"crafted checkpoint (CVE-2025-32434, CVE-2026-24747); install torch>={floor}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; a truncated, foreign or unsafe file raises CheckpointError."""
    check_torch_version(str(torch.__version__))
    file = resolve_checkpoint(path)
    with open(file, "rb") as f:
        if f.read(4) != ZIP_MAGIC:
            raise CheckpointError(f"{file}: not a checkpoint (not a PyTorch zip archive)")
    try:
        data = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds for bad files (zip, unpickling, EOF)
        first = (str(e).strip() or type(e).__name__).splitlines()[0].split(". ")[0]
        raise CheckpointError(f"{file}: truncated, corrupt or unsafe checkpoint ({first[:120]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not a checkpoint of this project")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{file}: checkpoint format {data.get('format_version')}, expected {FORMAT_VERSION}")
    for key in ("config", "agent", "counters"):
        if key not in data:
            raise CheckpointError(f"{file}: checkpoint lacks {key!r}")
    return data
