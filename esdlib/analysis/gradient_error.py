"""The relative error of the rate-BP gradient against BPTT, from ``gradient_error`` records.

Each record's ``extra["gradient_error"]`` lists measurements (before training and after every
epoch) of ``K_rate`` (RateBP vs BPTT, cross-entropy) and ``K_esd`` (ESD's rate-BP gradient vs
ESD on BPTT), with cosines and per-layer values (:func:`esdlib.gradient_study`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

_GRAD_COLS = ["run_id", "T", "seed", "epoch", "K_rate", "K_esd", "cos_rate", "cos_esd",
              "K_esd ≤ K_rate"]


def gradient_error_history(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """All gradient-error measurements of ``records`` (``extra["gradient_error"]``), one row per
    (run, epoch), with whether the poster's inequality ``K_esd ≤ K_rate`` holds.

    Explained in chapter 8 (`08_gradient_error`).
    """
    rows = []
    for rec in records:
        for h in (rec.get("extra") or {}).get("gradient_error") or []:
            rows.append({"run_id": rec["run_id"], "T": rec["config"]["T"],
                         "seed": rec["config"]["seed"], "epoch": h["epoch"],
                         "K_rate": h["K_rate"], "K_esd": h["K_esd"],
                         "cos_rate": h.get("cos_rate", np.nan),
                         "cos_esd": h.get("cos_esd", np.nan),
                         "K_esd ≤ K_rate": bool(h["K_esd"] <= h["K_rate"])})
    return pd.DataFrame(rows, columns=_GRAD_COLS)


def as_history(history: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """A gradient-error history (the record's ``extra.gradient_error`` list, or a table of
    several runs) as a table with a ``run_id`` column (``"run"`` for a single history)."""
    h = history if isinstance(history, pd.DataFrame) else pd.DataFrame(list(history))
    if "run_id" not in h and len(h):
        h = h.assign(run_id="run")
    return h


def per_layer_gradient_error(history: Sequence[Mapping[str, Any]] | pd.DataFrame
                             ) -> pd.DataFrame:
    """Per-layer ``K_rate`` and ``K_esd`` at the last measurement (rows = weight tensors).

    Args:
        history: one record's ``extra["gradient_error"]`` list (entries with ``per_layer_rate``
            and ``per_layer_esd``).

    Returns:
        Columns ``K_rate``, ``K_esd`` (4 decimals) and ``K_esd ≤ K_rate``; empty without data.
    """
    history = list(history) if not isinstance(history, pd.DataFrame) \
        else history.to_dict("records")
    if not history or "per_layer_rate" not in history[-1]:
        return pd.DataFrame(columns=["K_rate", "K_esd", "K_esd ≤ K_rate"])
    last = history[-1]
    out = pd.DataFrame({"K_rate": pd.Series(last["per_layer_rate"], dtype=float),
                        "K_esd": pd.Series(last["per_layer_esd"], dtype=float)})
    out["K_esd ≤ K_rate"] = out["K_esd"] <= out["K_rate"]
    return out.round(4)


def final_per_layer_gradient_error(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per-layer ``K_rate``/``K_esd`` at each run's last measurement, averaged over runs.

    Explained in chapter 8 (`08_gradient_error`).

    Returns:
        :func:`per_layer_gradient_error` columns plus ``runs`` (how many runs were averaged).
    """
    tables = [per_layer_gradient_error((r.get("extra") or {}).get("gradient_error") or [])
              for r in records]
    tables = [t for t in tables if len(t)]
    if not tables:
        return pd.DataFrame(columns=["K_rate", "K_esd", "K_esd ≤ K_rate", "runs"])
    stacked = pd.concat(tables)[["K_rate", "K_esd"]].astype(float)
    g = stacked.groupby(level=0, sort=False)
    out = g.mean()
    out["K_esd ≤ K_rate"] = out["K_esd"] <= out["K_rate"]
    out["runs"] = g.size()
    return out.round(4)
