"""Firing rates from run records: per timestep (the paper's layout), per layer, ESD vs BPTT.

``records`` are full records (:func:`esdlib.load_record`) whose ``firing_rates`` hold the
network rate per timestep and the mean rate per layer, measured on the test set after
training with the plain SNN.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from esdlib.analysis.runs import (
    METHOD_LABELS,
    arch_label,
    complete,
    method_key,
    method_label,
    select_records,
)

FIRING_LABELS = {"bptt": "BPTT", "esd": "ESD"}
"""Our method → its name in the paper's ``firing_rates`` table."""


def _t_columns(columns: Iterable[str]) -> list[str]:
    return sorted((c for c in columns if c.startswith("t") and c[1:].isdigit()),
                  key=lambda c: int(c[1:]))


def firing_rate_table(df: pd.DataFrame, records: Sequence[Mapping[str, Any]],
                      methods: Sequence[str] | None = None, arch: str | None = None,
                      layout: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our per-timestep network firing rates in the paper's layout (trained_T, method, t1…, avg).

    Args:
        df: records table (used to pick complete runs).
        records: the full records (with ``firing_rates``), e.g. ``[esd.load_record(p) ...]``.
        methods: keep only these methods (``None``: all).
        arch: keep only this architecture (``None``: all; rates of different architectures
            would be averaged together, so pass one when several exist).
        layout: a table whose columns to copy (the paper's ``firing_rates``): methods are then
            named as in the paper (``BPTT``, ``ESD``) and the columns are exactly the layout's,
            plus any ``t<k>`` beyond it when we trained with more timesteps.

    Returns:
        Rows (trained_T, method) averaged over seeds; columns ``t1``…``tT`` (NaN past the
        trained T) and ``avg`` (the mean over the trained timesteps).
    """
    ids = set(complete(df)["run_id"]) if len(df) else set()
    names = FIRING_LABELS if layout is not None else METHOD_LABELS
    rows = []
    for rec in records:
        cfg = rec["config"]
        if (rec["run_id"] not in ids or not rec.get("firing_rates")
                or (methods is not None
                    and method_key(cfg["method"], cfg.get("rate_grad_scale")) not in methods)
                or (arch is not None and cfg["arch"] != arch)):
            continue
        per_t = rec["firing_rates"]["per_timestep"]
        key = method_key(cfg["method"], cfg.get("rate_grad_scale"))
        row = {"trained_T": int(cfg["T"]), "method": names.get(key, key)}
        row.update({f"t{i + 1}": float(v) for i, v in enumerate(per_t)})
        row["avg"] = float(np.mean(per_t))
        rows.append(row)
    base = list(layout.columns) if layout is not None else ["trained_T", "method", "avg"]
    if not rows:
        return pd.DataFrame(columns=base)
    out = pd.DataFrame(rows).groupby(["trained_T", "method"], as_index=False).mean()
    tcols = _t_columns(set(out.columns) | (set(layout.columns) if layout is not None else set()))
    cols = ["trained_T", "method", *tcols, "avg"]
    if layout is not None:
        extra = [c for c in tcols if c not in layout.columns]
        cols = [c for c in layout.columns if c != "avg"] + extra + ["avg"]
    return out.reindex(columns=cols).round(4)


def firing_rate_claim(table: pd.DataFrame) -> pd.DataFrame:
    """Per trained T: BPTT and ESD average firing rates, ESD/BPTT and whether ESD fires less.

    Args:
        table: a table in the paper's layout (the paper's or :func:`firing_rate_table` with
            ``layout=``), method names ``BPTT`` and ``ESD``.
    """
    cols = ["trained_T", "BPTT avg", "ESD avg", "ESD/BPTT", "ESD fires less"]
    if not len(table):
        return pd.DataFrame(columns=cols)
    p = table.pivot_table(index="trained_T", columns="method", values="avg")
    rows = []
    for T, r in p.iterrows():
        if "BPTT" not in r or "ESD" not in r or r.isna().any():
            continue
        rows.append({"trained_T": int(T), "BPTT avg": r["BPTT"], "ESD avg": r["ESD"],
                     "ESD/BPTT": r["ESD"] / r["BPTT"] if r["BPTT"] else np.nan,
                     "ESD fires less": bool(r["ESD"] < r["BPTT"])})
    return pd.DataFrame(rows, columns=cols)


def firing_rate_comparison(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """:func:`firing_rate_claim` of the paper and ours side by side, per trained T (outer join)."""
    a = firing_rate_claim(paper).set_index("trained_T").add_prefix("paper ")
    b = firing_rate_claim(ours).set_index("trained_T").add_prefix("ours ")
    out = a.join(b, how="outer").reset_index()
    return out.rename(columns={"index": "trained_T"})


def layer_rate_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per-layer mean firing rate, one column per (architecture, method, T), mean over seeds."""
    cols: dict[str, list[pd.Series]] = {}
    for rec in records:
        fr = rec.get("firing_rates")
        if not fr:
            continue
        c = rec["config"]
        key = f"{arch_label(c['arch'])}, {method_label(c['method'])}, T={c['T']}"
        cols.setdefault(key, []).append(pd.Series(fr["per_layer"], dtype=float))
    if not cols:
        return pd.DataFrame()
    return pd.DataFrame({k: pd.concat(v, axis=1).mean(axis=1) for k, v in sorted(cols.items())})


def firing_rate_definition(records: Iterable[Mapping[str, Any]]) -> str:
    """The firing-rate definition stored in the records (distinct ones joined)."""
    defs = dict.fromkeys(r["firing_rates"]["definition"] for r in records
                         if r.get("firing_rates"))
    return " | ".join(defs) if defs else "no record has firing rates"


def esd_lower_layers(records: Sequence[Mapping[str, Any]], arch: str) -> tuple[int, int]:
    """In how many (layer, T) cells ESD's mean per-layer rate is below BPTT's, for ``arch``.

    Returns:
        ``(cells where ESD < BPTT, cells compared)``; ``(0, 0)`` without both methods.
    """
    lower = total = 0
    sel = select_records(records, methods=("bptt", "esd"), arch=arch)
    for T in sorted({r["config"]["T"] for r in sel}):
        t = layer_rate_table([r for r in sel if r["config"]["T"] == T])
        cols = {c.split(", ")[1]: c for c in t.columns}
        if {method_label("bptt"), method_label("esd")} <= set(cols):
            both = t[[cols[method_label("bptt")], cols[method_label("esd")]]].dropna()
            lower += int((both.iloc[:, 1] < both.iloc[:, 0]).sum())
            total += len(both)
    return lower, total
