"""A small reader of the original CIFAR10-DVS release (AEDAT 2.0) and its frame cache.

Layout of the release (figshare "CIFAR10-DVS", one zip per class, extracted)::

    <root>/airplane/cifar10_airplane_0.aedat ... <root>/truck/cifar10_truck_999.aedat

AEDAT 2.0: ASCII header lines that start with ``#``, then events of 8 bytes, big-endian:
``uint32 address, uint32 timestamp`` (microseconds).

Coordinate conventions (the same as SpikingJelly's ``CIFAR10DVS``, from whose frames most
published numbers come): raw fields ``x_raw = (addr & 0xFE) >> 1``,
``y_raw = (addr & 0x7F00) >> 8``, ``p_raw = addr & 1``; reported events are
``x = 127 - y_raw``, ``y = 127 - x_raw``, ``p = 1 - p_raw`` on a 128x128 sensor. Frame
channel ``c`` counts events with ``p == c`` and pixel ``[y, x]``.

Frames (SpikingJelly ``split_by='number'``): with ``N`` events in file order and ``T``
frames, ``di = N // T``; frame ``i < T-1`` holds events ``[i*di, (i+1)*di)`` and the last
frame holds ``[(T-1)*di, N)`` (it takes the leftover events). Counts ``[T, 2, 128, 128]`` are
then resized to ``S x S`` (default 48) with ``torchvision.transforms.v2.functional.resize``,
bilinear, ``antialias=True`` (what ``transforms.Resize((48, 48))`` does on a tensor in
current torchvision), and cached as float32 in one ``.npz`` per sample.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from esdlib.io import atomic_open, atomic_write_json

from ._common import (
    DataError,
    DatasetNotFoundError,
    check_regular_file,
    check_split,
    read_json_file,
)

CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                       "ship", "truck")
SENSOR_SIZE = 128
AEDAT2_VERSION_LINE = b"#!AER-DAT2.0"
#: Address bits that the DVS128 layout uses (polarity bit 0, x bits 1-7, y bits 8-14, bit 15
#: the camera's special-event flag); an event with higher bits set is not a DVS128 event.
ADDRESS_MASK = 0xFFFF
CACHE_FORMAT = 1
#: The paper's split: ``torch.utils.data.random_split(ds, [0.9, 0.1], generator seeded 42)``.
OFFICIAL_FRACTIONS = (0.9, 0.1)
OFFICIAL_SEED = 42
FIGSHARE_URL = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"
LAYOUT = ("<root>/<class>/*.aedat with the 10 class folders "
          + ", ".join(CIFAR10_DVS_CLASSES))


def decode_address(addr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode CIFAR10-DVS AEDAT 2.0 addresses into ``x, y, p`` (SpikingJelly convention).

    Args:
        addr: uint32 addresses ``[N]``.

    Returns:
        ``(x, y, p)``: int64 ``[N]`` each; ``x = 127 - y_raw``, ``y = 127 - x_raw``,
        ``p = 1 - p_raw`` with ``x_raw = (addr & 0xFE) >> 1``, ``y_raw = (addr & 0x7F00) >> 8``,
        ``p_raw = addr & 1``.
    """
    addr = addr.astype(np.int64)
    x_raw = (addr & 0xFE) >> 1
    y_raw = (addr & 0x7F00) >> 8
    p_raw = addr & 1
    return (SENSOR_SIZE - 1) - y_raw, (SENSOR_SIZE - 1) - x_raw, 1 - p_raw


def read_aedat2(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read one CIFAR10-DVS AEDAT 2.0 file, checking that it is one.

    Header: the first line must be ``#!AER-DAT2.0`` (AEDAT 3.x/4.x and headerless files are
    refused); every leading line that starts with ``#`` is skipped. Body: big-endian
    ``uint32 address, uint32 timestamp`` pairs, kept in file order (no filtering). The body
    must be a non-empty whole number of 8-byte events, every address must fit the DVS128
    layout (no bit above 15 set; random bytes fail this) and timestamps must not decrease.

    Args:
        path: The ``.aedat`` file.

    Returns:
        ``{"t", "x", "y", "p"}``: int64 arrays ``[N]`` (``t`` in microseconds, ``x, y`` in
        ``0..127``, ``p`` in ``{0, 1}``; see :func:`decode_address`).

    Raises:
        DataError: The file is unreadable or not a valid AEDAT 2.0 DVS128 event stream (the
            message names the file).
    """
    check_regular_file(path, "event file")  # a FIFO would block open() forever
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read the event file ({err.strerror})") from None
    first = data.split(b"\n", 1)[0].strip()
    if not first.startswith(b"#!AER-DAT"):
        raise DataError(f"{path}: not an AEDAT file (the first line is not "
                        f"'#!AER-DAT2.0'; {len(data)} bytes)")
    if first != AEDAT2_VERSION_LINE:
        raise DataError(f"{path}: {first.decode('ascii', 'replace')[2:]} is not supported; the "
                        f"CIFAR10-DVS release is AEDAT 2.0 ('#!AER-DAT2.0')")
    pos = 0
    while data.startswith(b"#", pos):
        end = data.find(b"\n", pos)
        pos = len(data) if end < 0 else end + 1
    body = data[pos:]
    if not body:
        raise DataError(f"{path}: no events after the AEDAT 2.0 header (empty recording)")
    if len(body) % 8:
        raise DataError(f"{path}: {len(body)} bytes after the header is not a whole number "
                        f"of 8-byte AEDAT 2.0 events (truncated or not an event file)")
    words = np.frombuffer(body, dtype=">u4")
    addr, t = words[0::2], words[1::2].astype(np.int64)
    bad = np.flatnonzero(addr & ~np.uint32(ADDRESS_MASK))
    if bad.size:
        raise DataError(f"{path}: {bad.size} of {addr.size} event addresses have bits above the "
                        f"DVS128 x/y/polarity layout (first at event {bad[0]}); not a "
                        f"CIFAR10-DVS event stream")
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        raise DataError(f"{path}: timestamps decrease {back.size} time(s) (first at event "
                        f"{back[0] + 1}); not a valid event stream")
    x, y, p = decode_address(addr)
    return {"t": t, "x": x, "y": y, "p": p}


def frame_bounds(n_events: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Event index range of each frame under SpikingJelly's ``split_by='number'``.

    Args:
        n_events: ``N``.
        T: Number of frames.

    Returns:
        ``(start, stop)``: int64 ``[T]``; ``start[i] = i * (N // T)``,
        ``stop[i] = start[i] + N // T`` except ``stop[T-1] = N`` (leftover events).
    """
    di = n_events // T
    start = np.arange(T, dtype=np.int64) * di
    stop = start + di
    stop[-1] = n_events
    return start, stop


def events_to_frames(x: np.ndarray, y: np.ndarray, p: np.ndarray, T: int,
                     height: int = SENSOR_SIZE, width: int = SENSOR_SIZE) -> np.ndarray:
    """Count events per frame, polarity and pixel (see :func:`frame_bounds`).

    Args:
        x, y: Pixel coordinates ``[N]`` (``0 <= x < width``, ``0 <= y < height``).
        p: Polarity ``[N]`` in ``{0, 1}`` (the channel).
        T: Number of frames.
        height, width: Frame size.

    Returns:
        float32 ``[T, 2, height, width]`` event counts.
    """
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    p = (np.asarray(p) != 0).astype(np.int64)
    hw = height * width
    flat = p * hw + y * width + x
    start, stop = frame_bounds(len(flat), T)
    frames = np.zeros((T, 2 * hw), dtype=np.float32)
    for i in range(T):
        frames[i] = np.bincount(flat[start[i]:stop[i]], minlength=2 * hw)
    return frames.reshape(T, 2, height, width)


def resize_frames(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize frames with bilinear interpolation, ``antialias=True`` (torchvision resize).

    Args:
        frames: float32 ``[T, 2, H, W]``.
        image_size: Output side ``S``.

    Returns:
        float32 ``[T, 2, S, S]`` (the input itself when already ``S x S``).
    """
    if tuple(frames.shape[-2:]) == (image_size, image_size):
        return frames
    return v2.functional.resize(frames, [image_size, image_size],
                                interpolation=v2.InterpolationMode.BILINEAR, antialias=True)


def aedat_to_frames(path: str | os.PathLike, T: int, image_size: int) -> np.ndarray:
    """Read a file and return its frames ``[T, 2, S, S]`` (float32), see the module doc.

    Args:
        path: The ``.aedat`` file.
        T: Number of frames.
        image_size: Output side ``S``.

    Returns:
        float32 ``[T, 2, S, S]``.
    """
    ev = read_aedat2(path)
    frames = torch.from_numpy(events_to_frames(ev["x"], ev["y"], ev["p"], T))
    return resize_frames(frames, image_size).numpy()


def _natural_key(name: str) -> tuple:
    return tuple(int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name))


def list_files(root: str | os.PathLike) -> tuple[list[str], list[int]]:
    """All ``.aedat`` files of the release in data-set order, with labels.

    Order: classes in :data:`CIFAR10_DVS_CLASSES` order (alphabetical), files sorted by
    name as strings within a class -- the order of torchvision's ``DatasetFolder`` that
    SpikingJelly uses, which the paper's ``random_split`` indexes. Labels are the class
    index in :data:`CIFAR10_DVS_CLASSES` (missing class folders leave gaps and a warning).

    Args:
        root: Release folder.

    Returns:
        ``(files, labels)``: paths relative to ``root`` (``"<class>/<name>.aedat"``) and ints.

    Raises:
        DatasetNotFoundError: No class folder with ``.aedat`` files.
    """
    root = Path(root)
    files: list[str] = []
    labels: list[int] = []
    missing = []
    for label, cls in enumerate(CIFAR10_DVS_CLASSES):
        folder = root / cls
        names = sorted(f.name for f in folder.glob("*.aedat")) if folder.is_dir() else []
        if not names:
            missing.append(cls)
        files += [f"{cls}/{n}" for n in names]
        labels += [label] * len(names)
    if not files:
        raise DatasetNotFoundError(
            f"cifar10_dvs not found: no .aedat files in class folders under {root}. Expected "
            f"layout: {LAYOUT}. Download the original release (figshare \"CIFAR10-DVS\", "
            f"{FIGSHARE_URL}; one zip per class) and extract every zip into {root}. "
            f"No automatic download.")
    if missing:
        warnings.warn(f"cifar10_dvs: no .aedat files for classes {missing} under {root}; "
                      f"using the {len(files)} files found", stacklevel=3)
    return files, labels


def make_split(files: list[str], labels: list[int], split: str) -> dict[str, Any]:
    """Compute a train/test split of the file list (see :func:`load_or_make_split`).

    ``"official"``: the paper's ``torch.utils.data.random_split(range(N), [0.9, 0.1],
    generator=torch.Generator().manual_seed(42))`` over the data-set order of
    :func:`list_files` (9000/1000 for the full 10,000; not class-balanced).
    ``"balanced"``: per class, files in natural (numeric) name order, the first
    ``(9 * n) // 10`` train and the rest test (900/100 per class for the full release).

    Args:
        files: Relative paths in data-set order.
        labels: Labels of ``files``.
        split: ``"official"`` or ``"balanced"``.

    Returns:
        ``{"dataset", "split", "rule", "files", "train", "test"}`` with index lists into
        ``files``.
    """
    n = len(files)
    if split == "official":
        gen = torch.Generator().manual_seed(OFFICIAL_SEED)
        tr, te = torch.utils.data.random_split(range(n), list(OFFICIAL_FRACTIONS), generator=gen)
        train, test = [int(i) for i in tr.indices], [int(i) for i in te.indices]
        rule = ("torch.utils.data.random_split(dataset, [0.9, 0.1], "
                "generator=torch.Generator().manual_seed(42)); indices into 'files'")
    elif split == "balanced":
        train, test = [], []
        for label in sorted(set(labels)):
            idx = [i for i in range(n) if labels[i] == label]
            idx.sort(key=lambda i: _natural_key(files[i]))
            k = (9 * len(idx)) // 10
            train += idx[:k]
            test += idx[k:]
        rule = ("per class, files in natural name order: first (9*n)//10 train, rest test; "
                "indices into 'files'")
    else:
        raise ValueError(f"unknown cifar10_dvs split {split!r}; valid: official, balanced")
    return {"dataset": "cifar10_dvs", "split": split, "rule": rule, "files": list(files),
            "train": train, "test": test}


def file_list_digest(root: str | os.PathLike) -> str | None:
    """SHA-256 of the release's file list (:func:`list_files`: every ``<class>/<name>.aedat``
    in data-set order), the part of a CIFAR10-DVS run's identity that its config cannot hold.

    :meth:`esdlib.train.config.RunConfig.config_hash` adds it, so a run trained with a class
    folder missing and the run on the complete folder get different run ids (the split is a
    function of the file list and the config's ``split``). The listing is cached while no
    class folder changes (their modification times).

    Returns:
        The hex digest, or ``None`` when ``root`` holds no release (the run then stops at
        the data set with its own message).
    """
    root = Path(root)
    stamps = []
    for cls in CIFAR10_DVS_CLASSES:
        try:
            stamps.append((root / cls).stat().st_mtime_ns)
        except OSError:
            stamps.append(None)
    return _file_list_digest(str(root.resolve()), tuple(stamps))


@functools.lru_cache(maxsize=16)
def _file_list_digest(root: str, stamps: tuple[int | None, ...]) -> str | None:
    import hashlib
    import json

    if not any(s is not None for s in stamps):
        return None
    with warnings.catch_warnings():  # the warning of a missing class comes with the data set
        warnings.simplefilter("ignore")
        try:
            files, _ = list_files(root)
        except DatasetNotFoundError:
            return None
    return hashlib.sha256(json.dumps(files).encode("utf-8")).hexdigest()


def load_or_make_split(files: list[str], labels: list[int], split: str,
                       path: str | os.PathLike) -> tuple[list[int], list[int]]:
    """Read the split saved at ``path``, or compute it (:func:`make_split`) and save it.

    The saved file pins the split so it never drifts (e.g. with a torch version).

    Args:
        files: Relative paths in data-set order (see :func:`list_files`).
        labels: Labels of ``files``.
        split: ``"official"`` or ``"balanced"``.
        path: JSON file.

    Returns:
        ``(train_indices, test_indices)`` into ``files``.

    The saved file is checked (:func:`~esdlib.data._common.check_split`: in-range indices, no
    duplicates, train and test disjoint and covering every file) and must equal the split
    the rule gives for the current file list: the run id does not cover the split file, so a
    file edited by hand (or made by another rule) is refused rather than used under the id
    of the genuine split.

    Raises:
        DataError: The saved file is unreadable, not a valid split, made for a different file
            list, or differs from the rule's split (names the file; delete it to recompute).
    """
    path = Path(path)
    expected = make_split(files, labels, split)
    if path.exists():
        saved = read_json_file(path, "split index file")
        if not isinstance(saved, dict):
            raise DataError(f"{path}: split index file is not a JSON object")
        if saved.get("files") != list(files) or saved.get("split") != split:
            raise DataError(
                f"{path} was saved for a different set of files ({len(saved.get('files', []))} "
                f"vs {len(files)} now); the data folder changed. Delete the file to make a "
                f"new split (results would no longer be comparable).")
        train, test = check_split(saved.get("train"), saved.get("test"), len(files), path)
        if (train, test) != (expected["train"], expected["test"]):
            raise DataError(f"{path}: the saved {split!r} split differs from the rule's split of "
                            f"these files ({expected['rule']}); it was edited or made "
                            f"differently. Delete it to recompute.")
        return train, test
    atomic_write_json(path, expected, one_key_per_line=True)
    return expected["train"], expected["test"]


def split_name(split: str, n_train: int, n_test: int) -> str:
    """Human-readable split name with every number.

    Args:
        split: ``"official"`` or ``"balanced"``.
        n_train: Train size.
        n_test: Test size.

    Returns:
        E.g. ``"cifar10_dvs paper random_split seed 42 (9000/1000)"``.
    """
    if split == "official":
        return f"cifar10_dvs paper random_split seed {OFFICIAL_SEED} ({n_train}/{n_test})"
    return f"cifar10_dvs balanced per-class 9:1 ({n_train}/{n_test})"


def dvs_train_transform(image_size: int) -> v2.Compose:
    """Train augmentation for a DVS clip ``[T, 2, S, S]``, the same random draw for all frames.

    Paper: random horizontal flip, random roll/translation up to 5 px, small random rotation,
    cutout. Ours (torchvision v2; parameters are our choice where the paper gives none):
    ``RandomHorizontalFlip()``, ``RandomAffine(degrees=15, translate=(5/S, 5/S))`` (integer
    shift up to 5 px, zero fill rather than a circular roll; nearest interpolation), and
    ``RandomErasing(p=1, hole (S//3) x (S//3), value=0)`` as cutout.

    Args:
        image_size: Side ``S``.

    Returns:
        A transform ``[T, 2, S, S] -> [T, 2, S, S]``.
    """
    hole = max(1, image_size // 3)
    area = hole * hole / (image_size * image_size)
    shift = min(1.0, 5.0 / image_size)
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=15, translate=(shift, shift)),
        v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0.0),
    ])


class CIFAR10DVSFrames(Dataset):
    """CIFAR10-DVS samples as cached event frames.

    Frames of a file are computed on first access (:func:`aedat_to_frames`) and cached as
    ``<cache_dir>/<class>/<name>.npz`` (key ``frames``), written atomically (temp file +
    ``os.replace``), so concurrent workers or a killed run never leave a torn file.

    Args:
        root: Release folder.
        files: Relative ``.aedat`` paths of this subset.
        labels: Their labels.
        T: Frames per sample.
        image_size: Side ``S``.
        cache_dir: Frame cache folder.
        transform: Optional transform of a clip ``[T, 2, S, S]``.
    """

    def __init__(self, root: str | os.PathLike, files: list[str], labels: list[int], T: int,
                 image_size: int, cache_dir: str | os.PathLike,
                 transform: Callable | None = None):
        self.root = Path(root)
        self.files = list(files)
        self.labels = [int(v) for v in labels]
        self.T = T
        self.image_size = image_size
        self.cache_dir = Path(cache_dir)
        self.transform = transform

    def __len__(self) -> int:
        """Number of samples."""
        return len(self.files)

    def cache_path(self, i: int) -> Path:
        """Cache file of sample ``i``: ``<cache_dir>/<class>/<stem>.npz``."""
        return self.cache_dir / Path(self.files[i]).with_suffix(".npz")

    def frames(self, i: int) -> torch.Tensor:
        """Untransformed frames of sample ``i``: float32 ``[T, 2, S, S]`` (from the cache)."""
        path = self.cache_path(i)
        if path.exists():
            check_regular_file(path, "frame cache file")
            try:
                with np.load(path) as z:
                    arr = z["frames"]
            except Exception as err:  # zipfile/pickle/OS errors of a damaged cache file
                raise DataError(f"{path}: damaged frame cache file ({type(err).__name__}: "
                                f"{err}); delete it to recompute it") from None
            want = (self.T, 2, self.image_size, self.image_size)
            if arr.shape != want or arr.dtype != np.float32:
                raise DataError(f"{path}: frame cache holds {arr.dtype} {arr.shape}, expected "
                                f"float32 {want}; delete it to recompute it")
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            if bad:
                raise DataError(f"{path}: frame cache holds {bad} non-finite (NaN/Inf) values "
                                "of event counts; delete it to recompute it")
            return torch.from_numpy(arr)
        arr = aedat_to_frames(self.root / self.files[i], self.T, self.image_size)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        with atomic_open(path, "wb") as f:
            np.savez_compressed(f, frames=arr)
        return torch.from_numpy(arr)

    def precompute(self) -> None:
        """Fill the cache for every sample of this subset (optional; otherwise lazy)."""
        for i in range(len(self)):
            if not self.cache_path(i).exists():
                self.frames(i)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """Sample ``i`` as ``(frames [T, 2, S, S] float32, label)``."""
        x = self.frames(i)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


def _check_cache_meta(cache_dir: Path, T: int, image_size: int) -> None:
    meta = {"format": CACHE_FORMAT, "T": T, "image_size": image_size,
            "frames": "SpikingJelly split_by='number' event counts per polarity",
            "coordinates": "x=127-y_raw, y=127-x_raw, p=1-p_raw (SpikingJelly CIFAR10DVS)",
            "resize": "torchvision resize bilinear antialias=True"}
    path = cache_dir / "cache_meta.json"
    if path.exists():
        saved = read_json_file(path, "frame cache description")
        if saved != meta:
            raise DataError(f"{cache_dir} holds frames made with other settings ({saved}); "
                             f"choose another cache_dir or delete it")
    else:
        atomic_write_json(path, meta, one_key_per_line=True)


def build_cifar10_dvs(root: str | os.PathLike, T: int = 10, image_size: int = 48,
                      augment: bool = True, split: str = "official",
                      cache_dir: str | os.PathLike | None = None):
    """CIFAR10-DVS train/test sets from the original AEDAT release.

    Samples are ``([T, 2, S, S] float32 event counts, label)``. The split index lists are
    saved as ``<cache_dir>/split_<split>.json`` (beside the frame cache) on first use and
    read back afterwards.

    Args:
        root: Release folder (see the module docstring for the layout).
        T: Frames per sample.
        image_size: Side ``S`` (paper: 48).
        augment: Train-side augmentation (:func:`dvs_train_transform`).
        split: ``"official"`` (paper's seed-42 random 0.9/0.1 split) or ``"balanced"``.
        cache_dir: Frame cache (default ``<root>/frames_T{T}_{S}``).

    Returns:
        ``(train, test, split_name)``.

    Raises:
        DatasetNotFoundError: The release is not under ``root``.
        DataError: The cache folder cannot be written, or a cache or split file is damaged.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"cifar10_dvs not found: the folder {root} does not exist. Expected layout: "
            f"{LAYOUT}. Download the original release (figshare \"CIFAR10-DVS\", "
            f"{FIGSHARE_URL}; one zip per class) and extract every zip into {root}. "
            f"No automatic download.")
    files, labels = list_files(root)
    default_cache = cache_dir is None
    cache_dir = Path(cache_dir) if cache_dir is not None else root / f"frames_T{T}_{image_size}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _check_cache_meta(cache_dir, T, image_size)
        tr, te = load_or_make_split(files, labels, split, cache_dir / f"split_{split}.json")
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        hint = "; set cache_dir (e.g. `--set cache_dir=...`) to a writable folder"
        raise DataError(f"cannot write the cifar10_dvs frame cache in {cache_dir}: "
                        f"{err.strerror}{hint if default_cache else ''}") from None
    transform = dvs_train_transform(image_size) if augment else None
    train = CIFAR10DVSFrames(root, [files[i] for i in tr], [labels[i] for i in tr], T,
                             image_size, cache_dir, transform)
    test = CIFAR10DVSFrames(root, [files[i] for i in te], [labels[i] for i in te], T,
                            image_size, cache_dir)
    return train, test, split_name(split, len(tr), len(te))
