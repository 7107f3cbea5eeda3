"""Training-cost benchmark: step time, its phases, autograd memory and peak memory versus ``T``.

:func:`run_bench` trains every configuration of a grid (architecture × batch × method × ``T``)
for a few steps and reports, per training step (``zero_grad`` + the method's step + optimiser
step):

- **time** (seconds): median, min and max over ``steps`` timed steps after ``warmup`` steps, and
  the median of each *phase*, taken from the methods' ``timer`` hook — ``spike_pass``,
  ``rate_forward`` (rate pass + loss) and ``backward`` for two-pass methods, ``forward`` (incl.
  loss) and ``backward`` for BPTT — plus ``optimizer`` (``zero_grad`` + ``step``, timed here) and
  ``other`` (the rest: ``reset_state``, Python overhead). Two contention indicators per step:
  ``step_cpu_s`` (CPU seconds this process used, all threads; less sensitive to other load than
  wall time) and ``load_other`` (fraction of all CPUs busy with other processes or stolen by the
  hypervisor during the step, from ``/proc/stat``; ``None`` elsewhere); ``page_faults`` counts
  the minor page faults of a step (fresh memory the kernel had to zero). With 2 OpenMP threads on
  a 2-core machine, other load slows a step far more than its CPU share (a descheduled thread
  stalls the other at every barrier): before each timed step the benchmark waits up to
  ``quiet_wait_s`` for a quiet machine, and ``step_s_quiet`` is the median over the steps that
  stayed quiet (``load_other ≤ quiet_load``; ``n_quiet`` of them);
- **saved bytes**: the bytes autograd holds for the backward pass, exact and independent of the
  allocator. Every tensor saved while the step's graph is built goes through
  :class:`SavedTensorMeter` (``torch.autograd.graph.saved_tensors_hooks``); at the moment the
  backward starts, the unique storages of the saved tensors still alive are summed
  (``untyped_storage().nbytes()``), excluding storages of the model's parameters and buffers
  (the weights are held anyway). ``state_bytes`` adds what the modules themselves hold at that
  moment outside autograd (recorded rates, BN statistics; storages counted once);
- **peak memory**: each configuration runs in a **fresh subprocess**
  (``python -m esdlib.bench --worker SPEC``, see :func:`measure_peak`) that builds the model and
  SGD optimiser and runs one inference batch and one training step as warm-up (first-call
  allocations, library code paged in, momentum buffers created). It then resets the peak
  counter, runs one inference batch (:func:`esdlib.evaluate_batch`, ``model.eval()``, same batch
  and ``T``) and reads the peak (``peak_baseline_bytes``), resets the counter again, runs
  ``peak_steps`` training steps and reads the peak (``peak_bytes``).
  ``peak_growth_bytes = peak_bytes − peak_baseline_bytes`` is what a training step needs beyond
  a forward-only pass: activations kept for backward, gradients (freed between steps by
  ``zero_grad(set_to_none=True)``) and temporaries; the parameters and the optimiser state are
  resident in both and reported exactly instead (``param_bytes``, ``optimizer_state_bytes``).
  The counter is ``torch.cuda.max_memory_allocated`` (reset by ``reset_peak_memory_stats``) on
  CUDA. On the CPU it is the resident-set high-water mark ``VmHWM`` of ``/proc/self/status``,
  reset by writing ``5`` to ``/proc/self/clear_refs`` (Linux ≥ 4.0) after ``gc.collect()`` and
  glibc ``malloc_trim(0)`` (free heap pages go back to the OS, so the reset level is the live
  memory). ``getrusage(RUSAGE_SELF).ru_maxrss`` is only the fallback (``peak_source`` says which
  counter and whether it could be reset): in a child started by ``exec`` it includes the
  parent's resident set at ``fork`` (Linux keeps the pre-exec high-water mark in
  ``signal->maxrss``), which ``clear_refs`` does not reset — from a benchmark process holding
  GBs it reads the same for every configuration;
- **inference time** per batch at each ``T`` (:func:`esdlib.evaluate_batch`, ``model.eval()``).

Shared machines are noisy: configurations are run *interleaved* (one step of every
configuration per repetition, in a freshly shuffled order), medians and min–max are reported,
and methods are compared as ratios of numbers measured in the same run (:func:`bench_table`).
Precisions (``BenchConfig.precisions``, e.g. fp32 and bf16) are one more axis of the grid, so
they too are timed side by side in one run; each precision trains its own copy of the model.
Times of different hosts are never divided by each other here: a cross-host ratio mixes host
speed and implementation speed.
The first warm-up step of every configuration carries the saved-tensor hooks (it is not timed).

One JSON record per run is written atomically to ``results/bench/<bench_id>.json``
(:func:`write_bench_record`); :func:`load_bench` reads them into a table, :func:`bench_table`
compares methods and :func:`plot_bench` draws time and saved memory versus ``T``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from esdlib.losses import LossConfig
from esdlib.methods import BRANCH_METHODS, METHODS, evaluate_batch, get_method
from esdlib.models import ARCHITECTURES, build_model
from esdlib.results import (
    atomic_write_json,
    environment_info,
    git_revision,
    results_dir,
    to_jsonable,
    utc_now_iso,
)

if TYPE_CHECKING:
    import argparse

    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "BENCH_COLUMNS", "BENCH_SCHEMA", "PHASES", "RATIO_PAIRS",
    "BenchConfig", "SavedTensorMeter", "add_bench_arguments",
    "bench_command", "bench_frame", "bench_table", "default_bench_dir", "held_tensors",
    "live_tensor_bytes", "load_bench", "measure_peak", "phase_table", "plot_bench", "run_bench",
    "validate_bench_record", "write_bench_record",
]

BENCH_SCHEMA = 1
"""Version of the benchmark record layout (key ``bench_schema``)."""

PHASES = ("spike_pass", "rate_forward", "forward", "backward", "optimizer", "other")
"""Phases of a training step; a method reports the ones it has, the others are ``None``."""

RATIO_PAIRS = (("esd", "ratebp"), ("bptt", "esd"), ("bptt", "ratebp"))
"""Method pairs ``(a, b)`` compared by :func:`bench_table` as ``a/b`` ratios within one run."""

_PKG_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def _positive_ints(name: str, values: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if not out or any(v < 1 for v in out):
        raise ValueError(f"{name} must be a non-empty list of integers >= 1, got {list(values)}")
    return out


@dataclass(frozen=True)
class BenchConfig:
    """A benchmark grid and how to measure it (validated at construction).

    Args:
        archs: architectures (``ARCHITECTURES``).
        methods: training methods (``esdlib.METHODS``).
        Ts: numbers of timesteps.
        batches: batch sizes (samples).
        width: channel multiplier.
        image_size: input height = width (pixels); the input is random ``N(0, 1)`` images.
        in_channels: input channels.
        num_classes: classes.
        warmup: untimed steps per configuration (the first also measures saved bytes).
        steps: timed steps per configuration.
        threads: CPU threads (``torch.set_num_threads``) in this process and in the workers.
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        precisions: precisions to compare (:data:`esdlib.runtime.PRECISIONS`): ``"fp32"``,
            ``"bf16"`` (autocast, CPU or CUDA), ``"fp16"`` (autocast + gradient scaler, CUDA
            only), ``"auto"`` (resolved by :func:`esdlib.runtime.resolve_precision`); one more
            axis of the interleaved grid. Duplicates after resolving are measured once.
        channels_last: channels-last (NHWC) model and input (default). On this project's
            2-core AVX2 CPU oneDNN's 3×3 convolutions run 1.1–1.8× faster in NHWC than in NCHW
            (the first stage most); tensor cores on CUDA want it too.
        keep_freed_memory: call :func:`esdlib.runtime.keep_freed_memory` in the timing
            process (CPU; glibc keeps freed blocks instead of unmapping them, so fresh
            activations do not page-fault every step). Process-wide and not undone.
        saved_memory: measure the bytes saved for backward.
        peak_memory: measure peak memory in one fresh subprocess per configuration.
        peak_steps: training steps run by each peak-memory subprocess.
        inference: time :func:`esdlib.evaluate_batch` at every (arch, batch, T).
        lr: SGD learning rate (momentum 0.9); small so that weights stay stable.
        seed: seed of the weights, the data and the interleaving order.
        quiet_wait_s: before each timed step, wait up to this many seconds for the machine to
            be quiet (0 = never wait): other processes using at most ``quiet_load`` of all CPUs
            over 0.2 s (``/proc/stat``, Linux).
        quiet_load: the "quiet" threshold, a fraction of all CPUs; steps whose own
            ``load_other`` stays at or below it count for ``step_s_quiet``.
    """

    archs: tuple[str, ...] = ("spiking_resnet18",)
    methods: tuple[str, ...] = ("bptt", "ratebp", "esd")
    Ts: tuple[int, ...] = (1, 2, 4, 6, 8)
    batches: tuple[int, ...] = (16,)
    width: float = 1.0
    image_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    warmup: int = 2
    steps: int = 5
    threads: int = 2
    device: str = "auto"
    precisions: tuple[str, ...] = ("fp32",)
    channels_last: bool = True
    keep_freed_memory: bool = True
    saved_memory: bool = True
    peak_memory: bool = True
    peak_steps: int = 1
    inference: bool = True
    lr: float = 1e-3
    seed: int = 0
    quiet_wait_s: float = 10.0
    quiet_load: float = 0.15

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name, valid in (("archs", ARCHITECTURES), ("methods", METHODS)):
            values = (getattr(self, name),) if isinstance(getattr(self, name), str) \
                else tuple(getattr(self, name))
            bad = [v for v in values if v not in valid]
            if not values or bad:
                raise ValueError(f"{name}: unknown or empty {bad or values}; valid: {list(valid)}")
            put(name, values)
        put("Ts", _positive_ints("Ts", self.Ts))
        put("batches", _positive_ints("batches", self.batches))
        for name in ("image_size", "in_channels", "num_classes", "steps", "threads",
                     "peak_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.quiet_wait_s < 0 or not 0 <= self.quiet_load <= 1:
            raise ValueError(f"quiet_wait_s must be >= 0 and quiet_load in [0, 1], got "
                             f"{self.quiet_wait_s}, {self.quiet_load}")
        if int(self.warmup) < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but CUDA is not available")
        from esdlib.runtime import precision_problem

        precisions = (self.precisions,) if isinstance(self.precisions, str) \
            else tuple(self.precisions)
        if not precisions:
            raise ValueError("precisions must name at least one precision")
        for p in precisions:
            problem = precision_problem(p, self.device_type)
            if problem:
                raise ValueError(problem)
        put("precisions", precisions)

    @property
    def resolved_precisions(self) -> tuple[str, ...]:
        """``precisions`` resolved for this device (``"auto"`` → fp32/bf16), duplicates dropped."""
        from esdlib.runtime import resolve_precision

        out: list[str] = []
        for p in self.precisions:
            r = resolve_precision(p, self.device_type)
            if r not in out:
                out.append(r)
        return tuple(out)

    @property
    def device_type(self) -> str:
        """``"cuda"`` or ``"cpu"`` (``"auto"`` resolved)."""
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (tuples as lists)."""
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchConfig:
        """Build from :meth:`to_dict` output; unknown keys raise with the valid ones.

        A grid written before ``precisions`` existed has ``amp`` (float16 autocast): ``true``
        reads as ``precisions=("fp16",)``.
        """
        data = dict(data)
        if "amp" in data and "precisions" not in data:
            data["precisions"] = ("fp16",) if data.pop("amp") else ("fp32",)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown BenchConfig keys {unknown}; valid: {names}")
        return cls(**data)


# ---------------------------------------------------------------------------
# Memory probes
# ---------------------------------------------------------------------------


class _Saved:
    """What autograd stores instead of a saved tensor while a meter is active."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor


def _storage_key(t: Tensor) -> tuple[str, int] | None:
    try:
        s = t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return None
    return (str(t.device), s.data_ptr())


def _storage_bytes(tensors: Iterator[Tensor], exclude: set | frozenset = frozenset()) -> dict:
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        key = _storage_key(t)
        if key is None or key in exclude or key in seen:
            continue
        seen[key] = t.untyped_storage().nbytes()
    return seen


def _param_storages(model: nn.Module) -> set[tuple[str, int]]:
    keys = (_storage_key(t) for t in (*model.parameters(), *model.buffers()))
    return {k for k in keys if k is not None}


class SavedTensorMeter:
    """Count the tensors autograd saves for backward (context manager, allocator-independent).

    While active, every saved tensor is wrapped (``saved_tensors_hooks``); the wrapper lives
    exactly as long as autograd keeps the tensor. :meth:`live` sums the unique storages of the
    wrappers still alive, i.e. what the graph holds *now* (call it right before ``backward``).

    Example::

        with SavedTensorMeter() as meter:
            loss = model(x).sum()
            nbytes, nstorages = meter.live(exclude=model)
        loss.backward()
    """

    def __init__(self) -> None:
        self._holders: weakref.WeakSet[_Saved] = weakref.WeakSet()
        self._hooks: contextlib.AbstractContextManager | None = None

    def _pack(self, tensor: Tensor) -> _Saved:
        holder = _Saved(tensor)
        self._holders.add(holder)
        return holder

    @staticmethod
    def _unpack(holder: _Saved) -> Tensor:
        return holder.tensor

    def __enter__(self) -> SavedTensorMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._hooks is not None
        self._hooks.__exit__(*exc)
        self._hooks = None

    def live_storages(self, exclude: nn.Module | None = None) -> dict[tuple[str, int], int]:
        """``{(device, data_ptr): bytes}`` of the saved storages alive now, minus ``exclude``'s
        parameters and buffers."""
        skip = _param_storages(exclude) if exclude is not None else set()
        return _storage_bytes((h.tensor for h in list(self._holders)), skip)

    def live(self, exclude: nn.Module | None = None) -> tuple[int, int]:
        """Bytes and number of unique storages saved for backward and still alive.

        Args:
            exclude: a model whose parameters and buffers are not counted.

        Returns:
            ``(bytes, storages)``.
        """
        seen = self.live_storages(exclude)
        return sum(seen.values()), len(seen)


def _tensors_in(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, Tensor):
                yield v
    elif isinstance(value, dict):
        for v in value.values():
            if isinstance(v, Tensor):
                yield v


_MODULE_INTERNALS = frozenset({"_parameters", "_buffers", "_modules"})


def held_tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    """Tensors the modules of ``model`` reference outside their parameters and buffers.

    Looks at every module attribute (and one level into lists, tuples and dicts). After
    :func:`esdlib.evaluate_batch` or a training step this should be empty: recorded spike maps,
    rates or statistics left behind are memory leaks (a defect of the published code).

    Args:
        model: any module tree.

    Returns:
        ``[(qualified attribute name, tensor), ...]``.
    """
    found = []
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if attr in _MODULE_INTERNALS:
                continue
            for t in _tensors_in(value):
                if not isinstance(t, nn.Parameter):
                    found.append((f"{name}.{attr}" if name else attr, t))
    return found


def live_tensor_bytes(device: str | torch.device | None = None) -> int:
    """Bytes of all tensor storages reachable from live Python tensor objects.

    Runs ``gc.collect()``, then sums ``untyped_storage().nbytes()`` over the unique storages of
    the ``torch.Tensor`` objects found by ``gc.get_objects()`` (tensors referenced only from C++,
    e.g. inside an autograd graph, are invisible). Compare before/after a call to find leaks.

    Args:
        device: count only tensors on this device (type or full name); ``None`` = all.

    Returns:
        Bytes.
    """
    gc.collect()
    want = None if device is None else str(device)
    tensors = []
    for obj in gc.get_objects():
        if not issubclass(type(obj), Tensor):  # type(), not isinstance: no proxy attribute access
            continue
        dev = str(obj.device)
        if want is None or dev == want or dev.split(":")[0] == want:
            tensors.append(obj)
    return sum(_storage_bytes(iter(tensors)).values())


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


# ---------------------------------------------------------------------------
# One configuration
# ---------------------------------------------------------------------------


class _Trainer:
    """A model, its optimiser and (for fp16) gradient scaler for one (arch, method, precision)."""

    def __init__(self, cfg: BenchConfig, arch: str, method: str, precision: str = "fp32") -> None:
        self.cfg, self.method, self.precision = cfg, method, precision
        self.device = torch.device(cfg.device_type)
        torch.manual_seed(cfg.seed)
        aux = "dsconv" if method in BRANCH_METHODS else None
        model = build_model(arch, cfg.num_classes, cfg.in_channels, cfg.width, aux)
        model = model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        self.step_fn = get_method(method)
        self.opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.loss_cfg = LossConfig()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def autocast(self) -> contextlib.AbstractContextManager:
        from esdlib.runtime import autocast

        return autocast(self.precision, self.device.type)

    def train_step(self, x: Tensor, y: Tensor, T: int,
                   on_backward: Callable[[], None] | None = None) -> tuple[float, dict, float]:
        """One timed step; returns ``(total s, {phase: s}, loss)``."""
        phases: dict[str, float] = {}

        @contextlib.contextmanager
        def timer(name: str) -> Iterator[None]:
            self.sync()
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.sync()
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0

        def backward(loss: Tensor) -> None:
            if on_backward is not None:
                on_backward()
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

        self.model.train()
        self.sync()
        t0 = time.perf_counter()
        with timer("optimizer"):
            self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            res = self.step_fn(self.model, x, y, T, self.loss_cfg, timer=timer,
                               backward=backward)
        with timer("optimizer"):
            if self.scaler is not None:
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                self.opt.step()
        self.sync()
        total = time.perf_counter() - t0
        phases["other"] = max(0.0, total - sum(phases.values()))
        return total, phases, float(res.loss)

    def memory_step(self, x: Tensor, y: Tensor, T: int) -> dict[str, int]:
        """One untimed step measuring the saved bytes and module-held state at backward start."""
        found: dict[str, int] = {}

        def probe() -> None:
            saved = meter.live_storages(exclude=self.model)
            held = _storage_bytes((t for _, t in held_tensors(self.model)),
                                  set(saved) | _param_storages(self.model))
            found.update(saved_bytes=sum(saved.values()), saved_storages=len(saved),
                         state_bytes=sum(held.values()))

        with SavedTensorMeter() as meter:
            self.train_step(x, y, T, on_backward=probe)
        found["param_bytes"] = sum(_storage_bytes(iter(self.model.parameters())).values())
        found["optimizer_state_bytes"] = sum(_storage_bytes(
            t for st in self.opt.state.values() for t in _tensors_in(st)).values())
        return found

    def infer_step(self, x: Tensor, T: int) -> float:
        """Seconds for :func:`esdlib.evaluate_batch` on one batch in eval mode."""
        self.model.eval()
        try:
            self.sync()
            t0 = time.perf_counter()
            with self.autocast():
                evaluate_batch(self.model, x, T)
            self.sync()
            return time.perf_counter() - t0
        finally:
            self.model.train()


def _batch(cfg: BenchConfig, batch: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(cfg.seed + batch)
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=gen)
    x, y = x.to(cfg.device_type), y.to(cfg.device_type)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _peak_worker(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Body of ``python -m esdlib.bench --worker SPEC`` (runs in a fresh process)."""
    cfg = BenchConfig.from_dict(spec["config"])
    torch.set_num_threads(cfg.threads)
    arch, batch, method, T = spec["arch"], int(spec["batch"]), spec["method"], int(spec["T"])
    dev = cfg.device_type
    trainer = _Trainer(cfg, arch, method, spec.get("precision", "fp32"))
    x, y = _batch(cfg, batch)
    trainer.infer_step(x, T)  # warm-up: first-call allocations, code paged in, optimiser state
    trainer.train_step(x, y, T)
    reset = _reset_peak(dev)
    trainer.infer_step(x, T)
    baseline, counter = _peak_now(dev)
    reset = _reset_peak(dev) and reset
    for _ in range(cfg.peak_steps):
        trainer.train_step(x, y, T)
    peak, _ = _peak_now(dev)
    source = f"{counter}_{'reset' if reset else 'from_start'}_subprocess"
    return {"peak_baseline_bytes": baseline, "peak_bytes": peak,
            "peak_growth_bytes": max(0, peak - baseline), "peak_source": source}


def measure_peak(cfg: BenchConfig, arch: str, batch: int, method: str, T: int, *,
                 precision: str = "fp32", timeout_s: float = 1800.0) -> dict[str, Any]:
    """Peak-memory growth of training over inference, in a fresh subprocess.

    The worker (``python -m esdlib.bench --worker SPEC``) builds the model, runs one inference
    batch and one training step as warm-up, resets the peak counter, runs one inference batch
    (baseline peak), resets it again and runs ``cfg.peak_steps`` training steps (training
    peak); see the module docstring. On the CPU the counter is the resident-set high-water mark
    ``VmHWM`` (reset via ``/proc/self/clear_refs``; ``ru_maxrss`` where ``/proc`` is missing), on
    CUDA ``torch.cuda.max_memory_allocated``.

    Args:
        cfg: benchmark configuration (device, threads, sizes, ``peak_steps``).
        arch: architecture.
        batch: batch size (samples).
        method: training method.
        T: timesteps.
        precision: a resolved precision (``"fp32"``, ``"bf16"``, ``"fp16"``).
        timeout_s: seconds before the worker is killed.

    Returns:
        ``{"peak_baseline_bytes", "peak_bytes", "peak_growth_bytes", "peak_source"}`` (bytes as
        non-negative integers).

    Raises:
        RuntimeError: the worker failed (its stderr tail is in the message).
    """
    spec = {"config": cfg.to_dict(), "arch": arch, "batch": int(batch), "method": method,
            "T": int(T), "precision": precision}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PKG_ROOT), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = str(cfg.threads)
    proc = subprocess.run(
        [sys.executable, "-m", "esdlib.bench", "--worker", json.dumps(spec)],
        capture_output=True, text=True, timeout=timeout_s, env=env, check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"peak-memory worker for {spec} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------


def _stats(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def _device_info(cfg: BenchConfig, env: Mapping[str, Any]) -> dict[str, Any]:
    from esdlib.runtime import cpu_bf16_units

    info = {"type": cfg.device_type, "name": env.get("device_name"), "threads": cfg.threads,
            "precisions": list(cfg.resolved_precisions), "channels_last": cfg.channels_last,
            "keep_freed_memory": cfg.keep_freed_memory and cfg.device_type == "cpu"}
    if cfg.device_type == "cpu":
        info["cpu_bf16_units"] = cpu_bf16_units()
    return info


def run_bench(cfg: BenchConfig, *, progress: bool = True,
              worker_timeout_s: float = 1800.0) -> dict[str, Any]:
    """Measure every configuration of ``cfg`` and return the benchmark record.

    Sets ``torch.set_num_threads(cfg.threads)`` for the duration (restored afterwards) and, with
    ``cfg.keep_freed_memory`` on the CPU, tunes this process's ``malloc`` for good. Steps of
    all configurations are interleaved: repetition ``r`` runs one step of every
    (arch, batch, precision, method, T) configuration and one inference batch per
    (arch, batch, precision, T), in an order shuffled anew for every repetition. Peak memory is
    measured afterwards, one subprocess per configuration, so the workers never overlap the
    timed steps.

    Args:
        cfg: the grid and measurement settings.
        progress: show a tqdm progress bar.
        worker_timeout_s: seconds allowed to each peak-memory subprocess.

    Returns:
        The record (see :func:`validate_bench_record`): device (with the resolved precisions),
        threads, torch version, git revision, grid and one row per
        (arch, batch, precision, method, T) with times in seconds and memory in bytes.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    created = utc_now_iso()
    if cfg.keep_freed_memory and cfg.device_type == "cpu":
        from esdlib.runtime import keep_freed_memory

        keep_freed_memory()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        env = environment_info(cfg.device_type)
        precisions = cfg.resolved_precisions
        cases = [(a, b, p, m, T) for a in cfg.archs for b in cfg.batches for p in precisions
                 for m in cfg.methods for T in cfg.Ts]
        units: list[tuple[str, tuple]] = [("train", c) for c in cases]
        if cfg.inference:
            units += [("infer", (a, b, p, T)) for a in cfg.archs for b in cfg.batches
                      for p in precisions for T in cfg.Ts]
        extra = 1 if cfg.saved_memory and cfg.warmup == 0 else 0
        reps = extra + cfg.warmup + cfg.steps
        first_timed = extra + cfg.warmup
        total = reps * len(units) + (len(cases) if cfg.peak_memory else 0)
        trainers: dict[tuple[str, str, str], _Trainer] = {}
        data: dict[int, tuple[Tensor, Tensor]] = {}

        def trainer(arch: str, method: str, precision: str) -> _Trainer:
            if (arch, method, precision) not in trainers:
                trainers[(arch, method, precision)] = _Trainer(cfg, arch, method, precision)
            return trainers[(arch, method, precision)]

        def batch_of(b: int) -> tuple[Tensor, Tensor]:
            if b not in data:
                data[b] = _batch(cfg, b)
            return data[b]

        times: dict[tuple, list[float]] = {c: [] for c in cases}
        phases: dict[tuple, dict[str, list[float]]] = {c: {} for c in cases}
        losses: dict[tuple, float] = {}
        load: dict[tuple, dict[str, list[float]]] = {
            c: {"cpu_s": [], "load_other": [], "page_faults": []} for c in cases}
        memory: dict[tuple, dict[str, int]] = {}
        infer: dict[tuple, list[float]] = {}
        rng = random.Random(cfg.seed)
        with tqdm(total=total, desc="esd bench", disable=not progress, unit="step") as bar:
            for rep in range(reps):
                order = list(units)
                rng.shuffle(order)
                for kind, case in order:
                    bar.set_postfix_str(f"rep {rep + 1}/{reps} {kind} {case}", refresh=False)
                    if rep >= first_timed:
                        _wait_quiet(cfg.quiet_wait_s, cfg.quiet_load)
                    if kind == "infer":
                        a, b, p, T = case
                        x, _ = batch_of(b)
                        with _no_gc():
                            dt = _infer_trainer(trainers, cfg, a, p).infer_step(x, T)
                        if rep >= first_timed:
                            infer.setdefault(case, []).append(dt)
                    else:
                        a, b, p, m, T = case
                        x, y = batch_of(b)
                        tr = trainer(a, m, p)
                        if rep == 0 and cfg.saved_memory:
                            memory[case] = tr.memory_step(x, y, T)
                        else:
                            with _no_gc():
                                probe = _LoadProbe()
                                dt, ph, loss = tr.train_step(x, y, T)
                                cpu_s, others, faults = probe.stop()
                            losses[case] = loss
                            if rep >= first_timed:
                                times[case].append(dt)
                                for p, v in ph.items():
                                    phases[case].setdefault(p, []).append(v)
                                load[case]["cpu_s"].append(cpu_s)
                                if others is not None:
                                    load[case]["load_other"].append(others)
                                if faults is not None:
                                    load[case]["page_faults"].append(faults)
                    bar.update()
            peaks: dict[tuple, dict[str, Any]] = {}
            if cfg.peak_memory:
                trainers.clear()
                data.clear()
                gc.collect()
                for case in cases:
                    bar.set_postfix_str(f"peak memory {case}", refresh=False)
                    a, b, p, m, T = case
                    peaks[case] = measure_peak(cfg, a, b, m, T, precision=p,
                                               timeout_s=worker_timeout_s)
                    bar.update()
        rows = []
        for case in cases:
            a, b, prec, m, T = case
            med, lo, hi = _stats(times[case])
            row: dict[str, Any] = {"arch": a, "batch": b, "precision": prec, "method": m, "T": T,
                                   "n_steps": len(times[case]),
                                   "step_s": med, "step_s_min": lo, "step_s_max": hi}
            for p in PHASES:
                vals = phases[case].get(p)
                row[f"{p}_s"] = statistics.median(vals) if vals else None
            row["step_cpu_s"] = _stats(load[case]["cpu_s"])[0]
            row["load_other"] = _stats(load[case]["load_other"])[0]
            row["page_faults"] = _stats(load[case]["page_faults"])[0]
            quiet = [t for t, o in zip(times[case], load[case]["load_other"], strict=False)
                     if o <= cfg.quiet_load]
            row["step_s_quiet"] = _stats(quiet)[0]
            row["n_quiet"] = len(quiet)
            row.update({"saved_bytes": None, "saved_storages": None, "state_bytes": None,
                        "param_bytes": None, "optimizer_state_bytes": None})
            row.update(memory.get(case, {}))
            row.update({"peak_baseline_bytes": None, "peak_bytes": None,
                        "peak_growth_bytes": None, "peak_source": None})
            row.update(peaks.get(case, {}))
            imed, ilo, ihi = _stats(infer.get((a, b, prec, T), []))
            row.update({"infer_s": imed, "infer_s_min": ilo, "infer_s_max": ihi})
            row["final_loss"] = losses.get(case)
            row["samples"] = {"step_s": times[case],
                              **{f"{p}_s": v for p, v in phases[case].items()},
                              "step_cpu_s": load[case]["cpu_s"],
                              "load_other": load[case]["load_other"],
                              "page_faults": load[case]["page_faults"],
                              "infer_s": infer.get((a, b, prec, T), [])}
            rows.append(row)
        grid = cfg.to_dict()
        digest = hashlib.sha1(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:8]
        stamp = created.replace("-", "").replace(":", "")
        record = {
            "bench_schema": BENCH_SCHEMA,
            "kind": "esd-bench",
            "bench_id": f"{stamp}-{cfg.device_type}-{digest}",
            "created": created,
            "device": _device_info(cfg, env),
            "threads": cfg.threads,
            "torch": torch.__version__,
            "git_revision": git_revision(_PKG_ROOT),
            "environment": env,
            "grid": grid,
            "wall_s": time.perf_counter() - started,
            "rows": rows,
        }
        return to_jsonable(record)
    finally:
        torch.set_num_threads(prev_threads)


def _infer_trainer(trainers: dict, cfg: BenchConfig, arch: str, precision: str) -> _Trainer:
    """The never-trained, branch-free model used for the inference timings of ``arch``."""
    key = (arch, "_infer", precision)
    if key not in trainers:
        trainers[key] = _Trainer(cfg, arch, "bptt", precision)
    return trainers[key]


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------

_ROW_NUMBERS = ("step_s", "step_s_min", "step_s_max", *(f"{p}_s" for p in PHASES),
                "step_cpu_s", "load_other", "step_s_quiet", "n_quiet", "page_faults",
                "saved_bytes", "saved_storages", "state_bytes", "param_bytes",
                "optimizer_state_bytes", "peak_baseline_bytes",
                "peak_bytes", "peak_growth_bytes", "infer_s", "infer_s_min", "infer_s_max",
                "final_loss")
_ROW_KEYS = ("arch", "batch", "precision", "method", "T", "n_steps", *_ROW_NUMBERS,
             "peak_source")
_ROW_REQUIRED = ("arch", "batch", "method", "T", "n_steps", "step_s", "step_s_min", "step_s_max",
                 *(f"{p}_s" for p in PHASES), "saved_bytes", "state_bytes", "peak_bytes",
                 "peak_growth_bytes", "infer_s", "final_loss")
"""Row keys every record has; the other ``_ROW_KEYS`` (added later) read as ``None`` if absent
(``precision``: from the record's former ``device.amp``, fp16 or fp32)."""
_RECORD_KEYS = ("bench_schema", "kind", "bench_id", "created", "device", "threads", "torch",
                "git_revision", "environment", "grid", "wall_s", "rows")
"""Keys every record has (records before 2026-11-26 also hold ``reference``: the published
implementation's step times on another host, no longer written or read)."""

BENCH_COLUMNS = (
    "bench_id", "created", "device_type", "device_name", "threads", "torch", "git_revision",
    "channels_last", "keep_freed_memory", "arch", "width", "image_size", "in_channels",
    "num_classes", "batch", "precision", "method", "T", "n_steps", *_ROW_NUMBERS, "peak_source",
    "path",
)
"""Columns of :func:`load_bench` (times in seconds, memory in bytes)."""


def validate_bench_record(record: Any) -> None:
    """Check the layout of a benchmark record.

    Args:
        record: a record from :func:`run_bench` or read from ``results/bench/*.json``.

    Raises:
        ValueError: listing every problem (missing keys, wrong kinds, negative numbers).
    """
    problems = []
    if not isinstance(record, Mapping):
        raise ValueError(f"a benchmark record is a JSON object, got {type(record).__name__}")
    problems += [f"missing key {k!r}" for k in _RECORD_KEYS if k not in record]
    if record.get("kind") != "esd-bench":
        problems.append(f"kind must be 'esd-bench', got {record.get('kind')!r}")
    if record.get("bench_schema") != BENCH_SCHEMA:
        problems.append(f"bench_schema must be {BENCH_SCHEMA}, got {record.get('bench_schema')!r}")
    device = record.get("device")
    if not isinstance(device, Mapping) or not {"type", "name", "threads"} <= set(device):
        problems.append("device must hold 'type', 'name' and 'threads'")
    rows = record.get("rows")
    if not isinstance(rows, list) or not rows:
        problems.append("rows must be a non-empty list")
        rows = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            problems.append(f"rows[{i}] is not an object")
            continue
        problems += [f"rows[{i}] misses {k!r}" for k in _ROW_REQUIRED if k not in row]
        for k in _ROW_NUMBERS:
            v = row.get(k)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)):
                problems.append(f"rows[{i}].{k} must be a number or null, got {v!r}")
            elif v is not None and k != "final_loss" and v < 0:
                problems.append(f"rows[{i}].{k} must be >= 0, got {v}")
    if problems:
        raise ValueError("invalid benchmark record:\n  " + "\n  ".join(problems))


def default_bench_dir() -> Path:
    """The records folder: ``results/bench`` of the project, else ``./results/bench``.

    Returns:
        ``esdlib.results.results_dir() / "bench"`` when the project's results folder is found.
    """
    try:
        return results_dir() / "bench"
    except FileNotFoundError:
        return Path("results") / "bench"


def write_bench_record(record: Mapping[str, Any], out_dir: str | os.PathLike | None = None) -> Path:
    """Validate ``record`` and write it atomically to ``<out_dir>/<bench_id>.json``.

    Args:
        record: from :func:`run_bench`.
        out_dir: directory; ``None`` = :func:`default_bench_dir`.

    Returns:
        The path written.
    """
    validate_bench_record(record)
    folder = Path(out_dir) if out_dir is not None else default_bench_dir()
    return atomic_write_json(folder / f"{record['bench_id']}.json", to_jsonable(record))


def bench_frame(record: Mapping[str, Any], path: str | None = None) -> pd.DataFrame:
    """One benchmark record as a table, one row per (arch, batch, precision, method, T).

    Args:
        record: a validated record.
        path: the file it came from (stored in the ``path`` column).

    Returns:
        DataFrame with :data:`BENCH_COLUMNS` (seconds, bytes; raw samples left out).
    """
    import pandas as pd

    grid, device = record["grid"], record["device"]
    common = {"bench_id": record["bench_id"], "created": record["created"],
              "device_type": device["type"], "device_name": device["name"],
              "threads": record["threads"], "torch": record["torch"],
              "git_revision": record["git_revision"],
              "channels_last": device.get("channels_last", False),
              "keep_freed_memory": device.get("keep_freed_memory", False), "width": grid["width"],
              "image_size": grid["image_size"], "in_channels": grid["in_channels"],
              "num_classes": grid["num_classes"], "path": path}
    legacy = "fp16" if device.get("amp") else "fp32"  # records before the precision axis
    rows = [{**common, **{k: row.get(k) for k in _ROW_KEYS}} for row in record["rows"]]
    for row in rows:
        row["precision"] = row["precision"] or legacy
    df = pd.DataFrame(rows, columns=list(BENCH_COLUMNS))
    for col in _ROW_NUMBERS:
        df[col] = df[col].astype(float)
    return df


def load_bench(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Load every benchmark record in ``root`` (``*.json``, hidden files skipped).

    Args:
        root: folder of records; ``None`` = :func:`default_bench_dir`.

    Returns:
        One row per (record, arch, batch, precision, method, T) with :data:`BENCH_COLUMNS`,
        sorted by creation time; empty with those columns when there is no record.

    Raises:
        ValueError: a file is not a valid benchmark record (its path is in the message).
    """
    import pandas as pd

    folder = Path(root) if root is not None else default_bench_dir()
    frames = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.startswith("."):
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: unreadable benchmark record ({err})") from err
        try:
            validate_bench_record(record)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        frames.append(bench_frame(record, str(path)))
    if not frames:
        return pd.DataFrame(columns=list(BENCH_COLUMNS))
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(["created", "bench_id", "arch", "batch", "precision", "method", "T"],
                          ignore_index=True)


# ---------------------------------------------------------------------------
# Tables and figure
# ---------------------------------------------------------------------------

_GROUP = ["bench_id", "device_name", "threads", "arch", "width", "image_size", "batch",
          "precision", "T"]
_MIB = 2.0**20


def _method_order(methods: Sequence[str]) -> list[str]:
    known = [m for m in METHODS if m in set(methods)]
    return known + sorted(set(methods) - set(known))


def _with_precision(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``precision`` column (tables built by hand may lack it: fp32)."""
    if "precision" in df:
        return df.assign(precision=df["precision"].fillna("fp32"))
    return df.assign(precision="fp32")


def bench_table(df: pd.DataFrame) -> pd.DataFrame:
    """Medians per method side by side, ratios between methods and to fp32, of the same run.

    Args:
        df: from :func:`load_bench` or :func:`bench_frame`.

    Returns:
        One row per (bench_id, device, threads, arch, width, image size, batch, precision, T)
        with, per method ``m``: ``"m step s"`` (median seconds per training step),
        ``"m saved MiB"`` (saved for backward), ``"m peak MiB"`` (peak growth over inference);
        ``"infer s"`` (seconds per inference batch); for each pair ``(a, b)`` of
        :data:`RATIO_PAIRS` present: ``"a/b step"`` and ``"a/b saved"``; and, for a precision
        other than fp32 in a run that also measured fp32, ``"m step /fp32"`` and
        ``"m saved /fp32"`` (the same method and configuration). Every ratio divides numbers of
        one run on one host.
    """
    import pandas as pd

    df = _with_precision(df)
    out = []
    for key, g in df.groupby(_GROUP, sort=False, dropna=False):
        row = dict(zip(_GROUP, key, strict=True))
        by = {m: r for m, r in g.groupby("method")}
        methods = _method_order(list(by))
        for m in methods:
            r = by[m].iloc[0]
            row[f"{m} step s"] = r["step_s"]
            row[f"{m} saved MiB"] = r["saved_bytes"] / _MIB
            row[f"{m} peak MiB"] = r["peak_growth_bytes"] / _MIB
        row["infer s"] = g["infer_s"].iloc[0]
        for a, b in RATIO_PAIRS:
            if a in by and b in by:
                ra, rb = by[a].iloc[0], by[b].iloc[0]
                row[f"{a}/{b} step"] = ra["step_s"] / rb["step_s"]
                row[f"{a}/{b} saved"] = _ratio(ra["saved_bytes"], rb["saved_bytes"])
        if row["precision"] != "fp32":
            base = df
            for k in _GROUP:
                base = base[base[k] == (row[k] if k != "precision" else "fp32")]
            for m in methods:
                b = base[base["method"] == m]
                if len(b):
                    r = by[m].iloc[0]
                    row[f"{m} step /fp32"] = r["step_s"] / b["step_s"].iloc[0]
                    row[f"{m} saved /fp32"] = _ratio(r["saved_bytes"], b["saved_bytes"].iloc[0])
        out.append(row)
    return pd.DataFrame(out)


def _ratio(a: float, b: float) -> float:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return float("nan")
    return a / b


def phase_table(df: pd.DataFrame) -> pd.DataFrame:
    """Median seconds per phase of a training step, and the spike pass relative to inference.

    Args:
        df: from :func:`load_bench` or :func:`bench_frame`.

    Returns:
        One row per (bench_id, arch, batch, precision, method, T): ``step_s``, each phase of
        :data:`PHASES` (seconds, NaN where the method has no such phase), ``infer_s``, the
        contention columns ``step_s_quiet``, ``n_quiet``, ``load_other``, ``page_faults`` and
        ``spike/infer``
        (spike-pass median over the inference median at the same ``T``).
    """
    df = _with_precision(df)
    cols = ["bench_id", "arch", "batch", "precision", "method", "T", "step_s",
            *(f"{p}_s" for p in PHASES), "infer_s", "step_s_quiet", "n_quiet", "load_other",
            "page_faults"]
    out = df[cols].copy()
    out["spike/infer"] = out["spike_pass_s"] / out["infer_s"]
    return out.reset_index(drop=True)


def plot_bench(df: pd.DataFrame, ax: Sequence[Any] | None = None, *,
               bench_id: str | None = None) -> Figure:
    """Step time and saved-for-backward memory versus ``T``, one line per method (two panels).

    Args:
        df: from :func:`load_bench`.
        ax: two matplotlib Axes (time, memory); ``None`` creates a new Figure (no pyplot).
        bench_id: the run to draw; ``None`` = the most recent one in ``df``; a run with several
            precisions or configurations gets one line per (configuration, precision, method).

    Returns:
        The matplotlib Figure.
    """
    if df.empty:
        raise ValueError("no benchmark rows to plot")
    if bench_id is None:
        bench_id = df.sort_values("created")["bench_id"].iloc[-1]
    run = _with_precision(df[df["bench_id"] == bench_id])
    if run.empty:
        raise ValueError(f"no rows with bench_id {bench_id!r}; have {sorted(set(df.bench_id))}")
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 4), layout="constrained")
        ax_t, ax_m = fig.subplots(1, 2)
    else:
        ax_t, ax_m = ax
        fig = ax_t.figure
    several = run.groupby(["arch", "batch"]).ngroups > 1
    mixed = run["precision"].nunique() > 1
    for (arch, batch, prec, method), g in run.groupby(["arch", "batch", "precision", "method"],
                                                      sort=False):
        g = g.sort_values("T")
        label = method + (f" {prec}" if mixed else "")
        label = f"{label} ({arch}, B={batch})" if several else label
        err = [g["step_s"] - g["step_s_min"], g["step_s_max"] - g["step_s"]]
        ax_t.errorbar(g["T"], g["step_s"], yerr=err, marker="o", capsize=3, label=label)
        ax_m.plot(g["T"], g["saved_bytes"] / _MIB, marker="o", label=label)
    first = run.iloc[0]
    ax_t.set(xlabel="timesteps T", ylabel="training step (s, median; bars min–max)",
             title=f"{first['device_name']}, {int(first['threads'])} threads")
    ax_m.set(xlabel="timesteps T", ylabel="saved for backward (MiB)",
             title="autograd saved tensors")
    for a in (ax_t, ax_m):
        a.set_xticks(sorted(run["T"].unique()))
        a.grid(alpha=0.3)
        a.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``esd bench`` options to ``parser`` (defaults from :class:`BenchConfig`).

    Args:
        parser: an ``argparse`` parser or sub-parser.
    """
    import argparse

    d = BenchConfig()
    lists = "space- or comma-separated"
    parser.add_argument("--arch", nargs="+", default=list(d.archs),
                        help=f"architectures, {lists}, of {sorted(ARCHITECTURES)} "
                             "(default: %(default)s)")
    parser.add_argument("--methods", nargs="+", default=list(d.methods),
                        help=f"training methods, {lists}, of {list(METHODS)} "
                             "(default: %(default)s)")
    parser.add_argument("--T", nargs="+", default=list(d.Ts), dest="Ts",
                        help=f"timesteps, {lists} (default: %(default)s)")
    parser.add_argument("--batch", nargs="+", default=list(d.batches),
                        help=f"batch sizes, {lists} (default: %(default)s)")
    parser.add_argument("--width", type=float, default=d.width, help="channel multiplier")
    parser.add_argument("--image-size", type=int, default=d.image_size,
                        help="input height = width in pixels (default: %(default)s)")
    parser.add_argument("--in-channels", type=int, default=d.in_channels)
    parser.add_argument("--num-classes", type=int, default=d.num_classes)
    parser.add_argument("--warmup", type=int, default=d.warmup,
                        help="untimed steps per configuration (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=d.steps,
                        help="timed steps per configuration (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help="torch.set_num_threads (default: %(default)s)")
    parser.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", nargs="+", default=list(d.precisions), dest="precisions",
                        help=f"precisions to compare side by side, {lists}, of "
                             "fp32 bf16 fp16 auto (bf16: autocast on CPU/CUDA; fp16: autocast "
                             "+ gradient scaler, CUDA only; default: %(default)s)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                        default=d.channels_last,
                        help="channels-last (NHWC) model and input (default: %(default)s)")
    parser.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction,
                        default=d.keep_freed_memory,
                        help="CPU: glibc keeps freed memory for reuse in the timing process "
                             "(esdlib.runtime.keep_freed_memory; default: %(default)s)")
    parser.add_argument("--no-saved-memory", action="store_true",
                        help="skip the saved-for-backward measurement")
    parser.add_argument("--no-peak", action="store_true",
                        help="skip the peak-memory subprocesses")
    parser.add_argument("--peak-steps", type=int, default=d.peak_steps,
                        help="training steps per peak-memory subprocess (default: %(default)s)")
    parser.add_argument("--no-infer", action="store_true", help="skip inference timings")
    parser.add_argument("--quiet-wait", type=float, default=d.quiet_wait_s,
                        help="seconds to wait before a timed step for other processes to use at "
                             "most --quiet-load of the CPUs; 0 = never (default: %(default)s)")
    parser.add_argument("--quiet-load", type=float, default=d.quiet_load,
                        help="quiet threshold, fraction of all CPUs (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--out", default=None,
                        help="output folder (default: results/bench of the project)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _split(values: Sequence[Any], cast: Callable[[str], Any] = str) -> tuple:
    """``["1,2", "4"]`` → ``(1, 2, 4)``: accepts space- and comma-separated lists."""
    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                try:
                    out.append(cast(part.strip()))
                except ValueError as err:
                    raise ValueError(f"cannot read {part!r} as {cast.__name__}") from err
    return tuple(out)


def _config_from_args(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        archs=_split(args.arch), methods=_split(args.methods), Ts=_split(args.Ts, int),
        batches=_split(args.batch, int), width=args.width, image_size=args.image_size,
        in_channels=args.in_channels, num_classes=args.num_classes, warmup=args.warmup,
        steps=args.steps, threads=args.threads, device=args.device,
        precisions=_split(args.precisions),
        channels_last=args.channels_last, keep_freed_memory=args.keep_freed_memory,
        saved_memory=not args.no_saved_memory,
        peak_memory=not args.no_peak, peak_steps=args.peak_steps, inference=not args.no_infer,
        lr=args.lr, seed=args.seed, quiet_wait_s=args.quiet_wait, quiet_load=args.quiet_load,
    )


def bench_command(args: argparse.Namespace) -> int:
    """Run ``esd bench``: measure, write the record, print the comparison table.

    Args:
        args: parsed options of :func:`add_bench_arguments`.

    Returns:
        Exit status (0 on success, 2 for an invalid configuration).
    """
    import pandas as pd

    try:
        cfg = _config_from_args(args)
    except ValueError as err:
        print(f"esd bench: {err}", file=sys.stderr)
        return 2
    record = run_bench(cfg, progress=not args.no_progress)
    path = write_bench_record(record, args.out)
    df = bench_frame(record, str(path))
    with pd.option_context("display.width", 200, "display.max_columns", None,
                           "display.float_format", "{:.3g}".format):
        print(phase_table(df).drop(columns="bench_id").to_string(index=False))
        print()
        print(bench_table(df).drop(columns=["bench_id", "device_name"]).to_string(index=False))
    print(f"\nrecord: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m esdlib.bench``: the ``esd bench`` options, plus ``--worker SPEC`` (internal).

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m esdlib.bench",
                                     description="Training cost (time, memory) versus T.")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(_peak_worker(json.loads(args.worker))), flush=True)
        return 0
    return bench_command(args)


if __name__ == "__main__":
    sys.exit(main())
