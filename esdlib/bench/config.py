"""The benchmark grid: :class:`BenchConfig` and its command-line spelling (``esd bench``)."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from esdlib.methods import METHODS
from esdlib.models import ARCHITECTURES
from esdlib.train.records import to_jsonable

if TYPE_CHECKING:
    import argparse


PHASES = ("spike_pass", "rate_forward", "forward", "backward", "optimizer", "other")
"""Phases of a training step; a method reports the ones it has, the others are ``None``."""


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
        device: ``"auto"`` (CUDA, else MPS, else the CPU), ``"cpu"`` or ``"cuda"``.
        precisions: precisions to compare (:data:`esdlib.train.runtime.PRECISIONS`): ``"fp32"``,
            ``"bf16"`` (autocast, CPU or CUDA), ``"fp16"`` (autocast + gradient scaler, CUDA
            only), ``"auto"`` (resolved by :func:`esdlib.train.runtime.resolve_precision`); one more
            axis of the interleaved grid. Duplicates after resolving are measured once.
        channels_last: channels-last (NHWC) model and input (default). On this project's
            2-core AVX2 CPU oneDNN's 3×3 convolutions run 1.1–1.8× faster in NHWC than in NCHW
            (the first stage most); tensor cores on CUDA want it too.
        keep_freed_memory: call :func:`esdlib.train.runtime.keep_freed_memory` in the timing
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
        from esdlib.train.runtime import precision_problem

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
        from esdlib.train.runtime import resolve_precision

        out: list[str] = []
        for p in self.precisions:
            r = resolve_precision(p, self.device_type)
            if r not in out:
                out.append(r)
        return tuple(out)

    @property
    def device_type(self) -> str:
        """``"cuda"``, ``"mps"`` or ``"cpu"``: ``device`` resolved
        (:func:`esdlib.train.runtime.resolve_device`; ``"auto"``: CUDA, then MPS, then CPU)."""
        from esdlib.train.runtime import resolve_device

        return resolve_device(self.device).type

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


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``esd bench`` options to the ``argparse`` (sub-)parser ``parser``, with the
    defaults of :class:`BenchConfig`."""
    import argparse

    # the field defaults, read without building (and validating) a config
    d = types.SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(BenchConfig)})
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
                             "(esdlib.train.runtime.keep_freed_memory; default: %(default)s)")
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


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` of parsed ``esd bench`` options (:func:`add_bench_arguments`).

    Raises:
        ValueError: an invalid value (a list entry that is not a number, an unknown method...).
    """
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
