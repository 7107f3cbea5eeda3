"""The paper's data sets for ``reproduce --profile paper``: where they are, whether they are
there, and tiny synthetic copies in the exact on-disk formats for ``--dry-run``.

- :func:`data_roots` resolves the folder of each data set: ``--data-root DATASET=PATH`` first,
  then ``--data-dir DIR`` (``DIR/<dataset>``), then the library's default
  (``$ESDLIB_DATA/<dataset>``, ``./data/<dataset>`` when unset).
- :func:`data_problem` checks, without reading the data, that the files a loader needs are
  there (CIFAR python pickles, ImageNet ``train/`` and ``val/`` class folders, CIFAR10-DVS
  class folders of ``.aedat`` files) and says where it looked and how to provide the data.
- :func:`write_synthetic_data` writes a few samples of each data set in its real format (the
  layouts ``tests/test_data.py`` checks the loaders against) and marks each folder with
  :data:`esdlib.data._common.SYNTHETIC_MARKER`, so records trained on them say they are
  synthetic test data.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from esdlib.data._common import SYNTHETIC_MARKER, default_root

__all__ = [
    "PAPER_DATASETS",
    "SYNTHETIC_SIZES",
    "data_problem",
    "data_roots",
    "parse_data_roots",
    "write_synthetic_data",
]

PAPER_DATASETS = ("cifar10", "cifar100", "cifar10_dvs", "imagenet")
"""The data sets of the paper profile (:data:`esdlib.train.config.PAPER_HPARAMS`)."""

_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py",
                (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}
_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck")

_HOW = {
    "cifar10": "the python-version archive https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "
               "extracted there (it holds cifar-10-batches-py/), or `esd train --profile paper "
               "--set dataset=cifar10 --set download=true` on a machine with internet",
    "cifar100": "the python-version archive "
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz extracted there "
                "(it holds cifar-100-python/), or `esd train --profile paper "
                "--set dataset=cifar100 --set download=true` on a machine with internet",
    "imagenet": "ILSVRC2012 from https://image-net.org (login required) as train/<wnid>/*.JPEG "
                "and val/<wnid>/*.JPEG (validation images sorted into class folders, e.g. with "
                "valprep.sh)",
    "cifar10_dvs": "the original release (figshare \"CIFAR10-DVS\", "
                   "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671) with every "
                   "class zip extracted there: <class>/*.aedat for the 10 CIFAR-10 classes",
}


def parse_data_roots(items: Iterable[str] | None) -> dict[str, str]:
    """``["cifar10=/data/c10", ...]`` (``--data-root``) as ``{dataset: path}``.

    Raises:
        ValueError: an item without ``=``, an unknown data set or one given twice.
    """
    out: dict[str, str] = {}
    for item in items or ():
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not path:
            raise ValueError(f"--data-root {item!r} is not DATASET=PATH "
                             f"(DATASET one of {', '.join(PAPER_DATASETS)})")
        if name not in PAPER_DATASETS:
            raise ValueError(f"--data-root {item!r}: unknown data set {name!r}; the paper's are "
                             f"{', '.join(PAPER_DATASETS)}")
        if name in out:
            raise ValueError(f"--data-root gives {name} twice")
        out[name] = path
    return out


def data_roots(datasets: Iterable[str], explicit: Mapping[str, str] | None = None,
               data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The folder each data set is read from (absolute).

    Args:
        datasets: the data sets needed.
        explicit: ``{dataset: path}`` from ``--data-root`` (wins).
        data_dir: ``--data-dir``: a folder holding one sub-folder per data set.

    Returns:
        ``{dataset: folder}``; default ``$ESDLIB_DATA/<dataset>`` (``./data/<dataset>``).
    """
    explicit = explicit or {}
    out = {}
    for name in datasets:
        if name in explicit:
            path = Path(explicit[name])
        elif data_dir is not None:
            path = Path(data_dir) / name
        else:
            path = default_root(name)
        out[name] = path.expanduser().resolve()
    return out


def _missing_files(name: str, root: Path) -> str | None:
    if name in _CIFAR_FILES:
        folder, files = _CIFAR_FILES[name]
        missing = [f for f in files if not (root / folder / f).is_file()]
        return f"{root / folder} lacks {', '.join(missing)}" if missing else None
    if name == "imagenet":
        for side in ("train", "val"):
            folder = root / side
            if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
                return f"{folder} has no class folders"
        return None
    classes = [c for c in _DVS_CLASSES
               if (root / c).is_dir() and next((root / c).glob("*.aedat"), None) is not None]
    if len(classes) < len(_DVS_CLASSES):
        absent = sorted(set(_DVS_CLASSES) - set(classes))
        return f"{root} has no .aedat files for {', '.join(absent)}"
    return None


def data_problem(name: str, root: str | os.PathLike) -> str | None:
    """Why data set ``name`` cannot be read from ``root`` (``None`` when its files are there).

    Checks only that the files and folders the loader opens exist (fast; the loader itself
    checks their content when a run starts).

    Returns:
        One line: the data set, the folder looked in, what is missing, and how to provide it
        (the download or layout, and ``--data-root NAME=PATH`` / ``--data-dir DIR``).
    """
    root = Path(root)
    what = "the folder does not exist" if not root.is_dir() else _missing_files(name, root)
    if what is None:
        return None
    return (f"{name}: looked in {root}: {what}. Provide {_HOW[name]}, then pass "
            f"--data-root {name}=PATH (or --data-dir DIR holding {name}/)")


# ----------------------------------------------------------------------------- synthetic files

SYNTHETIC_SIZES = {"cifar10": (10, 2), "cifar100": (10, 2), "imagenet": (8, 4),
                   "cifar10_dvs": (18, 2)}
"""Train and test samples of each synthetic data set: enough for 2 optimiser steps at batch 2
(ImageNet: on each of 2 DDP ranks) and one evaluation batch."""


def _pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _write_cifar10(root: Path, rng: np.random.Generator) -> None:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    n = SYNTHETIC_SIZES["cifar10"][0] // 5
    for b in range(1, 6):
        _pickle(base / f"data_batch_{b}", {
            "batch_label": f"training batch {b} of 5",
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, size=n).tolist(),
            "filenames": [f"synthetic_{b}_{i}.png" for i in range(n)]})
    m = SYNTHETIC_SIZES["cifar10"][1]
    _pickle(base / "test_batch", {"batch_label": "testing batch 1 of 1",
                                  "data": rng.integers(0, 256, size=(m, 3072), dtype=np.uint8),
                                  "labels": rng.integers(0, 10, size=m).tolist(),
                                  "filenames": [f"synthetic_t{i}.png" for i in range(m)]})
    _pickle(base / "batches.meta", {"label_names": [f"class{i}" for i in range(10)],
                                    "num_cases_per_batch": n, "num_vis": 3072})


def _write_cifar100(root: Path, rng: np.random.Generator) -> None:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    for side, n in zip(("train", "test"), SYNTHETIC_SIZES["cifar100"], strict=True):
        fine = rng.integers(0, 100, size=n).tolist()
        _pickle(base / side, {"filenames": [f"synthetic_{side}{i}.png" for i in range(n)],
                              "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                              "fine_labels": fine, "coarse_labels": [v // 5 for v in fine]})
    _pickle(base / "meta", {"fine_label_names": [f"class{i}" for i in range(100)],
                            "coarse_label_names": [f"super{i}" for i in range(20)]})


def _write_imagenet(root: Path, rng: np.random.Generator) -> None:
    from PIL import Image

    for side, n in zip(("train", "val"), SYNTHETIC_SIZES["imagenet"], strict=True):
        for c, wnid in enumerate(("n01440764", "n01443537")):
            folder = root / side / wnid
            folder.mkdir(parents=True)
            for k in range(n // 2):
                pixels = rng.integers(0, 256, size=(40 + 8 * c, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{k}.JPEG", format="JPEG")


_AEDAT_HEADER = (b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
                 b"# Data format is int32 address, int32 timestamp (8 bytes total), "
                 b"repeated for each event\r\n# Timestamps tick is 1 us\r\n")


def _write_cifar10_dvs(root: Path, rng: np.random.Generator) -> None:
    total = sum(SYNTHETIC_SIZES["cifar10_dvs"])  # the official 0.9/0.1 split gives 18/2
    for i in range(total):
        cls = _DVS_CLASSES[i % len(_DVS_CLASSES)]
        n = int(rng.integers(40, 80))
        x, y, p = (rng.integers(0, hi, n).astype(np.uint32) for hi in (128, 128, 2))
        t = np.sort(rng.integers(0, 10**6, n)).astype(np.uint32)
        addr = (y << 8) | (x << 1) | p  # DVS128 layout: bit 0 polarity, 1-7 x, 8-14 y
        path = root / cls / f"cifar10_{cls}_{i // len(_DVS_CLASSES)}.aedat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_AEDAT_HEADER + np.stack([addr, t], 1).astype(">u4").tobytes())


_WRITERS = {"cifar10": _write_cifar10, "cifar100": _write_cifar100,
            "imagenet": _write_imagenet, "cifar10_dvs": _write_cifar10_dvs}


def write_synthetic_data(folder: str | os.PathLike,
                         datasets: Iterable[str] = PAPER_DATASETS,
                         seed: int = 0) -> dict[str, Path]:
    """Write tiny synthetic copies of the paper's data sets in their real on-disk formats.

    ``<folder>/<dataset>/`` gets: CIFAR-10/100 python-version pickles (torchvision's layout),
    ImageNet ``train/`` and ``val/`` ImageFolder trees of JPEG files (2 classes), CIFAR10-DVS
    class folders of AEDAT 2.0 files (DVS128 addresses); sizes in :data:`SYNTHETIC_SIZES`.
    Each folder is marked with :data:`~esdlib.data._common.SYNTHETIC_MARKER`. A folder that
    is already marked is kept as it is.

    Args:
        folder: where the data set folders go (created).
        datasets: which data sets.
        seed: seed of the random pixels, labels and events.

    Returns:
        ``{dataset: its folder}``.

    Raises:
        FileExistsError: a data set folder exists and is not a marked synthetic one.
    """
    out = {}
    for i, name in enumerate(datasets):
        root = Path(folder) / name
        out[name] = root
        if (root / SYNTHETIC_MARKER).is_file():
            continue
        if root.exists():
            raise FileExistsError(f"{root} exists and is not marked as synthetic test data; "
                                  "choose an empty folder for the synthetic data")
        _WRITERS[name](root, np.random.default_rng([seed, i]))
        (root / SYNTHETIC_MARKER).write_text(
            "Synthetic test data written by esdbook (tiny files in the real on-disk format); "
            "not the real data set. Records trained on it are test data.\n")
    return out
