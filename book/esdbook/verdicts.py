"""The paired-seed verdicts on a page: the table that decides them and their glue values.

Every verdict of the book comes from :func:`esdlib.analysis.evidence.decide`, with the test
each claim's wording needs (superiority, non-inferiority or equivalence, with its margin). The
rules are written in each chapter's markdown; this module shows the numbers that decide them
(:func:`verdict_table`) and glues, per claim, short values the prose quotes
(:func:`claim_values`): ``<slug>_diff`` (mean paired difference with unit), ``<slug>_ci`` (its
interval), ``<slug>_n`` (paired seeds), ``<slug>_verdict`` (what was shown) and ``<slug>_test``
(the test and its margin); :func:`verdict_counts` counts the verdicts of a table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from esdbook import display
from esdbook.claims import CLAIMS, MARGIN
from esdlib.analysis.evidence import (
    NO_VERDICT,
    claims_table,
    format_interval,
    format_margin,
)

__all__ = ["VERDICT_COLOURS", "claim_slug", "claim_values", "convergence_counts",
           "convergence_summary", "hand_verdict_values", "meaning", "results_box", "test_label",
           "verdict_counts",
           "verdict_details", "verdict_table", "verdict_word"]


def claim_slug(key: str) -> str:
    """A glue-name prefix for a claim key: ``"esd>ratebp@T2"`` → ``"esd_ratebp_T2"``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_")


def test_label(kind: str, margin: float, unit: str = "pts") -> str:
    """The test of a claim in words: ``"superiority"``, ``"non-inferiority, δ = 1 pt"`` or
    ``"equivalence, ±1 pt"``."""
    if kind == "superiority":
        return kind
    amount = format_margin(margin, unit)
    return f"non-inferiority, δ = {amount}" if kind == "non-inferiority" else \
        f"equivalence, ±{amount}"


def verdict_word(verdict: str) -> str:
    """The verdict as a short label: what was shown (``supported``, ``not separable``,
    ``contradicted``, ``non-inferior (margin 1 pt)``, ``equivalent within ±1 pt``,
    ``inconclusive`` …), ``no verdict`` (fewer than 5 pairs) or ``cannot decide`` (an
    ambiguous cell)."""
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
        claims: claims to evaluate (default :data:`esdbook.claims.CLAIMS`).
    """
    t = claims_table(df, CLAIMS if claims is None else claims, chapter=chapter)
    out: dict[str, str] = {}
    for r in t.itertuples():
        slug = claim_slug(r.key)
        out[f"{slug}_diff"] = "n/a" if not math.isfinite(r.mean) else \
            f"{r.mean:+.2f} {r.unit}".strip()
        out[f"{slug}_ci"] = format_interval(r.ci_low, r.ci_high)
        out[f"{slug}_n"] = str(int(r.n))
        out[f"{slug}_verdict"] = verdict_word(r.verdict) + _qualifier(False, r.seed_sets)
        out[f"{slug}_test"] = test_label(r.kind, r.margin, r.unit)
    return out


def verdict_counts(table: pd.DataFrame, prefix: str = "") -> dict[str, int]:
    """Counts of a :func:`~esdlib.analysis.evidence.claims_table` for glue: ``n_claims``,
    ``n_paper`` and ``n_diagnosis`` (claims of the paper, diagnoses of ours), and among all
    claims ``n_for`` (shown: supported, non-inferior, equivalent), ``n_against`` (the
    opposite shown), ``n_neither`` (not separable, inconclusive), ``n_none`` (no verdict),
    ``n_close`` (an interval end near a boundary) and ``n_seed_dependent``; every name
    starts with ``prefix``."""
    shown = table["shown"].value_counts() if len(table) else pd.Series(dtype=int)
    counts = {"claims": len(table), "paper": int((table["source"] == "paper").sum()),
              "diagnosis": int((table["source"] == "diagnosis").sum()),
              **{w: int(shown.get(w, 0)) for w in ("for", "against", "neither", "none")},
              "close": int(table["close"].astype(bool).sum()),
              "seed_dependent": int((table["seed_sets"] == "depends on the seed set").sum())}
    return {f"{prefix}n_{k}": v for k, v in counts.items()}


VERDICT_TITLE = ("Verdicts: mean paired difference (points, or as the claim states) with its "
                 "interval, paired seeds n, test and power")
DETAILS_TITLE = "The paper's values, the seed-set check and the per-seed differences"
CONVERGENCE_TITLE = ("Convergence: runs per method and T, how many settled, and their final "
                     "trend (points)")


def verdict_table(df: pd.DataFrame, chapter: str | None = None,
                  claims: Sequence[Any] | None = None, title: str = VERDICT_TITLE) -> Any:
    """The claims of a chapter (all claims when ``chapter`` is None) with their verdicts, compact
    enough for the text column.

    Columns: the claim, the verdict (*close* when an interval end lies near its boundary;
    *depends on seeds* when seeds 0-4 and 5-9 disagree), the mean paired difference (signed so
    that the claimed direction is positive) with its interval (95 %; 90 % for equivalence, the
    two one-sided tests, marked), the paired seeds ``n``, the test (kind and margin) and the
    power of the design (the interval's half-width and, for
    superiority, the smallest difference it detects with power 0.8). The paper's numbers, the
    seed-set check and the per-seed differences are in :func:`verdict_details`. ``claims``
    replaces :data:`esdbook.claims.CLAIMS` (e.g. the bf16 parity checks); ``title`` heads
    the caption (numbered on a chapter page). Returned as HTML without an index.
    """
    t = claims_table(df, CLAIMS if claims is None else claims, chapter=chapter)
    shown = pd.DataFrame({  # the verdict second, so that it is in view on any screen
        "claim": t["claim"],
        "verdict": _verdicts(t),
        "difference": _differences(t),
        "n": t["n"],
        "test": [test_label(k, m, u) for k, m, u in zip(t["kind"], t["margin"], t["unit"],
                                                         strict=True)],
        "power": [_power(h, d) for h, d in zip(t["half_width"], t["detectable"], strict=True)]})
    return display.table(shown, constants_to_caption=False, title=title)


def verdict_details(df: pd.DataFrame, chapter: str | None = None,
                    claims: Sequence[Any] | None = None, title: str = DETAILS_TITLE) -> Any:
    """The rest of :func:`verdict_table`: per claim what the paper reports, whether the verdict
    holds on each seed set (with ten seeds on record) and the per-seed differences
    (``seed: difference``). Returned as HTML without an index."""
    t = claims_table(df, CLAIMS if claims is None else claims, chapter=chapter)
    shown = pd.DataFrame({"claim": t["claim"], "paper": t["paper"],
                          "seed sets": t["seed_sets"],
                          "per seed": t["differences"].replace("", "—")})
    return display.table(shown, constants_to_caption=False, title=title)


VERDICT_COLOURS = {"for": "#d7efd7", "against": "#f5d3d3", "neither": "#e9e9e9",
                   "none": "#fbf1cc"}
"""Background of a verdict by what the runs showed (``shown`` of
:func:`~esdlib.analysis.evidence.claims_table`): the claim (green), its opposite (red),
neither (grey), no verdict (yellow). The forest plot uses the same colours, darker."""


def meaning(kind: str, shown: str, margin: float, unit: str = "pts") -> str:
    """One line on what a verdict means for the claim, in words a reader can act on."""
    if shown == "none":
        return "too few paired seeds (or the cells mix data sets) to decide"
    amount = format_margin(margin, unit)
    if kind == "non-inferiority":
        return {"for": f"no worse than {amount} below, possibly better",
                "against": f"worse by more than {amount}",
                "neither": f"the interval reaches below −{amount}: undecided"}[shown]
    if kind == "equivalence":
        return {"for": f"within ±{amount} of each other",
                "against": f"different by more than {amount}",
                "neither": f"the interval is too wide for ±{amount}: undecided"}[shown]
    return {"for": "our runs show the claimed direction",
            "against": "our runs show the opposite direction",
            "neither": "the seeds cannot tell the two apart"}[shown]


def _claim_line(text: str, source: str, kind: str, margin: float, unit: str) -> str:
    """A claim for the results box: marked when it is our diagnosis, with its test when that
    is not plain superiority."""
    if source == "diagnosis" and not text.lower().startswith("our diagnosis"):
        text += " (our diagnosis)"
    return text if kind == "superiority" else f"{text} [{test_label(kind, margin, unit)}]"


def results_box(df: pd.DataFrame, claims: Sequence[Any] | None = None,
                caption: str | None = None, title: str | None = None) -> Any:
    """What reproduced, one line per claim: the claim (*diagnosis* marks ours; the test in
    brackets when it is not superiority), the verdict on a coloured background
    (:data:`VERDICT_COLOURS`), the mean difference with its interval and :func:`meaning`.
    Returned as HTML without an index, narrow enough for the text column (the landing page
    pastes it from chapter 11)."""
    t = claims_table(df, CLAIMS if claims is None else claims)
    shown = pd.DataFrame({
        "claim": [_claim_line(c, src, k, m, u) for c, src, k, m, u in zip(
            t["claim"], t["source"], t["kind"], t["margin"], t["unit"], strict=True)],
        "verdict": _verdicts(t),
        "difference [interval]": _differences(t),
        "what it means": [meaning(k, sh, m, u) for k, sh, m, u in zip(
            t["kind"], t["shown"], t["margin"], t["unit"], strict=True)]})
    css = [f"background-color: {VERDICT_COLOURS.get(sh, '#ffffff')}; font-weight: 600"
           for sh in t["shown"]]
    wrap = ["white-space: normal"] * len(t)  # the interval under its mean: the box fits 700 px
    return display.table(shown, caption=caption, constants_to_caption=False,
                         cell_css={"verdict": css, "difference [interval]": wrap}, title=title)


def hand_verdict_values(df: pd.DataFrame, key: str = "esd>sd", n: int = 5,
                        prefix: str = "ex_") -> dict[str, Any]:
    """Glue values of an exercise that decides a claim by hand from its first ``n`` paired
    differences: ``seeds``, ``n``, ``diffs`` (the differences), ``mean``, ``sd``, ``t`` (the
    Student-t quantile of the interval), ``half`` (its half-width), ``ci``, ``verdict`` (the
    superiority verdict) and ``ni_verdict`` (non-inferiority with :data:`MARGIN`), each name
    starting with ``prefix``; ``n/a`` values when the claim's cells have no pairs or mix data
    sets."""
    from scipy import stats

    from esdlib.analysis import evidence as ev

    claim = next(c for c in CLAIMS if c.key == key)
    try:
        pairs = dict(sorted(ev.claim_differences(df, claim).items())[:n])
    except ValueError:  # cells that mix data sets (the paper profile): no pairs to compute
        pairs = {}
    d = list(pairs.values())
    sup = ev.superiority_verdict(pairs)
    t = stats.t.ppf(0.5 + ev.CONFIDENCE / 2, len(d) - 1) if len(d) > 1 else float("nan")
    values = {"n": len(d), "seeds": ev.format_seeds(pairs), "diffs": ", ".join(
                  f"{x:+.2f}" for x in d) or "n/a",
              "mean": f"{sup.mean:+.2f}", "sd": f"{stats.tstd(d):.2f}" if len(d) > 1 else "n/a",
              "t": f"{t:.3f}", "half": f"{sup.half_width:.2f}",
              "ci": format_interval(sup.ci_low, sup.ci_high), "verdict": verdict_word(sup.verdict),
              "ni_verdict": verdict_word(ev.non_inferiority_verdict(pairs, MARGIN).verdict)}
    return {prefix + k: v for k, v in values.items()}


SEED_DEPENDENT = "depends on seeds"
"""How a verdict that differs between seeds 0-4 and 5-9 is labelled
(:func:`esdlib.analysis.evidence.seed_set_check`): stated, not asserted."""


def _verdicts(t: pd.DataFrame) -> list[str]:
    """The verdict words of a claims table, with their qualifiers (:func:`_qualifier`)."""
    return [verdict_word(v) + _qualifier(c, ss)
            for v, c, ss in zip(t["verdict"], t["close"], t["seed_sets"], strict=True)]


def _differences(t: pd.DataFrame) -> list[str]:
    """The mean paired differences of a claims table with their intervals (:func:`_difference`)."""
    return [_difference(m, u, a, b, c) for m, u, a, b, c in zip(
        t["mean"], t["unit"], t["ci_low"], t["ci_high"], t["confidence"], strict=True)]


def _qualifier(close: bool, seed_sets: str) -> str:
    words = [w for w, on in (("close", close),
                             (SEED_DEPENDENT, seed_sets == "depends on the seed set")) if on]
    return f" ({'; '.join(words)})" if words else ""


def _difference(mean: float, unit: str, low: float, high: float, confidence: float) -> str:
    if not np.isfinite(mean):
        return "—"
    text = f"{mean:+.2f} {unit}".strip()
    if np.isfinite(low):
        text += f" {format_interval(low, high)}"
        if round(confidence, 2) != 0.95:  # the TOST interval of an equivalence claim
            text += f" ({confidence:.0%})".replace("%)", " %)")
    return text


def _power(half: float, detectable: float) -> str:
    if not np.isfinite(half):
        return "—"
    text = f"±{half:.2f}"
    return text + (f"; detects ≥ {detectable:.2f}" if np.isfinite(detectable) else "")


def convergence_summary(df: pd.DataFrame, title: str = CONVERGENCE_TITLE) -> Any:
    """Per experiment, method (RateBP: and its loss scaling) and T: runs, how many settled, the
    mean and largest final trend.

    Uses :func:`esdlib.analysis.evidence.convergence_table` (a run has settled when the mean test
    accuracy of its last ``CONVERGENCE_WINDOW`` epochs is within ``CONVERGENCE_THRESHOLD``
    points of the ``CONVERGENCE_WINDOW`` epochs before). Returned as HTML without an index.
    """
    from IPython.display import HTML

    from esdlib.analysis.evidence import convergence_table

    t = convergence_table(df)
    if not len(t):
        return HTML("<p>No complete runs.</p>")
    s = (t.groupby(["experiment", "method", "recipe", "T"], sort=True)
         .agg(runs=("run_id", "size"), settled=("converged", "sum"),
              epochs=("epochs", "max"), mean_final_trend=("final_trend", "mean"),
              largest_final_trend=("final_trend", "max"))
         .reset_index())
    for col in ("mean_final_trend", "largest_final_trend"):  # NaN: runs too short for a trend
        s[col] = s[col].map(lambda v: "—" if pd.isna(v) else f"{v:+.2f} pts")
    s["settled"] = s["settled"].astype(int)
    return display.table(s, constants_to_caption=False, title=title)



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
