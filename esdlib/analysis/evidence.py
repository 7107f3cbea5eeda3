"""Verdicts on the paper's claims from paired runs: one rule, applied the same way everywhere.

A *claim* is a statement of the paper that the grid can test, e.g. "ESD is more accurate than
RateBP at T = 4". Its evidence is a per-seed statistic ``d_s`` built from runs that share the
seed ``s`` (runs with the same seed see the same train/test split, so the comparison is
paired), signed so that the paper's direction is positive::

    d_s = sum_i  c_i * metric(cell_i, seed s)

(``c = (+1, -1)`` for "a beats b"; four terms for a difference of differences such as "the
gain is larger at T = 2 than at T = 6"; one term for a quantity measured within one run).

The rule (:func:`paired_verdict`), with ``n`` seeds, mean ``m`` and sample standard deviation
``sd`` of the ``d_s``, and the two-sided 95 % Student-t interval
``m ± t(0.975, n - 1) · sd / sqrt(n)``:

* ``n < MIN_PAIRS`` (5): **no verdict** — a comparison of fewer runs is indicative only;
* the interval lies above 0: **supported**;
* the interval lies below 0: **contradicted**;
* otherwise: **not separable** (the data cannot tell the two apart at this scale).

:data:`CLAIMS` lists every claim the book checks, each once (no comparison is counted twice),
with the chapter that discusses it. :func:`claims_table` evaluates them on a table of run
records (:func:`esdlib.train.records.load_records`); :func:`convergence_table` flags runs whose
accuracy was still moving at the end; :func:`compare_verdicts` says whether the verdicts of a
fresh re-run agree with the committed ones (``python -m esdbook reproduce --fresh``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CLAIMS",
    "CONFIDENCE",
    "CONVERGENCE_THRESHOLD",
    "CONVERGENCE_WINDOW",
    "Cell",
    "Claim",
    "METRICS",
    "MIN_PAIRS",
    "NO_VERDICT",
    "PARITY_CLAIMS",
    "VERDICTS",
    "Verdict",
    "cell_runs",
    "cell_table",
    "claim_differences",
    "claims_table",
    "compare_cells",
    "compare_verdicts",
    "convergence_table",
    "format_interval",
    "paired_verdict",
]

MIN_PAIRS = 5
"""Fewest paired seeds a verdict is computed from."""

CONFIDENCE = 0.95
"""Coverage of the two-sided Student-t interval of the mean paired difference."""

VERDICTS = ("supported", "not separable", "contradicted")
"""The three verdicts, in the paper's favour first."""

NO_VERDICT = "no verdict (fewer than 5 paired runs)"
"""The label of a claim with fewer than :data:`MIN_PAIRS` paired seeds."""

CONVERGENCE_WINDOW = 2
"""Epochs averaged at each end of the comparison that decides whether a run had settled."""

CONVERGENCE_THRESHOLD = 2.0
"""Largest trend (in accuracy points) allowed at the end of a run that counts as settled: the
mean test accuracy of its last :data:`CONVERGENCE_WINDOW` epochs minus that of the
:data:`CONVERGENCE_WINDOW` epochs before. A trend, not a range: at the end of a cosine schedule
the test accuracy still jitters by 1-3 points from epoch to epoch without going anywhere."""


@dataclass(frozen=True)
class Metric:
    """A per-run number claims are made about.

    Attributes:
        name: Key of the metric.
        label: Column label in tables.
        unit: Unit of the displayed value (after ``scale``).
        scale: Factor from the stored value to the displayed one.
    """

    name: str
    label: str
    unit: str
    scale: float


METRICS: dict[str, Metric] = {
    "final_test_acc": Metric("final_test_acc", "final test accuracy", "pts", 100.0),
    "firing_rate_mean": Metric("firing_rate_mean", "mean firing rate", "% of neurons", 100.0),
    "gradient_gap": Metric("gradient_gap", "K_rate − K_esd (mean over measurements)", "", 1.0),
}
"""Metrics a claim may use: final-epoch test accuracy (the headline; the best epoch would be
selected on the test set), the test set's mean firing rate, and the mean over a run's
measurements of ``K_rate - K_esd`` (chapter 8's gradient errors)."""


@dataclass(frozen=True)
class Cell:
    """The runs of one configuration across seeds: an experiment and the fields that set it.

    Attributes:
        experiment: Experiment name (results sub-folder).
        where: Config fields and their values, e.g. ``{"method": "esd", "T": 4}``.
    """

    experiment: str
    where: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Short text naming the cell, e.g. ``"table1: method=esd, T=4"``."""
        parts = ", ".join(f"{k}={v}" for k, v in self.where.items())
        return f"{self.experiment}: {parts}" if parts else self.experiment


@dataclass(frozen=True)
class Claim:
    """One statement of the paper and the paired statistic that tests it.

    Attributes:
        key: Stable identifier (used in tables and the fresh-run comparison).
        chapter: The book chapter that discusses it (notebook stem).
        text: The claim in words, as the paper makes it.
        metric: Key of :data:`METRICS`.
        terms: ``(coefficient, cell)`` pairs; the per-seed statistic is the weighted sum of
            the cells' metric values, signed so that the paper's direction is positive.
        paper: What the paper reports for it (for the reader; not used in the rule).
    """

    key: str
    chapter: str
    text: str
    metric: str
    terms: tuple[tuple[float, Cell], ...]
    paper: str = ""


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`paired_verdict`.

    Attributes:
        n: Number of paired seeds.
        mean: Mean paired difference (``nan`` when ``n == 0``).
        ci_low: Lower end of the interval (``nan`` when ``n < 2``).
        ci_high: Upper end of the interval (``nan`` when ``n < 2``).
        verdict: One of :data:`VERDICTS`, or :data:`NO_VERDICT`.
        differences: ``(seed, d_s)`` pairs, sorted by seed.
    """

    n: int
    mean: float
    ci_low: float
    ci_high: float
    verdict: str
    differences: tuple[tuple[int, float], ...]


def paired_verdict(differences: Mapping[int, float], *, confidence: float = CONFIDENCE,
                   min_pairs: int = MIN_PAIRS) -> Verdict:
    """Apply the book's rule to per-seed differences signed in the paper's direction.

    Args:
        differences: ``{seed: d_s}``; every value finite.
        confidence: Coverage of the two-sided Student-t interval (0 < confidence < 1).
        min_pairs: Fewest seeds a verdict is given for (at least 2).

    Returns:
        The :class:`Verdict`.

    Raises:
        ValueError: A non-finite difference, or ``confidence``/``min_pairs`` out of range.

    Example:
        >>> paired_verdict({0: 1.0, 1: 0.5, 2: 0.8, 3: 1.2, 4: 0.9}).verdict
        'supported'
    """
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if min_pairs < 2:
        raise ValueError(f"min_pairs must be at least 2 (an interval needs two), got {min_pairs}")
    pairs = tuple(sorted((int(s), float(d)) for s, d in differences.items()))
    bad = [s for s, d in pairs if not math.isfinite(d)]
    if bad:
        raise ValueError(f"non-finite paired difference for seed(s) {bad}")
    d = np.array([v for _, v in pairs])
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return Verdict(n, mean, math.nan, math.nan, NO_VERDICT, pairs)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    low, high = mean - half, mean + half
    if n < min_pairs:
        verdict = NO_VERDICT
    elif low > 0:
        verdict = VERDICTS[0]
    elif high < 0:
        verdict = VERDICTS[2]
    else:
        verdict = VERDICTS[1]
    return Verdict(n, mean, low, high, verdict, pairs)


# ---------------------------------------------------------------------------
# The claims the book checks
# ---------------------------------------------------------------------------

_T1 = "table1"
_R18 = {"arch": "spiking_resnet18"}  # the book's network (a folder may hold other networks)


def _cell(experiment: str, **where: Any) -> Cell:
    return Cell(experiment, {**where, **_R18})


def _beats(key: str, chapter: str, text: str, a: Cell, b: Cell, paper: str,
           metric: str = "final_test_acc", sign: float = 1.0) -> Claim:
    return Claim(key, chapter, text, metric, ((sign, a), (-sign, b)), paper)


def _esd(T: int = 4) -> Cell:
    return _cell(_T1, method="esd", T=T)


def _ratebp(T: int = 4) -> Cell:
    return _cell(_T1, method="ratebp", T=T)


CLAIMS: tuple[Claim, ...] = (
    _beats("esd>ratebp", "04_table1_static", "ESD is more accurate than RateBP (T = 4)",
           _esd(), _ratebp(), "CIFAR-10, ResNet-18, T = 4: 95.92 vs 95.61 (+0.31)"),
    *(_beats(f"esd>ratebp@T{T}", "04_table1_static",
             f"ESD is more accurate than RateBP at T = {T}", _esd(T), _ratebp(T), paper)
      for T, paper in ((1, "not reported (T = 1)"),
                       (2, "CIFAR-10, ResNet-18, T = 2: 95.29 vs 94.75 (+0.54)"),
                       (6, "CIFAR-10, ResNet-18, T = 6: 96.19 vs 95.90 (+0.29)"))),
    Claim("gain@T2>gain@T6", "04_table1_static",
          "ESD's gain over RateBP is larger at T = 2 than at T = 6", "final_test_acc",
          ((1.0, _esd(2)), (-1.0, _ratebp(2)), (-1.0, _esd(6)), (1.0, _ratebp(6))),
          "CIFAR-10, ResNet-18: +0.54 at T = 2 vs +0.29 at T = 6"),
    _beats("esd>sd", "09_ablations",
           "ESD's reliability-decoupled teacher beats standard self-distillation",
           _esd(), _cell(_T1, method="sd", T=4),
           "the paper's ablation: ESD above standard SD"),
    _beats("dvs:esd>ratebp", "05_dvs", "On event data, ESD is more accurate than RateBP",
           _cell("dvs", method="esd"), _cell("dvs", method="ratebp"),
           "CIFAR10-DVS, ResNet-18, T = 10: 81.40 vs 80.40 (+1.00)"),
    _beats("dvs:esd_bptt>esd", "05_dvs",
           "On event data, ESD on BPTT is more accurate than one-step ESD",
           _cell("dvs", method="esd_bptt"), _cell("dvs", method="esd"),
           "CIFAR10-DVS, ResNet-18, T = 10: 85.70 vs 81.40 (+4.30)"),
    _beats("dvs:ratebp_none>ratebp_1/T", "05_dvs",
           "Our diagnosis: on event data RateBP trains better with the published RateBP DVS "
           "recipe (plain CE) than with ESD's 1/T loss scaling",
           _cell("dvs", method="ratebp"), _cell("dvs_scaling", method="ratebp"),
           "not a paper claim: the official RateBP DVS script uses plain CE, the ESD scripts "
           "divide the loss by T"),
    _beats("firing:esd<bptt", "07_firing_rates", "ESD fires less than BPTT (T = 4)",
           _esd(), _cell(_T1, method="bptt", T=4),
           "CIFAR-10, ResNet-18, T = 4: 0.1680 vs 0.2018 (−0.034)",
           metric="firing_rate_mean", sign=-1.0),
    Claim("K_esd<=K_rate", "08_gradient_error",
          "ESD's gradient is closer to the BPTT gradient than RateBP's (K_esd ≤ K_rate)",
          "gradient_gap", ((1.0, _cell("gradient_error", method="esd")),),
          "the poster's inequality K_esd ≤ K_rate (no numbers)"),
    *(_beats(f"ablation:{key}", "09_ablations", text, _esd(), _cell("ablation", **where), paper)
      for key, text, where, paper in (
          ("dsconv>=conv", "Depthwise-separable branches do at least as well as plain "
           "convolution branches", {"branch_kind": "conv"},
           "the paper's branch design: comparable accuracy with fewer parameters"),
          ("beta0.3>beta0.5", "β = 0.3 beats β = 0.5", {"beta": 0.5},
           "the paper's choice β = 0.3"),
          ("logits>probs", "Averaging the reliable outputs as logits (the code) beats "
           "averaging probabilities (the poster)", {"teacher_space": "probs"},
           "the published code averages logits"))),
)
"""Every claim the book checks, once each, in chapter order within their groups."""

PARITY_CLAIMS: tuple[Claim, ...] = tuple(
    Claim(f"bf16=fp32:{method}", "06_scalability",
          f"{label}: bf16 autocast trains to the accuracy of fp32", "final_test_acc",
          ((1.0, _cell("precision", method=method, T=4, precision="bf16")),
           (-1.0, _cell(_T1, method=method, T=4, precision="fp32"))),
          "not a paper claim: bf16 − fp32 on paired seeds; parity = an interval containing 0")
    for method, label in (("bptt", "BPTT"), ("ratebp", "RateBP"), ("esd", "ESD")))
"""Accuracy parity of bf16 with fp32 (chapter 6): not claims of the paper, so not in
:data:`CLAIMS`. Parity holds when the verdict is *not separable*; *supported* (bf16 higher) or
*contradicted* (bf16 lower) would be a measurable difference."""


# ---------------------------------------------------------------------------
# Evaluation on run records
# ---------------------------------------------------------------------------


def _metric_values(rows: pd.DataFrame, metric: str) -> pd.Series:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    if metric == "gradient_gap":
        return rows["path"].map(_gradient_gap)
    column = f"metrics.{metric}"
    if column not in rows:
        return pd.Series(math.nan, index=rows.index)
    return rows[column].astype(float)


def _gradient_gap(path: str) -> float:
    """Mean over a record's gradient-error measurements of ``K_rate - K_esd``."""
    record = json.loads(Path(path).read_text())
    rows = (record.get("extra") or {}).get("gradient_error") or []
    gaps = [r["K_rate"] - r["K_esd"] for r in rows
            if r.get("K_rate") is not None and r.get("K_esd") is not None]
    return float(np.mean(gaps)) if gaps else math.nan


def cell_runs(df: pd.DataFrame, cell: Cell) -> pd.DataFrame:
    """The complete runs of a cell, one per seed.

    Args:
        df: Run records (:func:`esdlib.train.records.load_records`), already limited to one profile.
        cell: The cell.

    Returns:
        The matching rows, indexed by seed.

    Raises:
        ValueError: Two complete runs of the cell share a seed (the grid is ambiguous).
    """
    rows = df[(df["experiment"] == cell.experiment) & (df["status"] == "complete")]
    for key, value in cell.where.items():
        column = f"config.{key}"
        if column not in rows:
            return rows.iloc[0:0]
        rows = rows[rows[column] == value]
    seeds = rows["config.seed"].astype(int)
    dup = sorted(set(seeds[seeds.duplicated()]))
    if dup:
        raise ValueError(f"cell {cell.label} has several complete runs with seed(s) {dup}; "
                         "keep one run per seed (records of another grid in the same folder?)")
    return rows.set_index(seeds)


def claim_differences(df: pd.DataFrame, claim: Claim) -> dict[int, float]:
    """The per-seed statistic of a claim over the seeds every one of its cells has."""
    per_term = []
    for coef, cell in claim.terms:
        rows = cell_runs(df, cell)
        values = _metric_values(rows, claim.metric) * METRICS[claim.metric].scale
        per_term.append(coef * values[values.notna()])
    seeds = sorted(set.intersection(*(set(v.index) for v in per_term)))
    return {s: float(sum(v[s] for v in per_term)) for s in seeds}


def claims_table(df: pd.DataFrame, claims: Sequence[Claim] = CLAIMS, *,
                 chapter: str | None = None) -> pd.DataFrame:
    """Every claim with its per-seed differences, interval and verdict.

    Args:
        df: Run records of one profile (:func:`esdlib.train.records.load_records`).
        claims: The claims to evaluate (default: all of :data:`CLAIMS`).
        chapter: Only the claims of this chapter (notebook stem).

    Returns:
        One row per claim: ``key, chapter, claim, metric, unit, n, mean, ci_low, ci_high,
        verdict, differences`` (``"seed: value"`` list) and ``paper``.
    """
    rows = []
    for claim in claims:
        if chapter is not None and claim.chapter != chapter:
            continue
        try:
            v = paired_verdict(claim_differences(df, claim))
        except ValueError as err:  # an ambiguous cell: say so on the page, decide nothing
            v = Verdict(0, math.nan, math.nan, math.nan, f"cannot decide: {err}", ())
        metric = METRICS[claim.metric]
        rows.append({"key": claim.key, "chapter": claim.chapter, "claim": claim.text,
                     "metric": metric.label, "unit": metric.unit, "n": v.n, "mean": v.mean,
                     "ci_low": v.ci_low, "ci_high": v.ci_high, "verdict": v.verdict,
                     "differences": ", ".join(f"{s}: {d:+.2f}" for s, d in v.differences),
                     "paper": claim.paper})
    return pd.DataFrame(rows, columns=["key", "chapter", "claim", "metric", "unit", "n", "mean",
                                       "ci_low", "ci_high", "verdict", "differences", "paper"])


def _claim_cells(claims: Iterable[Claim]) -> list[tuple[Cell, str]]:
    seen: dict[str, tuple[Cell, str]] = {}
    for claim in claims:
        for _, cell in claim.terms:
            seen.setdefault(f"{cell.label}|{claim.metric}", (cell, claim.metric))
    return list(seen.values())


def cell_table(df: pd.DataFrame, claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """Mean, standard deviation and seed count of every cell (and metric) the claims use."""
    rows = []
    for cell, metric in _claim_cells(claims):
        runs = cell_runs(df, cell)
        values = (_metric_values(runs, metric) * METRICS[metric].scale).dropna()
        rows.append({"cell": cell.label, "metric": METRICS[metric].label, "n": len(values),
                     "mean": float(values.mean()) if len(values) else math.nan,
                     "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                     "seeds": ", ".join(str(s) for s in sorted(values.index))})
    return pd.DataFrame(rows, columns=["cell", "metric", "n", "mean", "std", "seeds"])


def convergence_table(df: pd.DataFrame, *, window: int = CONVERGENCE_WINDOW,
                      threshold: float = CONVERGENCE_THRESHOLD) -> pd.DataFrame:
    """Whether each complete run's test accuracy had stopped moving by its last epoch.

    The *final trend* of a run is the mean test accuracy (in points) of its last ``window``
    epochs minus the mean of the ``window`` epochs before; a run has settled when the trend
    is within ``± threshold``. A run with fewer than ``2 * window`` epochs has not.

    Args:
        df: Run records (needs the ``path`` column to read the histories).
        window: Epochs averaged at each end.
        threshold: Largest allowed trend in points.

    Returns:
        One row per run: ``run_id, experiment, method, T, seed, epochs, last_acc,
        final_trend`` (points) and ``converged``.
    """
    rows = []
    for _, r in df[df["status"] == "complete"].iterrows():
        history = json.loads(Path(r["path"]).read_text())["history"]
        acc = [100.0 * h["test_acc"] for h in history]
        if len(acc) >= 2 * window:
            trend = float(np.mean(acc[-window:]) - np.mean(acc[-2 * window:-window]))
        else:
            trend = math.nan
        rows.append({"run_id": r["run_id"], "experiment": r["experiment"],
                     "method": r["config.method"], "T": int(r["config.T"]),
                     "seed": int(r["config.seed"]), "epochs": len(acc),
                     "last_acc": acc[-1] if acc else math.nan, "final_trend": trend,
                     "converged": bool(abs(trend) <= threshold)})
    return pd.DataFrame(rows, columns=["run_id", "experiment", "method", "T", "seed", "epochs",
                                       "last_acc", "final_trend", "converged"])


def compare_cells(committed: pd.DataFrame, fresh: pd.DataFrame,
                  claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """Per cell, the committed and the fresh mean (and their difference)."""
    keys, numbers = ["cell", "metric"], ["n", "mean", "std"]
    out = cell_table(committed, claims)[keys + numbers].merge(
        cell_table(fresh, claims)[keys + numbers], on=keys, how="outer",
        suffixes=("_committed", "_fresh"))
    out["difference"] = out["mean_fresh"] - out["mean_committed"]
    return out


def compare_verdicts(committed: pd.DataFrame, fresh: pd.DataFrame,
                     claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """Per claim, the committed and the fresh verdict and whether it holds.

    A verdict *holds* when the fresh runs give the same verdict as the committed runs.

    Returns:
        One row per claim: ``key, claim, verdict_committed, mean_committed, ci_committed,
        verdict_fresh, mean_fresh, ci_fresh, holds``.
    """
    a = claims_table(committed, claims).set_index("key")
    b = claims_table(fresh, claims).set_index("key")
    rows = []
    for claim in claims:
        ra, rb = a.loc[claim.key], b.loc[claim.key]
        rows.append({"key": claim.key, "claim": claim.text,
                     "verdict_committed": ra["verdict"], "mean_committed": ra["mean"],
                     "ci_committed": format_interval(ra["ci_low"], ra["ci_high"]),
                     "verdict_fresh": rb["verdict"], "mean_fresh": rb["mean"],
                     "ci_fresh": format_interval(rb["ci_low"], rb["ci_high"]),
                     "holds": ra["verdict"] == rb["verdict"]})
    return pd.DataFrame(rows)


def format_interval(low: float, high: float) -> str:
    """``"[+a, +b]"`` with two decimals, or ``"—"`` when the interval is undefined (n < 2)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "—"
    return f"[{low:+.2f}, {high:+.2f}]"
