"""Figures of the record analyses: accuracy vs T, learning curves, firing rates per layer,
gradient error over training.

Each function returns a matplotlib Figure (:func:`new_figure`: shown once when it is a cell's
last expression) and never calls ``plt.show`` or chooses a backend; missing data gives a figure
that says what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from esdlib.analysis.firing import layer_rate_table
from esdlib.analysis.gradient_error import _as_history
from esdlib.analysis.runs import (
    METHOD_ORDER,
    T_COL,
    arch_label,
    complete,
    method_label,
    scale_of,
    summarize,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(**kwargs: Any) -> Figure:
    """A matplotlib Figure for a book page, shown once when it is a cell's last expression.

    Made with ``pyplot`` (so that the notebook's inline backend is active and registers its
    image formatter) and closed at once (so that the backend does not show it a second time at
    the end of the cell); it can still be drawn, displayed and saved. No backend is chosen here.

    Args:
        **kwargs: :func:`matplotlib.pyplot.figure` arguments (``figsize``, ``layout``...).
    """
    import matplotlib.pyplot as plt

    fig = plt.figure(**kwargs)
    plt.close(fig)
    return fig


def accuracy_vs_T_figure(df: pd.DataFrame, methods: Sequence[str] = METHOD_ORDER) -> Figure:
    """Figure: final test accuracy (mean ± std over seeds) vs T per method and architecture."""
    s = summarize(df, ["config.arch", "config.method", T_COL])
    s = s[s["config.method"].isin(methods)]
    archs = sorted(s["config.arch"].unique()) or ["—"]
    fig = new_figure(figsize=(5 * len(archs), 3.6), layout="constrained")
    axes = fig.subplots(1, len(archs), squeeze=False)
    for ax, arch in zip(axes[0], archs, strict=True):
        for meth in methods:
            g = s[(s["config.arch"] == arch) & (s["config.method"] == meth)].sort_values(T_COL)
            if len(g):
                ax.errorbar(g[T_COL], g["mean_%"], yerr=g["std_%"].fillna(0), marker="o",
                            capsize=3, label=method_label(meth))
        if not len(s):
            ax.text(0.5, 0.5, "no complete runs", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_title(arch_label(arch))
        ax.set_xlabel("timesteps T")
        ax.set_ylabel("final test accuracy (%)")
        ax.set_xticks(sorted(s[T_COL].unique()) if len(s) else [])
        ax.grid(alpha=0.3)
        if len(s):
            ax.legend(fontsize=8)
    fig.suptitle(scale_of(complete(df)), fontsize=9)
    return fig


def learning_curve_figure(curves: pd.DataFrame, title: str = "") -> Figure:
    """Figure: mean test accuracy per epoch of each group, with the band of min-max over seeds."""
    fig = new_figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    for group, g in curves.groupby("group", sort=False):
        s = g.groupby("epoch")["test_acc_%"].agg(["mean", "min", "max"])
        line, = ax.plot(s.index, s["mean"], marker="o", markersize=3, label=group)
        ax.fill_between(s.index, s["min"], s["max"], alpha=0.2, color=line.get_color())
    if not len(curves):
        ax.text(0.5, 0.5, "no complete runs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if len(curves):
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


def layer_rate_figure(records: Sequence[Mapping[str, Any]]) -> Figure:
    """Figure: per-layer mean firing rate, one panel per architecture. Layers are categories,
    so each (method, T) is a row of points (mean over seeds) with error bars (standard
    deviation over seeds, none for one seed), side by side within each layer; no lines."""
    by_arch: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        if rec.get("firing_rates"):
            by_arch.setdefault(rec["config"]["arch"], []).append(rec)
    archs = sorted(by_arch) or ["—"]
    fig = new_figure(figsize=(10, 4.2 * len(archs)), layout="constrained")
    axes = fig.subplots(len(archs), 1, squeeze=False)[:, 0]
    for ax, arch in zip(axes, archs, strict=True):
        table = layer_rate_table(by_arch.get(arch, []))
        if not len(table):
            ax.text(0.5, 0.5, "no firing-rate records", ha="center", va="center",
                    transform=ax.transAxes)
            continue
        per_seed: dict[str, list[pd.Series]] = {}
        for rec in by_arch[arch]:
            c = rec["config"]
            key = f"{arch_label(c['arch'])}, {method_label(c['method'])}, T={c['T']}"
            per_seed.setdefault(key, []).append(pd.Series(rec["firing_rates"]["per_layer"],
                                                          dtype=float))
        width = 0.8 / max(len(table.columns), 1)
        for i, key in enumerate(table):
            spread = pd.concat(per_seed[key], axis=1).std(axis=1).reindex(table.index)
            x = [j - 0.4 + width * (i + 0.5) for j in range(len(table))]
            ax.errorbar(x, table[key].to_numpy(), yerr=spread.fillna(0).to_numpy(), fmt="o",
                        ms=4, capsize=2, lw=1, label=key.split(", ", 1)[1])
        ax.set_xticks(range(len(table)))
        ax.set_xticklabels(table.index, rotation=60, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(table) - 0.4)
        ax.set_ylabel("mean firing rate")
        ax.set_title(f"{arch_label(arch)} (points: mean over seeds; bars: ±1 std)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def gradient_error_figure(history: Sequence[Mapping[str, Any]] | pd.DataFrame) -> Figure:
    """Figure: ``K_rate`` and ``K_esd`` (left) and the cosines to the BPTT gradient (right)
    over training epochs; one pair of lines per run.

    Args:
        history: one record's ``extra["gradient_error"]`` list, or
            :func:`gradient_error_history` of several records.
    """
    h = _as_history(history)
    fig = new_figure(figsize=(10, 3.4), layout="constrained")
    ax_k, ax_c = fig.subplots(1, 2)
    if not len(h):
        ax_k.text(0.5, 0.5, "no gradient-error records", ha="center", va="center",
                  transform=ax_k.transAxes)
    runs = list(dict.fromkeys(h["run_id"])) if len(h) else []
    for i, run in enumerate(runs):
        g = h[h["run_id"] == run].sort_values("epoch")
        tag = f" [{i + 1}]" if len(runs) > 1 else ""
        ax_k.plot(g["epoch"], g["K_rate"], "o-", color="C0", label=f"K_rate (RateBP, CE){tag}")
        ax_k.plot(g["epoch"], g["K_esd"], "s-", color="C1", label=f"K_esd (ESD loss){tag}")
        if "cos_rate" in g:
            ax_c.plot(g["epoch"], g["cos_rate"], "o-", color="C0", label=f"RateBP{tag}")
            ax_c.plot(g["epoch"], g["cos_esd"], "s-", color="C1", label=f"ESD{tag}")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_k, ax_c):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_k.set(xlabel="epochs trained", ylabel="‖g_rate − g_BPTT‖ / ‖g_BPTT‖",
             title="relative gradient error K")
    ax_c.set(xlabel="epochs trained", ylabel="cosine(g_rate, g_BPTT)",
             title="direction agreement")
    for ax in (ax_k, ax_c):
        ax.grid(alpha=0.3)
        if runs:
            ax.legend(fontsize=8)
    return fig
