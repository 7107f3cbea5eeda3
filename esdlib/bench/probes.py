"""Process probes of the benchmark: CPU time, page faults and machine load.

Peak memory is measured by :func:`esdlib.train.memory.peak_memory` (one counter for run and
benchmark records: ``torch.cuda.max_memory_allocated`` on CUDA, the resident-set high-water mark
``VmHWM``, reset by :func:`esdlib.train.memory.reset_peak_memory`, on the CPU).
"""

from __future__ import annotations

import os
import time

__all__ = ["LoadProbe", "wait_quiet"]


class LoadProbe:
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


def wait_quiet(max_wait_s: float, threshold: float, window_s: float = 0.2) -> None:
    """Sleep until other processes use at most ``threshold`` of all CPUs, or ``max_wait_s``."""
    if max_wait_s <= 0 or _busy_s() is None:
        return
    deadline = time.perf_counter() + max_wait_s
    while time.perf_counter() < deadline:
        probe = LoadProbe()
        time.sleep(window_s)
        _, others, _ = probe.stop()
        if others is None or others <= threshold:
            return
