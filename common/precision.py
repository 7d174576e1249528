"""Which dtype the policy network's autocast region uses, per device. No processes or sockets here.

bf16 keeps fp32's exponent with an 8-bit mantissa. It pays where the hardware multiplies bf16
natively: CUDA GPUs, and CPUs with AVX512_BF16 or AMX (oneDNN then runs bf16 convolutions and
matmuls with fp32 accumulation). On other CPUs oneDNN emulates it, which is slower than fp32, so
``auto`` stays fp32 there. On a CPU it pays only for large enough frames: at 84x84, bf16 ran the whole
system 1.34-1.41x faster than fp32 on a 2-core AVX512_BF16 machine, and at 44x44 it ran it slower
(0.72-0.90x), its small kernels losing more than they gain (docs/benchmarks.md).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

NATIVE_BF16_CPU_FEATURES = ("avx512_bf16", "amx_bf16")
MIN_BF16_CPU_PIXELS = 84 * 84  # the smallest frame bf16 measured faster at on a CPU; smaller ones take fp32


def cpuinfo_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of the first CPU in ``path`` (Linux's /proc/cpuinfo), or none where it cannot be read."""
    try:
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512_BF16 or AMX): as PyTorch detects it where it can
    (``torch.cpu.get_capabilities``, not in every torch the project admits), else from /proc/cpuinfo's flags."""
    get_caps = getattr(torch.cpu, "get_capabilities", None)
    if get_caps is not None:
        caps = get_caps()
        return any(bool(caps.get(f)) for f in NATIVE_BF16_CPU_FEATURES)
    return any(f in cpuinfo_flags() for f in NATIVE_BF16_CPU_FEATURES)


def autocast_dtype(precision: str, device: torch.device | str, frame_hw: tuple[int, int]) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (auto / fp32 / bf16) on ``device`` for frames of ``frame_hw``
    (height, width), or None for plain fp32.

    ``auto`` is bf16 on CUDA, and on a CPU with native bf16 for frames of at least MIN_BF16_CPU_PIXELS;
    fp32 elsewhere."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return None
    kind = torch.device(device).type
    big_frames = frame_hw[0] * frame_hw[1] >= MIN_BF16_CPU_PIXELS
    native = kind == "cuda" or (kind == "cpu" and cpu_has_native_bf16() and big_frames)
    return torch.bfloat16 if native else None


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> AbstractContextManager:
    """An autocast region of ``dtype`` on ``device``'s kind, or no region at all when ``dtype`` is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
