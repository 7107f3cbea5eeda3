"""Process probes of the benchmark: peak-memory counters, page faults and machine load.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and the resident-set high-water mark
``VmHWM`` (reset through ``/proc/self/clear_refs``) on the CPU; ``getrusage`` is the fallback.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time

import torch


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``), where possible."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _vm_hwm_bytes() -> int | None:
    """``VmHWM`` (resident-set high-water mark of this process's memory map), Linux only."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak(device_type: str) -> bool:
    """Reset the peak counter to the current usage; ``False`` where that is impossible."""
    if device_type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return True
    gc.collect()
    _trim_heap()
    if _vm_hwm_bytes() is None:
        return False
    try:  # Linux >= 4.0: "5" resets VmHWM to the current resident set size
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_now(device_type: str) -> tuple[int, str]:
    """The peak counter in bytes, and its name."""
    if device_type == "cuda":
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated()), "cuda_max_memory_allocated"
    hwm = _vm_hwm_bytes()
    if hwm is not None:
        return hwm, "cpu_vmhwm"
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "cpu_ru_maxrss"  # Linux: KiB


class _LoadProbe:
    """This process's CPU time and the share of the machine used by others over an interval."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.busy = time.perf_counter(), time.process_time(), _busy_s()
        self.faults = _minor_faults()

    def stop(self) -> tuple[float, float | None, int | None]:
        """``(process CPU seconds, fraction of all CPUs busy with other work or stolen,
        minor page faults)``."""
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        faults = _minor_faults()
        faults = None if faults is None or self.faults is None else faults - self.faults
        busy = _busy_s()
        if busy is None or self.busy is None or wall <= 0:
            return cpu, None, faults
        others = (busy - self.busy - cpu) / (wall * (os.cpu_count() or 1))
        return cpu, min(1.0, max(0.0, others)), faults


def _minor_faults() -> int | None:
    """Minor page faults of this process so far (fresh pages zeroed by the kernel)."""
    try:
        import resource
    except ImportError:
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def _busy_s() -> float | None:
    """Seconds all CPUs spent busy (incl. stolen) since boot, from ``/proc/stat``; Linux only."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _wait_quiet(max_wait_s: float, threshold: float, window_s: float = 0.2) -> None:
    """Sleep until other processes use at most ``threshold`` of all CPUs, or ``max_wait_s``."""
    if max_wait_s <= 0 or _busy_s() is None:
        return
    deadline = time.perf_counter() + max_wait_s
    while time.perf_counter() < deadline:
        probe = _LoadProbe()
        time.sleep(window_s)
        _, others, _ = probe.stop()
        if others is None or others <= threshold:
            return
