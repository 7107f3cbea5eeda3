"""The paper's reported values: the CSV tables of ``results/paper/`` (never edited)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from esdlib.train import paths
from esdlib.train.fields import did_you_mean

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["load_paper_table", "paper_table_names"]


def _paper_dir(root: str | os.PathLike | None) -> Path:
    path = paths.paper_dir(root)
    if not path.is_dir():
        raise FileNotFoundError(f"paper values directory {path} does not exist (pass the "
                                "results folder that holds 'paper/')")
    return path


def paper_table_names(root: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Names accepted by :func:`load_paper_table` (the CSV files in ``<root>/paper``).

    Args:
        root: the results folder holding ``paper/`` (``None``: the project's,
            :func:`esdlib.train.paths.results_dir`).

    Raises:
        FileNotFoundError: no paper directory.
    """
    return tuple(sorted(p.stem for p in _paper_dir(root).glob("*.csv")))


def load_paper_table(name: str, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Load one table of paper-reported values, e.g. ``"table1_static"``.

    Args:
        name: The table (a CSV file of ``<root>/paper``).
        root: The results folder holding ``paper/`` (default: :func:`results_dir`).

    Tables: ``table1_static`` (CIFAR-10/100, ImageNet top-1 accuracy in %),
    ``table_dvs`` (CIFAR10-DVS top-1 in %), ``firing_rates`` (fractions per
    timestep). Only empty cells are missing values (NaN); numbers are parsed as
    int64/float64 and ``True``/``False`` columns as bool.

    Args:
        name: table name (a CSV file of ``<root>/paper`` without its suffix).
        root: the results folder holding ``paper/`` (``None``: the project's,
            :func:`esdlib.train.paths.results_dir`).

    Raises:
        FileNotFoundError: Unknown table (the message lists the available ones)
            or no paper directory.
    """
    import pandas as pd

    path = _paper_dir(root) / f"{name}.csv"
    if not path.is_file():
        names = paper_table_names(root)
        raise FileNotFoundError(f"no paper table {name!r}{did_you_mean(name, names)}; "
                                f"available: {', '.join(names)} in {path.parent}"
        )
    return pd.read_csv(path, keep_default_na=False, na_values=[""])
