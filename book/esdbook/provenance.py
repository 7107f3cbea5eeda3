"""Chapter 10 (provenance): environment, experiment notebooks, records, revisions, sources."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from esdbook.display import damaged_labels
from esdlib.analysis.runs import complete, scale_of

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


def status_counts(table: pd.DataFrame, by: str = "experiment",
                  status: str = "status") -> pd.DataFrame:
    """Per value of ``by`` (an experiment), how many rows have each status: the compact view of
    :func:`notebook_status` and :func:`record_status`, one row per experiment and a ``total``
    row, a column per status (``ok``, ``failed``; ``complete``, ``diverged``, ``damaged``…)."""
    if not len(table):
        return pd.DataFrame(columns=[by, "total"])
    counts = pd.crosstab(table[by].fillna("?"), table[status].fillna("?"))
    counts.columns.name = None
    counts.insert(0, "total", counts.sum(axis=1))
    counts.loc["all"] = counts.sum(axis=0)
    return counts.rename_axis(by).reset_index()


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


def short_revision(revision: str | None) -> str:
    """A git revision as a short label: 12 hex digits, ``+dirty`` kept (``"unknown"`` for
    ``None``); the full revision is in :func:`environment_table`."""
    if not revision:
        return "unknown"
    dirty = revision.endswith("+dirty")
    return revision.removesuffix("+dirty")[:12] + ("+dirty" if dirty else "")


def wall_span(runs: pd.DataFrame) -> dict[str, Any]:
    """How long a set of runs took end to end, from their records alone.

    A record is written when its run ends (``created``) and holds the run's wall time, so the
    runs span from the earliest start (``created − wall_s``) to the latest end. For a grid run
    from scratch in one session that is the grid's wall time; runs made in several sessions
    span the time between them too, which ``busy`` (the summed run time over the span: about
    the number of jobs when they ran back to back) makes visible.

    Returns:
        ``{"minutes", "runs", "busy", "first", "last", "hosts"}`` (``minutes`` is NaN without
        runs); ``hosts`` lists the distinct ``environment.device_name`` values.
    """
    if not len(runs) or "created" not in runs or "timing.wall_s" not in runs:
        return {"minutes": float("nan"), "runs": 0, "busy": float("nan"), "first": None,
                "last": None, "hosts": []}
    end = pd.to_datetime(runs["created"], utc=True)
    wall = pd.to_numeric(runs["timing.wall_s"], errors="coerce").fillna(0.0)
    start = end - pd.to_timedelta(wall, unit="s")
    seconds = (end.max() - start.min()).total_seconds()
    hosts = sorted(runs.get("environment.device_name", pd.Series(dtype=object)).dropna()
                   .astype(str).unique())
    return {"minutes": seconds / 60, "runs": len(runs),
            "busy": float(wall.sum() / seconds) if seconds > 0 else float("nan"),
            "first": start.min().isoformat(), "last": end.max().isoformat(), "hosts": hosts}
