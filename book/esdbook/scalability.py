"""Chapter 6 (scalability): the benchmark records as tables, and the same-host timings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from esdlib.analysis.plots import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def scalability_table(bench: pd.DataFrame, part: str | None = None) -> pd.DataFrame:
    """Benchmark records as one row per (run, configuration, T): times, ratios, memory.

    Args:
        bench: :func:`esdlib.bench.load_bench` table (may be empty).
        part: ``"time"`` (step times, their ratios, inference time) or ``"memory"`` (saved and
            peak memory and their ratios), each with the identifying columns, so that each fits
            a page; ``None``: every column.

    Returns:
        :func:`esdlib.bench.bench_table` with its columns reordered (identification incl. the
        precision, step times, time ratios between methods and to fp32, memory) and rounded to
        3 significant digits; an empty table when there are no benchmark records. Every ratio
        divides two numbers of one run on one machine.
    """
    from esdlib.bench import bench_table

    ident = ["bench_id", "device_name", "threads", "arch", "width", "image_size", "batch",
             "precision", "T"]
    if bench is None or not len(bench):
        return pd.DataFrame(columns=ident)
    t = bench_table(bench)
    cols = list(t.columns)
    steps = [c for c in cols if c.endswith(" step s")]
    ratios = [c for c in cols if c.endswith("/ratebp step") or c.endswith("/esd step")
              or c.endswith(" step /fp32")]
    mem = [c for c in cols if c.endswith(" MiB") or c.endswith(" saved")
           or c.endswith(" saved /fp32")]
    rest = [c for c in cols if c not in {*ident, *steps, *ratios, *mem}]
    chosen = {None: steps + ratios + mem + rest, "time": steps + ratios + rest,
              "memory": mem}
    if part not in chosen:
        raise ValueError(f"part must be 'time', 'memory' or None, got {part!r}")
    out = t[[c for c in ident if c in cols] + chosen[part]]
    out = out.copy()
    for c in out.select_dtypes("float").columns.difference(ident):
        out[c] = out[c].map(lambda v: float(f"{v:.3g}") if v == v else v)
    return out.reset_index(drop=True)


def scalability_figure(bench: pd.DataFrame, bench_id: str | None = None) -> Figure:
    """Step time and saved memory vs T (:func:`esdlib.bench.plot_bench`); a note if no records."""
    if bench is not None and len(bench):
        from esdlib.bench import plot_bench

        fig = new_figure(figsize=(10, 4), layout="constrained")
        return plot_bench(bench, fig.subplots(1, 2), bench_id=bench_id)
    fig = new_figure(figsize=(6, 1.6))
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, "no benchmark records (results/bench/*.json): run `esd bench`",
            ha="center", va="center")
    return fig

SAME_HOST_FILE = "same_host/same_host_2026-11.csv"
"""The published implementation and esdlib timed on one host (under ``results/bench/``); the
JSON file of the same name beside it says who measured what, where (:func:`same_host_setting`)."""


def same_host_setting(path: str | Path) -> dict[str, Any]:
    """How a same-host timing file was measured: its JSON sidecar (``<name>.json`` beside
    ``<name>.csv``: ``host``, ``vcpus``, ``torch``, ``threads``, ``date``, ``esdlib`` commit,
    ``config``, ``how``, ``source``); ``{}`` when there is none."""
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        return {}
    return json.loads(sidecar.read_text(encoding="utf-8"))


def same_host_values(path: str | Path) -> dict[str, str]:
    """Glue values of :func:`same_host_setting`: ``same_host_host``, ``same_host_date`` and
    ``same_host_esdlib`` (``"unknown"`` where the sidecar is missing or silent)."""
    setting = same_host_setting(path)
    return {f"same_host_{k}": str(setting.get(k, "unknown")) for k in ("host", "date", "esdlib")}


_SAME_HOST_COLUMNS = ("T", "implementation", "setup", "step_s")


def same_host_comparison(path: str | Path) -> pd.DataFrame:
    """The published implementation next to esdlib, timed on one host (:func:`same_host_setting`).

    Args:
        path: the data file (``<results>/bench/`` + :data:`SAME_HOST_FILE`).

    Returns:
        One row per T: ``published s``, then for each esdlib setup ``<setup> s`` and
        ``<setup>/published`` (ratios of numbers measured on the same host; no number of
        another host enters). Empty (with a ``T`` column) when the file is missing.

    Raises:
        ValueError: the file lacks a column or has no ``published`` row.
    """
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=["T"])
    raw = pd.read_csv(path)
    missing = [c for c in _SAME_HOST_COLUMNS if c not in raw]
    if missing or "published" not in set(raw["implementation"]):
        raise ValueError(f"{path}: expected columns {list(_SAME_HOST_COLUMNS)} and rows of "
                         f"implementation 'published' (missing: {missing or 'published rows'})")
    wide = raw.pivot_table(index="T", columns="implementation", values="step_s",
                           aggfunc="first")
    out = pd.DataFrame({"T": wide.index.astype(int), "published s": wide["published"].values})
    for impl in [c for c in dict.fromkeys(raw["implementation"]) if c != "published"]:
        out[f"{impl} s"] = wide[impl].values
        out[f"{impl}/published"] = (wide[impl] / wide["published"]).round(2).values
    return out.reset_index(drop=True)

FLAT_MEMORY = 1.1
"""Growth of saved memory over the benchmarked T range below which it counts as flat."""


def latest_run(bench: pd.DataFrame) -> pd.DataFrame:
    """The rows of the most recent benchmark run, for its first (arch, batch) configuration.

    Args:
        bench: :func:`esdlib.bench.load_bench` table (may be empty).

    Returns:
        Those rows with ``precision`` filled (``fp32`` where a record predates the field);
        empty without records.
    """
    if bench is None or not len(bench):
        return pd.DataFrame(columns=["bench_id", "precision", "method", "T"])
    latest = bench.sort_values("created")["bench_id"].iloc[-1]
    run = bench[bench["bench_id"] == latest]
    run = run.assign(precision=run["precision"].fillna("fp32")) if "precision" in run \
        else run.assign(precision="fp32")
    first = run.iloc[0]
    return run[(run["arch"] == first["arch"]) & (run["batch"] == first["batch"])]


def main_precision(run: pd.DataFrame) -> str:
    """``fp32`` when the run measured it, else its first precision (``"n/a"`` if empty)."""
    if not len(run):
        return "n/a"
    return "fp32" if (run["precision"] == "fp32").any() else str(run["precision"].iloc[0])


def ratio_table(run: pd.DataFrame) -> pd.DataFrame:
    """Lowest and highest value over T of each within-run ratio of :func:`latest_run`.

    Returns:
        One row per ratio (``esd/ratebp step``, ``bptt/esd step`` at the largest T,
        ``esd step /fp32`` and ``esd saved /fp32`` of bf16, ``esd spike/infer``, ``infer s/T``)
        with ``min`` and ``max``; ratios the run cannot give are absent.
    """
    from esdlib.bench import bench_table

    cols = ["ratio", "min", "max"]
    if not len(run):
        return pd.DataFrame(columns=cols)
    t_all = bench_table(run)
    main = main_precision(run)
    t = t_all[t_all["precision"] == main]
    Ts = sorted(int(x) for x in t["T"].unique())
    series = {}
    if "esd/ratebp step" in t:
        series["esd/ratebp step"] = t["esd/ratebp step"]
    if "bptt/esd step" in t:
        series["bptt/esd step at max T"] = t.loc[t["T"] == Ts[-1], "bptt/esd step"]
    bf16 = t_all[t_all["precision"] == "bf16"]
    if len(bf16) and "esd step /fp32" in bf16:
        series["bf16/fp32 esd step"] = bf16["esd step /fp32"]
        series["bf16/fp32 esd saved"] = bf16["esd saved /fp32"]
    esd_rows = run[(run["method"] == "esd") & (run["precision"] == main)]
    if len(esd_rows) and {"spike_pass_s", "infer_s"} <= set(esd_rows.columns):
        series["esd spike pass/inference"] = esd_rows["spike_pass_s"] / esd_rows["infer_s"]
        series["inference s per timestep"] = esd_rows["infer_s"] / esd_rows["T"]
    rows = [{"ratio": k, "min": float(v.min()), "max": float(v.max())}
            for k, v in series.items() if len(v.dropna())]
    return pd.DataFrame(rows, columns=cols)


def saved_growth(run: pd.DataFrame) -> pd.DataFrame:
    """Memory saved for backward at the smallest and the largest T of the run, per method.

    Returns:
        One row per method (``bptt``, ``ratebp``, ``esd``) that ran at two T or more:
        ``T min``, ``T max``, ``saved MiB at T min``, ``saved MiB at T max`` and ``growth``
        (their ratio), for the run's main precision (:func:`main_precision`).
    """
    from esdlib.bench import bench_table

    cols = ["method", "T min", "T max", "saved MiB at T min", "saved MiB at T max", "growth"]
    if not len(run):
        return pd.DataFrame(columns=cols)
    t = bench_table(run)
    t = t[t["precision"] == main_precision(run)]
    Ts = sorted(int(x) for x in t["T"].unique())
    rows = []
    for m in ("bptt", "ratebp", "esd"):
        col = f"{m} saved MiB"
        if col in t and len(Ts) > 1:
            lo = float(t.loc[t["T"] == Ts[0], col].iloc[0])
            hi = float(t.loc[t["T"] == Ts[-1], col].iloc[0])
            rows.append({"method": m, "T min": Ts[0], "T max": Ts[-1],
                         "saved MiB at T min": lo, "saved MiB at T max": hi,
                         "growth": hi / lo if lo else np.nan})
    return pd.DataFrame(rows, columns=cols)


def memory_flat(growth: pd.DataFrame, flat: float = FLAT_MEMORY) -> str:
    """The memory claim decided on :func:`saved_growth`: ``"holds"`` when RateBP's and ESD's
    growth stay below ``flat`` and BPTT's is larger than both, ``"does not hold"`` otherwise,
    ``"cannot be checked"`` when a method or a second T is missing."""
    g = growth.set_index("method")["growth"] if len(growth) else pd.Series(dtype=float)
    two_pass = [g[m] for m in ("ratebp", "esd") if m in g]
    if "bptt" not in g or not two_pass or any(v != v for v in [*two_pass, g["bptt"]]):
        return "cannot be checked"
    return "holds" if max(two_pass) < flat and g["bptt"] > max(two_pass) else "does not hold"


def ratio_range(ratios: pd.DataFrame, name: str, unit: str = "×") -> str:
    """One row of :func:`ratio_table` as a short range label, e.g. ``"1.85–2.10×"``
    (``"n/a"`` when the run lacks it)."""
    from esdbook.display import span

    row = ratios[ratios["ratio"] == name]
    return span([*row["min"], *row["max"]], unit)
