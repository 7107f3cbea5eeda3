"""Run profiles and the paper's hyper-parameters: the one place they live.

* ``smoke``   -- seconds on a CPU; used by CI and by notebooks' smoke runs.
* ``quick``   -- the ``default`` settings cut to 3 epochs: a preview of every book page.
* ``default`` -- the hard embedded digits; about a minute per run on one CPU core.
* ``mnist``   -- real handwritten digits (MNIST), the evidence grid sized for two CPU cores.
* ``paper``   -- the paper's data sets and schedules (GPU); the hyper-parameters depend on the
  data set and live in :data:`PAPER_HPARAMS`.

Each profile is a dict of :class:`~esdlib.train.config.RunConfig` field values applied on top
of the field defaults (:data:`PROFILE_SETTINGS`); the ``paper`` profile adds the data set's
row of :data:`PAPER_HPARAMS`. Build a config from one with
:meth:`~esdlib.train.config.RunConfig.from_profile`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from esdlib.data import FIXED_IMAGE_SIZE
from esdlib.train.fields import ConfigError

__all__ = ["DEFAULT_PROFILE", "MNIST_PROFILE", "PAPER_ASSUMED", "PAPER_HPARAMS", "PROFILES",
           "PROFILE_SETTINGS", "QUICK_PROFILE", "SMOKE_PROFILE", "profile_values"]

SMOKE_PROFILE: dict[str, Any] = {
    "dataset": "digits",
    "image_size": 16,
    "arch": "spiking_resnet18",
    "width": 0.125,
    "T": 2,
    "epochs": 1,
    "batch_size": 64,
    "eval_batch_size": 256,
    "max_train_steps": 3,
}
"""``smoke``: a few optimiser steps on tiny digits; finishes in seconds on a CPU."""

DEFAULT_PROFILE: dict[str, Any] = {
    "dataset": "digits_hard",
    "image_size": 16,
    "arch": "spiking_resnet18",
    "width": 0.125,
    "T": 4,
    "epochs": 20,
    "batch_size": 16,  # 898 training images: small batches give enough steps
    "eval_batch_size": 256,
    "lr": 0.1,
    "weight_decay": 5e-4,
}
"""``default``: the book's evidence benchmark, the hard embedded digits at width ×0.125; about
a minute per run on one CPU core. Twenty epochs of cosine annealing, chosen from learning curves:
at T = 4 BPTT and ESD reach ~85 % and their test accuracy has stopped moving over the last four
epochs (chapter 4 shows the curves and flags any run that has not settled)."""

QUICK_PROFILE: dict[str, Any] = {**DEFAULT_PROFILE, "epochs": 3}
"""``quick``: the default profile cut to three epochs, for a preview of every page in minutes;
its runs are not converged and its pages give no verdicts."""

MNIST_PROFILE: dict[str, Any] = {
    "dataset": "mnist",
    "image_size": 16,
    "arch": "spiking_resnet18",
    "width": 0.125,
    "T": 4,
    "epochs": 4,
    "batch_size": 64,
    "eval_batch_size": 500,
    "train_subset": 12_000,
    "lr": 0.1,
    "weight_decay": 5e-4,
}
"""``mnist``: the evidence grid on real handwritten digits (MNIST, the official 10,000 test
images, so one point = 100 images), sized for two CPU cores: 28-px images resized to 16 px
(0.5x the step time of 28 px here), width ×0.125, T = 4, four epochs over a seeded
12,000-image training subset (the same images for paired runs; 750 steps of 64). Evaluating
the 10,000 test images after every epoch costs about as much as training; four epochs are the
fewest the convergence rule can judge. About 2.5 minutes per run on one core; the whole grid
is the ``mnist`` profile of the manifest (chapter 11)."""

_PAPER_CIFAR: dict[str, Any] = {
    "arch": "spiking_resnet18",
    "width": 1.0,
    "image_size": 32,
    "augment": True,  # AutoAugment + Cutout (16 px)
    "T": 6,
    "alpha": 1.0,
    "beta": 0.3,
    "tau": 3.0,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "epochs": 300,  # cosine annealing
    "warmup_epochs": 0,
    "batch_size": 128,
}

PAPER_HPARAMS: dict[str, dict[str, Any]] = {
    "cifar10": dict(_PAPER_CIFAR),
    "cifar100": dict(_PAPER_CIFAR),
    "imagenet": {
        "arch": "preact_spiking_resnet34",
        "width": 1.0,
        "image_size": 224,
        "augment": True,  # assumed: random-resized crop + flip
        "T": 4,
        "alpha": 0.7,
        "beta": 0.3,
        "tau": 3.0,  # assumed (the CIFAR value)
        "lr": 0.2,
        "momentum": 0.9,
        "weight_decay": 2e-5,
        "epochs": 100,
        "warmup_epochs": 0,  # assumed
        "batch_size": 512,
    },
    "cifar10_dvs": {
        "arch": "spiking_resnet18",
        "width": 1.0,
        "image_size": 48,
        "augment": True,  # assumed
        "T": 10,
        "alpha": 1.0,  # assumed
        "beta": 0.1,
        "tau": 3.0,  # assumed (the CIFAR value)
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "epochs": 300,
        "warmup_epochs": 0,
        "batch_size": 32,
    },
}
"""The paper's hyper-parameters per data set (the ``paper`` profile; one place only).

All rows use SGD with a cosine schedule, decay 0.2, threshold 1.0 and surrogate
alpha 4 (the field defaults). Values the paper does not state are listed in
:data:`PAPER_ASSUMED`.
"""

PAPER_ASSUMED: dict[str, tuple[str, ...]] = {
    "cifar10": (),
    "cifar100": (),
    "imagenet": ("augment", "tau", "warmup_epochs"),
    "cifar10_dvs": ("augment", "alpha", "tau"),
}
"""Per data set, the :data:`PAPER_HPARAMS` entries that are our assumptions, not the paper's."""

PROFILE_SETTINGS: dict[str, dict[str, Any]] = {
    "smoke": SMOKE_PROFILE,
    "quick": QUICK_PROFILE,
    "default": DEFAULT_PROFILE,
    "mnist": MNIST_PROFILE,
    "paper": {"dataset": "cifar10"},  # + the data set's row of PAPER_HPARAMS
}
"""Field values of each profile, applied on top of the field defaults."""

PROFILES = tuple(PROFILE_SETTINGS)
"""Profile names: ``("smoke", "quick", "default", "mnist", "paper")``."""


def profile_values(name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The field values of the profile ``name`` (one of :data:`PROFILES`) with ``overrides``
    applied, as :meth:`~esdlib.train.config.RunConfig.from_profile` builds them.

    For ``paper`` the data set is chosen first (``overrides["dataset"]``, else CIFAR-10) and
    its row of :data:`PAPER_HPARAMS` applied; a data set of fixed image size (CIFAR-10/100)
    chosen by an override brings its own size unless ``image_size`` is overridden too (e.g.
    smoke + ``dataset=cifar10`` -> 32).

    Raises:
        ConfigError: a paper profile for a data set the paper does not use.
    """
    values: dict[str, Any] = {"profile": name, **PROFILE_SETTINGS[name]}
    if name == "paper":
        dataset = overrides.get("dataset", values["dataset"])
        if dataset not in PAPER_HPARAMS:
            raise ConfigError(
                f"the paper profile has no hyper-parameters for dataset={dataset!r}; "
                f"paper data sets: {', '.join(PAPER_HPARAMS)} "
                "(use the 'default' or 'smoke' profile for the embedded data sets)")
        values.update(dataset=dataset, **PAPER_HPARAMS[dataset])
    dataset = overrides.get("dataset", values["dataset"])
    fixed = FIXED_IMAGE_SIZE.get(dataset) if isinstance(dataset, str) else None
    if fixed is not None and "image_size" not in overrides:
        values["image_size"] = fixed
    return {**values, **overrides}
