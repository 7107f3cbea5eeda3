"""Chapter 5 (CIFAR10-DVS): our event-data runs beside the paper's DVS rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from esdbook.paper import PAPER_DVS_ROWS, paper_scale, paper_value
from esdbook.table1 import group_runs
from esdlib.analysis.runs import (
    CELL_COLUMNS,
    DATASET_COL,
    T_COL,
    arch_label,
    method_label,
    pm,
    scale_of,
    summarize,
)


def dvs_comparison(df: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our event-data runs next to the paper's CIFAR10-DVS rows of the same method and training.

    The paper's rows are matched by method, training (one-step vs BPTT) and architecture, not
    by T (the paper uses T = 10 frames; both T are shown).

    Args:
        df: ``dvs`` records (complete runs are used).
        paper: ``load_paper_table("table_dvs")``.

    Returns:
        Rows (dataset, arch, method, T) with our ``mean ± std``, seeds, the split, the paper's
        value and T, and both scales (ours per row).
    """
    s = summarize(df, CELL_COLUMNS + ["config.split"])
    rows = []
    for _, r in s.iterrows():
        arch = arch_label(r["config.arch"])
        name, training = PAPER_DVS_ROWS.get(r["config.method"], ("—", None))
        pv = paper_value(paper, "cifar10_dvs", name, arch, training=training)
        hit = paper[(paper["method"] == name) & (paper["architecture"] == arch)]
        rows.append({"dataset": r[DATASET_COL], "architecture": arch,
                     "method": method_label(r["config.method"]),
                     "T": int(r[T_COL]), "ours_%": pm(r["mean_%"], r["std_%"]),
                     "seeds": int(r["seeds"]), "split": r["config.split"],
                     "paper_cifar10_dvs_%": pv,
                     "paper_T": int(hit["T"].iloc[0]) if len(hit) and pv == pv else np.nan,
                     "our scale": scale_of(group_runs(df, [r[k] for k in CELL_COLUMNS])),
                     "paper scale": paper_scale("cifar10_dvs")})
    return pd.DataFrame(rows, columns=["dataset", "architecture", "method", "T", "ours_%",
                                       "seeds", "split", "paper_cifar10_dvs_%", "paper_T",
                                       "our scale", "paper scale"])


def dvs_gains(df: pd.DataFrame, paper: pd.DataFrame, base: str = "esd",
              target: str = "esd_bptt") -> pd.DataFrame:
    """``target − base`` in points, ours vs the paper's CIFAR10-DVS rows, per architecture.

    Default: the paper's claim that ESD trained with BPTT beats ESD trained one-step on DVS.

    Returns:
        Rows (arch, T) where both methods ran: ``ours_gain_pts``, ``paper_gain_pts`` (matched
        by architecture and training, NaN where absent) and ``same_sign``.
    """
    s = summarize(df, ["config.arch", "config.method", T_COL])
    rows = []
    for (arch, T), grp in s.groupby(["config.arch", T_COL]):
        m = grp.set_index("config.method")["mean_%"]
        if base not in m or target not in m:
            continue
        label = arch_label(arch)
        vals = []
        for meth in (target, base):
            name, training = PAPER_DVS_ROWS.get(meth, ("—", None))
            vals.append(paper_value(paper, "cifar10_dvs", name, label, training=training))
        ours = float(m[target] - m[base])
        theirs = vals[0] - vals[1]
        rows.append({"architecture": label, "T": int(T),
                     "comparison": f"{method_label(target)} − {method_label(base)}",
                     "ours_gain_pts": ours, "paper_gain_pts": theirs,
                     "same_sign": bool(np.sign(ours) == np.sign(theirs)) if theirs == theirs
                     else None})
    return pd.DataFrame(rows, columns=["architecture", "T", "comparison", "ours_gain_pts",
                                       "paper_gain_pts", "same_sign"])


def dvs_claims(df: pd.DataFrame, paper: pd.DataFrame,
               pairs: Sequence[tuple[str, str]] = (("esd", "esd_bptt"), ("ratebp", "esd"))
               ) -> pd.DataFrame:
    """:func:`dvs_gains` for several ``(base, target)`` pairs, stacked."""
    return pd.concat([dvs_gains(df, paper, b, t) for b, t in pairs], ignore_index=True)
