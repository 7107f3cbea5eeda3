"""The training methods: one :class:`Method` entry per name, all called the same way.

A method is a training step (:class:`StepFn`)::

    step(model, x, y, T, loss_cfg, *, rate_grad_scale="1/T", timer=None, backward=None,
         spike_fn=None)

which runs the forward pass(es) and the backward pass (gradients accumulate into ``.grad``);
the caller owns ``optimizer.zero_grad()`` / ``optimizer.step()``. What distinguishes the
methods is written once, in :data:`METHODS`: which passes (``"bptt"``: one multi-step pass with
the surrogate gradient; ``"two_pass"``: the spike pass + rate pass of rate-based
backpropagation, :mod:`esdlib.passes`), which loss (:mod:`esdlib.losses`) and whether the
auxiliary branches are trained. Adding a method is adding one entry.

Two-pass methods scale the loss gradient by ``1/T`` (``rate_grad_scale="1/T"``), as the
official ESD/RateBP code does; ``rate_grad_scale="none"`` gives the unscaled rate-BP gradient
(at ``T = 1`` both coincide with the BPTT gradient).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch import Tensor, nn

from esdlib.losses import LossConfig, LossOutput, ce_loss, esd_loss, sd_loss
from esdlib.neurons import LIF
from esdlib.passes import bptt_forward, infer, rate_pass, reset_state, spike_pass

RATE_GRAD_SCALES = ("1/T", "none")
PASSES = ("bptt", "two_pass")
"""How a method computes its gradient: BPTT, or rate-BP's spike pass + rate pass."""


class StepResult(NamedTuple):
    """What a training step reports.

    Attributes:
        loss: the (unscaled) total loss, a detached scalar tensor.
        logits: main-output logits ``[B, K]`` (detached).
        diagnostics: floats from the loss (``reliable_fraction``, ``acc_main``,
            ``acc_branch{i}``, see :class:`~esdlib.losses.LossOutput`) and its parts
            (``loss_hard``, ``loss_soft``).
    """

    loss: Tensor
    logits: Tensor
    diagnostics: dict[str, float]


SpikePassFn = Callable[[nn.Module, Tensor, int], object]
"""A spike pass, ``spike(model, x, T)``: :func:`~esdlib.passes.spike_pass` or a
:class:`~esdlib.passes.CompiledSpikePass`."""


class StepFn(Protocol):
    """The signature of every training step (every :class:`Method` is one)."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, T: int,
                 loss_cfg: LossConfig | None = None, *, rate_grad_scale: str = "1/T",
                 timer: Callable[[str], contextlib.AbstractContextManager] | None = None,
                 backward: Callable[[Tensor], None] | None = None,
                 spike_fn: SpikePassFn | None = None) -> StepResult:
        """One training step: forward pass(es), loss, backward.

        Args:
            model: spiking network (:mod:`esdlib.models`).
            x: ``[B, C, H, W]`` static or ``[T, B, C, H, W]`` time-varying input.
            y: labels ``[B]``.
            T: timesteps.
            loss_cfg: loss weights (paper CIFAR defaults when ``None``; unused by CE).
            rate_grad_scale: ``"1/T"`` (official code) or ``"none"``; two-pass methods only.
            timer: ``timer(phase_name)`` → context manager, for benchmarks.
            backward: ``backward(loss)``; default ``loss.backward()`` (AMP passes a scaler's).
            spike_fn: the spike pass of the two-pass methods, ``spike_fn(model, x, T)``;
                default :func:`~esdlib.passes.spike_pass` (a
                :class:`~esdlib.passes.CompiledSpikePass` runs it compiled). BPTT methods
                have no spike pass and ignore it.

        Returns:
            :class:`StepResult`.
        """
        ...


LossFn = Callable[[Sequence[Tensor], Tensor, LossConfig | None], LossOutput]
"""A loss of :mod:`esdlib.losses`: ``loss(outputs, y, cfg) -> LossOutput``."""


def _no_timer(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def _result(out, lo: LossOutput) -> StepResult:
    diag = dict(lo.diagnostics)
    diag.update(loss_hard=float(lo.hard.detach()), loss_soft=float(lo.soft.detach()))
    return StepResult(lo.total.detach(), out.logits.detach(), diag)


@dataclass(frozen=True)
class Method:
    """A training method: its passes, loss and branches; calling it runs one training step.

    Attributes:
        name: the method's name (the key in :data:`METHODS`, ``RunConfig.method``).
        passes: ``"bptt"`` (multi-step forward with the surrogate gradient) or ``"two_pass"``
            (rate-BP: :func:`~esdlib.passes.spike_pass` + :func:`~esdlib.passes.rate_pass`).
        loss: ``loss(all_logits, y, loss_cfg) -> LossOutput`` (:mod:`esdlib.losses`).
        branches: the method trains the auxiliary ANN branches (they are evaluated in the
            forward pass and their logits enter the loss).
        description: one line for tables and help texts.
    """

    name: str
    passes: str
    loss: LossFn
    branches: bool
    description: str

    def __post_init__(self) -> None:
        if self.passes not in PASSES:
            raise ValueError(f"passes must be one of {PASSES}, got {self.passes!r}")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, T: int,
                 loss_cfg: LossConfig | None = None, *, rate_grad_scale: str = "1/T",
                 timer: Callable[[str], contextlib.AbstractContextManager] | None = None,
                 backward: Callable[[Tensor], None] | None = None,
                 spike_fn: SpikePassFn | None = None) -> StepResult:
        """One training step of this method (arguments: see :class:`StepFn`)."""
        if self.passes == "two_pass" and rate_grad_scale not in RATE_GRAD_SCALES:
            raise ValueError(f"rate_grad_scale must be one of {RATE_GRAD_SCALES}, "
                             f"got {rate_grad_scale!r}")
        timer = timer or _no_timer
        backward = backward or Tensor.backward
        try:
            if self.passes == "two_pass":
                with timer("spike_pass"):
                    (spike_fn or spike_pass)(model, x, T)
                with timer("rate_forward"):
                    out = rate_pass(model, x, aux=self.branches)
                    lo = self.loss(out.all_logits, y, loss_cfg)
                with timer("backward"):
                    backward(lo.total / T if rate_grad_scale == "1/T" else lo.total)
            else:
                with timer("forward"):
                    out = bptt_forward(model, x, T, aux=self.branches)
                    lo = self.loss(out.all_logits, y, loss_cfg)
                with timer("backward"):
                    backward(lo.total)
        finally:
            reset_state(model)
        return _result(out, lo)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("bptt", "bptt", ce_loss, False, "BPTT with the surrogate gradient, CE on the "
           "time-averaged output"),
    Method("ratebp", "two_pass", ce_loss, False, "rate-based backpropagation (spike pass + rate "
           "pass), CE only, no branches"),
    Method("sd", "two_pass", sd_loss, True, "standard self-distillation on rate-BP: hard + "
           "β · soft, teacher = mean of all outputs (no reliability filter)"),
    Method("esd", "two_pass", esd_loss, True, "ESD (the paper): rate-BP with branches, hard + "
           "β · reliability-decoupled soft loss (+ η R)"),
    Method("esd_bptt", "bptt", esd_loss, True, "the ESD loss trained with BPTT; branches see "
           "time-averaged intermediate spikes"),
)}
"""Every training method by name; the one table of what each method does."""
BRANCH_METHODS = tuple(name for name, m in METHODS.items() if m.branches)
"""Methods that train the auxiliary ANN branches."""
RATE_BP_METHODS = tuple(name for name, m in METHODS.items() if m.passes == "two_pass")
"""Methods trained with two-pass rate-based backpropagation."""


def get_method(name: str) -> Method:
    """The training step of a method name (a :class:`Method` of :data:`METHODS`, called as
    :class:`StepFn`); clear error otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {list(METHODS)}")
    return METHODS[name]


class EvalOutput(NamedTuple):
    """Inference result on one batch.

    Attributes:
        logits: time-averaged logits ``[B, K]``.
        firing_per_t: ``{layer name: [T] tensor}``: fraction of that layer's neurons spiking at
            each step, averaged over the batch and the layer's neurons.
        num_neurons: ``{layer name: neurons per sample}`` (weights for network averages).
    """

    logits: Tensor
    firing_per_t: dict[str, Tensor]
    num_neurons: dict[str, int]


@torch.no_grad()
def evaluate_batch(model: nn.Module, x: Tensor, T: int) -> EvalOutput:
    """Run the plain SNN (no branches) for ``T`` steps and collect firing rates.

    Nothing stays referenced by the model afterwards (no spike maps, no traces).

    Args:
        model: spiking network (its train/eval state is respected; call ``eval()`` first).
        x: ``[B, C, H, W]`` or ``[T, B, C, H, W]``.
        T: timesteps.

    Returns:
        :class:`EvalOutput`.
    """
    try:
        out = infer(model, x, T)
        rates, sizes = {}, {}
        for name, m in model.named_modules():
            if isinstance(m, LIF) and m.firing_per_t is not None:
                rates[name] = m.firing_per_t
                sizes[name] = m.num_neurons
    finally:
        reset_state(model)
    return EvalOutput(out.logits, rates, sizes)
