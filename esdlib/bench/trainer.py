"""One benchmark configuration's trainer: a model, its optimiser and gradient scaler, with a
timed training step (per phase), an untimed memory step and a timed inference step; and the
fixed random batches they run on."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from esdlib.bench.config import BenchConfig
from esdlib.bench.meter import (
    SavedTensorMeter,
    held_tensors,
    param_storages,
    storage_bytes,
    tensors_in,
)
from esdlib.losses import LossConfig
from esdlib.methods import BRANCH_METHODS, evaluate_batch, get_method
from esdlib.models import build_model
from esdlib.train.runtime import autocast

__all__ = ["Trainer", "make_batch", "no_gc"]


class Trainer:
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
        """Wait for the device (CUDA kernels run asynchronously)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast of the trainer's precision on its device."""
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
            held = storage_bytes((t for _, t in held_tensors(self.model)),
                                  set(saved) | param_storages(self.model))
            found.update(saved_bytes=sum(saved.values()), saved_storages=len(saved),
                         state_bytes=sum(held.values()))

        with SavedTensorMeter() as meter:
            self.train_step(x, y, T, on_backward=probe)
        found["param_bytes"] = sum(storage_bytes(iter(self.model.parameters())).values())
        found["optimizer_state_bytes"] = sum(storage_bytes(
            t for st in self.opt.state.values() for t in tensors_in(st)).values())
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


def make_batch(cfg: BenchConfig, batch: int) -> tuple[Tensor, Tensor]:
    """A random batch ``(x, y)`` of ``batch`` samples of the bench's input shape, fixed by the
    seed and the batch size, on the bench's device (channels-last when it is on)."""
    gen = torch.Generator().manual_seed(cfg.seed + batch)
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=gen)
    x, y = x.to(cfg.device_type), y.to(cfg.device_type)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Python's garbage collector paused inside the context (a timed step is not charged for
    a collection that garbage of earlier steps triggers)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
