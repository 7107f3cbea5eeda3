"""Run configuration: one frozen, validated record per training run.

Every run (CLI, notebook, test) is described by a :class:`RunConfig`. It is built
by :meth:`RunConfig.from_profile` from a named profile plus overrides, validated in
``__post_init__`` (invalid or unknown values raise :class:`ConfigError` listing
the valid choices before any work is done) and never mutated afterwards
(:meth:`RunConfig.replace` returns a new, re-validated config).

The profiles live in :mod:`esdlib.train.profiles`; each field's choices and bounds, and the
rules between fields, in :mod:`esdlib.train.constraints`; the type coercion in
:mod:`esdlib.train.fields`; the config hash and run id in :mod:`esdlib.train.identity`.

Example:
    >>> cfg = RunConfig.from_profile("smoke", method="bptt")
    >>> cfg.T, cfg.method, cfg.uses_branches
    (2, 'bptt', False)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from esdlib.losses import TEACHER_SPACES, LossConfig
from esdlib.models import BRANCH_KINDS, BRANCH_POOLS
from esdlib.neurons import RESET_MODES, LIFParams
from esdlib.passes import COMPILE_MODES
from esdlib.train import fields as _fields
from esdlib.train import identity as _identity
from esdlib.train.constraints import (
    ARCHS,
    BRANCH_METHODS,
    DATASETS,
    MAX_EXPERIMENT_LEN,
    MAX_HPARAM,
    MAX_IMAGE_SIZE,
    MAX_T,
    MAX_WIDTH,
    METHODS,
    NAME_RE,
    RATE_BP_METHODS,
    RATE_GRAD_SCALES,
    SPLITS,
    cross_field_problem,
)
from esdlib.train.fields import ConfigError, did_you_mean, spec
from esdlib.train.identity import (
    HASH_EXCLUDED_FIELDS,
    HASH_LEGACY_VALUES,
    HASHED_WHEN_NOT_DEFAULT,
    canonical_json,
)
from esdlib.train.profiles import (
    DEFAULT_PROFILE,
    MNIST_PROFILE,
    PAPER_ASSUMED,
    PAPER_HPARAMS,
    PROFILE_SETTINGS,
    PROFILES,
    QUICK_PROFILE,
    SMOKE_PROFILE,
    profile_values,
)
from esdlib.train.runtime import (
    DEVICE_CHOICES,
    DEVICE_PATTERN,
    PRECISIONS,
    check_device,
    check_runtime,
    check_writable_dir,
)

__all__ = [
    "ARCHS", "BRANCH_KINDS", "BRANCH_METHODS", "BRANCH_POOLS", "ConfigError", "DATASETS",
    "DEFAULT_PROFILE", "MNIST_PROFILE", "COMPILE_MODES", "HASH_EXCLUDED_FIELDS",
    "HASHED_WHEN_NOT_DEFAULT", "HASH_LEGACY_VALUES", "METHODS", "PAPER_ASSUMED",
    "PAPER_HPARAMS", "PRECISIONS", "PROFILES", "PROFILE_SETTINGS", "QUICK_PROFILE",
    "RATE_BP_METHODS", "RATE_GRAD_SCALES", "RESET_MODES", "RunConfig", "SMOKE_PROFILE",
    "SPLITS", "TEACHER_SPACES", "canonical_json", "check_device", "check_runtime",
    "check_writable_dir", "parse_override",
]

_RENAMED = {"amp": " (replaced by precision: amp=true is precision=fp16)"}
"""Former keys, with the hint an error about them gives."""


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
        precision: Arithmetic of the training step: ``"fp32"`` (default: the committed
            evidence reproduces on any host), ``"bf16"`` (bfloat16 autocast, CPU or CUDA),
            ``"fp16"`` (float16 autocast with a gradient scaler, CUDA only) or ``"auto"``
            (:func:`esdlib.train.runtime.resolve_precision`). Membranes, rates, BN statistics,
            the teacher, the losses and evaluation stay float32. Replaces the former ``amp``
            (a stored ``amp=true`` reads, and hashes, as ``"fp16"``). Hashed.
        compile: Compile the two-pass methods' spike pass with ``torch.compile``: ``"none"``
            (default), ``"default"``, ``"reduce-overhead"`` or ``"max-autotune"``
            (:class:`esdlib.passes.CompiledSpikePass`; a failed compilation falls back to eager
            with one warning, ``extra.runtime.compile_error``). BPTT methods accept only
            ``"none"``. Hashed when set: compiled kernels round differently.
        tf32: Let float32 CUDA matmuls and cuDNN convolutions use TF32 during the run
            (:func:`esdlib.train.runtime.tf32`); off by default, so fp32 means float32 there
            (PyTorch by itself allows it in cuDNN). The record's ``extra.runtime.tf32`` says
            whether it was in effect (never on the CPU). Hashed when set.
        channels_last: Use the channels-last (NHWC) memory format for the model and input
            (default on: oneDNN's convolutions are faster in it on the CPU, ESD 0.063 → 0.054 s
            per step at the small profile on a 2-vCPU AMD EPYC, 2026-11-26; tensor cores want
            it on CUDA). Does not affect the config hash.
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

    profile: str = spec("default", choices=PROFILES)
    experiment: str = spec("train", pattern=NAME_RE, max_len=MAX_EXPERIMENT_LEN,
                            pattern_doc="letters, digits, _ . -")

    dataset: str = spec("digits", choices=DATASETS)
    data_root: str | None = None
    image_size: int | None = spec(None, ge=1, le=MAX_IMAGE_SIZE)
    split: str = "official"
    augment: bool = True
    download: bool = False

    arch: str = spec("spiking_resnet18", choices=ARCHS)
    width: float = spec(1.0, gt=0, le=MAX_WIDTH)
    branch_kind: str = spec("dsconv", choices=BRANCH_KINDS)
    branch_pool: str = spec("global", choices=BRANCH_POOLS)

    method: str = spec("esd", choices=METHODS)
    T: int = spec(4, ge=1, le=MAX_T)

    alpha: float = spec(1.0, ge=0, le=MAX_HPARAM)
    beta: float = spec(0.3, ge=0, le=MAX_HPARAM)
    tau: float = spec(3.0, gt=0, le=MAX_HPARAM)
    eta: float = spec(0.0, ge=0, le=MAX_HPARAM)
    teacher_space: str = spec("logits", choices=TEACHER_SPACES)

    decay: float = spec(0.2, gt=0, lt=1)
    v_threshold: float = spec(1.0, gt=0, le=MAX_HPARAM)
    surrogate_alpha: float = spec(4.0, gt=0, le=MAX_HPARAM)
    reset: str = spec("soft", choices=RESET_MODES)
    rate_grad_scale: str = spec("1/T", choices=RATE_GRAD_SCALES)

    lr: float = spec(0.1, gt=0, le=MAX_HPARAM)
    momentum: float = spec(0.9, ge=0, lt=1)
    weight_decay: float = spec(5e-4, ge=0, le=MAX_HPARAM)
    epochs: int = spec(300, ge=1)
    warmup_epochs: int = spec(0, ge=0)
    batch_size: int = spec(128, ge=1)
    eval_batch_size: int = spec(256, ge=1)
    max_train_steps: int | None = spec(None, ge=1)
    train_subset: int | None = spec(None, ge=1)
    checkpoint_every: int = spec(100, ge=1)

    num_workers: int = spec(0, ge=0)
    seed: int = spec(0, ge=0, lt=2**32)
    device: str = spec("auto", pattern=DEVICE_PATTERN, pattern_doc=", ".join(DEVICE_CHOICES))
    precision: str = spec("fp32", choices=PRECISIONS)
    compile: str = spec("none", choices=COMPILE_MODES)
    tf32: bool = False
    channels_last: bool = True
    keep_freed_memory: bool = True

    out_dir: str = spec("results", nonempty=True)
    checkpoint_dir: str = spec("checkpoints", nonempty=True)
    cache_dir: str | None = spec(None, nonempty=True)

    def __post_init__(self) -> None:
        problems = _fields.coerce_fields(self)  # each field's type and bounds
        if not problems:
            problem = cross_field_problem(self)
            problems += [problem] if problem else []
        if problems:
            raise ConfigError("invalid RunConfig:\n  " + "\n  ".join(problems))

    # -- construction ------------------------------------------------------

    @classmethod
    def from_profile(cls, name: str, **overrides: Any) -> RunConfig:
        """Build a config from a named profile, then apply ``overrides``.

        For ``paper`` the data set is chosen first (``overrides["dataset"]``, else
        ``"cifar10"``), its row of :data:`PAPER_HPARAMS` is applied, then the
        remaining overrides (:func:`esdlib.train.profiles.profile_values`).

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
                f"unknown profile {name!r}{did_you_mean(name, PROFILES)}; "
                f"valid profiles: {', '.join(PROFILES)}"
            )
        _check_keys(overrides)
        if "profile" in overrides:
            raise ConfigError(
                "'profile' cannot be overridden; pass the profile name as the first argument"
            )
        return cls(**profile_values(name, overrides))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
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
            if not _fields.is_bool(amp):
                raise ConfigError(f"amp must be a bool (true/false), got {amp!r}")
            if amp and d.setdefault("precision", "fp16") != "fp16":
                raise ConfigError(f"amp=true (float16 autocast) contradicts "
                                  f"precision={d['precision']!r}")
        _check_keys(d)
        return cls(**d)

    @classmethod
    def from_overrides(cls, profile: str, overrides: Iterable[str] = ()) -> RunConfig:
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
                      **fields: Any) -> RunConfig:
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

    def replace(self, **changes: Any) -> RunConfig:
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
        """SHA-256 (64 hex digits) of the fields that can change a run's results
        (:func:`esdlib.train.identity.config_hash`; the policy is documented there)."""
        return _identity.config_hash(self)

    def hash_dict(self) -> dict[str, Any]:
        """The fields :meth:`config_hash` hashes (:func:`esdlib.train.identity.hash_dict`)."""
        return _identity.hash_dict(self)

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


def _check_keys(keys: Iterable[str]) -> None:
    _fields.check_keys(keys, RunConfig, _RENAMED)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``"key=value"`` string into ``(key, value)`` of the :class:`RunConfig` field's
    type (:func:`esdlib.train.fields.parse_override`).

    Conversions: int and float fields parse numbers (``"2.5"`` is rejected for an
    int field); bool fields accept ``true/false/1/0/yes/no/on/off``; fields that
    accept None map ``"none"``/``"null"`` to ``None``; strings are kept verbatim.

    Args:
        text: e.g. ``"T=4"``, ``"method=bptt"``, ``"data_root=none"``.

    Returns:
        ``(key, value)``; the value still goes through :class:`RunConfig` validation.

    Raises:
        ConfigError: No ``=``, unknown key, or a value not convertible to the type.
    """
    return _fields.parse_override(text, RunConfig, _RENAMED)
