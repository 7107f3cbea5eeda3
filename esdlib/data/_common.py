"""Shared pieces of :mod:`esdlib.data`: names, the info record, errors and small helpers."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

DATASET_NAMES = ("digits", "dvs_digits", "digits_hard", "dvs_digits_hard", "mnist", "cifar10",
                 "cifar100", "imagenet", "cifar10_dvs")

#: Data sets whose samples are event frames ``[T, C, H, W]`` (the others are static images).
TIME_VARYING_DATASETS = frozenset({"dvs_digits", "dvs_digits_hard", "cifar10_dvs"})

#: Valid ``split`` values per data set (the first one is the default, ``"official"``).
SPLITS: dict[str, tuple[str, ...]] = {
    "digits": ("official",),
    "dvs_digits": ("official",),
    "digits_hard": ("official",),
    "dvs_digits_hard": ("official",),
    "mnist": ("official",),
    "cifar10": ("official",),
    "cifar100": ("official",),
    "imagenet": ("official",),
    "cifar10_dvs": ("official", "balanced"),
}

#: Environment variable that sets the default data root (``./data`` when unset).
DATA_ROOT_ENV = "ESDLIB_DATA"

#: A file of this name in a data set's root folder marks its files as synthetic test data (tiny
#: files in the real on-disk format, written by tests and ``reproduce --dry-run``): CIFAR is then
#: read without torchvision's MD5 check of the real archive, and the split name and description
#: of every such data set start with :data:`SYNTHETIC_LABEL`, so its records say what they are.
SYNTHETIC_MARKER = "ESDLIB_SYNTHETIC_TEST_DATA"
SYNTHETIC_LABEL = "SYNTHETIC TEST DATA"


def is_synthetic(root: str | os.PathLike) -> bool:
    """Whether the data folder ``root`` is marked as synthetic test data
    (holds a :data:`SYNTHETIC_MARKER` file)."""
    return (Path(root) / SYNTHETIC_MARKER).is_file()


@dataclass(frozen=True)
class DatasetInfo:
    """What a built data set is, in numbers a model and a report need.

    Attributes:
        name: One of :data:`DATASET_NAMES`.
        num_classes: Number of classes (labels are ``0 .. num_classes-1``).
        in_channels: ``C`` of a sample (1 digits, 2 DVS ON/OFF, 3 RGB).
        image_size: ``(H, W)`` of a sample.
        time_varying: ``True`` -> each sample is ``[T, C, H, W]`` (event frames);
            ``False`` -> ``[C, H, W]`` (static image, direct-encoded: the model repeats it
            ``T`` times).
        T: Frames per sample for time-varying data, ``None`` for static data.
        split: The train/test split, named with every number, e.g.
            ``"digits-stratified-seed0 (1437/360)"``.
        description: One honest sentence about the data set.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    time_varying: bool
    T: int | None
    split: str
    description: str


class DatasetNotFoundError(FileNotFoundError):
    """A data set is not on disk.

    The message says what is missing, where it was looked for and how to obtain it.
    """


class DataError(ValueError):
    """A data-set file is damaged or inconsistent (bad event file, bad split index file,
    unreadable cache or image). The message names the file and says what is wrong."""


class TensorClassificationDataset(Dataset):
    """In-memory data set: ``(transform(x[i]), int(y[i]))``.

    Args:
        x: Tensor ``[N, C, H, W]`` (static) or ``[N, T, C, H, W]`` (time-varying); any
            numeric dtype (samples are returned as float32).
        y: Integer labels ``[N]``.
        transform: Optional callable applied to one sample ``x[i]`` (shape kept).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Callable | None = None):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x = x
        self.y = y
        self.transform = transform

    def __len__(self) -> int:
        """Number of samples ``N``."""
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """Sample ``i`` as ``(x, label)``; ``x`` is float32 with the stored shape."""
        x = self.x[i].to(torch.float32)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.y[i])


def default_root(name: str) -> Path:
    """Default folder of a data set: ``$ESDLIB_DATA/<name>`` (``./data/<name>`` when unset).

    Args:
        name: Data set name.

    Returns:
        The folder path (not created).
    """
    return Path(os.environ.get(DATA_ROOT_ENV, "data")) / name


MAX_DATA_FILE_BYTES = 1 << 30
"""Largest single data-set file esdlib reads whole (1 GiB; a CIFAR10-DVS recording is a few
MB, a split or cache index a few KB): a larger one is refused before it is read."""


def check_regular_file(path: str | os.PathLike, what: str,
                       max_bytes: int = MAX_DATA_FILE_BYTES) -> int:
    """Refuse anything but a regular file of at most ``max_bytes`` before it is opened.

    A FIFO would block ``open()`` forever and a device (``/dev/zero``) never ends; symlinks
    are followed (a symlink to a regular file is fine).

    Args:
        path: The file.
        what: What the file is, for the message (e.g. ``"event file"``).
        max_bytes: Size limit.

    Returns:
        The file's size in bytes.

    Raises:
        DataError: The file cannot be examined, is not a regular file, or is too large (the
            message names it).
    """
    try:
        st = os.stat(path)
    except OSError as err:
        raise DataError(f"{path}: cannot read the {what} ({err.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a directory"
                if stat.S_ISDIR(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "not a regular file")
        raise DataError(f"{path}: the {what} is {kind}, not a regular file")
    if st.st_size > max_bytes:
        raise DataError(f"{path}: the {what} is {st.st_size:,} bytes, more than the "
                        f"{max_bytes:,} esdlib reads (damaged or not a data file?)")
    return st.st_size


def read_json_file(path: str | os.PathLike, what: str) -> Any:
    """``json.load`` of a data-set file; a missing, unreadable or damaged file is a
    :class:`DataError` naming it.

    Args:
        path: The JSON file.
        what: What the file is, for the message (e.g. ``"split index file"``).
    """
    if os.path.exists(path):  # a missing file keeps its own message below
        check_regular_file(path, what, max_bytes=64 << 20)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable {what} ({' '.join(str(err).split())})") from None
    except RecursionError:
        raise DataError(f"{path}: unreadable {what} (nested too deeply to be one)") from None


def check_split(train: Any, test: Any, n: int, path: str | os.PathLike,
                sizes: tuple[int, int] | None = None) -> tuple[list[int], list[int]]:
    """Check a train/test split of ``n`` samples read from ``path``.

    The two lists must hold ints in ``0 .. n-1``, without duplicates, with no index in both,
    together covering every sample, and (when ``sizes`` is given) of exactly those sizes.

    Args:
        train, test: The index lists as read.
        n: Number of samples of the data set.
        path: The file they come from (named in the error).
        sizes: Expected ``(len(train), len(test))``.

    Returns:
        ``(train, test)`` as lists of int.

    Raises:
        DataError: The first problem found, naming the file.
    """
    out = []
    for side, idx in (("train", train), ("test", test)):
        if not isinstance(idx, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in idx):
            raise DataError(f"{path}: split index file: '{side}' must be a list of ints")
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise DataError(f"{path}: split index file: '{side}' has {len(bad)} index(es) out "
                            f"of range 0..{n - 1} (e.g. {bad[0]})")
        if len(set(idx)) != len(idx):
            raise DataError(f"{path}: split index file: '{side}' has "
                            f"{len(idx) - len(set(idx))} duplicate index(es)")
        out.append(list(idx))
    both = set(out[0]) & set(out[1])
    if both:
        raise DataError(f"{path}: split index file: {len(both)} index(es) are in both train and "
                        f"test (e.g. {min(both)}); test samples would be trained on")
    if len(out[0]) + len(out[1]) != n:
        raise DataError(f"{path}: split index file covers {len(out[0]) + len(out[1])} of the "
                        f"{n} samples")
    if sizes is not None and (len(out[0]), len(out[1])) != tuple(sizes):
        raise DataError(f"{path}: split index file has {len(out[0])}/{len(out[1])} train/test "
                        f"samples, expected {sizes[0]}/{sizes[1]}")
    return out[0], out[1]
