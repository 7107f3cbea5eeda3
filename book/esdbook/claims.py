"""The claims the book checks, each with the chapter that discusses it and what the paper reports.

:data:`CLAIMS` are the claims on the hard digits (profile ``default``), :data:`MNIST_CLAIMS`
those of the ``mnist`` profile (chapter 11), :data:`PARITY_CLAIMS` the bf16 parity check of
chapter 6; each comparison once. They are evaluated by :mod:`esdlib.analysis.evidence`
(:func:`~esdlib.analysis.evidence.claims_table` and friends take them explicitly).

A claim's ``paper`` text quotes the paper's numbers; they are read from ``results/paper/*.csv``
(:func:`esdlib.load_paper_table`), never typed here: :func:`static_gap`, :func:`gain_pair`,
:func:`dvs_gap`, :func:`firing_gap` and :func:`bptt_reference` write them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from esdbook.paper import PAPER_DVS_ROWS, PAPER_METHOD_NAMES, paper_value
from esdlib.analysis.evidence import Cell, Claim

__all__ = ["CLAIMS", "MARGIN", "MNIST_CLAIMS", "PARITY_CLAIMS", "bptt_reference", "by_key",
           "dvs_gap", "firing_gap", "gain_pair", "paper_table", "static_gap"]

MARGIN = 1.0
"""Margin ``δ`` of the non-inferiority and equivalence claims, in accuracy points: on the hard
digits one point is about 9 of the 899 test images, on MNIST 100 of 10,000 — the smallest
difference a reader of the paper's tables would call a difference (its gaps are 0.3-1 pt)."""

PAPER_ARCH = "ResNet-18"
"""The paper's architecture our network matches (the rows the claims quote)."""

_DATASET_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "cifar10_dvs": "CIFAR10-DVS"}


@functools.cache
def paper_table(name: str) -> pd.DataFrame:
    """A table of this checkout's ``results/paper`` (:func:`esdlib.load_paper_table`), read once."""
    from esdlib.train import paths
    from esdlib.train.records import load_paper_table

    return load_paper_table(name, paths.results_dir(paths.code_root()))


def _gap(where: str, a: float, b: float, digits: int = 2, diff_digits: int = 2) -> str:
    """``"<where>: a vs b (+a−b)"``, or ``"not reported (<where>)"`` when a value is missing."""
    if math.isnan(a) or math.isnan(b):
        return f"not reported ({where})"
    diff = f"{a - b:+.{diff_digits}f}".replace("-", "−")
    return f"{where}: {a:.{digits}f} vs {b:.{digits}f} ({diff})"


def _static(method: str, T: int, arch: str = PAPER_ARCH, column: str = "cifar10") -> float:
    return paper_value(paper_table("table1_static"), column, method, arch, T)


def static_gap(T: int, column: str = "cifar10") -> str:
    """The paper's ESD vs RateBP at ``T`` (Table 1), e.g.
    ``"CIFAR-10, ResNet-18, T = 4: 95.92 vs 95.61 (+0.31)"``; ``"not reported (T = 3)"``."""
    esd, rate = (_static(PAPER_METHOD_NAMES[m], T, column=column) for m in ("esd", "ratebp"))
    if math.isnan(esd) or math.isnan(rate):
        return f"not reported (T = {T})"
    return _gap(f"{_DATASET_LABELS[column]}, {PAPER_ARCH}, T = {T}", esd, rate)


def gain_pair(T_small: int, T_large: int, column: str = "cifar10") -> str:
    """The paper's ESD − RateBP gain at two T, e.g.
    ``"CIFAR-10, ResNet-18: +0.54 at T = 2 vs +0.29 at T = 6"``."""
    gains = [_static(PAPER_METHOD_NAMES["esd"], T, column=column)
             - _static(PAPER_METHOD_NAMES["ratebp"], T, column=column) for T in (T_small, T_large)]
    return (f"{_DATASET_LABELS[column]}, {PAPER_ARCH}: {gains[0]:+.2f} at T = {T_small} vs "
            f"{gains[1]:+.2f} at T = {T_large}")


def bptt_reference(method: str = "TET", arch: str = "ResNet-19", T: int = 4) -> str:
    """One-step ESD next to a BPTT method of Table 1, e.g. ``"one-step ESD (ResNet-18, T = 4:
    95.92) above the BPTT methods of Table 1 (e.g. TET, ResNet-19, T = 4: 94.44)"``."""
    esd = _static(PAPER_METHOD_NAMES["esd"], T)
    other = _static(method, T, arch=arch)
    return (f"one-step ESD ({PAPER_ARCH}, T = {T}: {esd:.2f}) above the BPTT methods of Table 1 "
            f"(e.g. {method}, {arch}, T = {T}: {other:.2f})")


def dvs_gap(a: str, b: str, T: int = 10) -> str:
    """The paper's CIFAR10-DVS accuracy of our method ``a`` vs ``b`` (keys of
    :data:`esdbook.paper.PAPER_DVS_ROWS`), e.g.
    ``"CIFAR10-DVS, ResNet-18, T = 10: 81.40 vs 80.40 (+1.00)"``."""
    table = paper_table("table_dvs")
    va, vb = (paper_value(table, "cifar10_dvs", PAPER_DVS_ROWS[m][0], PAPER_ARCH, T,
                          training=PAPER_DVS_ROWS[m][1]) for m in (a, b))
    return _gap(f"{_DATASET_LABELS['cifar10_dvs']}, {PAPER_ARCH}, T = {T}", va, vb)


def firing_gap(T: int = 4, column: str = "avg") -> str:
    """The paper's mean firing rate of ESD vs BPTT (its firing-rate figure: CIFAR-10,
    ResNet-18), e.g. ``"CIFAR-10, ResNet-18, T = 4: 0.1680 vs 0.2018 (−0.034)"``."""
    rates = paper_table("firing_rates")
    rows = rates[rates["trained_T"] == T].set_index("method")[column]
    return _gap(f"{_DATASET_LABELS['cifar10']}, {PAPER_ARCH}, T = {T}",
                float(rows.get("ESD", math.nan)), float(rows.get("BPTT", math.nan)),
                digits=4, diff_digits=3)


# ---------------------------------------------------------------------------
# The claims
# ---------------------------------------------------------------------------

_T1 = "table1"
_R18 = {"arch": "spiking_resnet18"}  # the book's network (a folder may hold other networks)


def _cell(experiment: str, **where: Any) -> Cell:
    return Cell(experiment, {**where, **_R18})


def _beats(key: str, chapter: str, text: str, a: Cell, b: Cell, paper: str,
           metric: str = "final_test_acc", sign: float = 1.0, **kw: Any) -> Claim:
    return Claim(key, chapter, text, metric, ((sign, a), (-sign, b)), paper, **kw)


def _esd(T: int = 4, experiment: str = _T1) -> Cell:
    return _cell(experiment, method="esd", T=T)


def _ratebp(T: int = 4, recipe: str = "1/T", experiment: str = _T1) -> Cell:
    return _cell(experiment, method="ratebp", T=T, rate_grad_scale=recipe)


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
                          static_gap(T)))
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


def _ablation_claims(beta_alt: float = 0.5) -> tuple[Claim, ...]:
    """The ablation experiment's cells against the default ESD cell (chapter 9); β of the
    default cell and of the paper come from the run layer's defaults and paper settings."""
    from esdlib.train.config import PAPER_HPARAMS, RunConfig

    beta, beta_paper = RunConfig.beta, PAPER_HPARAMS["cifar10"]["beta"]
    dsconv = _beats("ablation:dsconv>=conv", "09_ablations",
                    "Depthwise-separable branches do at least as well as plain convolution "
                    "branches", _esd(), _cell("ablation", branch_kind="conv"),
                    "the paper's branch design: comparable accuracy with fewer parameters",
                    kind="non-inferiority", margin=MARGIN)
    return (dsconv, *(
        _beats(f"ablation:{key}", "09_ablations", text, _esd(), _cell("ablation", **where), paper)
        for key, text, where, paper in (
            (f"beta{beta:g}>beta{beta_alt:g}", f"β = {beta:g} beats β = {beta_alt:g}",
             {"beta": beta_alt}, f"the paper's choice β = {beta_paper:g}"),
            ("logits>probs", "Averaging the reliable outputs as logits (the code) beats "
             "averaging probabilities (the poster)", {"teacher_space": "probs"},
             "the published code averages logits"))))


def _dvs_claims() -> tuple[Claim, ...]:
    """The event-data claims (chapter 5)."""
    return (
        _beats("dvs:esd>ratebp", "05_dvs", "On event data, ESD is more accurate than RateBP",
               _cell("dvs", method="esd"), _cell("dvs", method="ratebp"),
               dvs_gap("esd", "ratebp")),
        _beats("dvs:esd_bptt>esd", "05_dvs",
               "On event data, ESD on BPTT is more accurate than one-step ESD",
               _cell("dvs", method="esd_bptt"), _cell("dvs", method="esd"),
               dvs_gap("esd_bptt", "esd")),
        _beats("dvs:ratebp_none>ratebp_1/T", "05_dvs",
               "Our diagnosis: on event data RateBP trains better with the published RateBP DVS "
               "recipe (plain CE) than with ESD's 1/T loss scaling",
               _cell("dvs", method="ratebp"), _cell("dvs_scaling", method="ratebp"),
               "not a paper claim: the official RateBP DVS script uses plain CE, the ESD scripts "
               "divide the loss by T", source="diagnosis"))


CLAIMS: tuple[Claim, ...] = (
    *_static_claims(_T1, "04_table1_static", (4, 2, 6)),
    Claim("gain@T2>gain@T6", "04_table1_static",
          "ESD's gain over RateBP (1/T) is larger at T = 2 than at T = 6", "final_test_acc",
          ((1.0, _esd(2)), (-1.0, _ratebp(2)), (-1.0, _esd(6)), (1.0, _ratebp(6))),
          gain_pair(2, 6)),
    _beats("esd>=bptt", "04_table1_static",
           "One-step ESD is at least as accurate as BPTT (T = 4)",
           _esd(), _cell(_T1, method="bptt", T=4), bptt_reference(),
           kind="non-inferiority", margin=MARGIN),
    _beats("esd>sd", "09_ablations",
           "ESD's reliability-decoupled teacher beats standard self-distillation",
           _esd(), _cell(_T1, method="sd", T=4),
           "the paper's ablation: ESD above standard SD"),
    *_dvs_claims(),
    _beats("firing:esd<bptt", "07_firing_rates", "ESD fires less than BPTT (T = 4)",
           _esd(), _cell(_T1, method="bptt", T=4), firing_gap(4),
           metric="firing_rate_mean", sign=-1.0),
    Claim("K_esd<=K_rate", "08_gradient_error",
          "ESD's gradient is closer to the BPTT gradient than RateBP's (K_esd ≤ K_rate)",
          "gradient_gap", ((1.0, _cell("gradient_error", method="esd")),),
          "the poster's inequality K_esd ≤ K_rate (no numbers)"),
    *_ablation_claims(),
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


def by_key(key: str, claims: Sequence[Claim] = CLAIMS + MNIST_CLAIMS + PARITY_CLAIMS) -> Claim:
    """The claim with this key (``KeyError`` naming the keys if none)."""
    for claim in claims:
        if claim.key == key:
            return claim
    raise KeyError(f"no claim {key!r}; claims: {', '.join(c.key for c in claims)}")
