"""The paired-seed verdicts on a page: the table that decides them and their glue values.

Every verdict of the book comes from :func:`esdlib.analysis.evidence.paired_verdict`. The rule
is written in each chapter's markdown; this module shows the numbers that decide it
(:func:`verdict_table`) and glues, per claim, short values the prose quotes
(:func:`claim_values`): ``<slug>_diff`` (mean paired difference with unit), ``<slug>_ci`` (95 %
interval), ``<slug>_n`` (paired seeds) and ``<slug>_verdict`` (a verdict word).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from esdbook import display
from esdlib.analysis.evidence import CLAIMS, NO_VERDICT, claims_table, format_interval

__all__ = ["claim_slug", "claim_values", "convergence_counts", "convergence_summary",
           "verdict_table", "verdict_word"]


def claim_slug(key: str) -> str:
    """A glue-name prefix for a claim key: ``"esd>ratebp@T2"`` → ``"esd_ratebp_T2"``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_")


def verdict_word(verdict: str) -> str:
    """The verdict as a short label: ``supported``, ``not separable``, ``contradicted``,
    ``no verdict`` (fewer than 5 pairs) or ``cannot decide`` (an ambiguous cell)."""
    if verdict == NO_VERDICT:
        return "no verdict"
    return "cannot decide" if verdict.startswith("cannot decide") else verdict


def claim_values(df: pd.DataFrame, chapter: str | None = None,
                 claims: Sequence[Any] | None = None) -> dict[str, str]:
    """Glue values of the claims of a chapter: for each claim ``<slug>_diff``, ``<slug>_ci``,
    ``<slug>_n`` and ``<slug>_verdict`` (:func:`claim_slug` of its key).

    Args:
        df: runs of one profile (every experiment).
        chapter: keep the claims of this chapter (notebook stem); ``None``: all.
        claims: claims to evaluate (default :data:`esdlib.analysis.evidence.CLAIMS`).
    """
    t = claims_table(df, CLAIMS if claims is None else claims, chapter=chapter)
    out: dict[str, str] = {}
    for r in t.itertuples():
        slug = claim_slug(r.key)
        out[f"{slug}_diff"] = "n/a" if not math.isfinite(r.mean) else \
            f"{r.mean:+.2f} {r.unit}".strip()
        out[f"{slug}_ci"] = format_interval(r.ci_low, r.ci_high)
        out[f"{slug}_n"] = str(int(r.n))
        out[f"{slug}_verdict"] = verdict_word(r.verdict)
    return out


def verdict_table(df: pd.DataFrame, chapter: str | None = None,
                  claims: Sequence[Any] | None = None) -> Any:
    """The claims of a chapter (all claims when ``chapter`` is None) with their verdicts.

    Columns: the claim, the paper's number, the paired seeds ``n``, the mean paired difference
    (signed so that the paper's direction is positive) with its 95 % interval, the verdict and
    the per-seed differences. ``claims`` replaces :data:`esdlib.analysis.evidence.CLAIMS`
    (e.g. the bf16 parity checks). Returned as HTML without an index, ready to display.
    """
    t = claims_table(df, CLAIMS if claims is None else claims, chapter=chapter)
    shown = pd.DataFrame({
        "claim": t["claim"], "paper": t["paper"], "n": t["n"],
        "mean difference": ["—" if not np.isfinite(m) else f"{m:+.2f} {u}".strip()
                            for m, u in zip(t["mean"], t["unit"], strict=True)],
        "95 % interval": [format_interval(a, b)
                          for a, b in zip(t["ci_low"], t["ci_high"], strict=True)],
        "verdict": t["verdict"], "per seed": t["differences"].replace("", "—")})
    return display.table(shown, constants_to_caption=False)


def convergence_summary(df: pd.DataFrame) -> Any:
    """Per experiment, method and T: runs, how many settled, the mean and largest final trend.

    Uses :func:`esdlib.analysis.evidence.convergence_table` (a run has settled when the mean test
    accuracy of its last ``CONVERGENCE_WINDOW`` epochs is within ``CONVERGENCE_THRESHOLD``
    points of the ``CONVERGENCE_WINDOW`` epochs before). Returned as HTML without an index.
    """
    from IPython.display import HTML

    from esdlib.analysis.evidence import convergence_table

    t = convergence_table(df)
    if not len(t):
        return HTML("<p>No complete runs.</p>")
    s = (t.groupby(["experiment", "method", "T"], sort=True)
         .agg(runs=("run_id", "size"), settled=("converged", "sum"),
              epochs=("epochs", "max"), mean_final_trend=("final_trend", "mean"),
              largest_final_trend=("final_trend", "max"))
         .reset_index())
    for col in ("mean_final_trend", "largest_final_trend"):  # NaN: runs too short for a trend
        s[col] = s[col].map(lambda v: "—" if pd.isna(v) else f"{v:+.2f} pts")
    s["settled"] = s["settled"].astype(int)
    return display.table(s, constants_to_caption=False)



def convergence_counts(df: pd.DataFrame) -> dict[str, Any]:
    """How many complete runs of ``df`` were checked for convergence, how many settled, and the
    rule's window (epochs) and threshold (points)
    (:func:`esdlib.analysis.evidence.convergence_table`).

    Returns:
        ``n_checked``, ``n_settled``, ``n_unsettled``, ``conv_window``, ``conv_threshold``.
    """
    from esdlib.analysis.evidence import (
        CONVERGENCE_THRESHOLD,
        CONVERGENCE_WINDOW,
        convergence_table,
    )

    t = convergence_table(df)
    settled = int(t["converged"].astype(bool).sum()) if len(t) else 0
    return {"n_checked": len(t), "n_settled": settled, "n_unsettled": len(t) - settled,
            "conv_window": CONVERGENCE_WINDOW, "conv_threshold": CONVERGENCE_THRESHOLD}
