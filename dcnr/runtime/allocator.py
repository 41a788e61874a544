"""Process-wide allocator tuning for long-running training processes.

glibc serves big blocks with fresh mmaps and trims the heap top when memory is
freed, so every training step re-faults the pages of its activations (tens of
thousands of minor faults per step, 10-20 % of a CPU step for topology 1). A
process that trains — `dcnr demo`, a PNode — calls `keep_freed_memory()` once at
start: freed memory is reused instead of returned to the kernel. Library users
may call it too; it is never called on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Tell glibc to keep freed memory for reuse; False where glibc's mallopt is absent."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
