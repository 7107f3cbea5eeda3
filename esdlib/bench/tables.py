"""Benchmark tables and figure: methods compared as ratios within one run, phases, T curves."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from esdlib.bench.config import PHASES
from esdlib.methods import METHODS

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

RATIO_PAIRS = (("esd", "ratebp"), ("bptt", "esd"), ("bptt", "ratebp"))
"""Method pairs ``(a, b)`` compared by :func:`bench_table` as ``a/b`` ratios within one run."""


_GROUP = ["bench_id", "device_name", "threads", "arch", "width", "image_size", "batch",
          "precision", "T"]
_MIB = 2.0**20


def _method_order(methods: Sequence[str]) -> list[str]:
    known = [m for m in METHODS if m in set(methods)]
    return known + sorted(set(methods) - set(known))


def _with_precision(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``precision`` column (tables built by hand may lack it: fp32)."""
    if "precision" in df:
        return df.assign(precision=df["precision"].fillna("fp32"))
    return df.assign(precision="fp32")


def bench_table(df: pd.DataFrame) -> pd.DataFrame:
    """Medians per method side by side, ratios between methods and to fp32, of the same run.

    Args:
        df: from :func:`load_bench` or :func:`bench_frame`.

    Returns:
        One row per (bench_id, device, threads, arch, width, image size, batch, precision, T)
        with, per method ``m``: ``"m step s"`` (median seconds per training step),
        ``"m saved MiB"`` (saved for backward), ``"m peak MiB"`` (peak growth over inference);
        ``"infer s"`` (seconds per inference batch); for each pair ``(a, b)`` of
        :data:`RATIO_PAIRS` present: ``"a/b step"`` and ``"a/b saved"``; and, for a precision
        other than fp32 in a run that also measured fp32, ``"m step /fp32"`` and
        ``"m saved /fp32"`` (the same method and configuration). Every ratio divides numbers of
        one run on one host.
    """
    import pandas as pd

    df = _with_precision(df)
    out = []
    for key, g in df.groupby(_GROUP, sort=False, dropna=False):
        row = dict(zip(_GROUP, key, strict=True))
        by = {m: r for m, r in g.groupby("method")}
        methods = _method_order(list(by))
        for m in methods:
            r = by[m].iloc[0]
            row[f"{m} step s"] = r["step_s"]
            row[f"{m} saved MiB"] = r["saved_bytes"] / _MIB
            row[f"{m} peak MiB"] = r["peak_growth_bytes"] / _MIB
        row["infer s"] = g["infer_s"].iloc[0]
        for a, b in RATIO_PAIRS:
            if a in by and b in by:
                ra, rb = by[a].iloc[0], by[b].iloc[0]
                row[f"{a}/{b} step"] = ra["step_s"] / rb["step_s"]
                row[f"{a}/{b} saved"] = _ratio(ra["saved_bytes"], rb["saved_bytes"])
        if row["precision"] != "fp32":
            base = df
            for k in _GROUP:
                base = base[base[k] == (row[k] if k != "precision" else "fp32")]
            for m in methods:
                b = base[base["method"] == m]
                if len(b):
                    r = by[m].iloc[0]
                    row[f"{m} step /fp32"] = r["step_s"] / b["step_s"].iloc[0]
                    row[f"{m} saved /fp32"] = _ratio(r["saved_bytes"], b["saved_bytes"].iloc[0])
        out.append(row)
    return pd.DataFrame(out)


def _ratio(a: float, b: float) -> float:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return float("nan")
    return a / b


def phase_table(df: pd.DataFrame) -> pd.DataFrame:
    """Median seconds per phase of a training step, and the spike pass relative to inference.

    Args:
        df: from :func:`load_bench` or :func:`bench_frame`.

    Returns:
        One row per (bench_id, arch, batch, precision, method, T): ``step_s``, each phase of
        :data:`PHASES` (seconds, NaN where the method has no such phase), ``infer_s``, the
        contention columns ``step_s_quiet``, ``n_quiet``, ``load_other``, ``page_faults`` and
        ``spike/infer``
        (spike-pass median over the inference median at the same ``T``).
    """
    df = _with_precision(df)
    cols = ["bench_id", "arch", "batch", "precision", "method", "T", "step_s",
            *(f"{p}_s" for p in PHASES), "infer_s", "step_s_quiet", "n_quiet", "load_other",
            "page_faults"]
    out = df[cols].copy()
    out["spike/infer"] = out["spike_pass_s"] / out["infer_s"]
    return out.reset_index(drop=True)


def plot_bench(df: pd.DataFrame, ax: Sequence[Any] | None = None, *,
               bench_id: str | None = None) -> Figure:
    """Step time and saved-for-backward memory versus ``T``, one line per method (two panels).

    Args:
        df: from :func:`load_bench`.
        ax: two matplotlib Axes (time, memory); ``None`` creates a new Figure (no pyplot).
        bench_id: the run to draw; ``None`` = the most recent one in ``df``; a run with several
            precisions or configurations gets one line per (configuration, precision, method).

    Returns:
        The matplotlib Figure.
    """
    if df.empty:
        raise ValueError("no benchmark rows to plot")
    if bench_id is None:
        bench_id = df.sort_values("created")["bench_id"].iloc[-1]
    run = _with_precision(df[df["bench_id"] == bench_id])
    if run.empty:
        raise ValueError(f"no rows with bench_id {bench_id!r}; have {sorted(set(df.bench_id))}")
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 4), layout="constrained")
        ax_t, ax_m = fig.subplots(1, 2)
    else:
        ax_t, ax_m = ax
        fig = ax_t.figure
    several = run.groupby(["arch", "batch"]).ngroups > 1
    mixed = run["precision"].nunique() > 1
    for (arch, batch, prec, method), g in run.groupby(["arch", "batch", "precision", "method"],
                                                      sort=False):
        g = g.sort_values("T")
        label = method + (f" {prec}" if mixed else "")
        label = f"{label} ({arch}, B={batch})" if several else label
        err = [g["step_s"] - g["step_s_min"], g["step_s_max"] - g["step_s"]]
        ax_t.errorbar(g["T"], g["step_s"], yerr=err, marker="o", capsize=3, label=label)
        ax_m.plot(g["T"], g["saved_bytes"] / _MIB, marker="o", label=label)
    first = run.iloc[0]
    ax_t.set(xlabel="timesteps T", ylabel="training step (s, median; bars min–max)",
             title=f"{first['device_name']}, {int(first['threads'])} threads")
    ax_m.set(xlabel="timesteps T", ylabel="saved for backward (MiB)",
             title="autograd saved tensors")
    for a in (ax_t, ax_m):
        a.set_xticks(sorted(run["T"].unique()))
        a.grid(alpha=0.3)
        a.legend(fontsize="small")
    return fig
