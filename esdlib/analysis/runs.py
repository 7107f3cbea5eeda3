"""Run records as tables: which runs count, their scale, mean ± std over seeds.

Inputs: ``df`` is a records table from :func:`esdlib.load_records` (columns ``config.*``,
``metrics.*``, ``timing.*``, ``status``, ``path``); ``records`` are full records from
:func:`esdlib.load_record`. Missing data gives empty tables, never an exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from esdlib.methods import BRANCH_METHODS, METHODS

T_COL = "config.T"
"""The records-table column of the number of timesteps."""

DATASET_COL = "config.dataset"
"""The records-table column of the data set."""

CELL_COLUMNS = [DATASET_COL, "config.arch", "config.method", T_COL]
"""The columns that name a cell of runs (its seeds are the repetitions)."""

METHOD_ORDER = tuple(METHODS)
"""The training methods in the order of :data:`esdlib.METHODS` (tables and figures)."""

ACC = "metrics.final_test_acc"

BEST = "metrics.best_test_acc"

METHOD_LABELS = {"bptt": "BPTT", "ratebp": "RateBP", "ratebp_plain": "RateBP (plain CE)",
                 "sd": "Standard SD (rate-BP)", "esd": "ESD (rate-BP)", "esd_bptt": "ESD (BPTT)"}

PLAIN_CE = "ratebp_plain"
"""The method key of RateBP trained with plain cross-entropy (``rate_grad_scale="none"``) where
a table or figure shows both of RateBP's recipes (:func:`method_key`)."""


def method_key(method: str, rate_grad_scale: Any = None) -> str:
    """A run's method for tables and figures: its method, except RateBP with plain CE
    (``rate_grad_scale="none"``), which is :data:`PLAIN_CE` — so that the two recipes of the
    step-size control are never averaged together."""
    if method == "ratebp" and str(rate_grad_scale) == "none":
        return PLAIN_CE
    return method


def split_recipes(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``config.method`` replaced by :func:`method_key` (a copy; unchanged when the
    records have no ``config.rate_grad_scale``)."""
    if not len(df) or "config.rate_grad_scale" not in df or "config.method" not in df:
        return df
    out = df.copy()
    out["config.method"] = [method_key(m, r) for m, r in
                            zip(df["config.method"], df["config.rate_grad_scale"], strict=True)]
    return out

ARCH_LABELS = {"spiking_resnet18": "ResNet-18", "spiking_resnet19": "ResNet-19",
               "preact_spiking_resnet34": "PreAct-ResNet-34"}

LEFT_OUT_REASONS = ("damaged", "diverged", "unfinished", "other_profile", "old_branches")
"""Why :func:`left_out` leaves a record out (machine-readable codes; a reader's words for them
are the caller's): an unreadable file, a diverged run, a run that did not finish, a complete run
of another profile, and a complete run of a branch method trained before the published branch
block (:func:`runs_before_branch_fix`; shown, but listed)."""


def complete(df: pd.DataFrame) -> pd.DataFrame:
    """Only the records whose run finished (``status == "complete"``)."""
    return df[df["status"] == "complete"] if len(df) else df


def runs_of(df: pd.DataFrame, profile: str) -> pd.DataFrame:
    """The complete runs of one profile (a book page shows the runs of the profile it was
    executed with; runs of other profiles are at other scales)."""
    d = complete(df)
    return d[d["config.profile"] == profile] if len(d) else d


def damaged(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of record files that could not be read (``status == "damaged"``)."""
    return df[df["status"] == "damaged"] if len(df) else df


def runs_before_branch_fix(df: pd.DataFrame) -> pd.DataFrame:
    """Complete runs of branch methods whose record predates the published branch block.

    Records written since 2026-11-26 carry the model's parameter counts
    (``branch_params``); a branch-method record without them was trained with the earlier,
    wider block that esdlib now calls ``"dsconv_wide"``.
    """
    if not len(df) or "config.method" not in df:
        return df.iloc[0:0]
    counts = df["branch_params"] if "branch_params" in df else pd.Series(None, index=df.index)
    done = df["status"] == "complete"
    return df[done & df["config.method"].isin(BRANCH_METHODS) & counts.isna()]


def _distinct(df: pd.DataFrame, col: str) -> list[Any]:
    if col not in df:
        return []
    return sorted(df[col].dropna().unique())


def scale_of(df: pd.DataFrame) -> str:
    """One scale string for a set of runs: data set, size, width, epochs, seeds, step cap.

    Each part lists the distinct values, e.g. ``"digits, 16×16, width ×0.25, 12 epochs,
    3 seeds (0, 1, 2)"``; a per-epoch cap on optimiser steps (smoke profile) is appended.
    """
    if not len(df):
        return "no runs"
    parts = [" / ".join(str(v) for v in _distinct(df, "config.dataset"))]
    sizes = _distinct(df, "config.image_size")
    parts.append(" / ".join(f"{int(v)}×{int(v)}" for v in sizes) if sizes else "native size")
    parts.append(" / ".join(f"width ×{v:g}" for v in _distinct(df, "config.width")))
    epochs = _distinct(df, "config.epochs")
    parts.append(" / ".join(str(int(v)) for v in epochs)
                 + (" epoch" if epochs == [1] else " epochs"))
    seeds = [int(s) for s in _distinct(df, "config.seed")]
    if seeds:
        parts.append(f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} "
                     f"({', '.join(map(str, seeds))})")
    caps = _distinct(df, "config.max_train_steps")
    if caps:
        parts.append(f"≤{' / '.join(str(int(c)) for c in caps)} optimiser steps per epoch")
    return ", ".join(p for p in parts if p)


def summarize(df: pd.DataFrame, by: Sequence[str], metric: str = ACC) -> pd.DataFrame:
    """Mean, standard deviation (ddof 1; NaN for one seed) and seed count of ``metric``.

    Args:
        df: records table (:func:`esdlib.load_records`); only complete runs are used.
        by: grouping columns, e.g. ``["config.arch", "config.method", "config.T"]``.
        metric: column to aggregate (accuracies are fractions; reported in %).

    Returns:
        One row per group with ``mean_%``, ``std_%``, ``seeds``.
    """
    df = complete(df)
    if not len(df) or metric not in df:
        return pd.DataFrame(columns=[*by, "mean_%", "std_%", "seeds"])
    g = df.groupby(list(by), dropna=False)[metric]
    out = pd.DataFrame({"mean_%": g.mean() * 100, "std_%": g.std(ddof=1) * 100,
                        "seeds": g.count()}).reset_index()
    return out


def pm(mean: float, std: float) -> str:
    """``"mean ± std"`` with two decimals (``"mean"`` alone when std is NaN)."""
    if std is None or (isinstance(std, float) and np.isnan(std)):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {std:.2f}"


def select_records(records: Iterable[Mapping[str, Any]], *, experiment: str | None = None,
                   methods: Sequence[str] | None = None, arch: str | None = None,
                   complete_only: bool = True) -> list[Mapping[str, Any]]:
    """The full records matching experiment, methods and architecture (complete runs only by
    default), in their original order."""
    return [r for r in records
            if (experiment is None or r["experiment"] == experiment)
            and (methods is None or r["config"]["method"] in methods)
            and (arch is None or r["config"]["arch"] == arch)
            and (not complete_only or r["status"] == "complete")]


def data_splits(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The data set, ``split`` setting and the split actually used (``extra.dataset_split``)."""
    rows = {(r["config"]["dataset"], r["config"]["split"],
             (r.get("extra") or {}).get("dataset_split", "—")) for r in records}
    return pd.DataFrame(sorted(rows), columns=["dataset", "split setting", "split used"])


def learning_curves(records: Sequence[Mapping[str, Any]],
                    by: Sequence[str] = ("method", "T")) -> pd.DataFrame:
    """Test accuracy per epoch of every run, long format.

    Args:
        records: Full run records (:func:`esdlib.load_record`).
        by: Config fields that name a curve's group.

    Returns:
        Columns ``group`` (e.g. ``"esd, T=4"``), ``seed``, ``epoch``, ``test_acc_%``.
    """
    rows = []
    for r in records:
        cfg = r["config"]
        group = ", ".join(str(cfg[k]) if k == "method" else f"{k}={cfg[k]}" for k in by)
        for h in r["history"]:
            rows.append({"group": group, "seed": cfg["seed"], "epoch": h["epoch"],
                         "test_acc_%": 100.0 * h["test_acc"]})
    return pd.DataFrame(rows, columns=["group", "seed", "epoch", "test_acc_%"])


def method_label(method: str) -> str:
    """The display name of a training method (:data:`METHOD_LABELS`; unknown names unchanged)."""
    return METHOD_LABELS.get(method, method)


def arch_label(arch: str) -> str:
    """The display name of an architecture (:data:`ARCH_LABELS`; unknown names unchanged)."""
    return ARCH_LABELS.get(arch, arch)


def left_out(df: pd.DataFrame, profile: str) -> pd.DataFrame:
    """The records of ``df`` that a page of ``profile`` does not count, and why.

    Args:
        df: every record of an experiment (``load_records(..., strict=False)``).
        profile: the profile whose complete runs the page shows.

    Returns:
        One row per record left out, columns ``record`` (run id; the file's path for an
        unreadable file), ``status``, ``why`` (one of :data:`LEFT_OUT_REASONS`) and ``detail``
        (the read error of a damaged file, the profile of a run of another profile, else
        ``""``): damaged files, diverged and unfinished runs and complete runs of other profiles
        in the order of ``df``, then the shown runs of branch methods trained before the
        published branch block. Empty when every record counts.
    """
    cols = ["record", "status", "why", "detail"]
    if not len(df):
        return pd.DataFrame(columns=cols)
    rows = []
    for _, r in df.iterrows():
        status = r["status"]
        if status == "damaged":
            error = r.get("error")
            rows.append({"record": r["path"], "status": status, "why": "damaged",
                         "detail": "" if error is None or error != error else str(error)})
        elif status != "complete":
            rows.append({"record": r["run_id"], "status": status,
                         "why": "diverged" if status == "diverged" else "unfinished",
                         "detail": ""})
        elif r.get("config.profile") != profile:
            rows.append({"record": r["run_id"], "status": status, "why": "other_profile",
                         "detail": str(r.get("config.profile"))})
    stale = runs_before_branch_fix(runs_of(df, profile))
    rows += [{"record": rid, "status": "complete", "why": "old_branches", "detail": ""}
             for rid in stale["run_id"]]
    return pd.DataFrame(rows, columns=cols)
