"""Provenance of a run or benchmark record: when, on what machine and software, at what commit.

:func:`environment_info` names the device the run used (``"auto"`` resolved by
:func:`esdlib.train.runtime.resolve_device`), :func:`git_revision` the code's commit and
whether tracked files changed, :func:`utc_now_iso` the time.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from datetime import datetime, timezone
from typing import Any

from esdlib.train import paths

__all__ = ["environment_info", "git_revision", "utc_now_iso"]


def utc_now_iso() -> str:
    """The current UTC time as ISO-8601, e.g. ``"2025-11-25T02:32:00Z"``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def environment_info(device: Any = None, *, include_hostname: bool = False) -> dict[str, Any]:
    """Describe the software and hardware a run used.

    Args:
        device: The device the run used (``"cpu"``, ``"cuda:0"``, ``"mps"``, a
            ``torch.device``...); ``None`` or ``"auto"`` = the device ``"auto"`` resolves to
            (:func:`esdlib.train.runtime.resolve_device`: CUDA, then MPS, then the CPU).
        include_hostname: Also record the machine's host name (off by default:
            records are committed to the repository).

    Returns:
        ``{"python", "torch", "numpy", "cuda", "device_name", "cpu_count",
        "torch_threads", "platform"[, "hostname"]}``; ``cuda`` is the CUDA version
        torch was built with when the run used a CUDA device, else ``None``.
    """
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": None,
        "numpy": None,
        "cuda": None,
        "device_name": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": None,
        "platform": platform.platform(),
    }
    with contextlib.suppress(ImportError):
        import numpy

        info["numpy"] = numpy.__version__
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if device is None or str(device) == "auto":
            from esdlib.train.runtime import resolve_device

            device = resolve_device("auto")
        kind = str(device).split(":")[0]
        if kind == "cuda" and torch.cuda.is_available():
            info["cuda"] = torch.version.cuda
            info["device_name"] = torch.cuda.get_device_name(torch.device(device))
        elif kind == "mps":
            info["device_name"] = f"Apple MPS ({platform.machine()})"
    if include_hostname:
        info["hostname"] = platform.node()
    return info


def git_revision(path: str | os.PathLike = ".") -> str | None:
    """The commit checked out at ``path``, with ``"+dirty"`` if tracked files changed.

    Untracked files (e.g. new results) and changes under
    :data:`esdlib.train.paths.GENERATED_PATHS` (relative to the repository's top level) do not
    count as changes.

    Returns:
        e.g. ``"3f2c...e1"`` or ``"3f2c...e1+dirty"``; ``None`` outside a git
        repository, in a repository without commits, or when git is missing.
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", os.fspath(path), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()

    try:
        rev = git("rev-parse", "--verify", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                    *(f":(top,exclude){p}" for p in paths.GENERATED_PATHS))
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "") if rev else None


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------
