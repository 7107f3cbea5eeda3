"""Chapter 4 (Table 1, static images): our runs beside the paper's rows, ESD − RateBP gains."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from esdbook.paper import (
    PAPER_METHOD_NAMES,
    PAPER_STATIC_COLUMNS,
    paper_column,
    paper_scale,
    paper_value,
)
from esdlib.analysis.runs import (
    CELL_COLUMNS,
    DATASET_COL,
    T_COL,
    arch_label,
    complete,
    method_label,
    pm,
    scale_of,
    split_recipes,
    summarize,
)


def group_runs(df: pd.DataFrame, keys: Sequence[Any]) -> pd.DataFrame:
    """The complete runs of ``df`` whose :data:`CELL_COLUMNS` equal ``keys`` (one table cell)."""
    d = complete(df)
    sel = np.ones(len(d), dtype=bool)
    for col, val in zip(CELL_COLUMNS, keys, strict=False):
        sel &= (d[col] == val).to_numpy()
    return d[sel]


def static_comparison(df: pd.DataFrame, paper: pd.DataFrame,
                      paper_dataset: str = "cifar10") -> pd.DataFrame:
    """Our static-image runs next to the paper's rows for the same method, architecture and T.

    Args:
        df: ``table1`` records (complete runs are used).
        paper: ``load_paper_table("table1_static")``.
        paper_dataset: paper column for runs on a data set the paper does not use (digits);
            runs on CIFAR-10/100 or ImageNet are compared with their own column.

    Returns:
        Rows (dataset, arch, method, T) with our ``mean ± std`` of the final-epoch accuracy, the
        seed count, the paper's value for the matching row (ESD → "ESD (ours in paper)", RateBP
        → "RateBP"; NaN for methods the paper does not list at this architecture and T) and the
        paper column it comes from, their difference in points, and both scales (ours per row).
    """
    cols = ["dataset", "architecture", "method", "T", "ours_%", "seeds", "paper_%",
            "paper column", "difference_pts", "our scale", "paper scale"]
    df = split_recipes(df)  # RateBP's two recipes are two rows
    s = summarize(df, CELL_COLUMNS)
    rows = []
    for _, r in s.iterrows():
        arch = arch_label(r["config.arch"])
        col = paper_column(r[DATASET_COL], paper_dataset)
        pv = paper_value(paper, col, PAPER_METHOD_NAMES.get(r["config.method"], "—"), arch,
                          int(r[T_COL]))
        rows.append({"dataset": r[DATASET_COL], "architecture": arch,
                     "method": method_label(r["config.method"]),
                     "T": int(r[T_COL]), "ours_%": pm(r["mean_%"], r["std_%"]),
                     "seeds": int(r["seeds"]), "paper_%": pv, "paper column": col,
                     "difference_pts": r["mean_%"] - pv if pv == pv else np.nan,
                     "our scale": scale_of(group_runs(df, [r[k] for k in CELL_COLUMNS])),
                     "paper scale": paper_scale(col)})
    return pd.DataFrame(rows, columns=cols)


def method_gains(df: pd.DataFrame, paper: pd.DataFrame, base: str = "ratebp",
                 target: str = "esd", paper_dataset: str = "cifar10") -> pd.DataFrame:
    """The paper's relative claim ``target − base`` (points) vs ours, per data set, arch and T.

    Args:
        df: ``table1`` records (complete runs are used).
        paper: the paper's static table.
        base: baseline method (``ratebp``).
        target: compared method (``esd``).
        paper_dataset: paper column for runs on a data set the paper does not use (digits);
            runs on a paper data set are compared with their own column only (a CIFAR-10 run
            yields no row when ``paper_dataset="cifar100"``).

    Returns:
        Rows (dataset, arch, T) where both methods ran, with ``paper_dataset`` (the paper column
        used), ``ours_gain_pts`` (difference of the means over seeds), ``paper_gain_pts`` (NaN
        where the paper has no matching pair) and ``same_sign`` (None where it has no pair).
    """
    cols = ["dataset", "architecture", "T", "paper_dataset", "ours_gain_pts", "paper_gain_pts",
            "same_sign"]
    df = split_recipes(df)  # base "ratebp" is the official 1/T recipe, "ratebp_plain" plain CE
    s = summarize(df, CELL_COLUMNS)
    rows = []
    for (ds, arch, T), grp in s.groupby([DATASET_COL, "config.arch", T_COL]):
        m = grp.set_index("config.method")["mean_%"]
        col = paper_column(ds, paper_dataset)
        if base not in m or target not in m or (ds in PAPER_STATIC_COLUMNS
                                                 and col != paper_dataset):
            continue
        label = arch_label(arch)
        vals = [paper_value(paper, col, PAPER_METHOD_NAMES.get(meth, "—"), label, int(T))
                for meth in (target, base)]
        ours = float(m[target] - m[base])
        theirs = vals[0] - vals[1]
        rows.append({"dataset": ds, "architecture": label, "T": int(T), "paper_dataset": col,
                     "ours_gain_pts": ours, "paper_gain_pts": theirs,
                     "same_sign": bool(np.sign(ours) == np.sign(theirs)) if theirs == theirs
                     else None})
    return pd.DataFrame(rows, columns=cols)


def gain_table(df: pd.DataFrame, paper: pd.DataFrame,
               datasets: Sequence[str] = ("cifar10", "cifar100"), base: str = "ratebp",
               target: str = "esd") -> pd.DataFrame:
    """:func:`method_gains` against each paper column of ``datasets``, stacked: a digits run
    is compared with every column, a CIFAR run with its own."""
    frames = [method_gains(df, paper, base, target, d) for d in datasets]
    return pd.concat(frames, ignore_index=True).sort_values(
        ["dataset", "architecture", "T", "paper_dataset"], ignore_index=True)
