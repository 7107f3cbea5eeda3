"""Hard loss, reliable teacher and the reliability-decoupled self-distillation (ESD) loss.

Outputs are ordered branches first (shallow → deep), main SNN output last, each ``[B, K]``.

- hard loss: ``CE(z_main, y) + α Σ_branches CE(z_b, y)`` (with ``α = 1`` this is ``Σ_l CE``);
- reliable teacher of sample ``i``: the mean of the outputs whose argmax equals ``y_i``
  (in logit space — the official code — or probability space — the poster); a sample with no
  correct output has no teacher ("unreliable");
- ESD soft loss: ``Σ_l τ² · mean_{reliable i} KL(softmax(t_i/τ) ‖ softmax(z_{l,i}/τ))``,
  0 (never NaN) when the batch has no reliable sample; the teacher is detached;
- optional ``η · Σ_l mean_{unreliable i} R(z_{l,i})`` — the paper's ``R`` is not available to us;
  :func:`overconfidence_penalty` is *our assumption* (``η = 0``, the default, reproduces the
  official code);
- total: ``hard + β · soft (+ η · unreliable)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

TEACHER_SPACES = ("logits", "probs")


def overconfidence_penalty(logits: Tensor, tau: float) -> Tensor:
    """Assumed unreliable-sample term ``R(z) = log K − H(softmax(z/τ)) = KL(p ‖ uniform)``.

    Penalises confident predictions on samples that no output classifies correctly. This is
    our stand-in for the paper's ``R`` (whose definition we do not have), used only when
    ``η > 0``.

    Args:
        logits: ``[N, K]``.
        tau: temperature.

    Returns:
        Per-sample penalty ``[N]`` (≥ 0).
    """
    logp = F.log_softmax(logits / tau, dim=1)
    return math.log(logits.shape[1]) + (logp.exp() * logp).sum(1)


@dataclass(frozen=True)
class LossConfig:
    """Weights and options of the (self-)distillation losses.

    Args:
        alpha: weight of each branch's cross-entropy (CIFAR/DVS 1.0, ImageNet 0.7).
        beta: weight of the soft (distillation) loss (CIFAR 0.3, DVS 0.1, ImageNet 0.3).
        tau: distillation temperature ``τ`` (3.0).
        eta: weight of the unreliable-sample term (0 = official code).
        teacher_space: ``"logits"`` (average logits, official code) or ``"probs"`` (average
            probabilities, poster).
        unreliable_term: per-sample ``R(logits [N, K], tau) -> [N]``; default
            :func:`overconfidence_penalty`.
    """

    alpha: float = 1.0
    beta: float = 0.3
    tau: float = 3.0
    eta: float = 0.0
    teacher_space: str = "logits"
    unreliable_term: Callable[[Tensor, float], Tensor] = overconfidence_penalty

    def __post_init__(self) -> None:
        if self.teacher_space not in TEACHER_SPACES:
            raise ValueError(f"teacher_space must be one of {TEACHER_SPACES}, "
                             f"got {self.teacher_space!r}")
        for name in ("alpha", "beta", "eta"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")


class Teacher(NamedTuple):
    """A per-sample teacher distribution.

    Attributes:
        probs: teacher distribution at temperature τ, ``[B, K]`` (rows of unreliable samples are 0).
        reliable: ``[B]`` bool, True where at least one output is correct.
        n_correct: ``[B]`` number of outputs whose argmax equals the label.
    """

    probs: Tensor
    reliable: Tensor
    n_correct: Tensor


class LossOutput(NamedTuple):
    """A loss and its parts.

    Attributes:
        total: the scalar to back-propagate.
        hard: the cross-entropy part (weighted).
        soft: the distillation part before ``β``.
        unreliable: the unreliable-sample term before ``η``.
        diagnostics: floats: ``acc_main`` (accuracy of the main SNN output on the batch),
            ``acc_branch{i}`` for branch ``i = 1, 2, …`` (shallow → deep; losses with branches
            only) and ``reliable_fraction`` (self-distillation losses only).
    """

    total: Tensor
    hard: Tensor
    soft: Tensor
    unreliable: Tensor
    diagnostics: dict[str, float]


def _at_least_fp32(outputs: Sequence[Tensor]) -> list[Tensor]:
    """The logits in at least float32: losses are computed in float32 under mixed precision
    (autocast leaves some of their ops, e.g. ``log_softmax`` on the CPU, in half precision);
    float32 and float64 logits are returned unchanged."""
    return [z.to(torch.promote_types(z.dtype, torch.float32)) for z in outputs]


def hard_loss(outputs: Sequence[Tensor], y: Tensor, alpha: float = 1.0) -> Tensor:
    """``CE(main, y) + α Σ_branches CE(branch, y)`` (mean over the batch).

    Explained in chapter 3 (`03_self_distillation`).

    Args:
        outputs: logits ``[B, K]``, branches first, main last.
        y: labels ``[B]``.
        alpha: weight of each branch's cross-entropy.

    Returns:
        Scalar tensor.
    """
    loss = F.cross_entropy(outputs[-1], y)
    for z in outputs[:-1]:
        loss = loss + alpha * F.cross_entropy(z, y)
    return loss


@torch.no_grad()
def reliable_teacher(outputs: Sequence[Tensor], y: Tensor, tau: float = 3.0,
                     space: str = "logits", filter_reliable: bool = True) -> Teacher:
    """Build the teacher from the outputs that classify each sample correctly.

    Explained in chapter 3 (`03_self_distillation`).

    Args:
        outputs: logits ``[B, K]`` of every output.
        y: labels ``[B]``.
        tau: temperature.
        space: ``"logits"``: ``softmax(mean_correct(z)/τ)``; ``"probs"``:
            ``mean_correct(softmax(z/τ))``.
        filter_reliable: False gives standard self-distillation: every output counts as a
            teacher member and every sample is reliable.

    Returns:
        :class:`Teacher` (detached).
    """
    if space not in TEACHER_SPACES:
        raise ValueError(f"space must be one of {TEACHER_SPACES}, got {space!r}")
    # at least float32 (autocast outputs may be half precision), float64 kept as it is
    dtype = torch.promote_types(outputs[0].dtype, torch.float32)
    z = torch.stack([o.detach().to(dtype) for o in outputs])  # [L, B, K]
    if filter_reliable:
        correct = (z.argmax(2) == y.unsqueeze(0)).to(z.dtype)  # [L, B]
    else:
        correct = torch.ones(z.shape[:2], dtype=z.dtype, device=z.device)
    n = correct.sum(0)  # [B]
    reliable = n > 0
    w = (correct / n.clamp(min=1)).unsqueeze(2)  # [L, B, 1]
    if space == "logits":
        probs = F.softmax((w * z).sum(0) / tau, dim=1)
    else:
        probs = (w * F.softmax(z / tau, dim=2)).sum(0)
    probs = probs * reliable.unsqueeze(1).to(probs.dtype)
    return Teacher(probs, reliable, n.long())


def distillation_loss(outputs: Sequence[Tensor], teacher: Teacher, tau: float = 3.0) -> Tensor:
    """``Σ_l τ² · mean over reliable samples of KL(teacher ‖ softmax(z_l/τ))``; 0 if none reliable.

    Args:
        outputs: logits ``[B, K]`` of every output.
        teacher: from :func:`reliable_teacher`.
        tau: temperature.

    Returns:
        Scalar tensor (finite, with finite gradients, even when no sample is reliable).
    """
    mask = teacher.reliable.to(outputs[0].dtype)
    denom = mask.sum().clamp(min=1.0)
    loss = outputs[0].new_zeros(())
    for z in outputs:
        logq = F.log_softmax(z / tau, dim=1)
        kl = F.kl_div(logq, teacher.probs, reduction="none").sum(1)  # xlogy: 0 rows give 0
        loss = loss + tau**2 * (kl * mask).sum() / denom
    return loss


def _diagnostics(outputs: Sequence[Tensor], y: Tensor, teacher: Teacher) -> dict[str, float]:
    """Batch accuracy per output (``acc_branch1``, …, ``acc_main``) and the reliable fraction."""
    diag = {"reliable_fraction": teacher.reliable.float().mean().item()}
    for i, z in enumerate(outputs[:-1], start=1):
        diag[f"acc_branch{i}"] = (z.argmax(1) == y).float().mean().item()
    diag["acc_main"] = (outputs[-1].argmax(1) == y).float().mean().item()
    return diag


def self_distillation_loss(outputs: Sequence[Tensor], y: Tensor, cfg: LossConfig,
                           filter_reliable: bool = True) -> LossOutput:
    """Total loss ``hard + β soft + η unreliable`` for ESD (``filter_reliable=True``) or standard
    self-distillation (False: teacher = mean of all outputs, every sample distilled).

    Args:
        outputs: logits ``[B, K]``, branches first, main last.
        y: labels ``[B]``.
        cfg: weights and options.
        filter_reliable: apply the reliability filter (ESD) or not (standard SD).

    Returns:
        :class:`LossOutput`.
    """
    outputs = _at_least_fp32(outputs)
    teacher = reliable_teacher(outputs, y, cfg.tau, cfg.teacher_space, filter_reliable)
    hard = hard_loss(outputs, y, cfg.alpha)
    soft = distillation_loss(outputs, teacher, cfg.tau)
    unrel = outputs[0].new_zeros(())
    if cfg.eta > 0:
        bad = (~teacher.reliable).to(outputs[0].dtype)
        denom = bad.sum().clamp(min=1.0)
        for z in outputs:
            unrel = unrel + (cfg.unreliable_term(z, cfg.tau) * bad).sum() / denom
    total = hard + cfg.beta * soft + cfg.eta * unrel
    return LossOutput(total, hard, soft, unrel, _diagnostics(outputs, y, teacher))


def esd_loss(outputs: Sequence[Tensor], y: Tensor, cfg: LossConfig | None = None) -> LossOutput:
    """The ESD loss: reliability-decoupled self-distillation (see the module docstring).

    Explained in chapter 3 (`03_self_distillation`).

    Args:
        outputs: logits ``[B, K]``, branches first, main last.
        y: labels ``[B]``.
        cfg: weights (paper CIFAR defaults when ``None``).

    Returns:
        :class:`LossOutput`.
    """
    return self_distillation_loss(outputs, y, cfg or LossConfig(), filter_reliable=True)


def sd_loss(outputs: Sequence[Tensor], y: Tensor, cfg: LossConfig | None = None) -> LossOutput:
    """Standard self-distillation: teacher = mean of all outputs, no reliability filter.

    Args:
        outputs: logits ``[B, K]``, branches first, main last.
        y: labels ``[B]``.
        cfg: weights (``eta`` is ignored: every sample is distilled).

    Returns:
        :class:`LossOutput`.
    """
    return self_distillation_loss(outputs, y, cfg or LossConfig(), filter_reliable=False)


def ce_loss(outputs: Sequence[Tensor], y: Tensor, cfg: LossConfig | None = None) -> LossOutput:
    """Plain cross-entropy on the main output (BPTT and RateBP baselines).

    Args:
        outputs: logits; only the last (main) is used.
        y: labels ``[B]``.
        cfg: unused (accepted for a uniform signature).

    Returns:
        :class:`LossOutput` with zero soft/unreliable parts.
    """
    z = _at_least_fp32(outputs[-1:])[0]
    total = F.cross_entropy(z, y)
    zero = z.new_zeros(())
    acc = (z.detach().argmax(1) == y).float().mean().item()
    return LossOutput(total, total, zero, zero, {"acc_main": acc})
