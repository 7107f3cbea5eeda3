"""Performance settings: numeric precision, TF32, and the CPU allocator — applied only when called.

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

**Allocator.** PyTorch on the CPU allocates every activation with ``malloc``. glibc serves
large blocks (≥ 128 KiB, adapting up to 32 MiB) with a fresh ``mmap`` and gives them back on
``free``; the kernel then has to zero every page again at the next training step's first
touch. A spiking network's spike pass allocates the same few-MiB maps ``T`` times per layer, so
on a small VM these page faults cost a visible share of a step (the benchmark counts them as
``page_faults``). :func:`keep_freed_memory` asks glibc to serve all blocks from its heap and to
keep freed memory for reuse — the CPU counterpart of a caching allocator. The resident set
then stays near its high-water mark, which is what a training process reaches anyway.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator

__all__ = ["PRECISIONS", "autocast", "autocast_dtype", "cpu_bf16_units", "keep_freed_memory",
           "precision_problem", "resolve_precision", "tf32", "tf32_state"]

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
"""Values of ``precision``: float32, bfloat16 autocast, float16 autocast (CUDA), automatic."""

_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}

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


def _device_type(device) -> str:
    return device if isinstance(device, str) else device.type


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
    kind = _device_type(device).split(":")[0]
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
    kind = _device_type(device).split(":")[0]
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
