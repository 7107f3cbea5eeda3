"""CIFAR-10/100 (torchvision) and ImageNet (ImageFolder) with the paper's transforms.

Normalisation constants are the per-channel mean/std of each training set (pixel values in
``[0, 1]``). Some public code uses ``std = (0.2023, 0.1994, 0.2010)`` for CIFAR-10 (a
per-pixel std averaged over the image); the difference is a fixed per-channel rescaling
that the first BatchNorm absorbs.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.datasets import VisionDataset
from torchvision.transforms import v2

from ._common import DataError, DatasetNotFoundError, check_regular_file

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Folder torchvision expects under ``root`` for each CIFAR data set.
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_STATS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD)}

#: Side of the Cutout hole (paper: 16 px on 32x32 CIFAR images).
CUTOUT_SIZE = 16


def _to_normalised_tensor(mean, std) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def cifar_transforms(name: str, train: bool, augment: bool = True) -> v2.Compose:
    """The CIFAR transform for one side of the split.

    Train with ``augment=True``: ``RandomCrop(32, padding=4)`` -> ``RandomHorizontalFlip()``
    -> ``AutoAugment(AutoAugmentPolicy.CIFAR10)`` -> to float in ``[0, 1]`` -> ``Normalize``
    -> Cutout-16. Cutout is ``RandomErasing(p=1, scale=(256/1024, 256/1024), ratio=(1, 1),
    value=0)``: exactly one 16x16 hole set to 0 in normalised space (= the mean colour) at a
    uniformly random position fully inside the image. The original Cutout (DeVries & Taylor)
    centres the hole anywhere in the image and clips it at the border, so its holes are
    sometimes smaller; this is the one known difference. Otherwise (test, or
    ``augment=False``): to float + ``Normalize``. All steps are ``torchvision.transforms.v2``.

    Args:
        name: ``"cifar10"`` or ``"cifar100"`` (picks the normalisation constants).
        train: Train side (augmentation possible) or test side.
        augment: Use augmentation on the train side.

    Returns:
        A transform mapping a PIL image to a float32 tensor ``[3, 32, 32]``.
    """
    mean, std = CIFAR_STATS[name]
    steps: list = []
    if train and augment:
        steps += [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                  v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)]
    steps += _to_normalised_tensor(mean, std)
    if train and augment:
        area = CUTOUT_SIZE * CUTOUT_SIZE / (32 * 32)
        steps.append(v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0.0))
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)


def build_cifar(name: str, root: str | os.PathLike, augment: bool = True,
                download: bool = False, verify: bool = True):
    """CIFAR-10 or CIFAR-100 official train/test sets via ``torchvision.datasets``.

    Samples are ``([3, 32, 32] float32, label)``; see :func:`cifar_transforms`.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: Folder that holds (or will hold) ``cifar-10-batches-py`` /
            ``cifar-100-python``.
        augment: Train-side augmentation.
        download: Let torchvision download the archive (needs internet).
        verify: Check every file's MD5 against the official archive (torchvision's check).
            ``False`` only checks that the files exist: for synthetic test files in the same
            layout (see :data:`esdlib.data._common.SYNTHETIC_MARKER`).

    Returns:
        ``(train, test, split_name)``.

    Raises:
        DatasetNotFoundError: The folder is missing (and ``download=False``), incomplete or
            corrupted, or the download failed.
    """
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    if not verify:
        cls = _files_present_only(cls)
    root = Path(root)
    folder = root / CIFAR_FOLDERS[name]
    how = (f"pass download=True (CLI: `--set download=true`) on a machine with internet, or "
           f"copy the extracted python-version archive of {cls.url} to {folder}")
    if not folder.is_dir() and not download:
        raise DatasetNotFoundError(
            f"{name} not found: expected the folder {folder} (torchvision's python-version "
            f"layout) under root={root}. To obtain it, {how}.")
    if folder.is_dir():  # torchvision opens every file: a FIFO there would block forever
        for entry in (*cls.train_list, *cls.test_list, cls.meta):
            path = folder / (entry["filename"] if isinstance(entry, dict) else entry[0])
            if os.path.lexists(path):
                check_regular_file(path, f"{name} data file", max_bytes=1 << 30)
    try:
        train = cls(str(root), train=True, transform=cifar_transforms(name, True, augment),
                    download=download)
        test = cls(str(root), train=False, transform=cifar_transforms(name, False),
                   download=download)
    except (RuntimeError, OSError) as err:
        raise DatasetNotFoundError(
            f"{name} could not be loaded from {folder} (missing, incomplete or corrupted: "
            f"{err}). To obtain it, {how}.") from err
    return train, test, f"{name} official train/test ({len(train)}/{len(test)})"


_SAFE_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
})
"""What an unverified CIFAR file may reference besides plain containers: NumPy arrays."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Reads a CIFAR python-version batch without running anything: only dicts, lists,
    strings, numbers and NumPy arrays may be in it (any other global is a DataError)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise DataError(f"refusing to load {module}.{name} from an unverified CIFAR file "
                            "(only arrays, lists, strings and numbers may be in it)")
        return super().find_class(module, name)


def _load_unverified(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return _ArraysOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: not a CIFAR python-version batch ({err})") from None


def _files_present_only(cls: type) -> type:
    """``cls`` (a torchvision CIFAR class) for files that are not the official archive: no MD5
    check, and the batches are read by :class:`_ArraysOnlyUnpickler` (torchvision's own reader
    unpickles freely; the MD5 check is what makes that safe for the official files)."""

    def __init__(self, root: str, train: bool = True, transform: Any = None,
                 target_transform: Any = None, download: bool = False) -> None:
        VisionDataset.__init__(self, root, transform=transform,
                               target_transform=target_transform)
        self.train = train
        folder = os.path.join(self.root, self.base_folder)
        data, targets = [], []
        for name, _ in (self.train_list if train else self.test_list):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                raise RuntimeError(f"{path} is missing")
            entry = _load_unverified(path)
            data.append(entry["data"])
            targets.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self.targets = targets
        meta = _load_unverified(os.path.join(folder, self.meta["filename"]))
        self.classes = meta[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return type(f"Unverified{cls.__name__}", (cls,), {"__init__": __init__})


def imagenet_transforms(train: bool, augment: bool = True, image_size: int = 224) -> v2.Compose:
    """The standard ImageNet transforms.

    Train with ``augment=True``: ``RandomResizedCrop(S)`` + ``RandomHorizontalFlip()``.
    Otherwise: ``Resize(round(S * 256 / 224))`` (shorter side, bilinear, antialiased) +
    ``CenterCrop(S)``. Both end with float in ``[0, 1]`` + ``Normalize(IMAGENET_MEAN,
    IMAGENET_STD)``.

    Args:
        train: Train side or validation side.
        augment: Use augmentation on the train side.
        image_size: Crop side ``S`` (224 in the paper).

    Returns:
        A transform mapping a PIL image to a float32 tensor ``[3, S, S]``.
    """
    if train and augment:
        steps: list = [v2.RandomResizedCrop(image_size), v2.RandomHorizontalFlip()]
    else:
        steps = [v2.Resize(round(image_size * 256 / 224)), v2.CenterCrop(image_size)]
    steps += _to_normalised_tensor(IMAGENET_MEAN, IMAGENET_STD)
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)


IMAGENET_LAYOUT = ("<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG (the validation "
                   "images sorted into one folder per class, e.g. with the common "
                   "`valprep.sh` script)")


def load_rgb_image(path: str) -> Any:
    """ImageFolder's loader, decoding the whole image now (a truncated JPEG fails here, not
    later) and naming the file when it cannot be read.

    Raises:
        DataError: The file is unreadable, not an image, or truncated.
    """
    from PIL import Image

    check_regular_file(path, "image")  # a FIFO would block open() forever
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable image ({type(err).__name__}: {err})") from None


def build_imagenet(root: str | os.PathLike, augment: bool = True, image_size: int = 224):
    """ImageNet-1k train/val via ``torchvision.datasets.ImageFolder``.

    Samples are ``([3, S, S] float32, label)``; see :func:`imagenet_transforms`. Labels are
    ImageFolder's (class folders sorted by name); train and val must have the same classes.

    Args:
        root: Folder holding ``train/`` and ``val/``.
        augment: Train-side augmentation.
        image_size: Crop side ``S``.

    Returns:
        ``(train, val, split_name)``.

    Raises:
        DatasetNotFoundError: ``train/`` or ``val/`` is missing or has no class folders.
        DataError: ``train/`` and ``val/`` have different class folders. An unreadable image
            is a ``DataError`` naming it when the sample is read (:func:`load_rgb_image`).
    """
    from torchvision.datasets import ImageFolder

    root = Path(root)
    sets = []
    for side in ("train", "val"):
        folder = root / side
        if not folder.is_dir():
            raise DatasetNotFoundError(
                f"imagenet not found: the folder {folder} does not exist. Expected layout: "
                f"{IMAGENET_LAYOUT}. Obtain ILSVRC2012 from https://image-net.org (login "
                f"required; no automatic download).")
        try:
            sets.append(ImageFolder(str(folder),
                                    transform=imagenet_transforms(side == "train", augment,
                                                                  image_size),
                                    loader=load_rgb_image))
        except FileNotFoundError as err:
            raise DatasetNotFoundError(
                f"imagenet: {folder} holds no class folders with images ({err}). Expected "
                f"layout: {IMAGENET_LAYOUT}.") from err
    train, val = sets
    if train.classes != val.classes:
        only = sorted(set(train.classes) ^ set(val.classes))[:5]
        raise DataError(f"imagenet: {root / 'train'} has {len(train.classes)} classes and "
                        f"{root / 'val'} has {len(val.classes)}; the class folders must be the "
                        f"same (in one but not the other: {', '.join(only) or 'order differs'})")
    return train, val, f"imagenet official train/val ({len(train)}/{len(val)})"
