"""Chapter 9 (ablations): no distillation vs SD vs ESD, and one ESD component at a time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from esdlib.analysis.runs import (
    T_COL,
    arch_label,
    complete,
    method_label,
    pm,
    scale_of,
    split_recipes,
    summarize,
)

ABLATION_FACTORS = ("method", "branch_kind", "beta", "teacher_space", "eta")
"""Config fields an ablation run may change relative to the ESD reference configuration."""

FACTOR_LABELS = {"method": "distillation", "branch_kind": "branch kind", "beta": "β",
                 "teacher_space": "teacher space",
                 "eta": "η·R (R, our assumption: log K − H(softmax(z/τ)))"}


def distillation_ablation(df: pd.DataFrame,
                          methods: Sequence[str] = ("ratebp", "sd", "esd")) -> pd.DataFrame:
    """No distillation vs standard SD vs ESD at the same architecture and T.

    Returns:
        One row per (arch, T, method) with ``ours_%`` (mean ± std), seeds and
        ``vs_RateBP_pts`` (difference of means to RateBP at the same arch/T; NaN when RateBP
        did not run there).
    """
    s = summarize(split_recipes(df), ["config.arch", T_COL, "config.method"])
    s = s[s["config.method"].isin(methods)]
    cols = ["architecture", "T", "method", "ours_%", "seeds", "vs_RateBP_pts"]
    if not len(s):
        return pd.DataFrame(columns=cols)
    base = s[s["config.method"] == "ratebp"].set_index(["config.arch", T_COL])["mean_%"]
    order = {m: i for i, m in enumerate(methods)}
    s = s.assign(_o=s["config.method"].map(order)).sort_values(["config.arch", T_COL, "_o"])
    rows = []
    for _, r in s.iterrows():
        key = (r["config.arch"], r[T_COL])
        rows.append({"architecture": arch_label(r["config.arch"]), "T": int(r[T_COL]),
                     "method": method_label(r["config.method"]),
                     "ours_%": pm(r["mean_%"], r["std_%"]),
                     "seeds": int(r["seeds"]),
                     "vs_RateBP_pts": r["mean_%"] - base[key] if key in base.index else np.nan})
    return pd.DataFrame(rows, columns=cols)


def ablation_reference(profile: str) -> dict[str, Any]:
    """The ESD reference configuration of the ablations: ``method="esd"`` and the profile's
    branch kind, β, teacher space and η."""
    from esdlib.train.config import RunConfig

    cfg = RunConfig.from_profile(profile, method="esd")
    return {f: getattr(cfg, f) for f in ABLATION_FACTORS}


def _setting(field: str, value: Any) -> str:
    if field == "method":
        return {"sd": "standard SD (every output teaches)", "esd": "ESD (reliable teacher)",
                "ratebp": "none (RateBP)"}.get(value, str(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def ablation_variants(df: pd.DataFrame) -> pd.DataFrame:
    """Label every ablation record with the factor(s) it changes relative to the reference.

    Adds columns ``factor`` (e.g. ``"β"``, ``"reference"``) and ``setting`` (e.g. ``"0.5"``)
    to ``df``; the reference is :func:`ablation_reference` of the record's profile.
    """
    if not len(df):
        return df.assign(factor=pd.Series(dtype=str), setting=pd.Series(dtype=str))
    refs: dict[str, dict[str, Any]] = {}
    factors, settings = [], []
    for _, r in df.iterrows():
        ref = refs.setdefault(r["config.profile"], ablation_reference(r["config.profile"]))
        diff = [f for f in ABLATION_FACTORS if r[f"config.{f}"] != ref[f]]
        factors.append(" + ".join(FACTOR_LABELS[f] for f in diff) if diff else "reference")
        settings.append(", ".join(_setting(f, r[f"config.{f}"]) for f in diff) if diff
                        else "ESD: " + ", ".join(f"{f}={_setting(f, ref[f])}"
                                                 for f in ABLATION_FACTORS[1:]))
    return df.assign(factor=factors, setting=settings)


def ablation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every ablation setting: final accuracy (mean ± std over seeds), Δ to the reference, scale.

    Args:
        df: ``ablation`` records (complete runs are used).

    Returns:
        One row per (factor, setting, arch, T): ``ours_%``, ``seeds``, ``vs_reference_pts``
        (difference of means to the reference at the same arch/T) and ``scale``. The η row's
        factor says that its R term is our assumption.
    """
    cols = ["factor", "setting", "architecture", "T", "ours_%", "seeds", "vs_reference_pts",
            "scale"]
    d = ablation_variants(complete(df))
    if not len(d):
        return pd.DataFrame(columns=cols)
    s = summarize(d, ["factor", "setting", "config.arch", T_COL])
    ref = s[s["factor"] == "reference"].set_index(["config.arch", T_COL])["mean_%"]
    rows = []
    for _, r in s.iterrows():
        key = (r["config.arch"], r[T_COL])
        grp = d[(d["factor"] == r["factor"]) & (d["setting"] == r["setting"])
                & (d["config.arch"] == key[0]) & (d[T_COL] == key[1])]
        rows.append({"factor": r["factor"], "setting": r["setting"],
                     "architecture": arch_label(key[0]), "T": int(key[1]),
                     "ours_%": pm(r["mean_%"], r["std_%"]), "seeds": int(r["seeds"]),
                     "vs_reference_pts": r["mean_%"] - ref[key] if key in ref.index else np.nan,
                     "scale": scale_of(grp)})
    out = pd.DataFrame(rows, columns=cols)
    first = out["factor"] != "reference"
    return out.assign(_o=first).sort_values(["_o", "factor", "setting"]).drop(columns="_o") \
        .reset_index(drop=True)


def beta_sweep(df: pd.DataFrame) -> pd.DataFrame:
    """The β rows of :func:`ablation_table` plus the reference, sorted by β (a ``beta`` column)."""
    t = ablation_table(df)
    d = ablation_variants(complete(df))
    if not len(t):
        return t.assign(beta=pd.Series(dtype=float))
    ref_beta = {(arch_label(r["config.arch"]), int(r[T_COL])): r["config.beta"]
                for _, r in d[d["factor"] == "reference"].iterrows()}
    t = t[t["factor"].isin(["β", "reference"])].copy()
    t["beta"] = [float(s) if f == "β" else ref_beta.get((a, T), np.nan)
                 for f, s, a, T in zip(t["factor"], t["setting"], t["architecture"], t["T"],
                                       strict=True)]
    return t.sort_values(["architecture", "T", "beta"]).reset_index(drop=True)


def ablation_rows(table: pd.DataFrame, factor: str) -> pd.DataFrame:
    """The reference rows and the rows of one factor (name or its first characters) of
    :func:`ablation_table`."""
    if not len(table):
        return table
    keep = (table["factor"] == "reference") | table["factor"].str.startswith(factor)
    return table[keep].reset_index(drop=True)


def branch_parameter_counts(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Backbone and branch parameter counts of each branch kind, as the runs recorded them.

    Args:
        records: full run records (:func:`esdlib.load_record`); their
            ``extra["parameter_counts"]`` hold the trained model's counts.

    Returns:
        One row per (dataset, arch, width, branch kind) that ran: ``backbone params``,
        ``branch params`` and ``branches / backbone``.
    """
    cols = ["dataset", "architecture", "width", "branch kind", "backbone params",
            "branch params", "branches / backbone"]
    rows = {}
    for rec in records:
        c, counts = rec["config"], (rec.get("extra") or {}).get("parameter_counts")
        if not counts or not counts.get("branches"):
            continue
        key = (c["dataset"], arch_label(c["arch"]), float(c["width"]), c["branch_kind"])
        rows[key] = {"backbone params": counts["backbone"], "branch params": counts["branches"],
                     "branches / backbone": round(counts["branches"] / counts["backbone"], 4)}
    return pd.DataFrame([[*k, *v.values()] for k, v in sorted(rows.items())], columns=cols)


def vs_reference(table: pd.DataFrame, factor: str, setting: str | None = None) -> float:
    """The ``vs_reference_pts`` of one factor (and setting) of :func:`ablation_table`, in
    points; NaN when the profile did not run it."""
    rows = ablation_rows(table, factor)
    rows = rows[rows["factor"] != "reference"]
    if setting is not None:
        rows = rows[rows["setting"] == setting]
    vals = rows["vs_reference_pts"].dropna()
    return float(vals.iloc[0]) if len(vals) else float("nan")


def branch_ratio(counts: pd.DataFrame, kind: str = "conv", base: str = "dsconv") -> float:
    """Branch parameters of ``kind`` over those of ``base`` (:func:`branch_parameter_counts`,
    first data set and architecture); NaN when either did not run."""
    by_kind = counts.drop_duplicates("branch kind").set_index("branch kind")["branch params"]
    if kind not in by_kind or base not in by_kind:
        return float("nan")
    return float(by_kind[kind] / by_kind[base])
