"""The learner's heap setting: with it, large tensors freed and allocated again reuse resident pages
instead of faulting them in anew. Each case runs in a fresh interpreter, since malloc's settings are
process-wide and cannot be put back."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import pytest

from common.heap import keep_freed_heap

GLIBC = hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
TENSOR_MB = 64  # over glibc's largest dynamic mmap threshold (32 MiB), so mmapped afresh without a pad
PAD_MB = 256
# A freed chunk that a small allocation cut off from the heap's top is reused only by a request it can hold,
# so the first allocations walk through the pad, touching it once; after that its pages stay resident and are reused.
FAULTS = """
import json, resource, sys, torch
from common.heap import keep_freed_heap
print(json.dumps({"set": keep_freed_heap(int(sys.argv[1]))}))
def faults_of_one():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(int(sys.argv[2]) << 18).fill_(1.0)  # 4-byte floats: MiB << 18 of them
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
walk = [faults_of_one() for _ in range(4 * int(sys.argv[1]) // (int(sys.argv[2]) << 20) + 8)]
print(json.dumps({"faults": min(walk[-4:])}))
"""


def faults_per_allocation(pad_bytes: int) -> tuple[bool, int]:
    """(whether the pad was set, fewest minor page faults of one TENSOR_MB allocate-fill-free once the
    allocations have walked through the pad four times over)."""
    out = subprocess.run(
        [sys.executable, "-c", FAULTS, str(pad_bytes), str(TENSOR_MB)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return json.loads(out[0])["set"], json.loads(out[1])["faults"]


def test_no_pad_leaves_malloc_alone() -> None:
    assert keep_freed_heap(0) is False
    assert keep_freed_heap(-1) is False


@pytest.mark.skipif(not GLIBC, reason="mallopt's M_TOP_PAD is glibc's")
def test_pad_makes_a_freed_tensor_reuse_its_pages() -> None:
    pages = (TENSOR_MB << 20) // 4096
    was_set, padded = faults_per_allocation(PAD_MB << 20)
    unset, plain = faults_per_allocation(0)
    assert was_set and not unset
    assert plain > pages // 2, "without the pad each allocation should fault its pages in"
    assert padded < pages // 20, f"{padded} faults for a tensor of {pages} pages with the pad"
