"""Tables and figures of the book, built from run records and the paper's CSVs.

Every reproduced number carries its scale (data set, image size, width, epochs, seeds): our
default-profile runs use scikit-learn's digits, the paper's use CIFAR/ImageNet/CIFAR10-DVS, so
absolute accuracies are not comparable; the *relative* claims (ESD vs RateBP vs BPTT, memory vs
T, firing rates) are what the book checks. Functions return pandas DataFrames or matplotlib
Figures (:func:`new_figure`: a Figure displayed as a cell's last expression appears once) and
never call ``plt.show`` or choose a backend. Missing data gives empty tables or a figure
that says what is missing, never an exception.

Inputs: ``df`` is a records table from :func:`esdlib.load_records` (columns ``config.*``,
``metrics.*``, ``timing.*``); ``records`` are full records from :func:`esdlib.load_record`;
``paper`` is a table from :func:`esdlib.load_paper_table`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from esdlib.methods import BRANCH_METHODS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ACC = "metrics.final_test_acc"
BEST = "metrics.best_test_acc"
METHOD_ORDER = ("bptt", "ratebp", "sd", "esd", "esd_bptt")
METHOD_LABELS = {"bptt": "BPTT", "ratebp": "RateBP", "sd": "Standard SD (rate-BP)",
                 "esd": "ESD (rate-BP)", "esd_bptt": "ESD (BPTT)"}
ARCH_LABELS = {"spiking_resnet18": "ResNet-18", "spiking_resnet19": "ResNet-19",
               "preact_spiking_resnet34": "PreAct-ResNet-34"}

PAPER_METHOD_NAMES = {"esd": "ESD (ours in paper)", "ratebp": "RateBP"}
"""Our method → its row name in ``table1_static`` (methods without a paper row are absent)."""

PAPER_DVS_ROWS = {"ratebp": ("RateBP", "one-step"), "esd": ("ESD (ours in paper)", "one-step"),
                  "esd_bptt": ("ESD (ours in paper)", "BPTT")}
"""Our method → ``(method, training)`` of its row in ``table_dvs``."""

FIRING_LABELS = {"bptt": "BPTT", "esd": "ESD"}
"""Our method → its name in the paper's ``firing_rates`` table."""

DATASET_SHAPES = {"digits": (1, 10), "dvs_digits": (2, 10), "digits_hard": (1, 10),
                  "dvs_digits_hard": (2, 10), "cifar10": (3, 10),
                  "cifar100": (3, 100), "imagenet": (3, 1000), "cifar10_dvs": (2, 10)}
"""``(input channels, classes)`` per data set, to rebuild a model without loading its data."""

ABLATION_FACTORS = ("method", "branch_kind", "beta", "teacher_space", "eta")
"""Config fields an ablation run may change relative to the ESD reference configuration."""

FACTOR_LABELS = {"method": "distillation", "branch_kind": "branch kind", "beta": "β",
                 "teacher_space": "teacher space",
                 "eta": "η·R (R = OUR ASSUMPTION: log K − H(softmax(z/τ)))"}

CHAPTER_EXPERIMENTS = {
    "04_table1_static": ("table1",),
    "05_dvs": ("dvs", "dvs_scaling"),
    "06_scalability": ("bench", "table1", "precision"),
    "07_firing_rates": ("table1",),
    "08_gradient_error": ("gradient_error",),
    "09_ablations": ("table1", "ablation"),
    "11_verdicts": ("table1", "dvs", "dvs_scaling", "ablation", "gradient_error"),
}
"""Which experiments (folders of ``results/``; ``bench`` = ``results/bench/*.json``) each
reproduction chapter reads (chapter 10, provenance, reads all of them)."""

_T_COL = "config.T"
DAMAGED_MARKER = "damaged record:"
"""Text a page shows for each record file that could not be read (``status == "damaged"``
rows of ``load_records(strict=False)``); the strict book build fails on pages that show it
(:func:`esdlib.bookbuild.damaged_record_pages`)."""


def new_figure(**kwargs: Any) -> Figure:
    """A matplotlib Figure for a book page, shown once when it is a cell's last expression.

    Made with ``pyplot`` (so that the notebook's inline backend is active and registers its
    image formatter) and closed at once (so that the backend does not show it a second time at
    the end of the cell); it can still be drawn, displayed and saved. No backend is chosen here.

    Args:
        **kwargs: :func:`matplotlib.pyplot.figure` arguments (``figsize``, ``layout``...).
    """
    import matplotlib.pyplot as plt

    fig = plt.figure(**kwargs)
    plt.close(fig)
    return fig


# ---------------------------------------------------------------------------
# Scale and aggregation
# ---------------------------------------------------------------------------


def complete(df: pd.DataFrame) -> pd.DataFrame:
    """Only the records whose run finished (``status == "complete"``)."""
    return df[df["status"] == "complete"] if len(df) else df


def runs_of(df: pd.DataFrame, profile: str) -> pd.DataFrame:
    """The complete runs of one profile (a book page shows the runs of the profile it was
    executed with; runs of other profiles are at other scales)."""
    d = complete(df)
    return d[d["config.profile"] == profile] if len(d) else d


def damaged(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of record files that could not be read (``status == "damaged"``)."""
    return df[df["status"] == "damaged"] if len(df) else df


def damaged_note(df: pd.DataFrame) -> str:
    """Prose naming every damaged record file: ``"damaged record: <path> (<problem>)"``, one
    per file joined by ``"; "``; empty when there is none."""
    return "; ".join(damaged_labels(damaged(df)))


def damaged_labels(df: pd.DataFrame) -> list[str]:
    """``"damaged record: <path> (<problem>)"`` for each row of ``df`` (damaged rows)."""
    errors = df["error"] if "error" in df else [""] * len(df)
    return [f"{DAMAGED_MARKER} {p} ({e})" for p, e in zip(df["path"], errors, strict=True)]


def profile_note(df: pd.DataFrame, profile: str) -> str:
    """Prose: how many complete runs of ``profile`` ``df`` holds, and what was left out
    (records of other profiles, diverged runs, unfinished or failed runs, and -- named one by
    one -- damaged record files, see :func:`damaged_note`)."""
    runs = runs_of(df, profile)
    other = len(complete(df)) - len(runs)
    diverged = int((df["status"] == "diverged").sum()) if len(df) else 0
    unfinished = len(df) - len(complete(df)) - diverged - len(damaged(df)) if len(df) else 0
    text = f"{len(runs)} complete run{'s' if len(runs) != 1 else ''} of the {profile} profile"
    left = []
    if other:
        left.append(f"{other} complete run{'s' if other != 1 else ''} of other profiles")
    if diverged:  # training stopped on NaN/inf: no result, but said so on the page
        left.append(f"{diverged} diverged run{'s' if diverged != 1 else ''}")
    if unfinished:
        left.append(f"{unfinished} unfinished or failed run{'s' if unfinished != 1 else ''}")
    note = damaged_note(df)
    stale = len(runs_before_branch_fix(runs))
    return (text + (f" ({' and '.join(left)} not shown)" if left else "")
            + (f". Not shown, unreadable: {note}" if note else "")
            + (f". {stale} of these runs trained auxiliary branches "
               "before the published branch block was adopted (2026-11-26): their branches "
               "are the wider `dsconv_wide` block, so their numbers await a re-run"
               if stale else ""))


def runs_before_branch_fix(df: pd.DataFrame) -> pd.DataFrame:
    """Complete runs of branch methods whose record predates the published branch block.

    Records written since 2026-11-26 carry the model's parameter counts
    (``branch_params``); a branch-method record without them was trained with the earlier,
    wider block that esdlib now calls ``"dsconv_wide"``.
    """
    if not len(df) or "config.method" not in df:
        return df.iloc[0:0]
    counts = df["branch_params"] if "branch_params" in df else pd.Series(None, index=df.index)
    done = df["status"] == "complete"
    return df[done & df["config.method"].isin(BRANCH_METHODS) & counts.isna()]


def _distinct(df: pd.DataFrame, col: str) -> list[Any]:
    if col not in df:
        return []
    return sorted(df[col].dropna().unique())


def scale_of(df: pd.DataFrame) -> str:
    """One scale string for a set of runs: data set, size, width, epochs, seeds, step cap.

    Each part lists the distinct values, e.g. ``"digits, 16×16, width ×0.25, 12 epochs,
    3 seeds (0, 1, 2)"``; a per-epoch cap on optimiser steps (smoke profile) is appended.
    """
    if not len(df):
        return "no runs"
    parts = [" / ".join(str(v) for v in _distinct(df, "config.dataset"))]
    sizes = _distinct(df, "config.image_size")
    parts.append(" / ".join(f"{int(v)}×{int(v)}" for v in sizes) if sizes else "native size")
    parts.append(" / ".join(f"width ×{v:g}" for v in _distinct(df, "config.width")))
    epochs = _distinct(df, "config.epochs")
    parts.append(" / ".join(str(int(v)) for v in epochs)
                 + (" epoch" if epochs == [1] else " epochs"))
    seeds = [int(s) for s in _distinct(df, "config.seed")]
    if seeds:
        parts.append(f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} "
                     f"({', '.join(map(str, seeds))})")
    caps = _distinct(df, "config.max_train_steps")
    if caps:
        parts.append(f"≤{' / '.join(str(int(c)) for c in caps)} optimiser steps per epoch")
    return ", ".join(p for p in parts if p)


def summarize(df: pd.DataFrame, by: Sequence[str], metric: str = ACC) -> pd.DataFrame:
    """Mean, standard deviation (ddof 1; NaN for one seed) and seed count of ``metric``.

    Args:
        df: records table (:func:`esdlib.load_records`); only complete runs are used.
        by: grouping columns, e.g. ``["config.arch", "config.method", "config.T"]``.
        metric: column to aggregate (accuracies are fractions; reported in %).

    Returns:
        One row per group with ``mean_%``, ``std_%``, ``seeds``.
    """
    df = complete(df)
    if not len(df) or metric not in df:
        return pd.DataFrame(columns=[*by, "mean_%", "std_%", "seeds"])
    g = df.groupby(list(by), dropna=False)[metric]
    out = pd.DataFrame({"mean_%": g.mean() * 100, "std_%": g.std(ddof=1) * 100,
                        "seeds": g.count()}).reset_index()
    return out


def pm(mean: float, std: float) -> str:
    """``"mean ± std"`` with two decimals (``"mean"`` alone when std is NaN)."""
    if std is None or (isinstance(std, float) and np.isnan(std)):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {std:.2f}"


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _arch(arch: str) -> str:
    return ARCH_LABELS.get(arch, arch)


def fmt_signed(x: float | None, unit: str = " pts", digits: int = 2) -> str:
    """``"+1.23 pts"`` / ``"-0.40 pts"``; ``"n/a"`` for None or NaN (for glued prose)."""
    if x is None or x != x:
        return "n/a"
    return f"{x:+.{digits}f}{unit}"


def fmt_num(x: float | None, digits: int = 2, unit: str = "") -> str:
    """``x`` with ``digits`` decimals and ``unit``; ``"n/a"`` for None or NaN."""
    if x is None or x != x:
        return "n/a"
    return f"{x:.{digits}f}{unit}"


def agreement(same_sign: bool | None) -> str:
    """``"agrees with"`` / ``"does not agree with"`` / ``"cannot be compared with"`` (None, NaN)."""
    if same_sign is None or (isinstance(same_sign, float) and same_sign != same_sign):
        return "cannot be compared with"
    return "agrees with" if bool(same_sign) else "does not agree with"


def select_records(records: Iterable[Mapping[str, Any]], *, experiment: str | None = None,
                   methods: Sequence[str] | None = None, arch: str | None = None,
                   complete_only: bool = True) -> list[Mapping[str, Any]]:
    """The full records matching experiment, methods and architecture (complete runs only by
    default), in their original order."""
    return [r for r in records
            if (experiment is None or r["experiment"] == experiment)
            and (methods is None or r["config"]["method"] in methods)
            and (arch is None or r["config"]["arch"] == arch)
            and (not complete_only or r["status"] == "complete")]


def T_coverage(df: pd.DataFrame, wanted: Sequence[int] = (2, 4, 6),
               methods: Sequence[str] | None = None) -> str:
    """Which T the complete runs cover and which of ``wanted`` are missing, as prose.

    Example: ``"runs at T = 2; no T = 4, 6 runs in this profile"``.
    """
    d = complete(df)
    if len(d) and methods is not None:
        d = d[d["config.method"].isin(methods)]
    have = sorted(int(t) for t in d[_T_COL].unique()) if len(d) else []
    if not have:
        return "no complete runs in this profile"
    text = f"runs at T = {', '.join(map(str, have))}"
    missing = [int(t) for t in wanted if int(t) not in have]
    if missing:
        text += f"; no T = {', '.join(map(str, missing))} runs in this profile"
    return text


def missing_methods(df: pd.DataFrame, methods: Sequence[str]) -> str:
    """Prose naming the ``methods`` without a complete run (or saying that all ran)."""
    d = complete(df)
    have = set(d["config.method"]) if len(d) else set()
    missing = [_label(m) for m in methods if m not in have]
    if not missing:
        return f"all of {', '.join(_label(m) for m in methods)} ran"
    return f"no runs of {', '.join(missing)} in this profile"


# ---------------------------------------------------------------------------
# Chapter 4: static images (Table 1)
# ---------------------------------------------------------------------------


def paper_scale(dataset: str) -> str:
    """The scale of the paper's runs on ``dataset``, from the ``paper`` profile's settings."""
    from esdlib.train.config import PAPER_HPARAMS

    h = PAPER_HPARAMS.get(dataset)
    if h is None:
        return f"{dataset} (no paper settings)"
    return (f"{dataset}, {h['image_size']}×{h['image_size']}, width ×{h['width']:g}, "
            f"{h['epochs']} epochs")


def _paper_value(paper: pd.DataFrame, column: str, method: str, arch_label: str,
                 T: int | None = None, training: str | None = None) -> float:
    """The paper's ``column`` for (method, architecture[, T][, training]); NaN if absent."""
    if column not in paper:
        return np.nan
    sel = (paper["method"] == method) & (paper["architecture"] == arch_label)
    if T is not None:
        sel &= paper["T"] == T
    if training is not None and "training" in paper:
        sel &= paper["training"] == training
    hit = paper.loc[sel, column].dropna()
    return float(hit.iloc[0]) if len(hit) else np.nan


def paper_static_rows(paper: pd.DataFrame,
                      architectures: Sequence[str] = ("ResNet-18", "ResNet-19")) -> pd.DataFrame:
    """The rows of the paper's static table that our runs relate to.

    RateBP (the one-step baseline), ESD and every BPTT-trained method, for ``architectures``.

    Args:
        paper: ``load_paper_table("table1_static")``.
        architectures: paper architecture names to keep.

    Returns:
        Columns method, training, architecture, T and the accuracy columns (%), sorted by
        architecture, training, method and descending T.
    """
    keep = (paper["method"].isin(PAPER_METHOD_NAMES.values()) | (paper["training"] == "BPTT"))
    keep &= paper["architecture"].isin(architectures)
    cols = [c for c in ("method", "training", "architecture", "T", "cifar10", "cifar10_std",
                        "cifar100", "cifar100_std", "imagenet", "uses_pretrained_ann")
            if c in paper]
    out = paper.loc[keep, cols].sort_values(["architecture", "training", "method", "T"],
                                            ascending=[True, True, True, False])
    return out.reset_index(drop=True)


PAPER_STATIC_COLUMNS = ("cifar10", "cifar100", "imagenet")
"""Accuracy columns of ``table1_static`` (data-set names)."""

_DS = "config.dataset"
_GROUP = [_DS, "config.arch", "config.method", _T_COL]


def paper_column(dataset: str, default: str = "cifar10") -> str:
    """The paper column a run is compared with: its own data set when the paper reports it
    (``cifar10``, ``cifar100``, ``imagenet``), else ``default`` (digits → CIFAR-10)."""
    return dataset if dataset in PAPER_STATIC_COLUMNS else default


def _group_runs(df: pd.DataFrame, keys: Sequence[Any]) -> pd.DataFrame:
    d = complete(df)
    sel = np.ones(len(d), dtype=bool)
    for col, val in zip(_GROUP, keys, strict=False):
        sel &= (d[col] == val).to_numpy()
    return d[sel]


def static_comparison(df: pd.DataFrame, paper: pd.DataFrame,
                      paper_dataset: str = "cifar10") -> pd.DataFrame:
    """Our static-image runs next to the paper's rows for the same method, architecture and T.

    Args:
        df: ``table1`` records (complete runs are used).
        paper: ``load_paper_table("table1_static")``.
        paper_dataset: paper column for runs on a data set the paper does not use (digits);
            runs on CIFAR-10/100 or ImageNet are compared with their own column.

    Returns:
        Rows (dataset, arch, method, T) with our ``mean ± std`` of the final-epoch accuracy, the
        seed count, the paper's value for the matching row (ESD → "ESD (ours in paper)", RateBP
        → "RateBP"; NaN for methods the paper does not list at this architecture and T) and the
        paper column it comes from, their difference in points, and both scales (ours per row).
    """
    cols = ["dataset", "architecture", "method", "T", "ours_%", "seeds", "paper_%",
            "paper column", "difference_pts", "our scale", "paper scale"]
    s = summarize(df, _GROUP)
    rows = []
    for _, r in s.iterrows():
        arch = _arch(r["config.arch"])
        col = paper_column(r[_DS], paper_dataset)
        pv = _paper_value(paper, col, PAPER_METHOD_NAMES.get(r["config.method"], "—"), arch,
                          int(r[_T_COL]))
        rows.append({"dataset": r[_DS], "architecture": arch, "method": _label(r["config.method"]),
                     "T": int(r[_T_COL]), "ours_%": pm(r["mean_%"], r["std_%"]),
                     "seeds": int(r["seeds"]), "paper_%": pv, "paper column": col,
                     "difference_pts": r["mean_%"] - pv if pv == pv else np.nan,
                     "our scale": scale_of(_group_runs(df, [r[k] for k in _GROUP])),
                     "paper scale": paper_scale(col)})
    return pd.DataFrame(rows, columns=cols)


def final_and_best(df: pd.DataFrame, by: Sequence[str] = tuple(_GROUP)) -> pd.DataFrame:
    """Final-epoch accuracy (our headline) next to the best epoch chosen on the test set.

    The official code reports the best epoch selected on the test set (there is no validation
    split), which is optimistic; we report the last epoch and show the best one beside it.

    Returns:
        One row per group: ``final_%`` and ``best_%`` (mean ± std over seeds), ``best−final_pts``
        (difference of the means) and ``seeds``.
    """
    f = summarize(df, list(by), ACC)
    b = summarize(df, list(by), BEST)
    cols = ["dataset", "architecture", "method", "T", "final_%", "best_%", "best−final_pts",
            "seeds"]
    if not len(f) or not len(b):
        return pd.DataFrame(columns=cols)
    m = f.merge(b, on=list(by), suffixes=("_f", "_b"))
    out = pd.DataFrame({
        "dataset": m[_DS] if _DS in m else "",
        "architecture": m["config.arch"].map(_arch) if "config.arch" in m else "",
        "method": m["config.method"].map(_label) if "config.method" in m else "",
        "T": m[_T_COL].astype(int) if _T_COL in m else np.nan,
        "final_%": [pm(a, s) for a, s in zip(m["mean_%_f"], m["std_%_f"], strict=True)],
        "best_%": [pm(a, s) for a, s in zip(m["mean_%_b"], m["std_%_b"], strict=True)],
        "best−final_pts": (m["mean_%_b"] - m["mean_%_f"]).round(2),
        "seeds": m["seeds_f"].astype(int),
    })
    return out[cols]


def method_gains(df: pd.DataFrame, paper: pd.DataFrame, base: str = "ratebp",
                 target: str = "esd", paper_dataset: str = "cifar10") -> pd.DataFrame:
    """The paper's relative claim ``target − base`` (points) vs ours, per data set, arch and T.

    Args:
        df: ``table1`` records (complete runs are used).
        paper: the paper's static table.
        base: baseline method (``ratebp``).
        target: compared method (``esd``).
        paper_dataset: paper column for runs on a data set the paper does not use (digits);
            runs on a paper data set are compared with their own column only (a CIFAR-10 run
            yields no row when ``paper_dataset="cifar100"``).

    Returns:
        Rows (dataset, arch, T) where both methods ran, with ``paper_dataset`` (the paper column
        used), ``ours_gain_pts`` (difference of the means over seeds), ``paper_gain_pts`` (NaN
        where the paper has no matching pair) and ``same_sign`` (None where it has no pair).
    """
    cols = ["dataset", "architecture", "T", "paper_dataset", "ours_gain_pts", "paper_gain_pts",
            "same_sign"]
    s = summarize(df, _GROUP)
    rows = []
    for (ds, arch, T), grp in s.groupby([_DS, "config.arch", _T_COL]):
        m = grp.set_index("config.method")["mean_%"]
        col = paper_column(ds, paper_dataset)
        if base not in m or target not in m or (ds in PAPER_STATIC_COLUMNS
                                                 and col != paper_dataset):
            continue
        label = _arch(arch)
        vals = [_paper_value(paper, col, PAPER_METHOD_NAMES.get(meth, "—"), label, int(T))
                for meth in (target, base)]
        ours = float(m[target] - m[base])
        theirs = vals[0] - vals[1]
        rows.append({"dataset": ds, "architecture": label, "T": int(T), "paper_dataset": col,
                     "ours_gain_pts": ours, "paper_gain_pts": theirs,
                     "same_sign": bool(np.sign(ours) == np.sign(theirs)) if theirs == theirs
                     else None})
    return pd.DataFrame(rows, columns=cols)


def gain_table(df: pd.DataFrame, paper: pd.DataFrame,
               datasets: Sequence[str] = ("cifar10", "cifar100"), base: str = "ratebp",
               target: str = "esd") -> pd.DataFrame:
    """:func:`method_gains` against each paper column of ``datasets``, stacked: a digits run
    is compared with every column, a CIFAR run with its own."""
    frames = [method_gains(df, paper, base, target, d) for d in datasets]
    return pd.concat(frames, ignore_index=True).sort_values(
        ["dataset", "architecture", "T", "paper_dataset"], ignore_index=True)


def train_command(dataset: str, method: str, *, arch: str | None = None, T: int | None = None,
                  seed: int | None = None, split: str | None = None,
                  experiment: str | None = None, data_root: str | None = None,
                  gpus: int = 1) -> str:
    """The shell command that trains one paper-profile configuration, validated first.

    Args:
        dataset: a paper data set (``cifar10``, ``cifar100``, ``imagenet``, ``cifar10_dvs``).
        method: training method.
        arch, seed, split: overrides (``None`` = the paper profile's value, not written).
        experiment: records folder under ``results/`` the chapter reads (e.g. ``table1``).
        T: timesteps (``None`` = the paper profile's value for ``dataset``; always written).
        data_root: folder of the data set (default ``/path/to/<dataset>``).
        gpus: > 1 launches ``torchrun --nproc_per_node gpus -m esdlib.cli`` (DDP).

    Returns:
        e.g. ``"esd train --profile paper --set dataset=cifar10 --set method=esd --set T=6
        --set data_root=/path/to/cifar10"`` (one line).

    Raises:
        esdlib.ConfigError: the overrides do not make a valid run configuration.
    """
    from esdlib.train.config import RunConfig

    sets = [f"dataset={dataset}", f"method={method}"]
    for key, value in (("experiment", experiment), ("arch", arch), ("seed", seed),
                       ("split", split)):
        if value is not None:
            sets.append(f"{key}={value}")
    sets.append(f"T={T if T is not None else RunConfig.from_overrides('paper', sets).T}")
    sets.append(f"data_root={data_root or '/path/to/' + dataset}")
    RunConfig.from_overrides("paper", sets)
    launcher = (f"torchrun --nproc_per_node {gpus} -m esdlib.cli" if gpus > 1 else "esd")
    return f"{launcher} train --profile paper " + " ".join(f"--set {s}" for s in sets)


def paper_commands(datasets: Sequence[str] = ("cifar10", "cifar100"),
                   methods: Sequence[str] = ("esd", "ratebp"),
                   archs: Sequence[str] = ("spiking_resnet18", "spiking_resnet19"),
                   T: int | None = None, gpus: int = 1, **overrides: Any) -> list[str]:
    """:func:`train_command` for every (data set, architecture, method), each validated.

    Args:
        datasets, methods, archs: the grid; ``archs=(None,)`` keeps the profile's architecture.
        T: timesteps (``None`` = the paper profile's value for the data set).
        gpus: GPUs per command (``torchrun`` when > 1).
        **overrides: further keyword arguments of :func:`train_command` (``seed``, ``split``).
    """
    return [train_command(d, m, arch=a, T=T, gpus=gpus, **overrides)
            for d in datasets for a in archs for m in methods]


def paper_gains(paper: pd.DataFrame, datasets: Sequence[str] = ("cifar10", "cifar100"),
                base: str = "RateBP", target: str = "ESD (ours in paper)") -> pd.DataFrame:
    """The paper's own ``target − base`` (points) for every (architecture, T, data set) where
    both rows have a value."""
    a = paper[paper["method"] == target].set_index(["architecture", "T"])
    b = paper[paper["method"] == base].set_index(["architecture", "T"])
    rows = []
    for key in a.index.intersection(b.index):
        for d in datasets:
            gain = a.loc[key, d] - b.loc[key, d]
            if gain == gain:
                rows.append({"architecture": key[0], "T": int(key[1]), "paper_dataset": d,
                             "paper_gain_pts": round(float(gain), 2)})
    return pd.DataFrame(rows, columns=["architecture", "T", "paper_dataset", "paper_gain_pts"])


def static_facts(df: pd.DataFrame, paper: pd.DataFrame) -> dict[str, str]:
    """The values chapter 4 glues into its prose, as display-ready strings ("n/a" if missing).

    Keys: ``scale``, ``T_note``, ``paper_gain_min``, ``paper_gain_max``, ``paper_n_pos``,
    ``paper_n``, ``ours_n_same``, ``ours_n_pairs``, ``ours_gain``, ``paper_gain``,
    ``gain_where``, ``agreement``, ``gain_sentence``, ``best_final_max``, ``imagenet_arch``,
    ``imagenet_T``.
    """
    from esdlib.train.config import PAPER_HPARAMS

    runs = complete(df)
    pg = paper_gains(paper)
    esd_T = sorted(int(t) for t in paper.loc[paper["method"] == PAPER_METHOD_NAMES["esd"], "T"]
                   .unique())
    g = gain_table(runs, paper)
    compared = g[g["same_sign"].notna()]
    facts = {
        "scale": scale_of(runs), "T_note": T_coverage(runs, esd_T),
        "paper_gain_min": fmt_signed(pg["paper_gain_pts"].min() if len(pg) else None),
        "paper_gain_max": fmt_signed(pg["paper_gain_pts"].max() if len(pg) else None),
        "paper_n_pos": str(int((pg["paper_gain_pts"] > 0).sum())), "paper_n": str(len(pg)),
        "ours_n_same": str(int(compared["same_sign"].astype(bool).sum())),
        "ours_n_pairs": str(len(compared)),
        "ours_gain": "n/a", "paper_gain": "n/a", "gain_where": "no architecture/T where both "
        "RateBP and ESD ran", "agreement": agreement(None),
    }
    head = g[g["paper_dataset"] == "cifar10"].sort_values(["architecture", "T"])
    if len(head):
        r18 = head[head["architecture"] == "ResNet-18"]
        r = (r18 if len(r18) else head).iloc[-1]
        facts.update(ours_gain=fmt_signed(r["ours_gain_pts"]),
                     paper_gain=fmt_signed(r["paper_gain_pts"]),
                     gain_where=f"{r['architecture']}, T = {int(r['T'])}",
                     agreement=agreement(r["same_sign"]))
    facts["gain_sentence"] = (
        f"Our difference has the paper's sign in {facts['ours_n_same']} of "
        f"{facts['ours_n_pairs']} comparisons; at {facts['gain_where']} ours is "
        f"{facts['ours_gain']} against the paper's {facts['paper_gain']} on CIFAR-10, so our "
        f"result {facts['agreement']} the paper's claim at this scale." if len(head) else
        "No architecture and T has complete runs of both RateBP and ESD in this profile, so "
        "the claim cannot be checked here.")
    fb = summarize(runs, ["config.arch", "config.method", _T_COL], BEST)
    ff = summarize(runs, ["config.arch", "config.method", _T_COL], ACC)
    gap = (fb["mean_%"] - ff["mean_%"]).max() if len(fb) else None
    facts["best_final_max"] = fmt_num(gap, unit=" points")
    h = PAPER_HPARAMS["imagenet"]
    facts.update(imagenet_arch=str(h["arch"]), imagenet_T=str(h["T"]))
    return facts


def accuracy_vs_T_figure(df: pd.DataFrame, methods: Sequence[str] = METHOD_ORDER) -> Figure:
    """Figure: final test accuracy (mean ± std over seeds) vs T per method and architecture."""
    s = summarize(df, ["config.arch", "config.method", _T_COL])
    s = s[s["config.method"].isin(methods)]
    archs = sorted(s["config.arch"].unique()) or ["—"]
    fig = new_figure(figsize=(5 * len(archs), 3.6), layout="constrained")
    axes = fig.subplots(1, len(archs), squeeze=False)
    for ax, arch in zip(axes[0], archs, strict=True):
        for meth in methods:
            g = s[(s["config.arch"] == arch) & (s["config.method"] == meth)].sort_values(_T_COL)
            if len(g):
                ax.errorbar(g[_T_COL], g["mean_%"], yerr=g["std_%"].fillna(0), marker="o",
                            capsize=3, label=_label(meth))
        if not len(s):
            ax.text(0.5, 0.5, "no complete runs", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_title(_arch(arch))
        ax.set_xlabel("timesteps T")
        ax.set_ylabel("final test accuracy (%)")
        ax.set_xticks(sorted(s[_T_COL].unique()) if len(s) else [])
        ax.grid(alpha=0.3)
        if len(s):
            ax.legend(fontsize=8)
    fig.suptitle(scale_of(complete(df)), fontsize=9)
    return fig


# ---------------------------------------------------------------------------
# Chapter 5: CIFAR10-DVS
# ---------------------------------------------------------------------------


def dvs_comparison(df: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our event-data runs next to the paper's CIFAR10-DVS rows of the same method and training.

    The paper's rows are matched by method, training (one-step vs BPTT) and architecture, not
    by T (the paper uses T = 10 frames; both T are shown).

    Args:
        df: ``dvs`` records (complete runs are used).
        paper: ``load_paper_table("table_dvs")``.

    Returns:
        Rows (dataset, arch, method, T) with our ``mean ± std``, seeds, the split, the paper's
        value and T, and both scales (ours per row).
    """
    s = summarize(df, _GROUP + ["config.split"])
    rows = []
    for _, r in s.iterrows():
        arch = _arch(r["config.arch"])
        name, training = PAPER_DVS_ROWS.get(r["config.method"], ("—", None))
        pv = _paper_value(paper, "cifar10_dvs", name, arch, training=training)
        hit = paper[(paper["method"] == name) & (paper["architecture"] == arch)]
        rows.append({"dataset": r[_DS], "architecture": arch,
                     "method": _label(r["config.method"]),
                     "T": int(r[_T_COL]), "ours_%": pm(r["mean_%"], r["std_%"]),
                     "seeds": int(r["seeds"]), "split": r["config.split"],
                     "paper_cifar10_dvs_%": pv,
                     "paper_T": int(hit["T"].iloc[0]) if len(hit) and pv == pv else np.nan,
                     "our scale": scale_of(_group_runs(df, [r[k] for k in _GROUP])),
                     "paper scale": paper_scale("cifar10_dvs")})
    return pd.DataFrame(rows, columns=["dataset", "architecture", "method", "T", "ours_%",
                                       "seeds", "split", "paper_cifar10_dvs_%", "paper_T",
                                       "our scale", "paper scale"])


def dvs_gains(df: pd.DataFrame, paper: pd.DataFrame, base: str = "esd",
              target: str = "esd_bptt") -> pd.DataFrame:
    """``target − base`` in points, ours vs the paper's CIFAR10-DVS rows, per architecture.

    Default: the paper's claim that ESD trained with BPTT beats ESD trained one-step on DVS.

    Returns:
        Rows (arch, T) where both methods ran: ``ours_gain_pts``, ``paper_gain_pts`` (matched
        by architecture and training, NaN where absent) and ``same_sign``.
    """
    s = summarize(df, ["config.arch", "config.method", _T_COL])
    rows = []
    for (arch, T), grp in s.groupby(["config.arch", _T_COL]):
        m = grp.set_index("config.method")["mean_%"]
        if base not in m or target not in m:
            continue
        label = _arch(arch)
        vals = []
        for meth in (target, base):
            name, training = PAPER_DVS_ROWS.get(meth, ("—", None))
            vals.append(_paper_value(paper, "cifar10_dvs", name, label, training=training))
        ours = float(m[target] - m[base])
        theirs = vals[0] - vals[1]
        rows.append({"architecture": label, "T": int(T),
                     "comparison": f"{_label(target)} − {_label(base)}",
                     "ours_gain_pts": ours, "paper_gain_pts": theirs,
                     "same_sign": bool(np.sign(ours) == np.sign(theirs)) if theirs == theirs
                     else None})
    return pd.DataFrame(rows, columns=["architecture", "T", "comparison", "ours_gain_pts",
                                       "paper_gain_pts", "same_sign"])


def dvs_claims(df: pd.DataFrame, paper: pd.DataFrame,
               pairs: Sequence[tuple[str, str]] = (("esd", "esd_bptt"), ("ratebp", "esd"))
               ) -> pd.DataFrame:
    """:func:`dvs_gains` for several ``(base, target)`` pairs, stacked."""
    return pd.concat([dvs_gains(df, paper, b, t) for b, t in pairs], ignore_index=True)


def dvs_facts(df: pd.DataFrame, paper: pd.DataFrame) -> dict[str, str]:
    """Display-ready values for chapter 5's prose ("n/a" if missing).

    Keys: ``scale``, ``methods_note``, ``paper_esd_bptt``, ``paper_esd_onestep``,
    ``paper_gain``, ``ours_gain``, ``ours_T``, ``agreement``, ``gain_sentence``, ``paper_T``,
    ``paper_beta``.
    """
    from esdlib.train.config import PAPER_HPARAMS

    runs = complete(df)
    bptt = _paper_value(paper, "cifar10_dvs", PAPER_DVS_ROWS["esd_bptt"][0], "ResNet-18",
                        training="BPTT")
    one = _paper_value(paper, "cifar10_dvs", PAPER_DVS_ROWS["esd"][0], "ResNet-18",
                       training="one-step")
    g = dvs_gains(runs, paper)
    g = g[g["architecture"] == "ResNet-18"] if (g["architecture"] == "ResNet-18").any() else g
    h = PAPER_HPARAMS["cifar10_dvs"]
    facts = {"scale": scale_of(runs),
             "methods_note": missing_methods(runs, ("ratebp", "esd", "bptt", "esd_bptt")),
             "paper_esd_bptt": fmt_num(bptt), "paper_esd_onestep": fmt_num(one),
             "paper_gain": fmt_signed(bptt - one), "ours_gain": "n/a", "ours_T": "n/a",
             "agreement": agreement(None), "paper_T": str(h["T"]), "paper_beta": f"{h['beta']:g}"}
    facts["gain_sentence"] = (
        "This profile has no complete runs of both ESD (rate-BP) and ESD (BPTT) at one "
        "architecture and T, so the claim cannot be checked here.")
    if len(g):
        r = g.sort_values("T").iloc[-1]
        facts.update(ours_gain=fmt_signed(r["ours_gain_pts"]), ours_T=str(int(r["T"])),
                     agreement=agreement(r["same_sign"]))
        facts["gain_sentence"] = (
            f"At T = {facts['ours_T']} our ESD (BPTT) − ESD (rate-BP) difference is "
            f"{facts['ours_gain']} against the paper's {facts['paper_gain']}, so our result "
            f"{facts['agreement']} the paper's claim that BPTT helps ESD on event data.")
    return facts


def data_splits(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The data set, ``split`` setting and the split actually used (``extra.dataset_split``)."""
    rows = {(r["config"]["dataset"], r["config"]["split"],
             (r.get("extra") or {}).get("dataset_split", "—")) for r in records}
    return pd.DataFrame(sorted(rows), columns=["dataset", "split setting", "split used"])


# ---------------------------------------------------------------------------
# Chapter 6: scalability
# ---------------------------------------------------------------------------


def scalability_table(bench: pd.DataFrame) -> pd.DataFrame:
    """Benchmark records as one row per (run, configuration, T): times, ratios, memory.

    Args:
        bench: :func:`esdlib.bench.load_bench` table (may be empty).

    Returns:
        :func:`esdlib.bench.bench_table` with its columns reordered (identification incl. the
        precision, step times, time ratios between methods and to fp32, memory) and rounded to
        3 significant digits; an empty table when there are no benchmark records. Every ratio
        divides two numbers of one run on one machine.
    """
    from esdlib.bench import bench_table

    ident = ["bench_id", "device_name", "threads", "arch", "width", "image_size", "batch",
             "precision", "T"]
    if bench is None or not len(bench):
        return pd.DataFrame(columns=ident)
    t = bench_table(bench)
    cols = list(t.columns)
    steps = [c for c in cols if c.endswith(" step s")]
    ratios = [c for c in cols if c.endswith("/ratebp step") or c.endswith("/esd step")
              or c.endswith(" step /fp32")]
    mem = [c for c in cols if c.endswith(" MiB") or c.endswith(" saved")
           or c.endswith(" saved /fp32")]
    rest = [c for c in cols if c not in {*ident, *steps, *ratios, *mem}]
    out = t[[c for c in ident if c in cols] + steps + ratios + mem + rest]
    out = out.copy()
    for c in out.select_dtypes("float").columns.difference(ident):
        out[c] = out[c].map(lambda v: float(f"{v:.3g}") if v == v else v)
    return out.reset_index(drop=True)


def scalability_figure(bench: pd.DataFrame, bench_id: str | None = None) -> Figure:
    """Step time and saved memory vs T (:func:`esdlib.bench.plot_bench`); a note if no records."""
    if bench is not None and len(bench):
        from esdlib.bench import plot_bench

        fig = new_figure(figsize=(10, 4), layout="constrained")
        return plot_bench(bench, fig.subplots(1, 2), bench_id=bench_id)
    fig = new_figure(figsize=(6, 1.6))
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, "no benchmark records (results/bench/*.json): run `esd bench`",
            ha="center", va="center")
    return fig


SAME_HOST_FILE = "same_host_2026-11.csv"
"""The published implementation and esdlib timed on one host (``results/bench/``; its README
says who measured what, where)."""

SAME_HOST = {"host": "a 2-vCPU Intel Xeon with AVX-512 and AMX", "torch": "2.14.1",
             "threads": 2, "date": "November 2026", "esdlib": "92811e5",
             "config": "spiking ResNet-18 ×1, 3×32×32 input, batch 16, 10 classes, SGD step "
                       "included",
             "how": "the two implementations alternated process by process over two rounds, "
                    "8 clean steps per cell, medians"}
"""How :data:`SAME_HOST_FILE` was measured (from the issue that reported it)."""

_SAME_HOST_COLUMNS = ("T", "implementation", "setup", "step_s")


def same_host_comparison(path: str | Path) -> pd.DataFrame:
    """The published implementation next to esdlib, timed on one host (:data:`SAME_HOST`).

    Args:
        path: the data file (``<results>/bench/`` + :data:`SAME_HOST_FILE`).

    Returns:
        One row per T: ``published s``, then for each esdlib setup ``<setup> s`` and
        ``<setup>/published`` (ratios of numbers measured on the same host; no number of
        another host enters). Empty (with a ``T`` column) when the file is missing.

    Raises:
        ValueError: the file lacks a column or has no ``published`` row.
    """
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=["T"])
    raw = pd.read_csv(path)
    missing = [c for c in _SAME_HOST_COLUMNS if c not in raw]
    if missing or "published" not in set(raw["implementation"]):
        raise ValueError(f"{path}: expected columns {list(_SAME_HOST_COLUMNS)} and rows of "
                         f"implementation 'published' (missing: {missing or 'published rows'})")
    wide = raw.pivot_table(index="T", columns="implementation", values="step_s",
                           aggfunc="first")
    out = pd.DataFrame({"T": wide.index.astype(int), "published s": wide["published"].values})
    for impl in [c for c in dict.fromkeys(raw["implementation"]) if c != "published"]:
        out[f"{impl} s"] = wide[impl].values
        out[f"{impl}/published"] = (wide[impl] / wide["published"]).round(2).values
    return out.reset_index(drop=True)


def same_host_facts(table: pd.DataFrame) -> dict[str, str]:
    """Display values of :func:`same_host_comparison` for the prose: the host, and the ratio
    ranges of each esdlib setup (``train_ratio``, ``bench_ratio``; ``n/a`` when missing)."""
    facts = {"same_host": SAME_HOST["host"], "same_host_torch": SAME_HOST["torch"],
             "same_host_threads": str(SAME_HOST["threads"]), "same_host_date": SAME_HOST["date"],
             "same_host_esdlib": SAME_HOST["esdlib"], "same_host_config": SAME_HOST["config"],
             "same_host_how": SAME_HOST["how"], "train_ratio": "n/a", "bench_ratio": "n/a"}
    for key, impl in (("train_ratio", "esdlib (esd train)"), ("bench_ratio", "esdlib (esd bench)")):
        col = f"{impl}/published"
        if col in table:
            facts[key] = _range(table[col])
    return facts


def _range(values: pd.Series, unit: str = "×") -> str:
    v = values.dropna()
    if not len(v):
        return "n/a"
    lo, hi = float(v.min()), float(v.max())
    return f"{lo:.2f}{unit}" if abs(hi - lo) < 0.005 else f"{lo:.2f}–{hi:.2f}{unit}"


FLAT_MEMORY = 1.1
"""Growth of saved memory over the benchmarked T range below which it counts as flat."""


def bench_facts(bench: pd.DataFrame) -> dict[str, str]:
    """Display-ready values for chapter 6's prose, from the most recent benchmark run.

    Keys: ``n_runs``, ``bench_id``, ``device``, ``threads``, ``config``, ``T_range``,
    ``esd_ratebp_step``, ``bptt_esd_step_Tmax``, ``<method>_saved_growth`` (saved memory at the
    largest T over the smallest, for bptt, ratebp, esd), ``esd_spike_infer`` (ESD spike pass
    over inference at the same T), ``infer_per_T`` (inference seconds per timestep) — all from
    the run's fp32 rows (its first precision if it has no fp32) —, ``esd_bf16_step`` and
    ``esd_bf16_saved`` (ESD in bf16 over fp32, same run), and four sentences: ``bench_intro``
    (which run), ``bench_summary`` (the ratios), ``memory_verdict`` (whether the two-pass
    methods' saved memory stays within :data:`FLAT_MEMORY` while BPTT's grows) and
    ``precision_summary`` (bf16 against fp32, or how to measure it).
    """
    from esdlib.bench import bench_table

    keys = ("bench_id", "device", "threads", "config", "T_range", "esd_ratebp_step",
            "bptt_esd_step_Tmax", "bptt_saved_growth", "ratebp_saved_growth",
            "esd_saved_growth", "esd_spike_infer", "infer_per_T", "esd_bf16_step",
            "esd_bf16_saved")
    facts = {k: "n/a" for k in keys}
    n = 0 if bench is None or not len(bench) else bench["bench_id"].nunique()
    facts.update(n_runs=str(n),
                 bench_intro="There are no benchmark records (results/bench/*.json) for this "
                 "build, so the tables and the figure below are empty; the commands at the end "
                 "of this page produce them.",
                 bench_summary="Without benchmark records no ratio can be computed.",
                 memory_verdict="there are no benchmark records to check it with",
                 precision_summary="There is no benchmark record, so bf16 is not measured here.")
    if not n:
        return facts
    latest = bench.sort_values("created")["bench_id"].iloc[-1]
    run = bench[bench["bench_id"] == latest]
    run = run.assign(precision=run["precision"].fillna("fp32")) if "precision" in run \
        else run.assign(precision="fp32")
    first = run.iloc[0]
    run = run[(run["arch"] == first["arch"]) & (run["batch"] == first["batch"])]
    t_all = bench_table(run)
    main = "fp32" if (run["precision"] == "fp32").any() else str(first["precision"])
    t = t_all[t_all["precision"] == main]
    bf16 = t_all[t_all["precision"] == "bf16"]
    if len(bf16) and "esd step /fp32" in bf16:
        facts["esd_bf16_step"] = _range(bf16["esd step /fp32"])
        facts["esd_bf16_saved"] = _range(bf16["esd saved /fp32"])
        facts["precision_summary"] = (
            f"The run also measured bf16 autocast side by side: over the same T the ESD step "
            f"takes {facts['esd_bf16_step']} its fp32 time and saves {facts['esd_bf16_saved']} "
            "the fp32 bytes for backward (eligibilities stay float32).")
    else:
        others = sorted(set(run["precision"]) - {main})
        facts["precision_summary"] = (
            f"This run measured {main}" + (f" and {', '.join(others)}" if others else " only")
            + "; `esd bench --precision fp32,bf16` times bf16 side by side with fp32 and adds "
            "bf16 rows to the table.")
    run = run[run["precision"] == main]
    Ts = sorted(int(x) for x in t["T"].unique())
    facts.update(bench_id=str(latest), device=str(first["device_name"]),
                 threads=str(int(first["threads"])),
                 config=(f"{first['arch']} ×{float(first['width']):g}, "
                         f"{int(first['image_size'])}×{int(first['image_size'])} input, "
                         f"batch {int(first['batch'])}"),
                 T_range=f"{Ts[0]}–{Ts[-1]}" if len(Ts) > 1 else str(Ts[0]))
    if "esd/ratebp step" in t:
        facts["esd_ratebp_step"] = _range(t["esd/ratebp step"])
    if "bptt/esd step" in t:
        facts["bptt_esd_step_Tmax"] = _range(t.loc[t["T"] == Ts[-1], "bptt/esd step"])
    growth: dict[str, float] = {}
    for m in ("bptt", "ratebp", "esd"):
        col = f"{m} saved MiB"
        if col in t and len(Ts) > 1:
            lo = float(t.loc[t["T"] == Ts[0], col].iloc[0])
            hi = float(t.loc[t["T"] == Ts[-1], col].iloc[0])
            growth[m] = hi / lo if lo else np.nan
            facts[f"{m}_saved_growth"] = fmt_num(growth[m], unit="×")
    esd_rows = run[run["method"] == "esd"]
    if len(esd_rows) and {"spike_pass_s", "infer_s"} <= set(esd_rows.columns):
        facts["esd_spike_infer"] = _range(esd_rows["spike_pass_s"] / esd_rows["infer_s"])
        facts["infer_per_T"] = _range(esd_rows["infer_s"] / esd_rows["T"], unit=" s")
    which = f"The most recent of the {n} benchmark runs, {latest}," if n > 1 else \
        f"The benchmark run {latest}"
    settings = []
    rev = first.get("git_revision")
    if isinstance(rev, str) and rev:
        settings.append(f"code at git revision {rev[:12]}")
    layout = first.get("channels_last")
    if layout is not None and pd.notna(layout):
        settings.append("channels-last" if bool(layout) else "NCHW")
    if bool(first.get("keep_freed_memory") or False):
        settings.append("glibc keeping freed memory (esdlib.train.runtime.keep_freed_memory)")
    facts["bench_intro"] = (
        f"{which} ran on {facts['device']} with {facts['threads']} thread(s) for {facts['config']}"
        + (f", {', '.join(settings)}" if settings else "")
        + " (other configurations of a run appear as further rows).")
    facts["bench_summary"] = (
        f"Over T = {facts['T_range']} ESD takes {facts['esd_ratebp_step']} the step time of "
        f"RateBP (the branches' cost), BPTT takes {facts['bptt_esd_step_Tmax']} the step time "
        f"of ESD at the largest T, and the memory saved for backward grows "
        f"{facts['bptt_saved_growth']} for BPTT, {facts['ratebp_saved_growth']} for RateBP and "
        f"{facts['esd_saved_growth']} for ESD.")
    two_pass = [growth[m] for m in ("ratebp", "esd") if m in growth]
    if "bptt" not in growth or not two_pass or any(g != g for g in [*two_pass, growth["bptt"]]):
        facts["memory_verdict"] = ("it cannot be checked: this run lacks a method or a second "
                                   "value of T")
    elif max(two_pass) < FLAT_MEMORY and growth["bptt"] > max(two_pass):
        facts["memory_verdict"] = (f"it holds here: the two-pass methods stay within "
                                   f"{FLAT_MEMORY - 1:.0%} while BPTT's memory grows "
                                   f"{growth['bptt']:.2f}×")
    else:
        facts["memory_verdict"] = (f"it does not hold here: the two-pass methods grow up to "
                                   f"{max(two_pass):.2f}× against {growth['bptt']:.2f}× for "
                                   "BPTT")
    return facts


def accuracy_vs_T_table(df: pd.DataFrame, methods: Sequence[str] = ("esd",)) -> pd.DataFrame:
    """Final accuracy (mean ± std over seeds) per architecture, method and T, for ``methods``."""
    s = summarize(df, ["config.arch", "config.method", _T_COL])
    s = s[s["config.method"].isin(methods)].sort_values(["config.arch", "config.method", _T_COL])
    return pd.DataFrame({"architecture": s["config.arch"].map(_arch),
                         "method": s["config.method"].map(_label),
                         "T": s[_T_COL].astype(int),
                         "final_%": [pm(a, b) for a, b in zip(s["mean_%"], s["std_%"],
                                                              strict=True)],
                         "seeds": s["seeds"].astype(int)}).reset_index(drop=True)


# ---------------------------------------------------------------------------
# Chapter 7: firing rates
# ---------------------------------------------------------------------------


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
                or (methods is not None and cfg["method"] not in methods)
                or (arch is not None and cfg["arch"] != arch)):
            continue
        per_t = rec["firing_rates"]["per_timestep"]
        row = {"trained_T": int(cfg["T"]), "method": names.get(cfg["method"], cfg["method"])}
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
        key = f"{_arch(c['arch'])}, {_label(c['method'])}, T={c['T']}"
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
        if {_label("bptt"), _label("esd")} <= set(cols):
            both = t[[cols[_label("bptt")], cols[_label("esd")]]].dropna()
            lower += int((both.iloc[:, 1] < both.iloc[:, 0]).sum())
            total += len(both)
    return lower, total


def firing_facts(ours: pd.DataFrame, paper: pd.DataFrame,
                 records: Sequence[Mapping[str, Any]] = (),
                 arch: str = "spiking_resnet18") -> dict[str, str]:
    """Display-ready values for chapter 7's prose.

    Keys: ``paper_less``, ``paper_n``, ``paper_ratio``, ``ours_less``, ``ours_n``,
    ``ours_ratio``, ``ours_T``, ``paper_T``, ``layers_lower``, ``layers_n`` and the sentences
    ``ours_sentence``, ``layers_sentence``.
    """
    p, o = firing_rate_claim(paper), firing_rate_claim(ours)
    lower, n = esd_lower_layers(records, arch)
    ours_T = ", ".join(str(int(t)) for t in ours["trained_T"].unique()) or "none"
    n_less = int(o["ESD fires less"].astype(bool).sum())
    ours_sentence = (
        f"With trained T = {ours_T} here (the paper: "
        f"{', '.join(str(int(t)) for t in paper['trained_T'].unique())}), our ESD fires less "
        f"than our BPTT at {n_less} of {len(o)} trained T, at {_range(o['ESD/BPTT'])} of "
        "BPTT's average rate." if len(o) else
        "This profile has no complete BPTT and ESD runs with firing rates at a common trained "
        "T, so the claim cannot be checked here.")
    layers_sentence = (
        f"ESD's rate is below BPTT's in {lower} of {n} (layer, T) pairs, which shows where in "
        "the network the difference in the network rate comes from." if n else
        "Without BPTT and ESD runs at a common T there is no per-layer comparison.")
    return {"ours_sentence": ours_sentence, "layers_sentence": layers_sentence,
            "paper_less": str(int(p["ESD fires less"].astype(bool).sum())),
            "paper_n": str(len(p)), "paper_ratio": _range(p["ESD/BPTT"]),
            "ours_less": str(int(o["ESD fires less"].astype(bool).sum())),
            "ours_n": str(len(o)), "ours_ratio": _range(o["ESD/BPTT"]),
            "ours_T": ", ".join(str(int(t)) for t in ours["trained_T"].unique()) or "none",
            "paper_T": ", ".join(str(int(t)) for t in paper["trained_T"].unique()),
            "layers_lower": str(lower), "layers_n": str(n)}


def layer_rate_figure(records: Sequence[Mapping[str, Any]]) -> Figure:
    """Figure: per-layer mean firing rate (mean over seeds), one panel per architecture and one
    line per (method, T)."""
    by_arch: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        if rec.get("firing_rates"):
            by_arch.setdefault(rec["config"]["arch"], []).append(rec)
    archs = sorted(by_arch) or ["—"]
    fig = new_figure(figsize=(9, 3.4 * len(archs)), layout="constrained")
    axes = fig.subplots(len(archs), 1, squeeze=False)[:, 0]
    for ax, arch in zip(axes, archs, strict=True):
        table = layer_rate_table(by_arch.get(arch, []))
        if not len(table):
            ax.text(0.5, 0.5, "no firing-rate records", ha="center", va="center",
                    transform=ax.transAxes)
            continue
        for key in table:
            ax.plot(range(len(table)), table[key].to_numpy(), marker=".",
                    label=key.split(", ", 1)[1])
        ax.set_xticks(range(len(table)))
        ax.set_xticklabels(table.index, rotation=90, fontsize=6)
        ax.set_ylabel("mean firing rate")
        ax.set_title(_arch(arch), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------
# Chapter 8: gradient error
# ---------------------------------------------------------------------------


_GRAD_COLS = ["run_id", "T", "seed", "epoch", "K_rate", "K_esd", "cos_rate", "cos_esd",
              "K_esd ≤ K_rate"]


def gradient_error_history(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """All gradient-error measurements of ``records`` (``extra["gradient_error"]``), one row per
    (run, epoch), with whether the poster's inequality ``K_esd ≤ K_rate`` holds."""
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


def _as_history(history: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    h = history if isinstance(history, pd.DataFrame) else pd.DataFrame(list(history))
    if "run_id" not in h and len(h):
        h = h.assign(run_id="run")
    return h


def gradient_error_figure(history: Sequence[Mapping[str, Any]] | pd.DataFrame) -> Figure:
    """Figure: ``K_rate`` and ``K_esd`` (left) and the cosines to the BPTT gradient (right)
    over training epochs; one pair of lines per run.

    Args:
        history: one record's ``extra["gradient_error"]`` list, or
            :func:`gradient_error_history` of several records.
    """
    h = _as_history(history)
    fig = new_figure(figsize=(10, 3.4), layout="constrained")
    ax_k, ax_c = fig.subplots(1, 2)
    if not len(h):
        ax_k.text(0.5, 0.5, "no gradient-error records", ha="center", va="center",
                  transform=ax_k.transAxes)
    runs = list(dict.fromkeys(h["run_id"])) if len(h) else []
    for i, run in enumerate(runs):
        g = h[h["run_id"] == run].sort_values("epoch")
        tag = f" [{i + 1}]" if len(runs) > 1 else ""
        ax_k.plot(g["epoch"], g["K_rate"], "o-", color="C0", label=f"K_rate (RateBP, CE){tag}")
        ax_k.plot(g["epoch"], g["K_esd"], "s-", color="C1", label=f"K_esd (ESD loss){tag}")
        if "cos_rate" in g:
            ax_c.plot(g["epoch"], g["cos_rate"], "o-", color="C0", label=f"RateBP{tag}")
            ax_c.plot(g["epoch"], g["cos_esd"], "s-", color="C1", label=f"ESD{tag}")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_k, ax_c):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_k.set(xlabel="epochs trained", ylabel="‖g_rate − g_BPTT‖ / ‖g_BPTT‖",
             title="relative gradient error K")
    ax_c.set(xlabel="epochs trained", ylabel="cosine(g_rate, g_BPTT)",
             title="direction agreement")
    for ax in (ax_k, ax_c):
        ax.grid(alpha=0.3)
        if runs:
            ax.legend(fontsize=8)
    return fig


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


def gradient_facts(history: pd.DataFrame, per_layer: pd.DataFrame) -> dict[str, str]:
    """Display-ready values for chapter 8's prose.

    Keys: ``n_hold``, ``n_meas``, ``n_runs``, ``verdict``, ``K_rate_first``, ``K_rate_last``,
    ``K_esd_first``, ``K_esd_last``, ``layers_hold``, ``layers_n`` and the sentences
    ``sentence``, ``layers_sentence``.
    """
    n, k = len(history), int(history["K_esd ≤ K_rate"].astype(bool).sum()) if len(history) else 0
    verdict = ("cannot be checked: there are no measurements" if n == 0 else
               "holds in every measurement" if k == n else
               "fails in every measurement" if k == 0 else
               "holds in some measurements and fails in others")
    facts = {"n_hold": str(k), "n_meas": str(n),
             "n_runs": str(history["run_id"].nunique() if n else 0), "verdict": verdict,
             "layers_hold": str(int(per_layer["K_esd ≤ K_rate"].astype(bool).sum())
                                if len(per_layer) else 0),
             "layers_n": str(len(per_layer))}
    for col in ("K_rate", "K_esd"):
        by_epoch = history.groupby("epoch")[col].mean() if n else pd.Series(dtype=float)
        facts[f"{col}_first"] = fmt_num(by_epoch.iloc[0] if n else None, 3)
        facts[f"{col}_last"] = fmt_num(by_epoch.iloc[-1] if n else None, 3)
    facts["sentence"] = (
        f"The poster's inequality K_esd ≤ K_rate {verdict}: it holds in {k} of {n} measurements "
        f"({facts['n_runs']} run{'s' if facts['n_runs'] != '1' else ''}); K_rate goes from "
        f"{facts['K_rate_first']} to {facts['K_rate_last']} and K_esd from "
        f"{facts['K_esd_first']} to {facts['K_esd_last']} (mean over runs, first and last "
        "measurement)." if n else
        "This profile has no gradient-error measurements, so the poster's inequality cannot be "
        "checked here.")
    facts["layers_sentence"] = (
        f"The inequality holds for {facts['layers_hold']} of the {facts['layers_n']} weight "
        "tensors at the end of training." if len(per_layer) else
        "Without measurements there is no per-layer comparison.")
    return facts


# ---------------------------------------------------------------------------
# Chapter 9: ablations
# ---------------------------------------------------------------------------


def distillation_ablation(df: pd.DataFrame,
                          methods: Sequence[str] = ("ratebp", "sd", "esd")) -> pd.DataFrame:
    """No distillation vs standard SD vs ESD at the same architecture and T.

    Returns:
        One row per (arch, T, method) with ``ours_%`` (mean ± std), seeds and
        ``vs_RateBP_pts`` (difference of means to RateBP at the same arch/T; NaN when RateBP
        did not run there).
    """
    s = summarize(df, ["config.arch", _T_COL, "config.method"])
    s = s[s["config.method"].isin(methods)]
    cols = ["architecture", "T", "method", "ours_%", "seeds", "vs_RateBP_pts"]
    if not len(s):
        return pd.DataFrame(columns=cols)
    base = s[s["config.method"] == "ratebp"].set_index(["config.arch", _T_COL])["mean_%"]
    order = {m: i for i, m in enumerate(methods)}
    s = s.assign(_o=s["config.method"].map(order)).sort_values(["config.arch", _T_COL, "_o"])
    rows = []
    for _, r in s.iterrows():
        key = (r["config.arch"], r[_T_COL])
        rows.append({"architecture": _arch(r["config.arch"]), "T": int(r[_T_COL]),
                     "method": _label(r["config.method"]), "ours_%": pm(r["mean_%"], r["std_%"]),
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
    s = summarize(d, ["factor", "setting", "config.arch", _T_COL])
    ref = s[s["factor"] == "reference"].set_index(["config.arch", _T_COL])["mean_%"]
    rows = []
    for _, r in s.iterrows():
        key = (r["config.arch"], r[_T_COL])
        grp = d[(d["factor"] == r["factor"]) & (d["setting"] == r["setting"])
                & (d["config.arch"] == key[0]) & (d[_T_COL] == key[1])]
        rows.append({"factor": r["factor"], "setting": r["setting"],
                     "architecture": _arch(key[0]), "T": int(key[1]),
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
    ref_beta = {(_arch(r["config.arch"]), int(r[_T_COL])): r["config.beta"]
                for _, r in d[d["factor"] == "reference"].iterrows()}
    t = t[t["factor"].isin(["β", "reference"])].copy()
    t["beta"] = [float(s) if f == "β" else ref_beta.get((a, T), np.nan)
                 for f, s, a, T in zip(t["factor"], t["setting"], t["architecture"], t["T"],
                                       strict=True)]
    return t.sort_values(["architecture", "T", "beta"]).reset_index(drop=True)


def branch_parameter_counts(df: pd.DataFrame,
                            kinds: Sequence[str] = ("dsconv", "conv")) -> pd.DataFrame:
    """Backbone and branch parameter counts of each branch kind, for the runs' models.

    Args:
        df: records (their distinct dataset, arch and width are rebuilt with
            ``esd.build_model(...).parameter_counts()``).
        kinds: branch kinds.

    Returns:
        One row per (dataset, arch, width, kind): ``backbone params``, ``branch params`` and
        ``branches / backbone``.
    """
    from esdlib.models import build_model

    cols = ["dataset", "architecture", "width", "branch kind", "backbone params",
            "branch params", "branches / backbone"]
    if not len(df):
        return pd.DataFrame(columns=cols)
    rows = []
    combos = df[["config.dataset", "config.arch", "config.width"]].drop_duplicates()
    for _, r in combos.iterrows():
        in_ch, classes = DATASET_SHAPES[r["config.dataset"]]
        for kind in kinds:
            c = build_model(r["config.arch"], num_classes=classes, in_channels=in_ch,
                            width=float(r["config.width"]), aux=kind).parameter_counts()
            rows.append({"dataset": r["config.dataset"], "architecture": _arch(r["config.arch"]),
                         "width": float(r["config.width"]), "branch kind": kind,
                         "backbone params": c["backbone"], "branch params": c["branches"],
                         "branches / backbone": round(c["branches"] / c["backbone"], 4)})
    return pd.DataFrame(rows, columns=cols)


def ablation_rows(table: pd.DataFrame, factor: str) -> pd.DataFrame:
    """The reference rows and the rows of one factor (name or its first characters) of
    :func:`ablation_table`."""
    if not len(table):
        return table
    keep = (table["factor"] == "reference") | table["factor"].str.startswith(factor)
    return table[keep].reset_index(drop=True)


def _diff(table: pd.DataFrame, factor: str, setting: str | None = None) -> str:
    rows = ablation_rows(table, factor)
    rows = rows[rows["factor"] != "reference"]
    if setting is not None:
        rows = rows[rows["setting"] == setting]
    vals = rows["vs_reference_pts"].dropna()
    return fmt_signed(float(vals.iloc[0])) if len(vals) else "n/a"


def ablation_facts(table1: pd.DataFrame, ablation: pd.DataFrame) -> dict[str, str]:
    """Display-ready values for chapter 9's prose ("n/a" where the runs are missing).

    Keys: ``esd_vs_ratebp``, ``sd_vs_ratebp``, ``esd_vs_sd``, ``distill_where``,
    ``distill_sentence``, ``conv``, ``beta_05``, ``beta_01``, ``beta_10``, ``probs``, ``eta``,
    ``param_ratio``, ``scale``.
    """
    d = distillation_ablation(table1)
    facts = {"esd_vs_ratebp": "n/a", "sd_vs_ratebp": "n/a", "esd_vs_sd": "n/a",
             "distill_where": "no architecture/T with these runs"}
    if len(d):
        # the (arch, T) with the most of the three methods; then ResNet-18, then the largest T
        n = d.groupby(["architecture", "T"]).size().rename("n").reset_index()
        n["r18"] = n["architecture"] == "ResNet-18"
        arch, T = n.sort_values(["n", "r18", "T"]).iloc[-1][["architecture", "T"]]
        at = d[(d["architecture"] == arch) & (d["T"] == T)].set_index("method")
        s = summarize(table1, ["config.arch", _T_COL, "config.method"])
        s = s[(s["config.arch"].map(_arch) == arch) & (s[_T_COL] == T)]
        m = s.set_index("config.method")["mean_%"]
        facts["distill_where"] = f"{arch}, T = {int(T)}"
        if "esd" in m and "sd" in m:
            facts["esd_vs_sd"] = fmt_signed(m["esd"] - m["sd"])
        for meth in ("esd", "sd"):
            if _label(meth) in at.index:
                facts[f"{meth}_vs_ratebp"] = fmt_signed(at.loc[_label(meth), "vs_RateBP_pts"])
    facts["distill_sentence"] = (
        f"At {facts['distill_where']}, ESD is {facts['esd_vs_ratebp']} and standard SD "
        f"{facts['sd_vs_ratebp']} against RateBP, and ESD − SD is {facts['esd_vs_sd']} "
        "(n/a marks methods this profile did not run)." if len(d) else
        "This profile has no complete RateBP, SD or ESD runs in table1, so the comparison "
        "cannot be made here.")
    t = ablation_table(ablation)
    facts.update(conv=_diff(t, "branch kind"), beta_05=_diff(t, "β", "0.5"),
                 beta_01=_diff(t, "β", "0.1"), beta_10=_diff(t, "β", "1"),
                 probs=_diff(t, "teacher space"), eta=_diff(t, "η"),
                 scale=scale_of(complete(ablation)), param_ratio="n/a")
    pc = branch_parameter_counts(complete(ablation).head(1))
    if len(pc) == 2:
        facts["param_ratio"] = fmt_num(pc["branch params"].iloc[1] / pc["branch params"].iloc[0],
                                       1, "×")
    return facts


# ---------------------------------------------------------------------------
# Chapter 10: provenance
# ---------------------------------------------------------------------------


def papermill_runs_dir(results_dir: str | Path) -> Path:
    """Where ``esd reproduce`` keeps the executed experiment notebooks: beside ``results_dir``
    (``<results_dir>/../papermill_runs``)."""
    from esdlib.train import paths

    return paths.papermill_runs_dir(Path(results_dir).resolve().parent)


def notebook_status(runs_dir: str | Path) -> pd.DataFrame:
    """Execution status of the executed experiment notebooks ``<runs_dir>/<experiment>/*.ipynb``.

    Reads papermill's notebook metadata (``start_time``, ``duration``, ``exception``) and, for a
    failed notebook, the first error output.

    Returns:
        One row per notebook: ``notebook`` (path relative to ``runs_dir``'s parent),
        ``experiment``, ``started``, ``duration_s``, ``status`` (``ok``, ``failed``, or
        ``not finished`` when papermill recorded no duration) and ``error``.
    """
    import nbformat

    cols = ["notebook", "experiment", "started", "duration_s", "status", "error"]
    runs_dir = Path(runs_dir)
    rows = []
    paths = sorted(runs_dir.glob("*/*.ipynb")) if runs_dir.is_dir() else []
    for path in paths:
        if path.name.startswith("."):
            continue
        rel = path.relative_to(runs_dir.parent).as_posix()
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as err:  # an unreadable notebook is itself a provenance fact
            rows.append({"notebook": rel, "experiment": path.parent.name, "started": None,
                         "duration_s": np.nan, "status": "unreadable",
                         "error": f"{type(err).__name__}: {err}"})
            continue
        pm_meta = nb.metadata.get("papermill", {})
        error = ""
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error" and not error:
                    error = f"{out.get('ename', '')}: {out.get('evalue', '')}"
        duration = pm_meta.get("duration")
        if pm_meta.get("exception") or error:
            status = "failed"
        elif duration is None:
            status = "not finished"
        else:
            status = "ok"
        rows.append({"notebook": rel, "experiment": path.parent.name,
                     "started": pm_meta.get("start_time"),
                     "duration_s": round(float(duration), 1) if duration is not None else np.nan,
                     "status": status, "error": error})
    return pd.DataFrame(rows, columns=cols)


def record_status(df: pd.DataFrame) -> pd.DataFrame:
    """The provenance columns of every record: run_id, experiment, status, created, git
    revision, wall time (s) and scale label."""
    cols = ["run_id", "experiment", "status", "created", "git_revision", "wall_s", "scale_label"]
    if not len(df):
        return pd.DataFrame(columns=cols)
    out = df.rename(columns={"timing.wall_s": "wall_s"})
    out = out.reindex(columns=cols)
    bad = (df["status"] == "damaged").to_numpy()
    if bad.any():  # the table says which file and why instead of a blank row
        out.loc[bad, "scale_label"] = damaged_labels(df[bad])
    out["wall_s"] = out["wall_s"].astype(float).round(1)
    return out.reset_index(drop=True)


def same_commit(a: str | None, b: str | None) -> bool:
    """Whether two :func:`esdlib.train.records.git_revision` strings name the same commit (a
    ``+dirty`` suffix, uncommitted changes, is ignored; ``None`` matches nothing)."""
    if not a or not b or (isinstance(a, float) and a != a):
        return False
    return a.removesuffix("+dirty") == b.removesuffix("+dirty")


def revision_summary(df: pd.DataFrame, current: str | None) -> pd.DataFrame:
    """Records per git revision, and whether it is the commit the book is built from."""
    cols = ["git_revision", "records", "same commit as book", "uncommitted changes"]
    if not len(df):
        return pd.DataFrame(columns=cols)
    g = df.groupby(df["git_revision"].fillna("unknown")).size()
    return pd.DataFrame({"git_revision": g.index, "records": g.to_numpy(),
                         "same commit as book": [same_commit(r, current) for r in g.index],
                         "uncommitted changes": [r.endswith("+dirty") for r in g.index]},
                        columns=cols)


def chapter_sources(df: pd.DataFrame, bench: pd.DataFrame | None = None,
                    chapters: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Which experiments each chapter read and how many records (complete / all) they hold.

    Args:
        df: every record (:func:`esdlib.load_records` of the results folder).
        bench: :func:`esdlib.bench.load_bench` table (``bench`` experiment), optional.
        chapters: chapter → experiments; default :data:`CHAPTER_EXPERIMENTS`.

    Returns:
        One row per (chapter, experiment) with ``records``, ``complete`` and the runs' scale.
    """
    chapters = CHAPTER_EXPERIMENTS if chapters is None else chapters
    rows = []
    for chapter, exps in chapters.items():
        for exp in exps:
            if exp == "bench":
                n = 0 if bench is None or not len(bench) else bench["bench_id"].nunique()
                rows.append({"chapter": chapter, "experiment": "bench", "records": n,
                             "complete": n, "scale": "results/bench/*.json"})
                continue
            sub = df[df["experiment"] == exp] if len(df) else df
            rows.append({"chapter": chapter, "experiment": exp, "records": len(sub),
                         "complete": len(complete(sub)), "scale": scale_of(complete(sub))})
    return pd.DataFrame(rows, columns=["chapter", "experiment", "records", "complete", "scale"])


def environment_table(repo: str | Path = ".") -> pd.DataFrame:
    """This machine's environment (:func:`esdlib.train.records.environment_info`) and the git
    revision of ``repo``, as a one-column table."""
    from esdlib.train.records import environment_info, git_revision

    info = {**environment_info(), "git revision": git_revision(repo)}
    return pd.DataFrame({"value": [str(v) for v in info.values()]}, index=list(info))


def provenance_facts(notebooks: pd.DataFrame, records: pd.DataFrame,
                     current: str | None) -> dict[str, str]:
    """Display-ready counts for chapter 10's prose.

    Keys: ``n_nb``, ``n_nb_ok``, ``n_nb_failed``, ``n_records``, ``n_complete``,
    ``n_same_rev``, ``current``.
    """
    return {"n_nb": str(len(notebooks)),
            "n_nb_ok": str(int((notebooks["status"] == "ok").sum()) if len(notebooks) else 0),
            "n_nb_failed": str(int((notebooks["status"] == "failed").sum())
                               if len(notebooks) else 0),
            "n_records": str(len(records)), "n_complete": str(len(complete(records))),
            "n_same_rev": str(sum(same_commit(r, current) for r in records["git_revision"])
                              if len(records) else 0),
            "current": str(current)}


# ---------------------------------------------------------------------------
# Verdicts (esdlib.evidence), learning curves and convergence, for every chapter
# ---------------------------------------------------------------------------

INDICATIVE_PROFILES = ("smoke", "quick")
"""Profiles whose pages are previews: unconverged runs of one seed, no verdicts."""


def indicative_banner(profile: str) -> Any:
    """An HTML banner for pages built from a preview profile (``None`` for the others).

    Displayed at the top of each reproduction chapter: the runs of ``smoke``/``quick`` are
    unconverged and have one seed, so nothing on the page is evidence.
    """
    from IPython.display import HTML

    if profile not in INDICATIVE_PROFILES:
        return None
    return HTML(
        '<div class="admonition warning"><p class="admonition-title">Indicative only</p>'
        f"<p>This page was built from the <code>{profile}</code> profile: short, unconverged "
        "runs of one seed. Its numbers preview the layout of the page; they are not evidence "
        "and no claim gets a verdict. The <code>default</code> profile gives the verdicts."
        "</p></div>")


def verdict_table(df: pd.DataFrame, chapter: str | None = None,
                  claims: Sequence[Any] | None = None) -> Any:
    """The claims of a chapter (all claims when ``chapter`` is None) with their verdicts.

    Columns: the claim, the paper's number, the paired seeds ``n``, the mean paired difference
    (signed so that the paper's direction is positive) with its 95 % interval, the verdict and
    the per-seed differences. ``claims`` replaces :data:`esdlib.evidence.CLAIMS` (e.g. the
    bf16 parity checks). Returned as HTML without an index, ready to display.
    """
    from IPython.display import HTML

    from esdlib.evidence import CLAIMS, claims_table, format_interval

    t = claims_table(df, CLAIMS if claims is None else claims, chapter=chapter)
    shown = pd.DataFrame({
        "claim": t["claim"], "paper": t["paper"], "n": t["n"],
        "mean difference": ["—" if not np.isfinite(m) else f"{m:+.2f} {u}".strip()
                            for m, u in zip(t["mean"], t["unit"], strict=True)],
        "95 % interval": [format_interval(a, b)
                          for a, b in zip(t["ci_low"], t["ci_high"], strict=True)],
        "verdict": t["verdict"], "per seed": t["differences"].replace("", "—")})
    return HTML(shown.style.hide(axis="index").to_html())


def learning_curves(records: Sequence[Mapping[str, Any]],
                    by: Sequence[str] = ("method", "T")) -> pd.DataFrame:
    """Test accuracy per epoch of every run, long format.

    Args:
        records: Full run records (:func:`esdlib.load_record`).
        by: Config fields that name a curve's group.

    Returns:
        Columns ``group`` (e.g. ``"esd, T=4"``), ``seed``, ``epoch``, ``test_acc_%``.
    """
    rows = []
    for r in records:
        cfg = r["config"]
        group = ", ".join(str(cfg[k]) if k == "method" else f"{k}={cfg[k]}" for k in by)
        for h in r["history"]:
            rows.append({"group": group, "seed": cfg["seed"], "epoch": h["epoch"],
                         "test_acc_%": 100.0 * h["test_acc"]})
    return pd.DataFrame(rows, columns=["group", "seed", "epoch", "test_acc_%"])


def learning_curve_figure(curves: pd.DataFrame, title: str = "") -> Figure:
    """Figure: mean test accuracy per epoch of each group, with the band of min-max over seeds."""
    fig = new_figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    for group, g in curves.groupby("group", sort=False):
        s = g.groupby("epoch")["test_acc_%"].agg(["mean", "min", "max"])
        line, = ax.plot(s.index, s["mean"], marker="o", markersize=3, label=group)
        ax.fill_between(s.index, s["min"], s["max"], alpha=0.2, color=line.get_color())
    if not len(curves):
        ax.text(0.5, 0.5, "no complete runs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if len(curves):
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


def convergence_summary(df: pd.DataFrame) -> Any:
    """Per experiment, method and T: runs, how many settled, the mean and largest final trend.

    Uses :func:`esdlib.evidence.convergence_table` (a run has settled when the mean test
    accuracy of its last ``CONVERGENCE_WINDOW`` epochs is within ``CONVERGENCE_THRESHOLD``
    points of the ``CONVERGENCE_WINDOW`` epochs before). Returned as HTML without an index.
    """
    from IPython.display import HTML

    from esdlib.evidence import convergence_table

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
    return HTML(s.style.hide(axis="index").to_html())


def unsettled_runs(df: pd.DataFrame) -> str:
    """``"none"`` or the run ids whose accuracy still moved at the end (for the page's text)."""
    from esdlib.evidence import convergence_table

    t = convergence_table(df)
    ids = list(t.loc[~t["converged"].astype(bool), "run_id"]) if len(t) else []
    return "none" if not ids else ", ".join(ids)
