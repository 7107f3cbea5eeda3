"""The paper's tables (``results/paper/*.csv``) and how our runs are matched to their rows.

Chapters load a table with ``ch.paper(name)`` (:meth:`esdbook.Chapter.paper`); this module
knows the paper's row names, its scale per data set, and writes the commands that train the
paper's rows with the ``paper`` profile (chapters 4 and 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

PAPER_METHOD_NAMES = {"esd": "ESD (ours in paper)", "ratebp": "RateBP"}
"""Our method → its row name in ``table1_static`` (methods without a paper row are absent)."""

PAPER_DVS_ROWS = {"ratebp": ("RateBP", "one-step"), "esd": ("ESD (ours in paper)", "one-step"),
                  "esd_bptt": ("ESD (ours in paper)", "BPTT")}
"""Our method → ``(method, training)`` of its row in ``table_dvs``."""

PAPER_STATIC_COLUMNS = ("cifar10", "cifar100", "imagenet")
"""Accuracy columns of ``table1_static`` (data-set names)."""


def paper_scale(dataset: str) -> str:
    """The scale of the paper's runs on ``dataset``, from the ``paper`` profile's settings."""
    from esdlib.train.config import PAPER_HPARAMS

    h = PAPER_HPARAMS.get(dataset)
    if h is None:
        return f"{dataset} (no paper settings)"
    return (f"{dataset}, {h['image_size']}×{h['image_size']}, width ×{h['width']:g}, "
            f"{h['epochs']} epochs")


def paper_value(paper: pd.DataFrame, column: str, method: str, arch_label: str,
                 T: int | None = None, training: str | None = None) -> float:
    """The paper's ``column`` for (method, architecture[, T][, training]); NaN if absent."""
    if column not in paper:
        return np.nan
    sel = (paper["method"] == method) & (paper["architecture"] == arch_label)
    if T is not None:
        sel &= paper["T"] == T
    if training is not None and "training" in paper:
        sel &= paper["training"] == training
    hit = paper.loc[sel, column].dropna()
    return float(hit.iloc[0]) if len(hit) else np.nan


def paper_static_rows(paper: pd.DataFrame,
                      architectures: Sequence[str] = ("ResNet-18", "ResNet-19")) -> pd.DataFrame:
    """The rows of the paper's static table that our runs relate to.

    RateBP (the one-step baseline), ESD and every BPTT-trained method, for ``architectures``.

    Args:
        paper: ``load_paper_table("table1_static")``.
        architectures: paper architecture names to keep.

    Returns:
        Columns method, training, architecture, T and the accuracy columns (%), sorted by
        architecture, training, method and descending T.
    """
    keep = (paper["method"].isin(PAPER_METHOD_NAMES.values()) | (paper["training"] == "BPTT"))
    keep &= paper["architecture"].isin(architectures)
    cols = [c for c in ("method", "training", "architecture", "T", "cifar10", "cifar10_std",
                        "cifar100", "cifar100_std", "imagenet", "uses_pretrained_ann")
            if c in paper]
    out = paper.loc[keep, cols].sort_values(["architecture", "training", "method", "T"],
                                            ascending=[True, True, True, False])
    return out.reset_index(drop=True)


def paper_column(dataset: str, default: str = "cifar10") -> str:
    """The paper column a run is compared with: its own data set when the paper reports it
    (``cifar10``, ``cifar100``, ``imagenet``), else ``default`` (digits → CIFAR-10)."""
    return dataset if dataset in PAPER_STATIC_COLUMNS else default


def paper_gains(paper: pd.DataFrame, datasets: Sequence[str] = ("cifar10", "cifar100"),
                base: str = "RateBP", target: str = "ESD (ours in paper)") -> pd.DataFrame:
    """The paper's own ``target − base`` (points) for every (architecture, T, data set) where
    both rows have a value."""
    a = paper[paper["method"] == target].set_index(["architecture", "T"])
    b = paper[paper["method"] == base].set_index(["architecture", "T"])
    rows = []
    for key in a.index.intersection(b.index):
        for d in datasets:
            gain = a.loc[key, d] - b.loc[key, d]
            if gain == gain:
                rows.append({"architecture": key[0], "T": int(key[1]), "paper_dataset": d,
                             "paper_gain_pts": round(float(gain), 2)})
    return pd.DataFrame(rows, columns=["architecture", "T", "paper_dataset", "paper_gain_pts"])


def train_command(dataset: str, method: str, *, arch: str | None = None, T: int | None = None,
                  seed: int | None = None, split: str | None = None,
                  experiment: str | None = None, data_root: str | None = None,
                  gpus: int = 1) -> str:
    """The shell command that trains one paper-profile configuration, validated first.

    Args:
        dataset: a paper data set (``cifar10``, ``cifar100``, ``imagenet``, ``cifar10_dvs``).
        method: training method.
        arch, seed, split: overrides (``None`` = the paper profile's value, not written).
        experiment: records folder under ``results/`` the chapter reads (e.g. ``table1``).
        T: timesteps (``None`` = the paper profile's value for ``dataset``; always written).
        data_root: folder of the data set (default ``/path/to/<dataset>``).
        gpus: > 1 launches ``torchrun --nproc_per_node gpus -m esdlib.cli`` (DDP).

    Returns:
        e.g. ``"esd train --profile paper --set dataset=cifar10 --set method=esd --set T=6
        --set data_root=/path/to/cifar10"`` (one line).

    Raises:
        esdlib.ConfigError: the overrides do not make a valid run configuration.
    """
    from esdlib.train.config import RunConfig

    sets = [f"dataset={dataset}", f"method={method}"]
    for key, value in (("experiment", experiment), ("arch", arch), ("seed", seed),
                       ("split", split)):
        if value is not None:
            sets.append(f"{key}={value}")
    sets.append(f"T={T if T is not None else RunConfig.from_overrides('paper', sets).T}")
    sets.append(f"data_root={data_root or '/path/to/' + dataset}")
    RunConfig.from_overrides("paper", sets)
    launcher = (f"torchrun --nproc_per_node {gpus} -m esdlib.cli" if gpus > 1 else "esd")
    return f"{launcher} train --profile paper " + " ".join(f"--set {s}" for s in sets)


def paper_commands(datasets: Sequence[str] = ("cifar10", "cifar100"),
                   methods: Sequence[str] = ("esd", "ratebp"),
                   archs: Sequence[str] = ("spiking_resnet18", "spiking_resnet19"),
                   T: int | None = None, gpus: int = 1, **overrides: Any) -> list[str]:
    """:func:`train_command` for every (data set, architecture, method), each validated.

    Args:
        datasets, methods, archs: the grid; ``archs=(None,)`` keeps the profile's architecture.
        T: timesteps (``None`` = the paper profile's value for the data set).
        gpus: GPUs per command (``torchrun`` when > 1).
        **overrides: further keyword arguments of :func:`train_command` (``seed``, ``split``).
    """
    return [train_command(d, m, arch=a, T=T, gpus=gpus, **overrides)
            for d in datasets for a in archs for m in methods]
