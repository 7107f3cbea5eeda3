"""Process-wide CPU performance settings — applied only when called, never at import.

PyTorch on the CPU allocates every activation with ``malloc``. glibc serves large blocks
(≥ 128 KiB, adapting up to 32 MiB) with a fresh ``mmap`` and gives them back on ``free``;
the kernel then has to zero every page again at the next training step's first touch. A
spiking network's spike pass allocates the same few-MiB maps ``T`` times per layer, so on a
small VM these page faults cost a visible share of a step (the benchmark counts them as
``page_faults``). :func:`keep_freed_memory` asks glibc to serve all blocks from its heap and to
keep freed memory for reuse — the CPU counterpart of a caching allocator. The resident set
then stays near its high-water mark, which is what a training process reaches anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def keep_freed_memory(top_pad_bytes: int = 64 * 2**20) -> bool:
    """Make glibc's ``malloc`` reuse freed memory instead of unmapping and re-faulting it.

    Sets ``M_MMAP_MAX = 0`` (no per-block ``mmap``: big tensors come from the heap),
    ``M_TRIM_THRESHOLD`` to its maximum (freed heap memory is not returned to the OS) and
    ``M_TOP_PAD`` (the heap grows in steps of at least this size). It affects the whole
    process and cannot be undone except by new ``mallopt`` calls; an explicit
    ``malloc_trim(0)`` still returns free pages. Call it once, early, in a process that trains
    or benchmarks on the CPU (``esd train`` and ``esd bench`` do).

    Args:
        top_pad_bytes: extra bytes requested whenever the heap grows (≥ 0).

    Returns:
        ``True`` if glibc accepted all settings; ``False`` on other C libraries / platforms,
        where nothing is changed.
    """
    if top_pad_bytes < 0:
        raise ValueError(f"top_pad_bytes must be >= 0, got {top_pad_bytes}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _INT_MAX),
                (_M_TOP_PAD, min(int(top_pad_bytes), _INT_MAX)))
    return all(mallopt(param, value) == 1 for param, value in settings)
