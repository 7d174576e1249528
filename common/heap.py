"""How much freed memory the process's C heap keeps for reuse. No processes or sockets here.

An update allocates and frees the same large tensors every minibatch: the policy's input (29 MB in bf16 for
512 samples at 84x84), the conv activations and their gradients. glibc's malloc hands memory at the top of its
heap back to the kernel as soon as it is freed, and serves large requests from fresh mmaps, so every minibatch
faults its pages in again, the kernel zeroing each page: about 650,000 minor page faults per fp32 update on
the CPU at the CPU comparison's settings (``scripts/profile/learner_cpu.py``). Here malloc serves every
request from its heap (``M_MMAP_MAX`` 0) and keeps up to ``M_TOP_PAD`` bytes free at the heap's top, so later
tensors reuse resident pages instead. The cost is memory: the process holds its peak heap plus up to the pad,
freed or not.
"""

from __future__ import annotations

import ctypes

M_TOP_PAD = -2  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
MAX_PAD_BYTES = (1 << 31) - 1  # mallopt takes a C int


def keep_freed_heap(pad_bytes: int) -> bool:
    """Ask glibc's malloc to serve large requests from its heap too, and to keep ``pad_bytes`` of freed
    memory at the top of that heap rather than return it to the kernel.

    Process-wide, for allocations made from then on. Returns True when set; False for ``pad_bytes`` <= 0
    and where the C library is not glibc (macOS, musl), which are left as they are."""
    if pad_bytes <= 0:
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):  # mallopt's parameters are glibc's own
        return False
    heap_only = libc.mallopt(ctypes.c_int(M_MMAP_MAX), ctypes.c_int(0))
    padded = libc.mallopt(ctypes.c_int(M_TOP_PAD), ctypes.c_int(min(pad_bytes, MAX_PAD_BYTES)))
    return bool(heap_only and padded)
