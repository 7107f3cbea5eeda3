"""Gradient-error analysis: how far is the rate-BP gradient from the BPTT gradient?

For the same weights and batch, the BPTT gradient ``G`` (surrogate gradient through all ``T``
steps) is the reference. Rate-based backpropagation gives ``G + δ``. The poster argues that the
auxiliary loss adds a term ``αS`` to the true gradient, so the relative error

    ``K_rate = ‖δ‖ / ‖G‖``  (RateBP: CE only)   vs   ``K_esd = ‖δ'‖ / ‖G + αS‖``  (ESD loss)

should satisfy ``K_esd ≤ K_rate``. We *measure* both on the backbone parameters (the SNN kept
at inference), per layer and overall, with ``rate_grad_scale="none"`` so both gradients have
the same scale (the 1/T factor of the official code is a learning-rate convention):

- ``K_rate``: ``ratebp`` vs ``bptt`` (no branches, CE);
- ``K_esd``: ``esd`` vs ``esd_bptt`` (branches + ESD loss; branches fed rates vs mean spikes).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from esdlib.losses import LossConfig
from esdlib.methods import get_method
from esdlib.models import SpikingNet
from esdlib.train.config import RunConfig


def method_gradients(model: SpikingNet, method: str, x: Tensor, y: Tensor, T: int,
                     loss_cfg: LossConfig | None = None) -> dict[str, Tensor]:
    """Backbone gradients of one training step of ``method`` on a copy of ``model``.

    The copy is in train mode (BN uses batch statistics), so ``model`` itself — weights and
    running statistics — is left untouched.

    Args:
        model: network (with branches for ``esd``/``esd_bptt``/``sd``).
        method: one of ``esdlib.METHODS``.
        x: batch ``[B, ...]`` or ``[T, B, ...]``.
        y: labels ``[B]``.
        T: timesteps.
        loss_cfg: loss weights.

    Returns:
        ``{parameter name: gradient}`` for the backbone parameters (branches excluded).
    """
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    get_method(method)(net, x, y, T, loss_cfg or LossConfig(), rate_grad_scale="none")
    return {n: p.grad.detach().clone() for n, p in net.named_parameters()
            if not n.startswith("branches.") and p.grad is not None}


def relative_error(approx: dict[str, Tensor], exact: dict[str, Tensor]) -> dict[str, Any]:
    """``‖approx − exact‖ / ‖exact‖`` and cosine similarity, overall and per weight tensor.

    Args:
        approx: gradients by name (rate-BP).
        exact: gradients by name (BPTT), same keys.

    Returns:
        ``{"overall": K, "cosine": c, "per_layer": {name: K}}`` (layers = tensors with ≥ 2 dims).
    """
    names = [n for n in exact if n in approx]
    a = torch.cat([approx[n].flatten() for n in names])
    e = torch.cat([exact[n].flatten() for n in names])
    per_layer = {n: float((approx[n] - exact[n]).norm() / exact[n].norm().clamp(min=1e-30))
                 for n in names if exact[n].dim() >= 2}
    return {"overall": float((a - e).norm() / e.norm().clamp(min=1e-30)),
            "cosine": float(nn.functional.cosine_similarity(a, e, dim=0)),
            "per_layer": per_layer}


def gradient_errors(model: SpikingNet, x: Tensor, y: Tensor, T: int,
                    loss_cfg: LossConfig | None = None) -> dict[str, Any]:
    """Measure ``K_rate`` and ``K_esd`` for one model state and batch.

    Explained in chapter 8 (`08_gradient_error`).

    Args:
        model: a network with auxiliary branches.
        x: batch.
        y: labels.
        T: timesteps.
        loss_cfg: ESD loss weights.

    Returns:
        ``{"K_rate": {...}, "K_esd": {...}, "inequality_holds": K_esd ≤ K_rate}`` where each
        ``{...}`` is a :func:`relative_error` dict.
    """
    if len(model.branches) == 0:
        raise ValueError("gradient_errors needs a model with auxiliary branches (for K_esd)")
    k_rate = relative_error(method_gradients(model, "ratebp", x, y, T, loss_cfg),
                            method_gradients(model, "bptt", x, y, T, loss_cfg))
    k_esd = relative_error(method_gradients(model, "esd", x, y, T, loss_cfg),
                           method_gradients(model, "esd_bptt", x, y, T, loss_cfg))
    return {"K_rate": k_rate, "K_esd": k_esd,
            "inequality_holds": k_esd["overall"] <= k_rate["overall"]}


class GradientErrorTracker:
    """An ``on_epoch_end`` callback for :func:`esdlib.train.engine.fit` that measures the gradient
    errors on a fixed batch after every epoch (and once before training).

    Args:
        x: fixed batch (already on the model's device, time-first if time-varying).
        y: labels.
        T: timesteps.
        loss_cfg: ESD loss weights.
    """

    def __init__(self, x: Tensor, y: Tensor, T: int, loss_cfg: LossConfig | None = None) -> None:
        self.x, self.y, self.T, self.loss_cfg = x, y, T, loss_cfg
        self.history: list[dict[str, Any]] = []

    def __call__(self, model: SpikingNet, epoch: int) -> None:
        """Measure after ``epoch`` epochs (0 = at initialisation)."""
        res = gradient_errors(model, self.x, self.y, self.T, self.loss_cfg)
        self.history.append({"epoch": epoch, "K_rate": res["K_rate"]["overall"],
                             "K_esd": res["K_esd"]["overall"],
                             "cos_rate": res["K_rate"]["cosine"],
                             "cos_esd": res["K_esd"]["cosine"],
                             "per_layer_rate": res["K_rate"]["per_layer"],
                             "per_layer_esd": res["K_esd"]["per_layer"]})


def gradient_study(cfg: RunConfig, batch_size: int = 64, progress: bool = False) -> dict[str, Any]:
    """Train ``cfg`` (a branch method, e.g. ``esd``) and measure ``K_rate``/``K_esd`` each epoch.

    The fixed batch is the first ``batch_size`` test samples (no augmentation). The per-epoch
    measurements are stored in the run record under ``extra["gradient_error"]``.

    Args:
        cfg: run configuration (its method must train branches).
        batch_size: size of the fixed measurement batch.
        progress: show progress bars.

    Returns:
        The run record.
    """
    from torch.utils.data import DataLoader

    from esdlib.train.engine import fit
    from esdlib.train.runtime import resolve_device
    from esdlib.train.setup import datasets_of, time_first

    if not cfg.uses_branches:
        raise ValueError(f"gradient_study needs a method with branches, got {cfg.method!r}")
    _, test, _ = datasets_of(cfg, augment=False)
    x, y = next(iter(DataLoader(test, batch_size=batch_size, shuffle=False)))
    device = resolve_device(cfg.device)
    tracker = GradientErrorTracker(time_first(x).to(device), y.to(device), cfg.T,
                                   cfg.loss_config())
    return fit(cfg, progress=progress, on_epoch_end=tracker,
               extra=lambda: {"gradient_error": tracker.history})
