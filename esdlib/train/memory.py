"""Process memory: the CPU allocator and peak memory, one function each.

**Allocator.** PyTorch on the CPU allocates every activation with ``malloc``. glibc serves
large blocks (≥ 128 KiB, adapting up to 32 MiB) with a fresh ``mmap`` and gives them back on
``free``; the kernel then has to zero every page again at the next training step's first
touch. A spiking network's spike pass allocates the same few-MiB maps ``T`` times per layer, so
on a small VM these page faults cost a visible share of a step (the benchmark counts them as
``page_faults``). :func:`keep_freed_memory` asks glibc to serve all blocks from its heap and to
keep freed memory for reuse — the CPU counterpart of a caching allocator. The resident set
then stays near its high-water mark, which is what a training process reaches anyway.

**Peak memory.** :func:`peak_memory` is the one measurement of a run's or a benchmark's peak
(``torch.cuda.max_memory_allocated`` on CUDA, the resident-set high-water mark elsewhere).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from typing import Any

__all__ = ["device_type", "keep_freed_memory", "peak_memory", "peak_memory_bytes",
           "reset_peak_memory", "trim_heap"]

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, the one way esdlib finds it (Linux only; ``None`` elsewhere or when missing)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def trim_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``), where possible."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def keep_freed_memory(top_pad_bytes: int = 64 * 2**20) -> bool:
    """Make glibc's ``malloc`` reuse freed memory instead of unmapping and re-faulting it.

    Sets ``M_MMAP_MAX = 0`` (no per-block ``mmap``: big tensors come from the heap),
    ``M_TRIM_THRESHOLD`` to its maximum (freed heap memory is not returned to the OS) and
    ``M_TOP_PAD`` (the heap grows in steps of at least this size). It affects the whole
    process and cannot be undone except by new ``mallopt`` calls; an explicit
    ``malloc_trim(0)`` still returns free pages. Call it once, early, in a process that trains
    or benchmarks on the CPU: :func:`esdlib.fit` (``esd train``, the experiment notebooks) calls
    it when ``RunConfig.keep_freed_memory`` is on (the default) and the run uses the CPU, and
    ``esd bench`` calls it in its timing process unless ``--no-keep-freed-memory``.

    Args:
        top_pad_bytes: extra bytes requested whenever the heap grows (≥ 0).

    Returns:
        ``True`` if glibc accepted all settings; ``False`` on other C libraries / platforms,
        where nothing is changed.
    """
    if top_pad_bytes < 0:
        raise ValueError(f"top_pad_bytes must be >= 0, got {top_pad_bytes}")
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _INT_MAX),
                (_M_TOP_PAD, min(int(top_pad_bytes), _INT_MAX)))
    return all(mallopt(param, value) == 1 for param, value in settings)


def _vm_hwm_bytes() -> int | None:
    """``VmHWM`` (resident-set high-water mark of this process), Linux only."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def device_type(device: Any) -> str:
    """The type of a ``torch.device`` or device name: ``"cuda"`` for ``cuda:1``."""
    return str(device).split(":")[0]


def peak_memory(device: Any) -> tuple[int, str]:
    """The peak memory counter of ``device`` in bytes, and the counter's name.

    CUDA: ``torch.cuda.max_memory_allocated`` (``"cuda_max_memory_allocated"``). Elsewhere
    (CPU; MPS shares the host's memory) the process's resident-set high-water mark: ``VmHWM``
    (``"cpu_vmhwm"``; :func:`reset_peak_memory` resets it) where Linux has it, else
    ``getrusage``'s ``ru_maxrss`` (``"cpu_ru_maxrss"``, never reset).

    Args:
        device: a ``torch.device`` or device name.
    """
    import torch

    if device_type(device) == "cuda":
        device = torch.device(device)
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    hwm = _vm_hwm_bytes()
    if hwm is not None:
        return hwm, "cpu_vmhwm"
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "cpu_ru_maxrss"  # Linux: KiB


def peak_memory_bytes(device: Any) -> int:
    """The peak memory of ``device`` in bytes (:func:`peak_memory` without the name)."""
    return peak_memory(device)[0]


def reset_peak_memory(device: Any) -> bool:
    """Reset the peak counter of ``device`` to the current usage; ``False`` where impossible."""
    import gc

    import torch

    if device_type(device) == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return True
    gc.collect()
    trim_heap()
    if _vm_hwm_bytes() is None:
        return False
    try:  # Linux >= 4.0: "5" resets VmHWM to the current resident set size
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False
