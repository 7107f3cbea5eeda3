"""Verdicts on the paper's claims from paired runs: one test per kind of claim.

A *claim* is a statement the grid can test, e.g. "ESD is more accurate than RateBP at T = 4".
Its evidence is a per-seed statistic ``d_s`` built from runs that share the seed ``s`` (runs
with the same seed see the same train/test split, so the comparison is paired), signed so that
the claimed direction is positive::

    d_s = sum_i  c_i * metric(cell_i, seed s)

(``c = (+1, -1)`` for "a beats b"; four terms for a difference of differences such as "the
gain is larger at T = 2 than at T = 6"; one term for a quantity measured within one run).

Each claim declares the test its wording needs (:data:`KINDS`), with ``n`` seeds, mean ``m``
and sample standard deviation ``sd`` of the ``d_s``, and the two-sided Student-t interval
``m ± t(·, n - 1) · sd / sqrt(n)``; fewer than ``MIN_PAIRS`` (5) seeds give **no verdict**:

* **superiority** ("A beats B", :func:`superiority_verdict`, 95 % interval): above 0 —
  **supported**; below 0 — **contradicted**; otherwise **not separable**;
* **non-inferiority** ("A does at least as well as B", margin ``δ``,
  :func:`non_inferiority_verdict`, 95 % interval): above ``−δ`` — **non-inferior**; below
  ``−δ`` — **inferior by more than δ**; otherwise **inconclusive**;
* **equivalence** ("A equals B", margin ``δ``, :func:`equivalence_verdict`: two one-sided
  tests at 5 %, i.e. the 90 % interval): inside ``(−δ, δ)`` — **equivalent within ±δ**;
  entirely outside — **not equivalent**; otherwise **inconclusive**.

:data:`CLAIMS` lists every claim the book checks on the hard digits, :data:`MNIST_CLAIMS` those
on MNIST, each once (no comparison is counted twice), with the chapter that discusses it.
:func:`claims_table` evaluates them on a table of run records
(:func:`esdlib.train.records.load_records`) with the power of the design (interval half-width,
smallest detectable difference), whether a verdict is close to a boundary (:func:`is_close`:
such cells get up to 10 seeds) and whether it holds on each seed set
(:func:`seed_set_check`); :func:`convergence_table` flags runs whose accuracy was still moving
at the end; :func:`compare_verdicts` says whether the verdicts of a fresh re-run agree with the
committed ones (``python -m esdbook reproduce --fresh``).
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
    "CLAIM_COLUMNS",
    "CONFIDENCE",
    "CONVERGENCE_THRESHOLD",
    "CONVERGENCE_WINDOW",
    "Cell",
    "Claim",
    "KINDS",
    "MARGIN",
    "MNIST_CLAIMS",
    "NEAR",
    "POWER",
    "SEED_BLOCK",
    "METRICS",
    "MIN_PAIRS",
    "NO_VERDICT",
    "PARITY_CLAIMS",
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


KINDS = ("superiority", "non-inferiority", "equivalence")
"""The kinds of claim, each with its own test (:func:`decide`):

* **superiority** — "A beats B": the 95 % interval of the mean paired difference lies above 0
  (:func:`superiority_verdict`);
* **non-inferiority** — "A does at least as well as B", up to a margin ``δ``: the 95 % interval
  lies above ``−δ`` (:func:`non_inferiority_verdict`);
* **equivalence** — "A and B are the same", within ``±δ``: two one-sided tests at 5 % each,
  i.e. the 90 % interval lies inside ``(−δ, +δ)`` (:func:`equivalence_verdict`, TOST).
"""

POWER = 0.8
"""Power at which :attr:`Verdict.detectable` is stated (the smallest true difference a design
of this size finds with probability 0.8 at the two-sided 5 % level)."""

NEAR = 1.0
"""An interval end within this many points of a decision boundary (0, or the margin) makes an
accuracy verdict *close* (:func:`is_close`; each metric has its own :attr:`Metric.near`): such
claims get more paired seeds (up to 10)."""

SEED_BLOCK = 5
"""Seeds per block in the seed-set check: with 10 seeds on record, the verdict is also decided
on seeds 0-4 and 5-9 alone, and a verdict that differs between them depends on the seed set."""


@dataclass(frozen=True)
class Claim:
    """One statement (of the paper, or a diagnosis of ours) and the paired statistic that tests it.

    Attributes:
        key: Stable identifier (used in tables and the fresh-run comparison).
        chapter: The book chapter that discusses it (notebook stem).
        text: The claim in words.
        metric: Key of :data:`METRICS`.
        terms: ``(coefficient, cell)`` pairs; the per-seed statistic is the weighted sum of
            the cells' metric values, signed so that the claimed direction is positive.
        paper: What the paper reports for it (for the reader; not used in the rule).
        kind: One of :data:`KINDS`: the test its wording needs.
        margin: ``δ`` of a non-inferiority or equivalence claim, in the metric's displayed unit
            (0 for superiority).
        source: ``"paper"`` (a claim of the paper) or ``"diagnosis"`` (a measurement of ours that
            explains a result, e.g. the step-size control); the book counts them apart.
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


@dataclass(frozen=True)
class Verdict:
    """The outcome of a test of one claim (:func:`decide`).

    Attributes:
        n: Number of paired seeds.
        mean: Mean paired difference (``nan`` when ``n == 0``).
        ci_low: Lower end of the interval (``nan`` when ``n < 2``).
        ci_high: Upper end of the interval (``nan`` when ``n < 2``).
        verdict: What was shown, e.g. ``"supported"``, ``"non-inferior (margin 1 pt)"``,
            ``"equivalent within ±1 pt"``, ``"inconclusive"``, or :data:`NO_VERDICT`.
        differences: ``(seed, d_s)`` pairs, sorted by seed.
        kind: The test (one of :data:`KINDS`).
        margin: Its margin ``δ`` (0 for superiority).
        confidence: Coverage of the interval (0.95; 0.90 for equivalence).
        shown: ``"for"`` (the claim was shown), ``"against"`` (its opposite was shown),
            ``"neither"`` or ``"none"`` (no verdict).
        half_width: Half the interval's width.
        detectable: The smallest true difference this design detects with power
            :data:`POWER` (superiority; ``nan`` otherwise or when ``n < 2``).
    """

    n: int
    mean: float
    ci_low: float
    ci_high: float
    verdict: str
    differences: tuple[tuple[int, float], ...]
    kind: str = "superiority"
    margin: float = 0.0
    confidence: float = CONFIDENCE
    shown: str = "none"
    half_width: float = math.nan
    detectable: float = math.nan


def _pairs(differences: Mapping[int, float]) -> tuple[tuple[int, float], ...]:
    pairs = tuple(sorted((int(s), float(d)) for s, d in differences.items()))
    bad = [s for s, d in pairs if not math.isfinite(d)]
    if bad:
        raise ValueError(f"non-finite paired difference for seed(s) {bad}")
    return pairs


def _interval(pairs, confidence: float, min_pairs: int):
    """``(n, mean, low, high, half, sd)`` of the Student-t interval of the mean difference."""
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if min_pairs < 2:
        raise ValueError(f"min_pairs must be at least 2 (an interval needs two), got {min_pairs}")
    d = np.array([v for _, v in pairs])
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return n, mean, math.nan, math.nan, math.nan, math.nan
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))
    return n, mean, mean - half, mean + half, half, sd


def _detectable(n: int, sd: float) -> float:
    from scipy import stats

    if n < 2 or not math.isfinite(sd):
        return math.nan
    return float((stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) + stats.t.ppf(POWER, n - 1))
                 * sd / math.sqrt(n))


def superiority_verdict(differences: Mapping[int, float], *, confidence: float = CONFIDENCE,
                        min_pairs: int = MIN_PAIRS) -> Verdict:
    """The superiority test: is the mean paired difference above 0?

    With ``n`` seeds, mean ``m`` and sample standard deviation ``sd`` of the ``d_s``, the
    two-sided Student-t interval ``m ± t(0.5 + confidence/2, n − 1) · sd / √n``:
    above 0 → ``"supported"``; below 0 → ``"contradicted"``; otherwise ``"not separable"``;
    fewer than ``min_pairs`` seeds → :data:`NO_VERDICT`.

    Args:
        differences: ``{seed: d_s}``, signed in the claimed direction; every value finite.
        confidence: Coverage of the two-sided interval (0 < confidence < 1).
        min_pairs: Fewest seeds a verdict is given for (at least 2).

    Raises:
        ValueError: A non-finite difference, or ``confidence``/``min_pairs`` out of range.

    Example:
        >>> superiority_verdict({0: 1.0, 1: 0.5, 2: 0.8, 3: 1.2, 4: 0.9}).verdict
        'supported'
    """
    pairs = _pairs(differences)
    n, mean, low, high, half, sd = _interval(pairs, confidence, min_pairs)
    if n < min_pairs:
        verdict, shown = NO_VERDICT, "none"
    elif low > 0:
        verdict, shown = VERDICTS[0], "for"
    elif high < 0:
        verdict, shown = VERDICTS[2], "against"
    else:
        verdict, shown = VERDICTS[1], "neither"
    return Verdict(n, mean, low, high, verdict, pairs, "superiority", 0.0, confidence, shown,
                   half, _detectable(n, sd))


paired_verdict = superiority_verdict
"""The book's first rule, under its first name: :func:`superiority_verdict`."""


def format_margin(margin: float, unit: str = "pts") -> str:
    """A margin with its unit, as verdicts and tables write it: ``"1 pt"``, ``"0.5 pts"``."""
    if unit == "pts" and margin == 1:
        unit = "pt"
    return f"{margin:g} {unit}".strip()


def non_inferiority_verdict(differences: Mapping[int, float], margin: float, *,
                            unit: str = "pts", confidence: float = CONFIDENCE,
                            min_pairs: int = MIN_PAIRS) -> Verdict:
    """The non-inferiority test: is the mean paired difference above ``−margin``?

    The same two-sided interval as :func:`superiority_verdict` (its lower end is a one-sided
    97.5 % bound): above ``−margin`` → ``"non-inferior (margin δ)"``; entirely below
    ``−margin`` → ``"inferior by more than δ"``; otherwise ``"inconclusive"``.

    Args:
        differences: ``{seed: d_s}``, signed so that "A at least as good as B" is positive.
        margin: ``δ > 0``, the largest loss that still counts as "as good", in ``unit``.
        unit: Unit of the differences (for the verdict's words).
        confidence: Coverage of the two-sided interval.
        min_pairs: Fewest seeds a verdict is given for.

    Example:
        >>> non_inferiority_verdict({0: -0.5, 1: 0.2, 2: -0.1, 3: 0.3, 4: 0.0}, 1.0).verdict
        'non-inferior (margin 1 pt)'
    """
    if not margin > 0:
        raise ValueError(f"a non-inferiority margin must be positive, got {margin}")
    pairs = _pairs(differences)
    n, mean, low, high, half, _ = _interval(pairs, confidence, min_pairs)
    words = format_margin(margin, unit)
    if n < min_pairs:
        verdict, shown = NO_VERDICT, "none"
    elif low > -margin:
        verdict, shown = f"non-inferior (margin {words})", "for"
    elif high < -margin:
        verdict, shown = f"inferior by more than {words}", "against"
    else:
        verdict, shown = "inconclusive", "neither"
    return Verdict(n, mean, low, high, verdict, pairs, "non-inferiority", margin, confidence,
                   shown, half)


def equivalence_verdict(differences: Mapping[int, float], margin: float, *, unit: str = "pts",
                        alpha: float = 1 - CONFIDENCE, min_pairs: int = MIN_PAIRS) -> Verdict:
    """The equivalence test (two one-sided tests, TOST): is the difference within ``±margin``?

    Each one-sided test at level ``alpha`` (H0: ``mean ≤ −δ``; H0: ``mean ≥ +δ``); both reject
    exactly when the two-sided ``1 − 2·alpha`` (90 %) interval lies inside ``(−δ, +δ)`` →
    ``"equivalent within ±δ"``. An interval entirely outside ``[−δ, +δ]`` →
    ``"not equivalent (differs by more than δ)"``; otherwise ``"inconclusive"`` — a difference
    that was not detected is not parity.

    Args:
        differences: ``{seed: d_s}``.
        margin: ``δ > 0`` in ``unit``.
        unit: Unit of the differences.
        alpha: Level of each one-sided test (0.05).
        min_pairs: Fewest seeds a verdict is given for.

    Example:
        >>> equivalence_verdict({0: 0.1, 1: -0.2, 2: 0.0, 3: 0.2, 4: -0.1}, 1.0).verdict
        'equivalent within ±1 pt'
    """
    if not margin > 0:
        raise ValueError(f"an equivalence margin must be positive, got {margin}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    pairs = _pairs(differences)
    confidence = 1 - 2 * alpha
    n, mean, low, high, half, _ = _interval(pairs, confidence, min_pairs)
    words = format_margin(margin, unit)
    if n < min_pairs:
        verdict, shown = NO_VERDICT, "none"
    elif -margin < low and high < margin:
        verdict, shown = f"equivalent within ±{words}", "for"
    elif low > margin or high < -margin:
        verdict, shown = f"not equivalent (differs by more than {words})", "against"
    else:
        verdict, shown = "inconclusive", "neither"
    return Verdict(n, mean, low, high, verdict, pairs, "equivalence", margin, confidence, shown,
                   half)


def decide(claim: Claim, differences: Mapping[int, float]) -> Verdict:
    """Test a claim's per-seed differences with the test of its kind (and its margin)."""
    unit = METRICS[claim.metric].unit
    if claim.kind == "non-inferiority":
        return non_inferiority_verdict(differences, claim.margin, unit=unit)
    if claim.kind == "equivalence":
        return equivalence_verdict(differences, claim.margin, unit=unit)
    return superiority_verdict(differences)


def is_close(v: Verdict, *, near: float = NEAR) -> bool:
    """Whether an end of the interval lies within ``near`` of a decision boundary (0 for
    superiority, ``−δ`` for non-inferiority, ``±δ`` for equivalence): such a verdict could
    change with a few more seeds, so the design gives it more."""
    if not (math.isfinite(v.ci_low) and math.isfinite(v.ci_high)):
        return False
    bounds = {"superiority": (0.0,), "non-inferiority": (-v.margin,),
              "equivalence": (-v.margin, v.margin)}[v.kind]
    return any(abs(end - b) <= near for end in (v.ci_low, v.ci_high) for b in bounds)


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
# The claims the book checks
# ---------------------------------------------------------------------------

_T1 = "table1"
_R18 = {"arch": "spiking_resnet18"}  # the book's network (a folder may hold other networks)
MARGIN = 1.0
"""Margin ``δ`` of the non-inferiority and equivalence claims, in accuracy points: on the hard
digits one point is about 9 of the 899 test images, on MNIST 100 of 10,000 — the smallest
difference a reader of the paper's tables would call a difference (its gaps are 0.3-1 pt)."""


def _cell(experiment: str, **where: Any) -> Cell:
    return Cell(experiment, {**where, **_R18})


def _beats(key: str, chapter: str, text: str, a: Cell, b: Cell, paper: str,
           metric: str = "final_test_acc", sign: float = 1.0, **kw: Any) -> Claim:
    return Claim(key, chapter, text, metric, ((sign, a), (-sign, b)), paper, **kw)


def _esd(T: int = 4, experiment: str = _T1) -> Cell:
    return _cell(experiment, method="esd", T=T)


def _ratebp(T: int = 4, recipe: str = "1/T", experiment: str = _T1) -> Cell:
    return _cell(experiment, method="ratebp", T=T, rate_grad_scale=recipe)


_PAPER_GAPS = {4: "CIFAR-10, ResNet-18, T = 4: 95.92 vs 95.61 (+0.31)",
               2: "CIFAR-10, ResNet-18, T = 2: 95.29 vs 94.75 (+0.54)",
               6: "CIFAR-10, ResNet-18, T = 6: 96.19 vs 95.90 (+0.29)"}


def _static_claims(experiment: str, chapter: str, Ts: Sequence[int]) -> tuple[Claim, ...]:
    """ESD against RateBP under both recipes, and the recipes against each other, at each T
    (at T = 1 only the first: the recipes coincide)."""
    prefix = "" if experiment == _T1 else f"{experiment}:"
    out = []
    for T in Ts:
        at = "" if (T == 4 and experiment == _T1) else f"@T{T}"
        out.append(_beats(f"{prefix}esd>ratebp{at}", chapter,
                          f"ESD is more accurate than RateBP with the official 1/T recipe "
                          f"(T = {T})", _esd(T, experiment), _ratebp(T, "1/T", experiment),
                          _PAPER_GAPS.get(T, f"not reported (T = {T})")))
        if T == 1:  # 1/T = 1: both recipes are the same run, there is no control to compare
            continue
        out.append(_beats(f"{prefix}esd>ratebp_plain@T{T}", chapter,
                          f"ESD is more accurate than RateBP trained with plain CE (T = {T})",
                          _esd(T, experiment), _ratebp(T, "none", experiment),
                          "the control: the same claim without RateBP's T-times smaller step"))
        out.append(_beats(f"{prefix}ratebp_plain>ratebp_1/T@T{T}", chapter,
                          f"Our diagnosis: RateBP trains better with plain CE than with the "
                          f"1/T recipe (T = {T})", _ratebp(T, "none", experiment),
                          _ratebp(T, "1/T", experiment),
                          "not a paper claim: the step-size confound, measured",
                          source="diagnosis"))
    return tuple(out)


CLAIMS: tuple[Claim, ...] = (
    *_static_claims(_T1, "04_table1_static", (4, 2, 6)),
    Claim("gain@T2>gain@T6", "04_table1_static",
          "ESD's gain over RateBP (1/T) is larger at T = 2 than at T = 6", "final_test_acc",
          ((1.0, _esd(2)), (-1.0, _ratebp(2)), (-1.0, _esd(6)), (1.0, _ratebp(6))),
          "CIFAR-10, ResNet-18: +0.54 at T = 2 vs +0.29 at T = 6"),
    _beats("esd>=bptt", "04_table1_static",
           "One-step ESD is at least as accurate as BPTT (T = 4)",
           _esd(), _cell(_T1, method="bptt", T=4),
           "one-step ESD (ResNet-18, T = 4: 95.92) above the BPTT methods of Table 1 "
           "(e.g. TET, ResNet-19, T = 4: 94.44)", kind="non-inferiority", margin=MARGIN),
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
           "divide the loss by T", source="diagnosis"),
    _beats("firing:esd<bptt", "07_firing_rates", "ESD fires less than BPTT (T = 4)",
           _esd(), _cell(_T1, method="bptt", T=4),
           "CIFAR-10, ResNet-18, T = 4: 0.1680 vs 0.2018 (−0.034)",
           metric="firing_rate_mean", sign=-1.0),
    Claim("K_esd<=K_rate", "08_gradient_error",
          "ESD's gradient is closer to the BPTT gradient than RateBP's (K_esd ≤ K_rate)",
          "gradient_gap", ((1.0, _cell("gradient_error", method="esd")),),
          "the poster's inequality K_esd ≤ K_rate (no numbers)"),
    _beats("ablation:dsconv>=conv", "09_ablations",
           "Depthwise-separable branches do at least as well as plain convolution branches",
           _esd(), _cell("ablation", branch_kind="conv"),
           "the paper's branch design: comparable accuracy with fewer parameters",
           kind="non-inferiority", margin=MARGIN),
    *(_beats(f"ablation:{key}", "09_ablations", text, _esd(), _cell("ablation", **where), paper)
      for key, text, where, paper in (
          ("beta0.3>beta0.5", "β = 0.3 beats β = 0.5", {"beta": 0.5},
           "the paper's choice β = 0.3"),
          ("logits>probs", "Averaging the reliable outputs as logits (the code) beats "
           "averaging probabilities (the poster)", {"teacher_space": "probs"},
           "the published code averages logits"))),
)
"""Every claim the book checks on the hard digits (profile ``default``), once each, in chapter
order within their groups; ``source="diagnosis"`` marks our own measurements."""

MNIST_CLAIMS: tuple[Claim, ...] = (
    *_static_claims("mnist", "11_verdicts", (4,)),
    _beats("mnist:esd>=bptt", "11_verdicts",
           "One-step ESD is at least as accurate as BPTT (T = 4)",
           _esd(4, "mnist"), _cell("mnist", method="bptt", T=4),
           "one-step ESD above the BPTT methods of Table 1", kind="non-inferiority",
           margin=MARGIN),
    _beats("mnist:esd>sd", "11_verdicts",
           "ESD's reliability-decoupled teacher beats standard self-distillation",
           _esd(4, "mnist"), _cell("mnist", method="sd", T=4),
           "the paper's ablation: ESD above standard SD"),
)
"""The claims of the ``mnist`` profile (real handwritten digits, chapter 11): the same
comparisons at T = 4 on a second, real data set."""

PARITY_CLAIMS: tuple[Claim, ...] = (
    Claim("bf16=fp32:esd", "06_scalability",
          "ESD: bf16 autocast trains to the accuracy of fp32", "final_test_acc",
          ((1.0, _cell("precision", method="esd", T=4, precision="bf16", rate_grad_scale="1/T")),
           (-1.0, _cell(_T1, method="esd", T=4, precision="fp32", rate_grad_scale="1/T"))),
          "not a paper claim: bf16 − fp32 on paired seeds", kind="equivalence", margin=MARGIN,
          source="diagnosis"),
)
"""Accuracy parity of bf16 with fp32 for ESD (chapter 6): an equivalence claim (TOST,
±:data:`MARGIN`), not a claim of the paper, so not in :data:`CLAIMS`. The default grid runs
bf16 for ESD only (BPTT and RateBP in bf16 were traded for its time budget)."""


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


def claims_table(df: pd.DataFrame, claims: Sequence[Claim] = CLAIMS, *,
                 chapter: str | None = None) -> pd.DataFrame:
    """Every claim with its kind, per-seed differences, interval, verdict and power.

    Args:
        df: Run records of one profile (:func:`esdlib.train.records.load_records`).
        claims: The claims to evaluate (default: all of :data:`CLAIMS`).
        chapter: Only the claims of this chapter (notebook stem).

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


def cell_table(df: pd.DataFrame, claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
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
                  claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
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
                     claims: Sequence[Claim] = CLAIMS, *,
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


def format_seeds(seeds: Iterable[int]) -> str:
    """Seeds as ranges: ``[0, 1, 2, 3, 4, 7]`` → ``"0-4, 7"``."""
    seeds = sorted(set(int(s) for s in seeds))
    parts, start = [], None
    for i, s in enumerate(seeds):
        if start is None:
            start = s
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            parts.append(str(start) if start == s else f"{start}-{s}")
            start = None
    return ", ".join(parts)


def format_interval(low: float, high: float) -> str:
    """``"[+a, +b]"`` with two decimals, or ``"—"`` when the interval is undefined (n < 2)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "—"
    return f"[{low:+.2f}, {high:+.2f}]"
