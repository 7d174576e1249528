"""The torch APIs the project calls where they may be missing from the lowest torch pyproject.toml admits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common import precision
from common.precision import autocast_dtype, cpu_has_native_bf16, cpuinfo_flags

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse sse2 avx2 avx512f {extra}
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu sse
"""


def write_cpuinfo(tmp_path: Path, extra: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra=extra))
    return str(path)


def test_cpuinfo_flags_reads_the_first_cpu(tmp_path) -> None:
    flags = cpuinfo_flags(write_cpuinfo(tmp_path, "avx512_bf16 amx_tile"))
    assert {"avx2", "avx512_bf16", "amx_tile"} <= flags and "bugs" not in flags
    assert cpuinfo_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize(
    "extra, native", [("avx512_bf16", True), ("amx_bf16", True), ("avx512_vnni", False), ("", False)]
)
def test_without_get_capabilities_the_flags_decide(monkeypatch, tmp_path, extra, native) -> None:
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    path = write_cpuinfo(tmp_path, extra)
    monkeypatch.setattr(precision, "cpuinfo_flags", lambda: cpuinfo_flags(path))
    assert cpu_has_native_bf16() is native
    assert autocast_dtype("auto", "cpu", (84, 84)) is (torch.bfloat16 if native else None)


def test_the_fallback_agrees_with_torch_on_this_cpu(monkeypatch) -> None:
    if not hasattr(torch.cpu, "get_capabilities") or not Path("/proc/cpuinfo").is_file():
        pytest.skip("needs torch.cpu.get_capabilities and /proc/cpuinfo to compare")
    by_torch = cpu_has_native_bf16()
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    assert cpu_has_native_bf16() is by_torch
