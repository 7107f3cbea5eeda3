"""Paired-seed tests: the rule that turns per-seed differences into a verdict.

The evidence for a statement is a per-seed statistic ``d_s`` (runs that share the seed ``s`` see
the same train/test split, so the comparison is paired), signed so that the claimed direction is
positive. With ``n`` seeds, mean ``m`` and sample standard deviation ``sd`` of the ``d_s``, and
the two-sided Student-t interval ``m ± t(·, n - 1) · sd / sqrt(n)``; fewer than ``MIN_PAIRS``
(5) seeds give **no verdict**:

* **superiority** ("A beats B", :func:`superiority_verdict`, 95 % interval): above 0 —
  **supported**; below 0 — **contradicted**; otherwise **not separable**;
* **non-inferiority** ("A does at least as well as B", margin ``δ``,
  :func:`non_inferiority_verdict`, 95 % interval): above ``−δ`` — **non-inferior**; below
  ``−δ`` — **inferior by more than δ**; otherwise **inconclusive**;
* **equivalence** ("A equals B", margin ``δ``, :func:`equivalence_verdict`: two one-sided
  tests at 5 %, i.e. the 90 % interval): inside ``(−δ, δ)`` — **equivalent within ±δ**;
  entirely outside — **not equivalent**; otherwise **inconclusive**.

:func:`is_close` says whether a verdict lies near a decision boundary; :func:`format_interval`,
:func:`format_margin` and :func:`format_seeds` write intervals, margins and seed sets as tables
show them. What is compared (claims, cells of runs, metrics) is :mod:`esdlib.analysis.evidence`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CONFIDENCE",
    "KINDS",
    "MIN_PAIRS",
    "NEAR",
    "NO_VERDICT",
    "POWER",
    "VERDICTS",
    "Verdict",
    "equivalence_verdict",
    "format_interval",
    "format_margin",
    "format_seeds",
    "is_close",
    "non_inferiority_verdict",
    "paired_verdict",
    "superiority_verdict",
]

MIN_PAIRS = 5
"""Fewest paired seeds a verdict is computed from."""

CONFIDENCE = 0.95
"""Coverage of the two-sided Student-t interval of the mean paired difference."""

VERDICTS = ("supported", "not separable", "contradicted")
"""The three superiority verdicts, in the claim's favour first."""

NO_VERDICT = "no verdict (fewer than 5 paired runs)"
"""The label of a claim with fewer than :data:`MIN_PAIRS` paired seeds."""

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
accuracy verdict *close* (:func:`is_close`; each metric has its own
:attr:`esdlib.analysis.evidence.Metric.near`): such claims get more paired seeds (up to 10)."""

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
"""The superiority test under its first name: :func:`superiority_verdict`."""


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

def is_close(v: Verdict, *, near: float = NEAR) -> bool:
    """Whether an end of the interval lies within ``near`` of a decision boundary (0 for
    superiority, ``−δ`` for non-inferiority, ``±δ`` for equivalence): such a verdict could
    change with a few more seeds, so the design gives it more."""
    if not (math.isfinite(v.ci_low) and math.isfinite(v.ci_high)):
        return False
    bounds = {"superiority": (0.0,), "non-inferiority": (-v.margin,),
              "equivalence": (-v.margin, v.margin)}[v.kind]
    return any(abs(end - b) <= near for end in (v.ci_low, v.ci_high) for b in bounds)

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
