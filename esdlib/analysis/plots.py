"""Figures of the record analyses: accuracy vs T, learning curves, firing rates per layer,
gradient error over training.

Each function returns a matplotlib Figure (:func:`new_figure`: shown once when it is a cell's
last expression) and never calls ``plt.show`` or chooses a backend; missing data gives a figure
that says what is missing.

Every figure draws a method with the one colour, marker and label of :data:`METHOD_STYLES`
(:func:`method_style`), puts its legend outside the axes, and draws a point that rests on a
single seed hollow and unconnected (a mean of several seeds is filled and joined).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from esdlib.analysis.firing import layer_rate_table
from esdlib.analysis.gradient_error import as_history
from esdlib.analysis.runs import (
    METHOD_ORDER,
    PLAIN_CE,
    T_COL,
    arch_label,
    complete,
    method_key,
    method_label,
    scale_of,
    split_recipes,
    summarize,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class MethodStyle:
    """How every figure draws one training method: legend label, colour, marker, line style."""

    label: str
    color: str
    marker: str
    linestyle: str = "-"


METHOD_STYLES: dict[str, MethodStyle] = {
    "bptt": MethodStyle("BPTT", "#000000", "s"),
    "ratebp": MethodStyle("RateBP (1/T)", "#009E73", "o"),
    PLAIN_CE: MethodStyle("RateBP (plain CE)", "#56B4E9", "v", "--"),
    "sd": MethodStyle("Standard SD", "#CC79A7", "D"),
    "esd": MethodStyle("ESD (rate-BP)", "#D55E00", "^"),
    "esd_bptt": MethodStyle("ESD (BPTT)", "#0072B2", "P"),
}
"""The one colour (Okabe-Ito, colour-blind safe), marker and label of each method in every
figure. RateBP's two loss scalings are two entries: ``"ratebp"`` is the official 1/T recipe
(``rate_grad_scale="1/T"``), :data:`PLAIN_CE` plain cross-entropy."""

UNKNOWN_STYLE = MethodStyle("", "#777777", "x", ":")
"""The style of a method missing from :data:`METHOD_STYLES` (labelled with its own name)."""


def style_key(method: str, rate_grad_scale: Any = None) -> str:
    """The :data:`METHOD_STYLES` key of a run: :func:`esdlib.analysis.runs.method_key` (its
    method, except RateBP with plain CE, which is :data:`PLAIN_CE`)."""
    return method_key(method, rate_grad_scale)


def method_style(method: str, rate_grad_scale: Any = None) -> MethodStyle:
    """The style of a method (and, for RateBP, its loss scaling); an unknown method is grey,
    labelled with its own name."""
    key = style_key(method, rate_grad_scale)
    return METHOD_STYLES.get(key) or replace(UNKNOWN_STYLE, label=key)


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


def style_order(keys: Sequence[str]) -> list[str]:
    """``keys`` in the order of :data:`METHOD_STYLES` (unknown keys last, in their order)."""
    known = [k for k in METHOD_STYLES if k in keys]
    return known + [k for k in dict.fromkeys(keys) if k not in METHOD_STYLES]


def legend_outside(ax: Axes, handles: Sequence[Any] | None = None, **kwargs: Any) -> None:
    """The axes' legend to the right of the axes, off the data (nothing when it is empty);
    ``handles``: explicit legend entries instead of the axes' labelled artists."""
    if handles is None and not ax.get_legend_handles_labels()[0]:
        return
    ax.legend(**({} if handles is None else {"handles": handles}), fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0, **kwargs)


def draw_points(ax: Axes, x: Sequence[float], y: Sequence[float], yerr: Sequence[float] | None,
                n: Sequence[int], style: MethodStyle, label: str, connect: bool = True) -> None:
    """Means over seeds as filled markers (joined by the style's line when ``connect``), with
    error bars; a point of a single seed hollow, without error bar and unconnected.

    Args:
        ax: the axes.
        x, y: positions and means.
        yerr: half-height of each error bar (``None``: none); ignored for single seeds.
        n: seeds behind each point.
        style: the method's :class:`MethodStyle`.
        label: the legend entry (given once, to the first drawn group).
        connect: join the multi-seed points with a line.
    """
    pts = pd.DataFrame({"x": list(x), "y": list(y), "n": list(n),
                        "err": list(yerr) if yerr is not None else [0.0] * len(list(x))})
    many, one = pts[pts["n"] > 1], pts[pts["n"] <= 1]
    if len(many):
        ax.errorbar(many["x"], many["y"], yerr=many["err"].fillna(0) if yerr is not None else None,
                    color=style.color, marker=style.marker, ms=5, capsize=3, lw=1.2,
                    ls=style.linestyle if connect else "none", label=label)
        label = "_nolegend_"
    if len(one):
        ax.plot(one["x"], one["y"], ls="none", marker=style.marker, ms=6, mfc="none",
                mec=style.color, mew=1.3, label=f"{label}, 1 seed" if label[0] != "_" else label)


def accuracy_vs_T_figure(df: pd.DataFrame, methods: Sequence[str] = METHOD_ORDER) -> Figure:
    """Figure: final test accuracy vs T per method (RateBP per loss scaling) and architecture:
    mean ± 1 standard deviation over seeds, markers offset a little per method so that they
    do not hide each other; a single-seed point is hollow and unconnected."""
    d = complete(df)
    if len(d):
        d = split_recipes(d[d["config.method"].isin(methods)])
        d = d.assign(style=d["config.method"])
    s = summarize(d, ["config.arch", "style", T_COL]) if len(d) else summarize(d, ["x"])
    archs = sorted(s["config.arch"].unique()) if len(s) else ["—"]
    fig = new_figure(figsize=(5 * len(archs) + 1.8, 3.6), layout="constrained")
    axes = fig.subplots(1, len(archs), squeeze=False)
    keys = style_order(list(s["style"].unique())) if len(s) else []
    for ax, arch in zip(axes[0], archs, strict=True):
        for j, key in enumerate(keys):
            g = s[(s["config.arch"] == arch) & (s["style"] == key)].sort_values(T_COL)
            if len(g):
                dx = 0.08 * (j - (len(keys) - 1) / 2)
                st = method_style(key)
                draw_points(ax, g[T_COL] + dx, g["mean_%"], g["std_%"], g["seeds"], st, st.label)
        if not len(s):
            ax.text(0.5, 0.5, "no complete runs", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_title(arch_label(arch), fontsize=9)
        ax.set_xlabel("timesteps T")
        ax.set_ylabel("final test accuracy (%)")
        ax.set_xticks(sorted(s[T_COL].unique()) if len(s) else [])
        ax.grid(alpha=0.3)
    if len(s):
        legend_outside(axes[0][-1], title="mean ± 1 sd over seeds", title_fontsize=8)
    title = scale_of(d) if len(d) else "no complete runs"
    if len(s) and s["seeds"].min() != s["seeds"].max():  # say so when points differ in seeds
        title += f"; {int(s['seeds'].min())}–{int(s['seeds'].max())} seeds per point"
    fig.suptitle(title, fontsize=9)
    return fig


def curve_group_style(group: str) -> tuple[MethodStyle, str]:
    """The style and legend label of a :func:`~esdlib.analysis.learning_curves` group such as
    ``"ratebp, rate_grad_scale=none"`` or ``"esd, T=4"``: the method's style and label, then the
    other fields (``T = 4``); the loss scaling is part of RateBP's label already."""
    method, *fields = [p.strip() for p in group.split(",")]
    values = dict(f.split("=", 1) for f in fields if "=" in f)
    style = method_style(method, values.pop("rate_grad_scale", None))
    extra = ", ".join(f"{k} = {v}" for k, v in values.items())
    return style, f"{style.label}, {extra}" if extra else style.label


def learning_curve_figure(curves: pd.DataFrame, title: str = "") -> Figure:
    """Figure: mean test accuracy per epoch of each group (line) with the band from the lowest
    to the highest seed; a group of a single seed is drawn as hollow points without a band."""
    fig = new_figure(figsize=(7.6, 3.6), layout="constrained")
    ax = fig.subplots()
    order = list(METHOD_STYLES.values())
    groups = [(curve_group_style(str(group)), g)
              for group, g in curves.groupby("group", sort=False)]
    groups.sort(key=lambda sg: order.index(sg[0][0]) if sg[0][0] in order else len(order))
    for (style, label), g in groups:
        s = g.groupby("epoch")["test_acc_%"].agg(["mean", "min", "max"])
        n = int(g["seed"].nunique())
        if n > 1:
            ax.plot(s.index, s["mean"], marker=style.marker, markersize=3, color=style.color,
                    ls=style.linestyle, label=f"{label} ({n} seeds)")
            ax.fill_between(s.index, s["min"], s["max"], alpha=0.15, color=style.color)
        else:
            ax.plot(s.index, s["mean"], ls="none", marker=style.marker, ms=4, mfc="none",
                    mec=style.color, label=f"{label} (1 seed)")
    if not len(curves):
        ax.text(0.5, 0.5, "no complete runs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    ax.set_title(title, fontsize=9)
    return fig


T_MARKERS = ("o", "s", "^", "D", "v", "P")
"""Markers of the trained T in the per-layer figure (the colour is the method's)."""


def layer_rate_figure(records: Sequence[Mapping[str, Any]]) -> Figure:
    """Figure: per-layer mean firing rate, one panel per architecture. Layers are categories,
    so each (method, T) is a row of points (mean over seeds; colour = method, marker = T) with
    error bars (standard deviation over seeds), side by side within each layer; no lines. A
    series of a single seed is hollow, without error bars."""
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
        style_of: dict[str, tuple[MethodStyle, int]] = {}
        for rec in by_arch[arch]:
            c = rec["config"]
            key = f"{arch_label(c['arch'])}, {method_label(c['method'])}, T={c['T']}"
            per_seed.setdefault(key, []).append(pd.Series(rec["firing_rates"]["per_layer"],
                                                          dtype=float))
            style_of[key] = (method_style(c["method"]), int(c["T"]))
        ts = sorted({t for _, t in style_of.values()})
        width = 0.8 / max(len(table.columns), 1)
        for i, key in enumerate(table):
            st, t = style_of[key]
            spread = pd.concat(per_seed[key], axis=1).std(axis=1).reindex(table.index)
            x = [j - 0.4 + width * (i + 0.5) for j in range(len(table))]
            single = len(per_seed[key]) == 1
            ax.errorbar(x, table[key].to_numpy(), yerr=None if single else
                        spread.fillna(0).to_numpy(), fmt=T_MARKERS[ts.index(t) % len(T_MARKERS)],
                        ms=4, capsize=2, lw=1, color=st.color, mfc="none" if single else st.color,
                        label=f"{st.label}, T = {t}" + (", 1 seed" if single else ""))
        ax.set_xticks(range(len(table)))
        ax.set_xticklabels(table.index, rotation=60, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(table) - 0.4)
        ax.set_ylabel("mean firing rate")
        ax.set_title(f"{arch_label(arch)} (points: mean over seeds; bars: ±1 sd)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        legend_outside(ax)
    return fig


def gradient_error_figure(history: Sequence[Mapping[str, Any]] | pd.DataFrame) -> Figure:
    """Figure: ``K_rate`` (RateBP's colour) and ``K_esd`` (ESD's) on the left, the cosines to
    the BPTT gradient on the right, over training epochs: the mean over runs as a line with
    the band from the lowest to the highest run (a single run: hollow points).

    Args:
        history: one record's ``extra["gradient_error"]`` list, or
            :func:`gradient_error_history` of several records.
    """
    h = as_history(history)
    fig = new_figure(figsize=(11, 3.4), layout="constrained")
    ax_k, ax_c = fig.subplots(1, 2)
    if not len(h):
        ax_k.text(0.5, 0.5, "no gradient-error records", ha="center", va="center",
                  transform=ax_k.transAxes)
    n = h["run_id"].nunique() if len(h) else 0
    series = [(ax_k, "K_rate", "ratebp", "K_rate: RateBP (CE)"),
              (ax_k, "K_esd", "esd", "K_esd: ESD loss"),
              (ax_c, "cos_rate", "ratebp", "RateBP (CE)"), (ax_c, "cos_esd", "esd", "ESD loss")]
    for ax, col, method, label in series:
        if not n or col not in h:
            continue
        st = METHOD_STYLES[method]
        s = h.groupby("epoch")[col].agg(["mean", "min", "max"])
        if n > 1:
            ax.plot(s.index, s["mean"], marker=st.marker, ms=4, color=st.color,
                    label=f"{label}, mean of {n} runs")
            ax.fill_between(s.index, s["min"], s["max"], color=st.color, alpha=0.15)
        else:
            ax.plot(s.index, s["mean"], ls="none", marker=st.marker, ms=5, mfc="none",
                    mec=st.color, label=f"{label}, 1 run")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_k, ax_c):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_k.set(xlabel="epochs trained", ylabel="‖g_rate − g_BPTT‖ / ‖g_BPTT‖",
             title="relative gradient error K")
    ax_c.set(xlabel="epochs trained", ylabel="cosine(g_rate, g_BPTT)",
             title="direction agreement")
    for ax in (ax_k, ax_c):
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(9)
        legend_outside(ax)
    return fig
