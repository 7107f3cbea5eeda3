"""Run configuration: one frozen, validated record per training run.

Every run (CLI, notebook, test) is described by a :class:`RunConfig`. It is built
by :meth:`RunConfig.from_profile` from a named profile plus overrides, validated in
``__post_init__`` (invalid or unknown values raise :class:`ConfigError` listing
the valid choices before any work is done) and never mutated afterwards
(:meth:`RunConfig.replace` returns a new, re-validated config).

Profiles:
    * ``smoke``   -- seconds on a CPU; used by CI and by notebooks' smoke runs.
    * ``quick``   -- the ``default`` settings cut to 3 epochs: a preview of every book page.
    * ``default`` -- the hard embedded digits; about a minute per run on one CPU core.
    * ``paper``   -- the paper's data sets and schedules (GPU); the
      hyper-parameters depend on the data set and live in :data:`PAPER_HPARAMS`.

Example:
    >>> cfg = RunConfig.from_profile("smoke", method="bptt")
    >>> cfg.T, cfg.method, cfg.uses_branches
    (2, 'bptt', False)
"""

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import numbers
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from esdlib import methods as _methods
from esdlib.data import DATASET_NAMES
from esdlib.data import SPLITS as _DATA_SPLITS
from esdlib.losses import TEACHER_SPACES, LossConfig
from esdlib.models import ARCHITECTURES, BRANCH_KINDS, BRANCH_POOLS, check_branch_pool
from esdlib.neurons import RESET_MODES, LIFParams
from esdlib.passes import COMPILE_MODES
from esdlib.train.paths import resolve_path
from esdlib.train.runtime import PRECISIONS

__all__ = [
    "ARCHS",
    "BRANCH_KINDS",
    "BRANCH_METHODS",
    "BRANCH_POOLS",
    "ConfigError",
    "DATASETS",
    "DEFAULT_PROFILE",
    "MNIST_PROFILE",
    "COMPILE_MODES",
    "HASH_EXCLUDED_FIELDS",
    "HASHED_WHEN_NOT_DEFAULT",
    "HASH_LEGACY_VALUES",
    "METHODS",
    "PAPER_ASSUMED",
    "PAPER_HPARAMS",
    "PRECISIONS",
    "PROFILES",
    "PROFILE_SETTINGS",
    "QUICK_PROFILE",
    "RATE_BP_METHODS",
    "RATE_GRAD_SCALES",
    "RESET_MODES",
    "RunConfig",
    "SMOKE_PROFILE",
    "SPLITS",
    "TEACHER_SPACES",
    "canonical_json",
    "check_runtime",
    "parse_override",
]

# ---------------------------------------------------------------------------
# Choices
# ---------------------------------------------------------------------------

# The choices come from the modules that implement them (one source each).
METHODS: tuple[str, ...] = tuple(_methods.METHODS)
"""Training methods: BPTT, rate-based BP, standard self-distillation, ESD, ESD on BPTT."""

BRANCH_METHODS = _methods.BRANCH_METHODS
"""Methods that attach the auxiliary ANN branches during training."""

RATE_BP_METHODS = _methods.RATE_BP_METHODS
"""Methods trained with the two-pass rate-based backpropagation (the others use BPTT)."""

DATASETS = DATASET_NAMES
"""Data-set names (``esdlib.data.DATASET_NAMES``)."""

SPLITS = _DATA_SPLITS
"""Valid ``split`` per data set (``esdlib.data.SPLITS``). CIFAR10-DVS has no published split:
``"official"`` is the paper code's ``random_split`` with seed 42, ``"balanced"`` a per-class
split."""

ARCHS: tuple[str, ...] = tuple(ARCHITECTURES)
RATE_GRAD_SCALES = _methods.RATE_GRAD_SCALES

_DEVICE_RE = re.compile(r"auto|cpu|cuda|cuda:\d+|mps")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # matched with fullmatch (no trailing \n)
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
_DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


# ---------------------------------------------------------------------------
# Profiles and the paper's hyper-parameters
# ---------------------------------------------------------------------------

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

HASHED_WHEN_NOT_DEFAULT = frozenset({"branch_pool", "train_subset", "compile", "tf32"})
"""Fields added after the first records were written: :meth:`RunConfig.config_hash` covers them
only when they differ from their default, so the run ids of earlier records stay valid."""

HASH_EXCLUDED_FIELDS = frozenset(
    {"out_dir", "checkpoint_dir", "num_workers", "device", "data_root", "download",
     "checkpoint_every", "cache_dir", "channels_last", "keep_freed_memory", "precision"}
)
"""Fields left out of :meth:`RunConfig.config_hash` as they are: they say where files live or
how the work is scheduled (memory layout, allocator, like the device), not what is computed.
``precision`` does change what is computed; it enters the hash through its legacy form (see
:meth:`RunConfig.hash_dict`)."""

HASH_LEGACY_VALUES: dict[str, Any] = {"channels_last": False}
"""Keys earlier versions hashed that no longer say anything about the result, with the value
every committed record hashed: :meth:`RunConfig.hash_dict` emits them unchanged so the run ids
of those records stay valid (``channels_last`` became a scheduling choice, default on)."""


class ConfigError(ValueError):
    """An invalid run configuration: unknown key, bad type, value out of range or choice.

    The message names every offending key and lists the valid keys or choices.
    """


def _spec(default: Any, **constraints: Any) -> Any:
    """A dataclass field whose validation constraints live next to its default.

    Args:
        default: The field's default value.
        **constraints: Any of ``choices`` (tuple), ``ge``/``gt``/``le``/``lt``
            (numeric bounds), ``pattern`` (compiled regex the whole value must match)
            with ``pattern_doc`` (what the pattern accepts, for the error message),
            ``nonempty`` (strings) and ``max_len`` (longest string).
    """
    return field(default=default, metadata=constraints)


@dataclass(frozen=True)
class RunConfig:
    """The complete, validated description of one training run.

    Build it with :meth:`RunConfig.from_profile` rather than the constructor: the field
    defaults below are the *paper-like* values (e.g. 300 epochs at width 1.0), not
    the ``default`` profile. All fields are plain Python primitives, so
    :meth:`to_dict` is JSON-serialisable and round-trips through :meth:`from_dict`.

    Attributes:
        profile: Name of the profile the config was built from (a label; one of
            :data:`PROFILES`).
        experiment: Experiment name; records go to ``<out_dir>/<experiment>/``.
            Letters, digits, ``_``, ``.``, ``-``.
        dataset: Data set, one of :data:`DATASETS`.
        data_root: Directory holding the data set's files; ``None`` = the data
            module's default location. Does not affect the config hash.
        image_size: Input side length in pixels (images are square); ``None`` =
            the data set's native size. Paper: 32 (CIFAR), 224 (ImageNet),
            48 (CIFAR10-DVS).
        split: Train/test split, one of ``SPLITS[dataset]`` (``"official"`` = the
            data set's published split; for CIFAR10-DVS, which has none, the paper
            code's seeded ``random_split``; ``"balanced"`` = a per-class split).
        augment: Training-set augmentation (paper CIFAR: AutoAugment + Cutout 16 px;
            the data module defines what each data set gets).
        download: Allow the data module to download a missing data set.
        arch: Backbone, one of :data:`ARCHS`.
        width: Channel-width multiplier (1.0 = the paper's widths).
        branch_kind: Auxiliary-branch block, ``"dsconv"`` (the published
            depthwise-separable block), ``"conv"`` (the same block with plain 3x3
            convolutions) or ``"dsconv_wide"`` (esdlib's first, wider block; an ablation).
        branch_pool: Branch pooling, ``"global"`` (any input size) or ``"published"``
            (the published code's fixed window, which sees only part of the map at
            some of the paper's sizes; for exact replication).
        method: Training method, one of :data:`METHODS`.
        T: Number of simulation timesteps (paper: 6 CIFAR, 4 ImageNet, 10 DVS).
        alpha: Weight of each *branch's* cross-entropy: hard loss
            ``CE(main) + alpha * sum_b CE(branch_b)`` (the published ImageNet
            convention; paper: 1.0, ImageNet 0.7). The published CIFAR script multiplies
            the whole hard loss (main + branches) by alpha instead; the two coincide at
            alpha = 1, the CIFAR setting.
        beta: Weight of the soft (distillation) loss (paper: 0.3; DVS 0.1).
        tau: Distillation temperature (paper: 3.0).
        eta: Weight of the optional term for unreliable samples (0 = the official code).
        teacher_space: Average the reliable outputs as ``"logits"`` (official code)
            or ``"probs"`` (the poster's formula).
        decay: LIF leak d in (0, 1); membrane factor lambda = d (paper: 0.2).
        v_threshold: Firing threshold theta, in membrane-potential units (paper: 1.0).
        surrogate_alpha: Steepness of the sigmoid surrogate derivative (paper: 4.0).
        reset: ``"soft"`` (subtract theta, reset detached from the graph; paper),
            ``"soft_nodetach"`` (same, reset kept in the graph) or ``"hard"`` (to 0).
        rate_grad_scale: ``"1/T"`` scales the loss gradient by 1/T in the two-pass
            (rate-BP) methods, as the official ESD code does (CIFAR, DVS, ImageNet) and the
            official RateBP CIFAR script; ``"none"`` does not, as the official RateBP DVS
            script (plain CE), which the RateBP baseline on event data must use: with 1/T
            its effective step is T times smaller than the published recipe's.
        lr: Initial learning rate of SGD (paper: 0.1; ImageNet 0.2).
        momentum: SGD momentum in [0, 1) (paper: 0.9).
        weight_decay: L2 weight decay (paper: 5e-4; ImageNet 2e-5).
        epochs: Training epochs; the schedule is cosine annealing over them
            (paper: 300 CIFAR/DVS, 100 ImageNet).
        warmup_epochs: Linear learning-rate warm-up epochs (0 = none; <= epochs).
        batch_size: Training mini-batch size in samples (paper: 128 CIFAR,
            512 ImageNet, 32 DVS).
        eval_batch_size: Evaluation mini-batch size in samples.
        max_train_steps: Cap on optimiser steps per epoch (``None`` = full epoch);
            the smoke profile uses it to finish in seconds.
        train_subset: Train on this many images of the training set (a uniform sample fixed
            by ``seed``, the same for paired runs; ``None`` = all); the test set stays whole.
            Hashed only when set, so earlier run ids stay valid.
        checkpoint_every: Save the resumable ``last`` checkpoint every this many
            optimiser steps (and at every epoch end); does not affect the config hash.
        num_workers: DataLoader worker processes (does not affect the config hash).
        seed: Random seed for weights, shuffling and augmentation, in [0, 2**32).
        device: ``"auto"`` (CUDA if available, else MPS, else CPU), ``"cpu"``,
            ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (does not affect the config hash).
        precision: Arithmetic of the training step: ``"fp32"`` (default), ``"bf16"``
            (bfloat16 autocast, CPU or CUDA), ``"fp16"`` (float16 autocast with a gradient
            scaler, CUDA only) or ``"auto"`` (bf16 where the hardware computes it natively,
            else fp32: :func:`esdlib.train.runtime.resolve_precision`). Membranes, eligibilities,
            rates, BN statistics, the teacher and the losses stay float32; evaluation runs in
            float32. The default stays fp32 so that the committed evidence grid reproduces on
            any host: bf16 changes the numbers (at the level of paired-seed noise), and
            ``"auto"`` would make them depend on the machine. Replaces the former ``amp``
            flag (a stored ``amp=true`` reads as ``"fp16"``). Hashed (``bf16``/``auto`` give
            other run ids than ``fp32``; ``fp16`` hashes as the former ``amp=true``).
        compile: Compile the spike pass of the two-pass methods with ``torch.compile``:
            ``"none"`` (default, eager), ``"default"``, ``"reduce-overhead"`` or
            ``"max-autotune"`` (the last two replay CUDA graphs on CUDA;
            :class:`esdlib.passes.CompiledSpikePass`). A failed compilation falls back to
            the eager pass with one warning (the record's ``extra.runtime.compile_error``).
            BPTT methods have no spike pass and accept only ``"none"``. Hashed when set:
            compiled kernels round differently (a spike may flip where the membrane lies
            within rounding of the threshold).
        tf32: Let float32 matrix products and cuDNN convolutions on CUDA use TF32 tensor
            cores (10-bit mantissa inputs) during the run; off by default, so fp32 means
            float32 there (PyTorch by itself lets cuDNN convolutions use TF32). :func:`esdlib.fit`
            sets ``torch.backends.cuda.matmul.allow_tf32`` and
            ``torch.backends.cudnn.allow_tf32`` to this value for the run and restores them
            afterwards; the record's ``extra.runtime.tf32`` says whether TF32 was in effect
            (on the CPU it has no effect, and the record says so). Hashed when set.
        channels_last: Use the channels-last (NHWC) memory format for the model and input
            (default on: oneDNN's convolutions are faster in it on the CPU, tensor cores want
            it on CUDA). Also at the small profile of that time (digits 16×16, ×0.25, batch 16,
            T = 4, one thread, 2-vCPU AMD EPYC, 2026-11-26): ESD 0.063 → 0.054 s per step,
            BPTT 0.072 → 0.064 s, RateBP 0.047 → 0.042 s. Does not affect the config hash.
        keep_freed_memory: On the CPU, let glibc keep freed memory for reuse
            (:func:`esdlib.train.runtime.keep_freed_memory`, applied by :func:`esdlib.fit`; it acts
            on the whole process and stays in effect). Does not affect the config hash.
        out_dir: Root directory of run records; a relative path is taken relative to the
            current working directory (does not affect the config hash).
        checkpoint_dir: Root directory of checkpoints; relative like ``out_dir`` (does not
            affect the config hash).
        cache_dir: Folder of derived data-set files (the CIFAR10-DVS frame cache and split
            file); ``None`` = inside the data folder (``<data_root>/frames_T{T}_{S}``). Set it
            when the data folder is read-only. Does not affect the config hash.
    """

    profile: str = _spec("default", choices=PROFILES)
    experiment: str = _spec("train", pattern=_NAME_RE, max_len=MAX_EXPERIMENT_LEN,
                            pattern_doc="letters, digits, _ . -")

    dataset: str = _spec("digits", choices=DATASETS)
    data_root: str | None = None
    image_size: int | None = _spec(None, ge=1, le=MAX_IMAGE_SIZE)
    split: str = "official"
    augment: bool = True
    download: bool = False

    arch: str = _spec("spiking_resnet18", choices=ARCHS)
    width: float = _spec(1.0, gt=0, le=MAX_WIDTH)
    branch_kind: str = _spec("dsconv", choices=BRANCH_KINDS)
    branch_pool: str = _spec("global", choices=BRANCH_POOLS)

    method: str = _spec("esd", choices=METHODS)
    T: int = _spec(4, ge=1, le=MAX_T)

    alpha: float = _spec(1.0, ge=0, le=MAX_HPARAM)
    beta: float = _spec(0.3, ge=0, le=MAX_HPARAM)
    tau: float = _spec(3.0, gt=0, le=MAX_HPARAM)
    eta: float = _spec(0.0, ge=0, le=MAX_HPARAM)
    teacher_space: str = _spec("logits", choices=TEACHER_SPACES)

    decay: float = _spec(0.2, gt=0, lt=1)
    v_threshold: float = _spec(1.0, gt=0, le=MAX_HPARAM)
    surrogate_alpha: float = _spec(4.0, gt=0, le=MAX_HPARAM)
    reset: str = _spec("soft", choices=RESET_MODES)
    rate_grad_scale: str = _spec("1/T", choices=RATE_GRAD_SCALES)

    lr: float = _spec(0.1, gt=0, le=MAX_HPARAM)
    momentum: float = _spec(0.9, ge=0, lt=1)
    weight_decay: float = _spec(5e-4, ge=0, le=MAX_HPARAM)
    epochs: int = _spec(300, ge=1)
    warmup_epochs: int = _spec(0, ge=0)
    batch_size: int = _spec(128, ge=1)
    eval_batch_size: int = _spec(256, ge=1)
    max_train_steps: int | None = _spec(None, ge=1)
    train_subset: int | None = _spec(None, ge=1)
    checkpoint_every: int = _spec(100, ge=1)

    num_workers: int = _spec(0, ge=0)
    seed: int = _spec(0, ge=0, lt=2**32)
    device: str = _spec("auto", pattern=_DEVICE_RE, pattern_doc=", ".join(_DEVICE_CHOICES))
    precision: str = _spec("fp32", choices=PRECISIONS)
    compile: str = _spec("none", choices=COMPILE_MODES)
    tf32: bool = False
    channels_last: bool = True
    keep_freed_memory: bool = True

    out_dir: str = _spec("results", nonempty=True)
    checkpoint_dir: str = _spec("checkpoints", nonempty=True)
    cache_dir: str | None = _spec(None, nonempty=True)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                value = _coerce_type(f.name, value)
            except ConfigError as err:
                problems.append(str(err))
                continue
            if value is not getattr(self, f.name):
                object.__setattr__(self, f.name, value)
            if value is not None:
                problems.extend(_check_constraints(f.name, value, f.metadata))
        if not problems and self.split not in SPLITS[self.dataset]:
            problems.append(
                f"split={self.split!r} is not valid for dataset={self.dataset!r}; "
                f"choose one of: {', '.join(repr(s) for s in SPLITS[self.dataset])}"
            )
        if not problems and self.image_size is not None and self.uses_branches:
            try:
                check_branch_pool(self.arch, self.image_size, self.branch_pool)
            except ValueError as err:
                problems.append(str(err))
        if not problems and self.compile != "none" and not self.uses_rate_backprop:
            problems.append(
                f"compile={self.compile!r} compiles the spike pass of the two-pass methods "
                f"({', '.join(RATE_BP_METHODS)}); method={self.method!r} has none: use "
                "compile='none'")
        if not problems and self.warmup_epochs > self.epochs:
            problems.append(f"warmup_epochs={self.warmup_epochs} exceeds epochs={self.epochs}")
        fixed = _FIXED_IMAGE_SIZE.get(self.dataset)
        if not problems and self.image_size not in (None, fixed) and fixed is not None:
            problems.append(f"dataset={self.dataset!r} is {fixed}x{fixed}; image_size must be "
                            f"{fixed} or none, got {self.image_size}")
        if problems:
            raise ConfigError("invalid RunConfig:\n  " + "\n  ".join(problems))

    # -- construction ------------------------------------------------------

    @classmethod
    def from_profile(cls, name: str, **overrides: Any) -> "RunConfig":
        """Build a config from a named profile, then apply ``overrides``.

        For ``paper`` the data set is chosen first (``overrides["dataset"]``, else
        ``"cifar10"``), its row of :data:`PAPER_HPARAMS` is applied, then the
        remaining overrides.

        Args:
            name: One of :data:`PROFILES`.
            **overrides: Field values that replace the profile's.

        Returns:
            The validated config, with ``profile=name``.

        Raises:
            ConfigError: Unknown profile, unknown or invalid override, or a paper
                profile for a data set the paper does not use.
        """
        if name not in PROFILE_SETTINGS:
            raise ConfigError(
                f"unknown profile {name!r}{_did_you_mean(name, PROFILES)}; "
                f"valid profiles: {', '.join(PROFILES)}"
            )
        _check_keys(overrides)
        if "profile" in overrides:
            raise ConfigError(
                "'profile' cannot be overridden; pass the profile name as the first argument"
            )
        values: dict[str, Any] = {"profile": name, **PROFILE_SETTINGS[name]}
        if name == "paper":
            dataset = overrides.get("dataset", values["dataset"])
            if dataset not in PAPER_HPARAMS:
                raise ConfigError(
                    f"the paper profile has no hyper-parameters for dataset={dataset!r}; "
                    f"paper data sets: {', '.join(PAPER_HPARAMS)} "
                    "(use the 'default' or 'smoke' profile for the embedded data sets)"
                )
            values.update(dataset=dataset, **PAPER_HPARAMS[dataset])
        dataset = overrides.get("dataset", values["dataset"])
        fixed = _FIXED_IMAGE_SIZE.get(dataset) if isinstance(dataset, str) else None
        if fixed is not None and "image_size" not in overrides:
            # the profile's image size is for its own data set; a data set of fixed size
            # chosen by an override brings its own (e.g. smoke + dataset=cifar10 -> 32)
            values["image_size"] = fixed
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        """Rebuild a config from :meth:`to_dict` output (missing keys take field defaults).

        Dicts written before ``precision`` existed (records, checkpoints) carry ``amp``
        instead: ``amp=true`` reads as ``precision="fp16"``, ``amp=false`` as the default.

        Raises:
            ConfigError: ``d`` has unknown keys or invalid values, or an ``amp`` that
                contradicts its ``precision``.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"from_dict expects a mapping, got {type(d).__name__}")
        d = dict(d)
        if "amp" in d:
            amp = d.pop("amp")
            if not _is_bool(amp):
                raise ConfigError(f"amp must be a bool (true/false), got {amp!r}")
            if amp and d.setdefault("precision", "fp16") != "fp16":
                raise ConfigError(f"amp=true (float16 autocast) contradicts "
                                  f"precision={d['precision']!r}")
        _check_keys(d)
        return cls(**d)

    @classmethod
    def from_overrides(cls, profile: str, overrides: Iterable[str] = ()) -> "RunConfig":
        """Build a config from a profile and ``"key=value"`` strings (CLI, papermill).

        Args:
            profile: One of :data:`PROFILES`.
            overrides: Strings such as ``["T=4", "method=bptt", "data_root=none"]``;
                converted with :func:`parse_override`. A later duplicate key wins.

        Example:
            >>> RunConfig.from_overrides("smoke", ["T=3", "precision=bf16"]).T
            3
        """
        if isinstance(overrides, str):
            raise ConfigError("overrides must be a list of 'key=value' strings, not one string")
        return cls.from_profile(profile, **dict(parse_override(s) for s in overrides))

    @classmethod
    def from_notebook(cls, profile: str, overrides_json: str = "{}",
                      **fields: Any) -> "RunConfig":
        """Build a config from an experiment notebook's papermill parameters.

        Args:
            profile: One of :data:`PROFILES`.
            overrides_json: A JSON object of field overrides, e.g. ``'{"T": 6}'``.
            **fields: Fields the notebook has its own parameters for (``experiment``,
                ``out_dir``, ``checkpoint_dir``).

        Raises:
            ConfigError: ``overrides_json`` is not a JSON object, repeats a field given as
                its own parameter, or any key/value is invalid.
        """
        try:
            overrides = json.loads(overrides_json)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"overrides_json={overrides_json!r} is not valid JSON ({err})"
                              ) from None
        if not isinstance(overrides, dict):
            raise ConfigError(f"overrides_json must be a JSON object of field overrides, "
                              f"got {type(overrides).__name__}: {overrides_json!r}")
        both = sorted(set(overrides) & set(fields))
        if both:
            raise ConfigError(f"{', '.join(both)} must be set with the notebook parameter of "
                              "that name, not inside overrides_json")
        return cls.from_profile(profile, **fields, **overrides)

    def replace(self, **changes: Any) -> "RunConfig":
        """Return a new, re-validated config with ``changes`` applied.

        Raises:
            ConfigError: An unknown key or an invalid value.
        """
        _check_keys(changes)
        return dataclasses.replace(self, **changes)

    # -- serialisation -----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """All fields as a flat ``{name: primitive}`` dict, in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def config_hash(self) -> str:
        """SHA-256 (64 hex digits) of the fields that can change a run's results.

        The hash covers every field except :data:`HASH_EXCLUDED_FIELDS` (output and
        data locations, worker count, device), serialised by :func:`canonical_json`.
        It is stable across processes and machines; adding a field to
        :class:`RunConfig` changes every hash (old records are then not re-used), unless
        the field is listed in :data:`HASHED_WHEN_NOT_DEFAULT`.
        """
        return hashlib.sha256(canonical_json(self.hash_dict()).encode("ascii")).hexdigest()

    def hash_dict(self) -> dict[str, Any]:
        """The fields hashed by :meth:`config_hash` (``to_dict`` minus the excluded ones).

        Fields of :data:`HASHED_WHEN_NOT_DEFAULT` are left out at their default; the keys of
        :data:`HASH_LEGACY_VALUES` are emitted with their legacy values. ``precision`` is
        hashed in the form that keeps earlier run ids: ``amp`` (``true`` for ``fp16``, as the
        former flag) and, for ``bf16`` and ``auto`` only, ``precision`` itself — an fp32 or
        fp16 config has the run id it had when the field was the ``amp`` flag. ``auto`` is
        hashed as ``auto`` (the config, not the machine; the record says what it resolved
        to). When the run
        reads a split index file whose content is not the committed split
        (``esdlib.data.digits.changed_split_digest``), its digest is added as
        ``split_sha256``: a changed split gives other run ids, the committed one keeps them.
        A ``cifar10_dvs`` run adds the digest of its release's file list
        (:func:`esdlib.data.cifar10_dvs.file_list_digest`) as ``files_sha256``: a run on a
        folder with files missing or added is another run.
        """
        from esdlib.data.digits import changed_split_digest

        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        d = {k: v for k, v in self.to_dict().items()
             if k not in HASH_EXCLUDED_FIELDS
             and not (k in HASHED_WHEN_NOT_DEFAULT and v == defaults[k])}
        d.update(HASH_LEGACY_VALUES)
        d["amp"] = self.precision == "fp16"
        if self.precision not in ("fp32", "fp16"):
            d["precision"] = self.precision
        digest = changed_split_digest(self.dataset, self.seed)
        if digest is not None:
            d["split_sha256"] = digest
        if self.dataset == "cifar10_dvs":  # the run is tied to the files it trains on
            from esdlib.data._common import default_root
            from esdlib.data.cifar10_dvs import file_list_digest

            root = self.data_root if self.data_root is not None else default_root(self.dataset)
            files = file_list_digest(root)
            if files is not None:
                d["files_sha256"] = files
        return d

    # -- derived properties ------------------------------------------------

    @property
    def uses_branches(self) -> bool:
        """Whether the method trains auxiliary ANN branches (``sd``, ``esd``, ``esd_bptt``)."""
        return self.method in BRANCH_METHODS

    @property
    def uses_rate_backprop(self) -> bool:
        """Whether the method uses two-pass rate-based BP (``ratebp``, ``sd``, ``esd``)."""
        return self.method in RATE_BP_METHODS

    def lif_params(self) -> LIFParams:
        """The neuron parameters of the run: ``decay``, ``v_threshold``, ``surrogate_alpha``
        and ``reset`` as the :class:`~esdlib.neurons.LIFParams` every LIF layer takes."""
        return LIFParams(decay=self.decay, v_threshold=self.v_threshold,
                         surrogate_alpha=self.surrogate_alpha, reset=self.reset)

    def loss_config(self) -> LossConfig:
        """The loss weights of the run as a :class:`~esdlib.losses.LossConfig` (``alpha``
        weights each branch's cross-entropy; ``beta``, ``tau``, ``eta``, ``teacher_space``)."""
        return LossConfig(alpha=self.alpha, beta=self.beta, tau=self.tau, eta=self.eta,
                          teacher_space=self.teacher_space)

    def scale_label(self) -> str:
        """Human-readable scale of the run, printed beside every reproduced number.

        Example:
            ``"digits 16×16, spiking_resnet18 ×0.25, T=4, 20 epochs"``; a capped
            epoch adds ``", ≤3 steps/epoch"``; no ``image_size`` reads
            ``"digits (native size)"``.
        """
        size = f"{self.image_size}×{self.image_size}" if self.image_size else "(native size)"
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        label = f"{self.dataset} {size}, {self.arch} ×{self.width:g}, T={self.T}, {epochs}"
        if self.max_train_steps is not None:
            label += f", ≤{self.max_train_steps} steps/epoch"
        return label


_FIXED_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32}
"""Data sets whose images have one valid size (no resizing in their pipeline)."""

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def canonical_json(obj: Any) -> str:
    """Deterministic compact JSON (sorted keys, ASCII, no NaN) used for hashing."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


@functools.cache
def _field_types() -> dict[str, tuple[type, bool]]:
    """``{field name: (base type, accepts None)}`` read from the annotations."""
    hints = typing.get_type_hints(RunConfig)
    out: dict[str, tuple[type, bool]] = {}
    for f in dataclasses.fields(RunConfig):
        tp = hints[f.name]
        optional = False
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            optional = len(args) < len(typing.get_args(tp))
            (tp,) = args
        out[f.name] = (tp, optional)
    return out


def _field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(RunConfig))


def _did_you_mean(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(options), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


_RENAMED = {"amp": " (replaced by precision: amp=true is precision=fp16)"}


def _check_keys(keys: Iterable[str]) -> None:
    valid = _field_names()
    unknown = [k for k in keys if k not in valid]
    if unknown:
        parts = [f"{k!r}{_RENAMED.get(k) or _did_you_mean(k, valid)}" for k in unknown]
        raise ConfigError(
            f"unknown config key(s) {', '.join(parts)}; valid keys: {', '.join(valid)}"
        )


def _coerce_type(name: str, value: Any) -> Any:
    """Check ``value`` against the field's annotated type; normalise to a plain primitive.

    int fields reject bools, floats and strings; float fields accept ints (stored as
    float) but reject bools and non-finite values; bool fields accept only bools;
    str fields also accept ``os.PathLike`` (stored as ``str``).
    """
    tp, optional = _field_types()[name]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} must not be None (expected {tp.__name__})")
    kind = f"{tp.__name__} or None" if optional else tp.__name__
    got = f"got {value!r} of type {type(value).__name__}"
    if tp is bool:
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            return bool(value)
        raise ConfigError(f"{name} must be a bool (true/false), {got}")
    if tp is int:
        if isinstance(value, numbers.Integral) and not _is_bool(value):
            return int(value)
        raise ConfigError(f"{name} must be an integer ({kind}), {got}")
    if tp is float:
        if isinstance(value, numbers.Real) and not _is_bool(value):
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, {got}")
            return value
        raise ConfigError(f"{name} must be a number ({kind}), {got}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise ConfigError(f"{name} must be a string ({kind}), {got}")
    raise TypeError(f"unsupported annotation for RunConfig.{name}: {tp!r}")  # pragma: no cover


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def _check_constraints(name: str, value: Any, spec: Mapping[str, Any]) -> list[str]:
    problems = []
    choices = spec.get("choices")
    if choices is not None and value not in choices:
        problems.append(
            f"{name}={value!r} is not valid{_did_you_mean(value, choices)}; "
            f"choose one of: {', '.join(repr(c) for c in choices)}"
        )
    pattern = spec.get("pattern")
    if pattern is not None and not pattern.fullmatch(value):
        problems.append(f"{name}={value!r} is not valid; expected {spec['pattern_doc']}")
    if spec.get("nonempty") and not value:
        problems.append(f"{name} must not be empty")
    max_len = spec.get("max_len")
    if max_len is not None and len(value) > max_len:
        problems.append(f"{name} is {len(value)} characters long; at most {max_len} allowed")
    for key, ok, word in (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ):
        bound = spec.get(key)
        if bound is not None and not ok(value, bound):
            problems.append(f"{name}={value!r} is out of range; must be {word} {bound}")
    return problems


_NONE_WORDS = ("none", "null")
_TRUE_WORDS = ("true", "1", "yes", "on")
_FALSE_WORDS = ("false", "0", "no", "off")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``"key=value"`` string into ``(key, value)`` of the field's type.

    Conversions: int and float fields parse numbers (``"2.5"`` is rejected for an
    int field); bool fields accept ``true/false/1/0/yes/no/on/off``; fields that
    accept None map ``"none"``/``"null"`` to ``None``; strings are kept verbatim.
    Case-insensitive for the words; whitespace around key and value is stripped.

    Args:
        text: e.g. ``"T=4"``, ``"method=bptt"``, ``"data_root=none"``.

    Returns:
        ``(key, value)``; the value still goes through :class:`RunConfig` validation.

    Raises:
        ConfigError: No ``=``, unknown key, or a value not convertible to the type.
    """
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(
            f"override {text!r} is not of the form key=value; "
            f"valid keys: {', '.join(_field_names())}"
        )
    key, raw = (part.strip() for part in text.split("=", 1))
    _check_keys([key])
    tp, optional = _field_types()[key]
    word = raw.lower()
    if optional and word in _NONE_WORDS:
        return key, None
    try:
        if tp is bool:
            if word in _TRUE_WORDS:
                return key, True
            if word in _FALSE_WORDS:
                return key, False
            raise ValueError
        if tp is int:
            return key, int(raw, 10)
        if tp is float:
            return key, float(raw)
    except ValueError:
        expected = {bool: "true/false", int: "an integer", float: "a number"}[tp]
        raise ConfigError(
            f"override {text!r}: {key} expects {expected}"
            f"{' or none' if optional else ''}, got {raw!r}"
        ) from None
    return key, raw


# ---------------------------------------------------------------------------
# Checks that depend on this machine (run before any work, not on stored configs)
# ---------------------------------------------------------------------------


def _device_problem(name: str) -> str | None:
    """Why ``device=name`` cannot be used on this machine (``None`` when it can)."""
    import torch

    if name in ("auto", "cpu"):
        return None
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"device={name!r} but CUDA is not available on this machine (use cpu or auto)"
        if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
            return (f"device={name!r} but this machine has {torch.cuda.device_count()} CUDA "
                    f"device(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
        return None
    mps = getattr(torch.backends, "mps", None)
    if name == "mps" and not (mps is not None and mps.is_available()):
        return "device='mps' but MPS (Apple GPU) is not available on this machine (use cpu or auto)"
    return None


def check_device(name: str) -> None:
    """Check that a device name is valid and available here.

    Raises:
        ConfigError: not one of auto, cpu, cuda, cuda:N, mps, or not available.
    """
    if not isinstance(name, str) or not _DEVICE_RE.fullmatch(name):
        raise ConfigError(f"device={name!r} is not valid; expected {', '.join(_DEVICE_CHOICES)}")
    problem = _device_problem(name)
    if problem:
        raise ConfigError(problem)


def _auto_device_type() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def _precision_device(name: str, device_type: str) -> Any:
    """The device a precision check looks at: ``cuda:N`` as a ``torch.device``, else the type."""
    if device_type == "cuda" and ":" in name:
        import torch

        return torch.device(name)
    return device_type


def check_writable_dir(path: str | os.PathLike, what: str) -> None:
    """Check that ``path`` is, or can be created as, a folder we can write files into.

    The folder (and its missing parents) is created, a temporary file is created and removed
    in it, and the folders this check created are removed again, so the check is exact
    (read-only mounts, ``/proc``, a file in the way) and leaves nothing behind.

    Raises:
        ConfigError: naming ``what`` (e.g. ``"out_dir"``), the path and the OS error.
    """
    import tempfile

    p = resolve_path(path)
    created = [d for d in (p, *p.parents) if not d.exists()]
    try:
        for attempt in range(3):
            p.mkdir(parents=True, exist_ok=True)
            try:
                with tempfile.TemporaryFile(dir=p, prefix=".esd-write-probe."):
                    pass
                break
            except FileNotFoundError:
                # another process (a DDP rank) removed the folder it had created for its own
                # check between our mkdir and our probe: create it again
                if attempt == 2:
                    raise
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"{what}={os.fspath(path)!r} is not a writable folder ({p}: {reason})"
                          ) from None
    finally:
        for d in created:  # deepest first
            try:
                d.rmdir()
            except OSError:
                break


def check_runtime(cfg: RunConfig) -> None:
    """Checks of a config against this machine, run before a run starts any work.

    :class:`RunConfig` validation is machine-independent (a stored config must load
    anywhere); this adds what only the machine that trains can tell: the device exists,
    the ``precision`` can run on it (``fp16`` needs CUDA, ``bf16`` a CUDA device with native
    bfloat16 or the CPU: :func:`esdlib.train.runtime.precision_problem`),
    ``out_dir``/``checkpoint_dir``/``cache_dir`` are writable folders, and every file name the
    run will create fits the OS limit.

    Raises:
        ConfigError: the first problem found, in one line.
    """
    check_device(cfg.device)
    device_type = _auto_device_type() if cfg.device == "auto" else cfg.device.split(":")[0]
    from esdlib.train.runtime import precision_problem

    problem = precision_problem(cfg.precision, _precision_device(cfg.device, device_type))
    if problem:
        raise ConfigError(problem)
    for what in ("out_dir", "checkpoint_dir", "cache_dir"):
        value = getattr(cfg, what)
        if value is not None and (what != "cache_dir" or cfg.dataset == "cifar10_dvs"):
            check_writable_dir(value, what)
