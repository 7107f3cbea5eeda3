"""Explicit passes: one call sets a whole model's mode; the passes read like the method.

Rate-based backpropagation (DESIGN §1b) is two calls::

    spike_pass(model, x, T)         # no graph: T steps, every LIF records r and e,
                                    # every BN records its T·B batch statistics
    out = rate_pass(model, x)       # with graph: one step on the time-averaged input
    loss(out).backward()
    reset_state(model)

BPTT is ``bptt_forward(model, x, T)``; inference is :func:`infer`.

Input convention for the multi-step passes: ``x`` is either a static image batch
``[B, C, H, W]`` (direct encoding: the same image at each of the ``T`` steps) or a
time-varying batch ``[T, B, C, H, W]`` (event frames).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from esdlib.neurons import NEURON_MODES


def _mode_aware(model: nn.Module) -> Iterator[nn.Module]:
    return (m for m in model.modules() if hasattr(m, "set_mode"))


def set_mode(model: nn.Module, mode: str, T: int = 1) -> None:
    """Set the behaviour of every mode-aware module of ``model`` (LIFs, BNs, networks).

    Args:
        model: any module tree.
        mode: ``"multistep"`` (BPTT / inference), ``"spike"`` (rate-BP pass 1) or ``"rate"``
            (rate-BP pass 2).
        T: number of timesteps of the multi-step modes.
    """
    if mode not in NEURON_MODES:
        raise ValueError(f"mode must be one of {NEURON_MODES}, got {mode!r}")
    if int(T) < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    for m in _mode_aware(model):
        m.set_mode(mode, int(T))


@contextlib.contextmanager
def mode(model: nn.Module, name: str, T: int = 1) -> Iterator[nn.Module]:
    """Context manager form of :func:`set_mode`; restores each module's previous mode on exit.

    Args:
        model: module tree.
        name: mode name (see :func:`set_mode`).
        T: number of timesteps.

    Yields:
        ``model``.
    """
    previous = [(m, m.mode, m.T) for m in _mode_aware(model)]
    set_mode(model, name, T)
    try:
        yield model
    finally:
        for m, old_mode, old_T in previous:
            m.set_mode(old_mode, old_T)


def reset_state(model: nn.Module) -> None:
    """Clear every recorded state (LIF rates/eligibilities/firing counts, BN spike statistics)."""
    for m in model.modules():
        if hasattr(m, "reset_state"):
            m.reset_state()


@torch.no_grad()
def spike_pass(model: nn.Module, x: Tensor, T: int):
    """Rate-BP pass 1: run the SNN over ``T`` steps without a graph, recording r, e and BN stats.

    Branches are not evaluated (they see rates only in the rate pass).

    Args:
        model: a spiking network (see :mod:`esdlib.models`), in ``train()`` mode for training.
        x: ``[B, C, H, W]`` static or ``[T, B, C, H, W]`` time-varying input.
        T: number of timesteps.

    Returns:
        The network output (time-averaged logits ``[B, K]``, no auxiliary logits).
    """
    with mode(model, "spike", T):
        return model(x, aux=False)


def rate_input(x: Tensor) -> Tensor:
    """The rate-pass input: ``x`` for a static batch, its time average for ``[T, B, ...]``."""
    return x.mean(0) if x.dim() == 5 else x


def rate_pass(model: nn.Module, x: Tensor, aux: bool = True):
    """Rate-BP pass 2: one differentiable pass on the time-averaged input.

    Forward values equal the SNN's time-averaged activations from the preceding
    :func:`spike_pass` on the same batch; gradients through each LIF are its eligibility.

    Args:
        model: the network the spike pass just ran on.
        x: the same batch given to :func:`spike_pass` (``[B, ...]`` or ``[T, B, ...]``).
        aux: also evaluate the auxiliary ANN branches on the rate maps.

    Returns:
        The network output (logits ``[B, K]`` and auxiliary logits).
    """
    with mode(model, "rate", 1):
        return model(rate_input(x), aux=aux)


def bptt_forward(model: nn.Module, x: Tensor, T: int, aux: bool = True):
    """Multi-step forward with the surrogate gradient (BPTT when followed by ``backward``).

    Args:
        model: spiking network.
        x: ``[B, C, H, W]`` static or ``[T, B, C, H, W]`` input.
        T: number of timesteps.
        aux: evaluate the auxiliary branches on time-averaged intermediate spikes.

    Returns:
        The network output (time-averaged logits ``[B, K]`` and auxiliary logits).
    """
    with mode(model, "multistep", T):
        return model(x, aux=aux)


@torch.no_grad()
def infer(model: nn.Module, x: Tensor, T: int):
    """Inference: the plain SNN over ``T`` steps, no branches, no graph.

    Args:
        model: spiking network (call ``model.eval()`` first for running BN statistics).
        x: ``[B, C, H, W]`` or ``[T, B, C, H, W]``.
        T: number of timesteps.

    Returns:
        The network output with time-averaged logits ``[B, K]``.
    """
    with mode(model, "multistep", T):
        return model(x, aux=False)
