"""Accuracy tables from run records: final vs best epoch, accuracy vs T.

Both summarise the complete runs of a records table (:func:`esdlib.load_records`) per data
set, architecture, method and T, with the mean and standard deviation over seeds as numbers
(in %; format them at display time, e.g. ``esdbook.display.pm_columns``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from esdlib.analysis.runs import (
    ACC,
    BEST,
    CELL_COLUMNS,
    DATASET_COL,
    T_COL,
    arch_label,
    method_label,
    split_recipes,
    summarize,
)


def final_and_best(df: pd.DataFrame, by: Sequence[str] = tuple(CELL_COLUMNS)) -> pd.DataFrame:
    """Final-epoch accuracy (our headline) next to the best epoch chosen on the test set.

    The official code reports the best epoch selected on the test set (there is no validation
    split), which is optimistic; we report the last epoch and show the best one beside it.

    Returns:
        One row per group: ``final_mean_%``, ``final_std_%``, ``best_mean_%``, ``best_std_%``
        (over seeds; std NaN for one seed), ``best−final_pts`` (difference of the means) and
        ``seeds``.
    """
    df = split_recipes(df)  # RateBP's two loss scalings are two rows
    f = summarize(df, list(by), ACC)
    b = summarize(df, list(by), BEST)
    cols = ["dataset", "architecture", "method", "T", "final_mean_%", "final_std_%",
            "best_mean_%", "best_std_%", "best−final_pts", "seeds"]
    if not len(f) or not len(b):
        return pd.DataFrame(columns=cols)
    m = f.merge(b, on=list(by), suffixes=("_f", "_b"))
    out = pd.DataFrame({
        "dataset": m[DATASET_COL] if DATASET_COL in m else "",
        "architecture": m["config.arch"].map(arch_label) if "config.arch" in m else "",
        "method": m["config.method"].map(method_label) if "config.method" in m else "",
        "T": m[T_COL].astype(int) if T_COL in m else np.nan,
        "final_mean_%": m["mean_%_f"], "final_std_%": m["std_%_f"],
        "best_mean_%": m["mean_%_b"], "best_std_%": m["std_%_b"],
        "best−final_pts": (m["mean_%_b"] - m["mean_%_f"]).round(2),
        "seeds": m["seeds_f"].astype(int),
    })
    return out[cols]


def accuracy_vs_T_table(df: pd.DataFrame, methods: Sequence[str] = ("esd",)) -> pd.DataFrame:
    """Final accuracy per architecture, method and T, for ``methods``: ``final_mean_%``,
    ``final_std_%`` (over seeds) and ``seeds``."""
    s = summarize(split_recipes(df), ["config.arch", "config.method", T_COL])
    s = s[s["config.method"].isin(methods)].sort_values(["config.arch", "config.method", T_COL])
    return pd.DataFrame({"architecture": s["config.arch"].map(arch_label),
                         "method": s["config.method"].map(method_label),
                         "T": s[T_COL].astype(int),
                         "final_mean_%": s["mean_%"], "final_std_%": s["std_%"],
                         "seeds": s["seeds"].astype(int)}).reset_index(drop=True)
