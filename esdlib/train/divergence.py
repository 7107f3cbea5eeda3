"""Divergence: when training must stop because the loss or the weights went wrong.

A non-finite loss, a loss above :data:`DIVERGED_LOSS` or non-finite weights after an optimiser
step (:func:`divergence_reason`, every step), or an epoch whose mean loss is stuck far above
the first step's (:func:`stuck_reason`, every epoch). Under DDP all ranks agree on the verdict.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from esdlib.train.distributed import any_rank


class DivergenceWarning(RuntimeWarning):
    """Training stopped: the loss or the weights became non-finite, or the loss exploded."""


DIVERGED_LOSS = 1e4
"""A finite training loss above this counts as divergence: a cross-entropy of 10⁴ nats gives
the true class a probability of e^-10000, far beyond anything a converging run passes through
(an untrained network starts near ``log K`` per output, ~2.3 for 10 classes)."""


STUCK_LOSS_FACTOR = 4.0
"""An epoch whose mean training loss is more than this many times the run's first step's loss
counts as divergence ("stuck"): a run that learns goes below its start (the committed records
never exceed 1.02× their first epoch's mean), while a too-large step can leave the loss
bouncing far above it without ever reaching :data:`DIVERGED_LOSS`."""


def stuck_reason(epoch_loss: float, first_loss: float | None) -> str | None:
    """The divergence reason of an epoch whose mean loss is stuck far above the first step's
    (:data:`STUCK_LOSS_FACTOR`), agreed by all ranks; ``None`` otherwise."""
    stuck = (first_loss is not None and math.isfinite(first_loss) and first_loss > 0
             and epoch_loss > STUCK_LOSS_FACTOR * first_loss)
    if any_rank(stuck, "checking for divergence") and not stuck:
        return "divergence on another rank"
    if not stuck:
        return None
    return (f"training loss stuck far above its start (epoch mean {epoch_loss:.3g} > "
            f"{STUCK_LOSS_FACTOR:g}× the first step's {first_loss:.3g})")


def checked_tensors(model: nn.Module) -> list[Tensor]:
    """The parameters and floating-point buffers whose finiteness :func:`divergence_reason` checks.

    Collected once per run: the optimiser and ``load_state_dict`` update them in place, so
    the list stays valid, and walking the module tree every step costs ~5 % of a small run."""
    return [t.detach() for t in (*model.parameters(), *model.buffers())
            if t.is_floating_point() and t.numel()]


def params_finite(tensors: list[Tensor]) -> bool:
    """Whether every tensor of ``tensors`` is finite (one device sync)."""
    if not tensors:
        return True
    if hasattr(torch, "_foreach_norm"):
        norms = torch._foreach_norm(tensors, float("inf"))  # max |x|; NaN propagates
        return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def divergence_reason(loss: float, checked: list[Tensor]) -> str | None:
    """Why training must stop (non-finite or exploding loss, or non-finite weights after the
    optimiser step; ``checked`` from :func:`checked_tensors`), or None. Under DDP the verdict
    is agreed by all ranks."""
    reason = None
    if not math.isfinite(loss):
        reason = f"non-finite training loss ({loss})"
    elif loss > DIVERGED_LOSS:
        reason = f"exploding training loss ({loss:.3g} > {DIVERGED_LOSS:g})"
    elif not params_finite(checked):
        reason = "non-finite weights after the optimiser step"
    if any_rank(reason is not None, "checking for divergence") and reason is None:
        reason = "divergence on another rank"
    return reason
