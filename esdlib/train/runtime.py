"""The machine a run uses: device, precision and TF32, resolved and checked once.

**Device and checks.** :func:`resolve_device` is the one reading of ``device="auto"`` (CUDA,
then MPS, then the CPU). :func:`resolve_runtime` resolves a config's device and precision once
and checks them against this machine; :func:`check_runtime` adds the writable folders. Both
raise :class:`~esdlib.train.fields.ConfigError` before any work is done.

**Precision.** :data:`PRECISIONS` are the values of ``RunConfig.precision`` and
``esd bench --precision``: ``"fp32"`` (no autocast), ``"bf16"`` (``torch.autocast`` with
bfloat16, CPU or CUDA), ``"fp16"`` (float16 autocast with a gradient scaler, CUDA only) and
``"auto"``, resolved per device by :func:`resolve_precision` (the rule and the measurements
behind it are in its docstring). :func:`autocast` gives the context a training step runs in.
Whatever the precision, esdlib keeps membrane potentials, eligibilities, firing rates,
BatchNorm statistics, the teacher and the losses in float32; spikes (0/1) are exact in every
format.

**TF32.** On CUDA, float32 matrix products and cuDNN convolutions may run on TF32 tensor
cores (inputs rounded to a 10-bit mantissa, float32 accumulation): several times the float32
throughput, at about bf16's input precision. PyTorch allows it for cuDNN convolutions and
forbids it for matrix products by default; esdlib makes it one choice, ``RunConfig.tf32``
(off: fp32 means float32), applied for the duration of a run by :func:`tf32`.

**Memory.** The CPU allocator setting and the peak-memory measurement live in
:mod:`esdlib.train.memory` (re-exported here).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from esdlib.train.fields import ConfigError
from esdlib.train.memory import (
    device_type,
    keep_freed_memory,
    peak_memory,
    peak_memory_bytes,
    reset_peak_memory,
    trim_heap,
)
from esdlib.train.paths import resolve_path

if TYPE_CHECKING:
    import torch

    from esdlib.train.config import RunConfig

__all__ = ["DEVICE_CHOICES", "DEVICE_PATTERN", "PRECISIONS", "Runtime", "autocast",
           "autocast_dtype", "check_device", "check_runtime", "check_writable_dir",
           "cpu_bf16_units", "keep_freed_memory", "peak_memory", "peak_memory_bytes",
           "precision_problem", "reset_peak_memory", "resolve_device", "resolve_precision",
           "resolve_runtime", "tf32", "tf32_state", "trim_heap"]

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
"""Values of ``precision``: float32, bfloat16 autocast, float16 autocast (CUDA), automatic."""

_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


# ---------------------------------------------------------------------------
# TF32
# ---------------------------------------------------------------------------


def tf32_state() -> dict[str, bool]:
    """Whether TF32 is allowed now: ``{"matmul": …, "cudnn": …}`` (the two PyTorch flags)."""
    import torch

    return {"matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn": bool(torch.backends.cudnn.allow_tf32)}


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Allow (``True``) or forbid (``False``) TF32 in float32 CUDA matmuls and convolutions.

    Sets ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32``
    to ``enabled`` inside the context and restores their previous values on exit. The flags
    are process-wide and only read by CUDA kernels: on the CPU the context changes nothing
    that is computed.

    Args:
        enabled: the value of both flags inside the context.
    """
    import torch

    before = tf32_state()
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before["matmul"]
        torch.backends.cudnn.allow_tf32 = before["cudnn"]


# ---------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------


def cpu_bf16_units() -> dict[str, bool]:
    """Which native bfloat16 matrix instructions this CPU has (PyTorch's own probes).

    Returns:
        ``{"amx_bf16": …, "avx512_bf16": …}``: AMX tiles (Intel Sapphire Rapids and later) and
        the AVX512-BF16 dot-product instructions (Intel Cooper Lake and later, AMD Zen 4 and
        later). Both ``False`` where the probes are missing (other architectures).
    """
    import torch

    def probe(name: str) -> bool:
        fn = getattr(torch.cpu, name, None)
        try:
            return bool(fn()) if fn is not None else False
        except (RuntimeError, OSError):  # pragma: no cover - a probe that cannot run
            return False

    return {"amx_bf16": probe("_is_amx_tile_supported"),
            "avx512_bf16": probe("_is_avx512_bf16_supported")}


def _cuda_bf16(device) -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    index = device.index if getattr(device, "index", None) is not None else None
    with torch.cuda.device(index if index is not None else torch.cuda.current_device()):
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def precision_problem(precision: str, device) -> str | None:
    """Why ``precision`` cannot train on ``device`` (``None`` when it can).

    Args:
        precision: one of :data:`PRECISIONS`.
        device: a ``torch.device`` or a device type (``"cpu"``, ``"cuda"``, ``"mps"``).

    Returns:
        A one-line reason: an unknown precision, ``fp16`` anywhere but on CUDA (float16 needs
        the gradient scaler and has no fast CPU kernels), ``bf16`` on MPS or on a CUDA device
        without native bfloat16 (before Ampere). ``None`` otherwise.
    """
    if precision not in PRECISIONS:
        return f"precision={precision!r} is not valid; choose one of {', '.join(PRECISIONS)}"
    kind = device_type(device)
    if precision == "fp16" and kind != "cuda":
        return (f"precision='fp16' needs a CUDA device (float16 autocast with a gradient "
                f"scaler), but this run would use {kind}; use bf16, fp32 or auto")
    if precision == "bf16" and kind == "mps":
        return "precision='bf16' is not supported on mps by esdlib; use fp32"
    if precision == "bf16" and kind == "cuda" and not _cuda_bf16(
            device if not isinstance(device, str) else None):
        return ("precision='bf16' but this CUDA device has no native bfloat16 (needs compute "
                "capability 8.0 or newer); use fp16, fp32 or auto")
    return None


def resolve_precision(precision: str, device) -> str:
    """The concrete precision (``"fp32"``, ``"bf16"`` or ``"fp16"``) a run uses on ``device``.

    ``"auto"`` picks ``"bf16"`` on CUDA devices with native bfloat16 (compute capability ≥ 8.0)
    and on CPUs with native bfloat16 matrix instructions — AMX or AVX512-BF16
    (:func:`cpu_bf16_units`) — and ``"fp32"`` everywhere else (CPUs without them emulate
    bfloat16 and are slower in it; MPS). The AVX512-BF16-only case was decided by measurement:
    esdlib's training step (spiking ResNet-18, channels-last, ``keep_freed_memory``, SGD step
    included, one thread, fp32 and bf16 steps alternating in one process, medians) on a 2-vCPU
    AMD EPYC with AVX512-BF16 and no AMX, torch 2.14.1, 2026-11-26, machine shared with other
    jobs (indicative):

    ==================================================  ========  ========  =========
    configuration                                       fp32 (s)  bf16 (s)  bf16/fp32
    ==================================================  ========  ========  =========
    ESD, ×1, 3×32×32, batch 16, T = 6 (reference)        1.509     0.898     0.60
    BPTT, same                                           3.167     1.838     0.58
    ESD, ×0.25, 16×16 (small profile), batch 16, T 4     0.064     0.054     0.84
    RateBP, same                                         0.042     0.038     0.91
    ==================================================  ========  ========  =========

    bf16 is faster at both scales there (before esdlib kept the branches' depthwise
    convolutions in float32 and stopped copying half-precision maps to float32 for time
    averages, plain autocast made the default-profile step slower: 0.099 vs 0.083 s). A run
    with ``"auto"`` records the precision it resolved to (``extra.runtime.precision``).

    Args:
        precision: one of :data:`PRECISIONS`.
        device: a ``torch.device`` or device type.

    Returns:
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Raises:
        ValueError: the precision is unknown or cannot run on ``device``
            (:func:`precision_problem`).
    """
    problem = precision_problem(precision, device)
    if problem:
        raise ValueError(problem)
    if precision != "auto":
        return precision
    kind = device_type(device)
    if kind == "cuda":
        return "bf16" if _cuda_bf16(device if not isinstance(device, str) else None) else "fp32"
    if kind == "cpu" and any(cpu_bf16_units().values()):
        return "bf16"
    return "fp32"


def autocast_dtype(precision: str):
    """The autocast ``torch.dtype`` of a resolved precision (``None`` for ``"fp32"``)."""
    import torch

    if precision == "fp32":
        return None
    if precision not in _DTYPES:
        raise ValueError(f"precision must be resolved to fp32, bf16 or fp16, got {precision!r}")
    return getattr(torch, _DTYPES[precision])


def autocast(precision: str, device_type: str):
    """The context a training step runs in: ``torch.autocast`` for bf16/fp16, else a no-op.

    Args:
        precision: a resolved precision (``"fp32"``, ``"bf16"`` or ``"fp16"``).
        device_type: ``"cpu"`` or ``"cuda"``.

    Returns:
        A context manager.
    """
    import torch

    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


# ---------------------------------------------------------------------------
# Device
# ---------------------------------------------------------------------------

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda|cuda:\d+|mps")
"""Valid ``device`` names (matched with ``fullmatch``)."""
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def _device_problem(name: str) -> str | None:
    """Why ``device=name`` cannot be used on this machine (``None`` when it can)."""
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"device={name!r} but CUDA is not available on this machine (use cpu or auto)"
        if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
            return (f"device={name!r} but this machine has {torch.cuda.device_count()} CUDA "
                    f"device(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    if name == "mps" and not _mps_available():
        return "device='mps' but MPS (Apple GPU) is not available on this machine (use cpu or auto)"
    return None


def check_device(name: str) -> None:
    """Check that a device name is valid and available here.

    Raises:
        ConfigError: not one of auto, cpu, cuda, cuda:N, mps, or not available.
    """
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(f"device={name!r} is not valid; expected {', '.join(DEVICE_CHOICES)}")
    problem = _device_problem(name)
    if problem:
        raise ConfigError(problem)


def resolve_device(name: str) -> torch.device:
    """The one device resolver: ``"auto"`` → CUDA if available, else MPS, else the CPU.

    Other names (``cpu``, ``cuda``, ``cuda:N``, ``mps``) are checked to exist here
    (:func:`check_device`).

    Raises:
        ConfigError: an invalid name or a device this machine does not have.
    """
    import torch

    check_device(name)
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if _mps_available() else "cpu")


def check_writable_dir(path: str | os.PathLike, what: str) -> None:
    """Check that ``path`` is, or can be created as, a folder we can write files into.

    The folder (and its missing parents) is created, a temporary file is created and removed
    in it, and the folders this check created are removed again, so the check is exact
    (read-only mounts, ``/proc``, a file in the way) and leaves nothing behind.

    Raises:
        ConfigError: naming ``what`` (e.g. ``"out_dir"``), the path and the OS error.
    """
    import tempfile

    p = resolve_path(path)
    created = [d for d in (p, *p.parents) if not d.exists()]
    try:
        for attempt in range(3):
            p.mkdir(parents=True, exist_ok=True)
            try:
                with tempfile.TemporaryFile(dir=p, prefix=".esd-write-probe."):
                    pass
                break
            except FileNotFoundError:
                # another process (a DDP rank) removed the folder it had created for its own
                # check between our mkdir and our probe: create it again
                if attempt == 2:
                    raise
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"{what}={os.fspath(path)!r} is not a writable folder ({p}: {reason})"
                          ) from None
    finally:
        for d in created:  # deepest first
            try:
                d.rmdir()
            except OSError:
                break


# ---------------------------------------------------------------------------
# A run's runtime: resolved and checked once
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """How a run uses this machine, resolved once from its config (:func:`resolve_runtime`).

    Attributes:
        device: the resolved device (:func:`resolve_device`).
        precision: the resolved precision, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        channels_last: the channels-last memory format for the model and the batches.
        keep_freed_memory: glibc should keep freed memory (requested and the run uses the
            CPU); :meth:`apply` applies it.
        compile: the ``torch.compile`` mode of the spike pass (``"none"``: eager).
        tf32: TF32 is in effect (requested and the run uses CUDA).
        tf32_note: why a requested ``tf32`` has no effect (``None`` otherwise).
    """

    device: torch.device
    precision: str
    channels_last: bool
    keep_freed_memory: bool
    compile: str
    tf32: bool
    tf32_note: str | None = None

    def apply(self) -> dict[str, Any]:
        """Apply the process-wide settings (:func:`keep_freed_memory`) and describe them.

        Returns:
            The record's ``extra.runtime``: ``{"precision", "channels_last",
            "keep_freed_memory" (whether glibc accepted), "compile", "tf32"}`` and
            ``tf32_note`` when set.
        """
        kept = bool(self.keep_freed_memory and keep_freed_memory())
        settings = {"precision": self.precision, "channels_last": self.channels_last,
                    "keep_freed_memory": kept, "compile": self.compile, "tf32": self.tf32}
        if self.tf32_note is not None:
            settings["tf32_note"] = self.tf32_note
        return settings


def resolve_runtime(cfg: RunConfig) -> Runtime:
    """Resolve and check a config's device and precision against this machine, once.

    ``precision`` is checked (:func:`precision_problem`) and resolved
    (:func:`resolve_precision`; ``"auto"`` becomes ``"fp32"`` or ``"bf16"``) exactly once.
    Nothing is applied: :meth:`Runtime.apply` does that.

    Raises:
        ConfigError: the device does not exist here, or the precision cannot run on it.
    """
    device = resolve_device(cfg.device)
    try:
        precision = resolve_precision(cfg.precision, device)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    on_cuda = device.type == "cuda"
    note = None
    if cfg.tf32 and not on_cuda:
        note = (f"tf32=true has no effect on {device.type}: TF32 is a mode of CUDA tensor "
                "cores; float32 arithmetic was used")
    return Runtime(device=device, precision=precision, channels_last=cfg.channels_last,
                   keep_freed_memory=bool(cfg.keep_freed_memory and device.type == "cpu"),
                   compile=cfg.compile, tf32=bool(cfg.tf32 and on_cuda), tf32_note=note)


def check_runtime(cfg: RunConfig) -> Runtime:
    """Checks of a config against this machine, run before a run starts any work.

    :class:`RunConfig` validation is machine-independent (a stored config must load
    anywhere); this adds what only the machine that trains can tell: the device exists,
    the ``precision`` can run on it (``fp16`` needs CUDA, ``bf16`` a CUDA device with native
    bfloat16 or the CPU: :func:`precision_problem`), and ``out_dir``/``checkpoint_dir``/
    ``cache_dir`` are writable folders.

    Returns:
        The run's :class:`Runtime` (:func:`resolve_runtime`), so that the caller resolves
        nothing a second time.

    Raises:
        ConfigError: the first problem found, in one line.
    """
    runtime = resolve_runtime(cfg)
    for what in ("out_dir", "checkpoint_dir", "cache_dir"):
        value = getattr(cfg, what)
        if value is not None and (what != "cache_dir" or cfg.dataset == "cifar10_dvs"):
            check_writable_dir(value, what)
    return runtime
