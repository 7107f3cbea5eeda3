"""What a :class:`~esdlib.train.config.RunConfig` accepts: the choices of each categorical field,
the bounds of the numeric ones, and the rules between fields.

The choices come from the modules that implement them (one source each);
:mod:`esdlib.train.config` re-exports them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from esdlib import methods as _methods
from esdlib.data import DATASET_NAMES, FIXED_IMAGE_SIZE
from esdlib.data import SPLITS as _DATA_SPLITS
from esdlib.models import ARCHITECTURES, check_branch_pool

if TYPE_CHECKING:
    from esdlib.train.config import RunConfig

__all__ = [
    "ARCHS", "BRANCH_METHODS", "DATASETS", "MAX_EXPERIMENT_LEN", "MAX_HPARAM", "MAX_IMAGE_SIZE",
    "MAX_T", "MAX_WIDTH", "METHODS", "NAME_RE", "RATE_BP_METHODS", "RATE_GRAD_SCALES", "SPLITS",
    "cross_field_problem",
]

METHODS: tuple[str, ...] = tuple(_methods.METHODS)
"""Training methods: BPTT, rate-based BP, standard self-distillation, ESD, ESD on BPTT."""

BRANCH_METHODS = _methods.BRANCH_METHODS
"""Methods that attach the auxiliary ANN branches during training."""

RATE_BP_METHODS = _methods.RATE_BP_METHODS
"""Methods trained with the two-pass rate-based backpropagation (the others use BPTT)."""

RATE_GRAD_SCALES = _methods.RATE_GRAD_SCALES
"""How the two-pass methods scale the loss gradient (``"1/T"`` or ``"none"``)."""

DATASETS = DATASET_NAMES
"""Data-set names (``esdlib.data.DATASET_NAMES``)."""

SPLITS = _DATA_SPLITS
"""Valid ``split`` per data set (``esdlib.data.SPLITS``). CIFAR10-DVS has no published split:
``"official"`` is the paper code's ``random_split`` with seed 42, ``"balanced"`` a per-class
split."""

ARCHS: tuple[str, ...] = tuple(ARCHITECTURES)
"""Backbone names (``esdlib.models.ARCHITECTURES``)."""

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
"""An experiment name (matched with ``fullmatch``, so no trailing newline slips through)."""
MAX_EXPERIMENT_LEN = 100
"""Longest experiment name: the run id (experiment + ~70 characters) stays under the record
schema's 200 characters and every file name under the usual 255-byte limit."""
MAX_WIDTH = 16.0
"""Largest channel-width multiplier (16x the paper's widths is already far beyond any GPU)."""
MAX_IMAGE_SIZE = 1024
"""Largest input side in pixels (the paper's largest is 224)."""
MAX_T = 1024
"""Largest number of timesteps (the paper's largest is 10)."""
MAX_HPARAM = 1e6
"""Upper bound of the float hyper-parameters (lr, weight decay, loss weights, temperature,
neuron constants): larger values overflow float32 arithmetic at the first step."""


def cross_field_problem(cfg: RunConfig) -> str | None:
    """The first rule between fields that ``cfg`` breaks, as a message (``None``: none).

    Checked in order: ``split`` is one of ``SPLITS[dataset]``; the branches' pooling fits
    ``arch`` at ``image_size``; ``compile`` only for the two-pass methods; ``warmup_epochs <=
    epochs``; a data set of fixed size (CIFAR-10/100: 32 px) gets that size or ``None``.
    """
    if cfg.split not in SPLITS[cfg.dataset]:
        return (f"split={cfg.split!r} is not valid for dataset={cfg.dataset!r}; "
                f"choose one of: {', '.join(repr(s) for s in SPLITS[cfg.dataset])}")
    if cfg.image_size is not None and cfg.uses_branches:
        try:
            check_branch_pool(cfg.arch, cfg.image_size, cfg.branch_pool)
        except ValueError as err:
            return str(err)
    if cfg.compile != "none" and not cfg.uses_rate_backprop:
        return (f"compile={cfg.compile!r} compiles the spike pass of the two-pass methods "
                f"({', '.join(RATE_BP_METHODS)}); method={cfg.method!r} has none: use "
                "compile='none'")
    if cfg.warmup_epochs > cfg.epochs:
        return f"warmup_epochs={cfg.warmup_epochs} exceeds epochs={cfg.epochs}"
    fixed = FIXED_IMAGE_SIZE.get(cfg.dataset)
    if cfg.image_size not in (None, fixed) and fixed is not None:
        return (f"dataset={cfg.dataset!r} is {fixed}x{fixed}; image_size must be {fixed} or "
                f"none, got {cfg.image_size}")
    return None
