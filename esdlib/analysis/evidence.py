"""Claims about runs and the paired statistics that test them; the caller supplies the claims.

A *claim* (:class:`Claim`) is a statement a grid of runs can test, e.g. "A is more accurate than
B at T = 4". Its evidence is a per-seed statistic ``d_s`` built from runs that share the seed
``s`` (runs with the same seed see the same train/test split, so the comparison is paired),
signed so that the claimed direction is positive::

    d_s = sum_i  c_i * metric(cell_i, seed s)

(``c = (+1, -1)`` for "a beats b"; four terms for a difference of differences such as "the
gain is larger at T = 2 than at T = 6"; one term for a quantity measured within one run). A
*cell* (:class:`Cell`) is the runs of one configuration of one experiment across seeds.

Each claim declares the test its wording needs (:data:`KINDS`: superiority, non-inferiority or
equivalence, with a margin); :func:`decide` applies it (the tests themselves are
:mod:`esdlib.analysis.paired`, re-exported here). :func:`claims_table` evaluates a sequence of
claims on a table of run records (:func:`esdlib.train.records.load_records`) with the power of
the design (interval half-width, smallest detectable difference), whether a verdict is close to
a boundary (:func:`is_close`) and whether it holds on each seed set (:func:`seed_set_check`);
:func:`cell_table` summarises the cells the claims use; :func:`convergence_table` flags runs
whose accuracy was still moving at the end; :func:`compare_cells` and :func:`compare_verdicts`
say whether a fresh re-run agrees with committed runs. Every function takes the claims
explicitly: which statements to test, and what a publication reports for them, is the caller's
business.
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

from esdlib.analysis.paired import (
    CONFIDENCE,
    KINDS,
    MIN_PAIRS,
    NEAR,
    NO_VERDICT,
    POWER,
    VERDICTS,
    Verdict,
    equivalence_verdict,
    format_interval,
    format_margin,
    format_seeds,
    is_close,
    non_inferiority_verdict,
    paired_verdict,
    superiority_verdict,
)

__all__ = [
    "CLAIM_COLUMNS",
    "CONFIDENCE",
    "CONVERGENCE_THRESHOLD",
    "CONVERGENCE_WINDOW",
    "Cell",
    "Claim",
    "KINDS",
    "METRICS",
    "MIN_PAIRS",
    "NEAR",
    "NO_VERDICT",
    "POWER",
    "SEED_BLOCK",
    "VERDICTS",
    "Verdict",
    "cell_runs",
    "cell_table",
    "claim_differences",
    "claim_experiments",
    "claims_table",
    "compare_cells",
    "compare_verdicts",
    "convergence_table",
    "decide",
    "equivalence_verdict",
    "format_interval",
    "format_margin",
    "format_seeds",
    "is_close",
    "non_inferiority_verdict",
    "paired_verdict",
    "seed_set_check",
    "superiority_verdict",
]

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
        near: How close to a decision boundary an interval end may lie before the verdict
            counts as close (:func:`is_close`), in the displayed unit.
    """

    name: str
    label: str
    unit: str
    scale: float
    near: float = 1.0


METRICS: dict[str, Metric] = {
    "final_test_acc": Metric("final_test_acc", "final test accuracy", "pts", 100.0),
    "firing_rate_mean": Metric("firing_rate_mean", "mean firing rate", "% of neurons", 100.0),
    "gradient_gap": Metric("gradient_gap", "K_rate − K_esd (mean over measurements)", "", 1.0,
                           near=0.02),
}
"""Metrics a claim may use: final-epoch test accuracy (the headline; the best epoch would be
selected on the test set), the test set's mean firing rate, and the mean over a run's
measurements of ``K_rate - K_esd`` (the gradient errors in its ``extra.gradient_error``)."""


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


SEED_BLOCK = 5
"""Seeds per block in the seed-set check: with 10 seeds on record, the verdict is also decided
on seeds 0-4 and 5-9 alone, and a verdict that differs between them depends on the seed set."""


@dataclass(frozen=True)
class Claim:
    """One statement (of a publication, or a diagnosis) and the paired statistic that tests it.

    Attributes:
        key: Stable identifier (used in tables and the fresh-run comparison).
        chapter: Where the claim is discussed: a free label the caller filters on
            (:func:`claims_table`'s ``chapter``).
        text: The claim in words.
        metric: Key of :data:`METRICS`.
        terms: ``(coefficient, cell)`` pairs; the per-seed statistic is the weighted sum of
            the cells' metric values, signed so that the claimed direction is positive.
        paper: What the publication reports for it (for the reader; not used in the rule).
        kind: One of :data:`KINDS`: the test its wording needs.
        margin: ``δ`` of a non-inferiority or equivalence claim, in the metric's displayed unit
            (0 for superiority).
        source: ``"paper"`` (a claim of the publication) or ``"diagnosis"`` (a measurement
            that explains a result, e.g. a control); tables count them apart.
    """

    key: str
    chapter: str
    text: str
    metric: str
    terms: tuple[tuple[float, Cell], ...]
    paper: str = ""
    kind: str = "superiority"
    margin: float = 0.0
    source: str = "paper"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.key!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if (self.kind == "superiority") != (self.margin == 0.0) or self.margin < 0:
            raise ValueError(f"claim {self.key!r}: a {self.kind} claim needs "
                             f"{'no' if self.kind == 'superiority' else 'a positive'} margin, "
                             f"got {self.margin}")
        if self.source not in ("paper", "diagnosis"):
            raise ValueError(f"claim {self.key!r}: source must be 'paper' or 'diagnosis'")


def decide(claim: Claim, differences: Mapping[int, float]) -> Verdict:
    """Test a claim's per-seed differences with the test of its kind (and its margin)."""
    unit = METRICS[claim.metric].unit
    if claim.kind == "non-inferiority":
        return non_inferiority_verdict(differences, claim.margin, unit=unit)
    if claim.kind == "equivalence":
        return equivalence_verdict(differences, claim.margin, unit=unit)
    return superiority_verdict(differences)

def seed_set_check(claim: Claim, differences: Mapping[int, float],
                   block: int = SEED_BLOCK) -> str:
    """Whether a verdict holds on each block of seeds (0-4, 5-9, …) decided alone.

    Returns:
        ``"one seed set"`` when fewer than two full blocks are on record, ``"holds on each
        seed set"`` when every full block gives the pooled verdict, else ``"depends on the seed
        set"`` (the verdict is then stated, but not firmly).
    """
    seeds = sorted(differences)
    blocks = [[s for s in seeds if s // block == b] for b in sorted({s // block for s in seeds})]
    full = [b for b in blocks if len(b) >= MIN_PAIRS]
    if len(full) < 2:
        return "one seed set"
    pooled = decide(claim, differences).verdict
    same = all(decide(claim, {s: differences[s] for s in b}).verdict == pooled for b in full)
    return "holds on each seed set" if same else "depends on the seed set"

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
        ValueError: Two complete runs of the cell share a seed (the grid is ambiguous), or the
            cell's runs come from several data sets.
    """
    rows = df[(df["experiment"] == cell.experiment) & (df["status"] == "complete")]
    for key, value in cell.where.items():
        column = f"config.{key}"
        if column not in rows:
            return rows.iloc[0:0]
        rows = rows[rows[column] == value]
    if "config.dataset" in rows and rows["config.dataset"].nunique() > 1:
        names = ", ".join(sorted(rows["config.dataset"].astype(str).unique()))
        raise ValueError(f"cell {cell.label} holds runs of several data sets ({names}); "
                         "a claim compares runs of one data set: pass the runs of one")
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


CLAIM_COLUMNS = ["key", "chapter", "source", "claim", "kind", "margin", "metric", "unit", "n",
                 "mean", "ci_low", "ci_high", "confidence", "verdict", "shown", "half_width",
                 "detectable", "close", "seed_sets", "seeds", "differences", "paper"]
"""Columns of :func:`claims_table`."""


def claims_table(df: pd.DataFrame, claims: Sequence[Claim], *,
                 chapter: str | None = None) -> pd.DataFrame:
    """Every claim with its kind, per-seed differences, interval, verdict and power.

    Args:
        df: Run records of one profile (:func:`esdlib.train.records.load_records`).
        claims: The claims to evaluate.
        chapter: Only the claims whose :attr:`Claim.chapter` is this.

    Returns:
        One row per claim (:data:`CLAIM_COLUMNS`): its ``key, chapter, source, claim, kind,
        margin``; the metric and unit; the paired seeds ``n``, the ``mean`` difference and the
        interval ``ci_low``/``ci_high`` at ``confidence`` (0.95; 0.90 for equivalence); the
        ``verdict`` (:func:`decide`) and whether it was shown ``for``/``against`` the claim;
        ``half_width`` of the interval and the smallest difference the design ``detectable``
        with power :data:`POWER`; whether it is ``close`` (:func:`is_close`); the seed-set check
        (:func:`seed_set_check`); the paired ``seeds`` (``"0-4"``; ``"—"`` for none), the
        ``differences`` as ``"seed: value"`` and the ``paper``.
    """
    rows = []
    for claim in claims:
        if chapter is not None and claim.chapter != chapter:
            continue
        try:
            diffs = claim_differences(df, claim)
            v = decide(claim, diffs)
            seed_sets = seed_set_check(claim, diffs)
        except ValueError as err:  # an ambiguous cell: say so on the page, decide nothing
            v = Verdict(0, math.nan, math.nan, math.nan, f"cannot decide: {err}", (),
                        claim.kind, claim.margin)
            seed_sets = "—"
        metric = METRICS[claim.metric]
        rows.append({"key": claim.key, "chapter": claim.chapter, "source": claim.source,
                     "claim": claim.text, "kind": claim.kind, "margin": claim.margin,
                     "metric": metric.label, "unit": metric.unit, "n": v.n, "mean": v.mean,
                     "ci_low": v.ci_low, "ci_high": v.ci_high, "confidence": v.confidence,
                     "verdict": v.verdict, "shown": v.shown, "half_width": v.half_width,
                     "detectable": v.detectable, "close": is_close(v, near=metric.near),
                     "seed_sets": seed_sets,
                     "seeds": format_seeds(s for s, _ in v.differences) or "—",
                     "differences": ", ".join(f"{s}: {d:+.2f}" for s, d in v.differences),
                     "paper": claim.paper})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _claim_cells(claims: Iterable[Claim]) -> list[tuple[Cell, str]]:
    seen: dict[str, tuple[Cell, str]] = {}
    for claim in claims:
        for _, cell in claim.terms:
            seen.setdefault(f"{cell.label}|{claim.metric}", (cell, claim.metric))
    return list(seen.values())


def cell_table(df: pd.DataFrame, claims: Sequence[Claim]) -> pd.DataFrame:
    """Mean, standard deviation and seed count of every cell (and metric) the claims use (a cell
    whose runs are ambiguous — :func:`cell_runs` — counts no runs)."""
    rows = []
    for cell, metric in _claim_cells(claims):
        try:
            runs = cell_runs(df, cell)
        except ValueError:  # ambiguous: the claims table says why; no numbers here
            runs = df.iloc[0:0]
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
        One row per run: ``run_id, experiment, method, recipe`` (RateBP's loss scaling,
        ``"1/T"`` or ``"none"``; ``"—"`` for other methods), ``T, seed, epochs, last_acc,
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
                     "method": r["config.method"],
                     "recipe": r.get("config.rate_grad_scale", "1/T")
                     if r["config.method"] in ("ratebp",) else "—",
                     "T": int(r["config.T"]),
                     "seed": int(r["config.seed"]), "epochs": len(acc),
                     "last_acc": acc[-1] if acc else math.nan, "final_trend": trend,
                     "converged": bool(abs(trend) <= threshold)})
    return pd.DataFrame(rows, columns=["run_id", "experiment", "method", "recipe", "T", "seed",
                                       "epochs", "last_acc", "final_trend", "converged"])


def compare_cells(committed: pd.DataFrame, fresh: pd.DataFrame,
                  claims: Sequence[Claim]) -> pd.DataFrame:
    """Per cell, the committed and the fresh mean (and their difference)."""
    keys, numbers = ["cell", "metric"], ["n", "mean", "std"]
    out = cell_table(committed, claims)[keys + numbers].merge(
        cell_table(fresh, claims)[keys + numbers], on=keys, how="outer",
        suffixes=("_committed", "_fresh"))
    out["difference"] = out["mean_fresh"] - out["mean_committed"]
    return out


def claim_experiments(claim: Claim) -> set[str]:
    """The experiments (results sub-folders) whose runs a claim compares."""
    return {cell.experiment for _, cell in claim.terms}


def compare_verdicts(committed: pd.DataFrame, fresh: pd.DataFrame,
                     claims: Sequence[Claim], *,
                     rerun: Iterable[str] | None = None) -> pd.DataFrame:
    """Per claim, the committed and the fresh verdict and whether it holds.

    A verdict *holds* when the fresh runs give the same verdict as the committed runs. A claim
    with a cell in an experiment that was not re-run is not compared: its ``status`` is
    ``"not re-run"`` and ``holds`` is ``None``.

    Args:
        committed: Records of the committed runs (one profile).
        fresh: Records of the fresh re-run (one profile; possibly other seeds).
        claims: The claims to compare.
        rerun: The experiments the fresh re-run covered (``None``: all of them).

    Returns:
        One row per claim: ``key, claim, kind, verdict_committed, mean_committed,
        ci_committed, seeds_committed, verdict_fresh, mean_fresh, ci_fresh, seeds_fresh,
        status`` (``"holds"``, ``"changed"`` or ``"not re-run"``) and ``holds``.
    """
    a = claims_table(committed, claims).set_index("key")
    b = claims_table(fresh, claims).set_index("key")
    covered = None if rerun is None else set(rerun)
    rows = []
    for claim in claims:
        ra, rb = a.loc[claim.key], b.loc[claim.key]
        compared = covered is None or claim_experiments(claim) <= covered
        holds = (ra["verdict"] == rb["verdict"]) if compared else None
        rows.append({"key": claim.key, "claim": claim.text, "kind": claim.kind,
                     "verdict_committed": ra["verdict"], "mean_committed": ra["mean"],
                     "ci_committed": format_interval(ra["ci_low"], ra["ci_high"]),
                     "seeds_committed": ra["seeds"],
                     "verdict_fresh": rb["verdict"] if compared else "not re-run",
                     "mean_fresh": rb["mean"] if compared else math.nan,
                     "ci_fresh": format_interval(rb["ci_low"], rb["ci_high"]) if compared
                     else "—",
                     "seeds_fresh": rb["seeds"] if compared else "—",
                     "status": "not re-run" if not compared else
                     ("holds" if holds else "changed"),
                     "holds": holds})
    return pd.DataFrame(rows)
