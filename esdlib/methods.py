"""One training-step function per method, all with the same signature.

``step(model, x, y, T, loss_cfg, *, rate_grad_scale="1/T", timer=None, backward=None)``
runs the forward pass(es) and the backward pass (gradients accumulate into ``.grad``); the
caller owns ``optimizer.zero_grad()`` / ``optimizer.step()``.

==========  =========================  ========  ======================================
method      passes                     branches  loss
==========  =========================  ========  ======================================
bptt        multistep (BPTT)           no        CE
ratebp      spike pass + rate pass     no        CE
sd          spike pass + rate pass     yes       hard + β · SD soft (no reliability filter)
esd         spike pass + rate pass     yes       hard + β · ESD soft (+ η R) — the paper
esd_bptt    multistep (BPTT)           yes       hard + β · ESD soft; branches see mean spikes
==========  =========================  ========  ======================================

Two-pass methods scale the loss gradient by ``1/T`` (``rate_grad_scale="1/T"``), as the
official ESD/RateBP code does; ``rate_grad_scale="none"`` gives the unscaled rate-BP gradient
(at ``T = 1`` both coincide with the BPTT gradient).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from esdlib.losses import LossConfig, LossOutput, ce_loss, esd_loss, sd_loss
from esdlib.modes import bptt_forward, infer, rate_pass, reset_state, spike_pass
from esdlib.neurons import LIF

RATE_GRAD_SCALES = ("1/T", "none")


class StepResult(NamedTuple):
    """What a training step reports.

    Attributes:
        loss: the (unscaled) total loss, a detached scalar tensor.
        logits: main-output logits ``[B, K]`` (detached).
        diagnostics: floats from the loss (reliable fraction, per-output accuracy, parts).
    """

    loss: Tensor
    logits: Tensor
    diagnostics: dict[str, float]


def _no_timer(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def _result(out, lo: LossOutput) -> StepResult:
    diag = dict(lo.diagnostics)
    diag.update(loss_hard=float(lo.hard.detach()), loss_soft=float(lo.soft.detach()))
    return StepResult(lo.total.detach(), out.logits.detach(), diag)


def _two_pass(model, x, y, T, loss_cfg, loss_fn, aux, rate_grad_scale, timer, backward):
    if rate_grad_scale not in RATE_GRAD_SCALES:
        raise ValueError(f"rate_grad_scale must be one of {RATE_GRAD_SCALES}, "
                         f"got {rate_grad_scale!r}")
    timer = timer or _no_timer
    backward = backward or Tensor.backward
    try:
        with timer("spike_pass"):
            spike_pass(model, x, T)
        with timer("rate_forward"):
            out = rate_pass(model, x, aux=aux)
            lo = loss_fn(out.all_logits, y, loss_cfg)
        with timer("backward"):
            backward(lo.total / T if rate_grad_scale == "1/T" else lo.total)
    finally:
        reset_state(model)
    return _result(out, lo)


def _bptt(model, x, y, T, loss_cfg, loss_fn, aux, timer, backward):
    timer = timer or _no_timer
    backward = backward or Tensor.backward
    try:
        with timer("forward"):
            out = bptt_forward(model, x, T, aux=aux)
            lo = loss_fn(out.all_logits, y, loss_cfg)
        with timer("backward"):
            backward(lo.total)
    finally:
        reset_state(model)
    return _result(out, lo)


def bptt(model: nn.Module, x: Tensor, y: Tensor, T: int, loss_cfg: LossConfig | None = None, *,
         rate_grad_scale: str = "1/T", timer: Callable | None = None,
         backward: Callable[[Tensor], None] | None = None) -> StepResult:
    """BPTT with the surrogate gradient, cross-entropy on the time-averaged output.

    Args:
        model: spiking network.
        x: ``[B, C, H, W]`` or ``[T, B, C, H, W]``.
        y: labels ``[B]``.
        T: timesteps.
        loss_cfg: unused by CE (uniform signature).
        rate_grad_scale: unused (single-pass method).
        timer: ``timer(phase_name)`` → context manager, for benchmarks.
        backward: ``backward(loss)``; default ``loss.backward()`` (AMP passes a scaler's).

    Returns:
        :class:`StepResult`.
    """
    return _bptt(model, x, y, T, loss_cfg, ce_loss, False, timer, backward)


def ratebp(model: nn.Module, x: Tensor, y: Tensor, T: int, loss_cfg: LossConfig | None = None,
           *, rate_grad_scale: str = "1/T", timer: Callable | None = None,
           backward: Callable[[Tensor], None] | None = None) -> StepResult:
    """Rate-based backpropagation (spike pass + rate pass), CE only, no branches.

    Args: see :func:`bptt`; ``rate_grad_scale`` selects the 1/T gradient scaling.

    Returns:
        :class:`StepResult`.
    """
    return _two_pass(model, x, y, T, loss_cfg, ce_loss, False, rate_grad_scale, timer, backward)


def sd(model: nn.Module, x: Tensor, y: Tensor, T: int, loss_cfg: LossConfig | None = None, *,
       rate_grad_scale: str = "1/T", timer: Callable | None = None,
       backward: Callable[[Tensor], None] | None = None) -> StepResult:
    """Standard self-distillation on rate-BP: branches, teacher = mean of all outputs.

    Args: see :func:`bptt`.

    Returns:
        :class:`StepResult`.
    """
    return _two_pass(model, x, y, T, loss_cfg or LossConfig(), sd_loss, True, rate_grad_scale,
                     timer, backward)


def esd(model: nn.Module, x: Tensor, y: Tensor, T: int, loss_cfg: LossConfig | None = None, *,
        rate_grad_scale: str = "1/T", timer: Callable | None = None,
        backward: Callable[[Tensor], None] | None = None) -> StepResult:
    """ESD (the paper): rate-BP with branches and reliability-decoupled self-distillation.

    Args: see :func:`bptt`.

    Returns:
        :class:`StepResult`.
    """
    return _two_pass(model, x, y, T, loss_cfg or LossConfig(), esd_loss, True, rate_grad_scale,
                     timer, backward)


def esd_bptt(model: nn.Module, x: Tensor, y: Tensor, T: int, loss_cfg: LossConfig | None = None,
             *, rate_grad_scale: str = "1/T", timer: Callable | None = None,
             backward: Callable[[Tensor], None] | None = None) -> StepResult:
    """ESD loss trained with BPTT; branches see time-averaged intermediate spikes.

    Args: see :func:`bptt`.

    Returns:
        :class:`StepResult`.
    """
    return _bptt(model, x, y, T, loss_cfg or LossConfig(), esd_loss, True, timer, backward)


METHODS: dict[str, Callable[..., StepResult]] = {
    "bptt": bptt, "ratebp": ratebp, "sd": sd, "esd": esd, "esd_bptt": esd_bptt,
}
BRANCH_METHODS = ("sd", "esd", "esd_bptt")
"""Methods that train the auxiliary ANN branches."""
RATE_BP_METHODS = ("ratebp", "sd", "esd")
"""Methods trained with two-pass rate-based backpropagation."""


def get_method(name: str) -> Callable[..., StepResult]:
    """The training-step function of a method name (``METHODS``); clear error otherwise."""
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
