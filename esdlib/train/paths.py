"""Where files live: the one module that knows the project's folder layout.

Every other module asks here instead of searching for folders itself::

    <project root>/                     project_root(): the first folder, walking up from the
      pyproject.toml                      current directory, that holds both markers
      results/                          results_dir(): run records <experiment>/<run_id>.json
        paper/*.csv                     paper_dir(): the values printed in the paper (never edited)
        bench/*.json                    bench_dir(): benchmark records (esdlib.bench)
      checkpoints/                      checkpoints_dir(): <run_id>/ training checkpoints
      papermill_runs/                   papermill_runs_dir(): executed experiment notebooks
      book/_executed/                   executed chapters (with the two above: GENERATED_PATHS)

A function that takes ``root`` uses it as given (an explicit folder always wins); ``None``
means the discovered project root. No environment variable changes these answers: a caller
that keeps results elsewhere passes the folder. Relative paths in a config (``out_dir``,
``checkpoint_dir``, ``cache_dir``) are relative to the current directory
(:func:`resolve_path`), never to the installed package. The data sets' folders and the
CIFAR10-DVS frame cache are decided by :mod:`esdlib.data` (the core does not import the run
layer).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "GENERATED_PATHS",
    "ROOT_MARKERS",
    "bench_dir",
    "checkpoints_dir",
    "code_root",
    "paper_dir",
    "papermill_runs_dir",
    "project_root",
    "resolve_path",
    "results_dir",
    "schema_path",
]

ROOT_MARKERS = ("pyproject.toml", "results/paper")
"""Relative paths that must all exist in a folder for it to be the project root."""

GENERATED_PATHS = ("book/_executed", "papermill_runs", "results")
"""Tracked folders of generated outputs, relative to the project root (executed chapters,
executed experiment notebooks, run records and tables):
:func:`esdlib.train.records.git_revision` ignores changes there, since they are what the code
produces, not the code. Executing the chapters rewrites ``book/_executed``; without this rule
the provenance chapter, executed last, would call its own build dirty."""

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # esdlib/ (this file is esdlib/train/paths.py)


def code_root() -> Path:
    """The folder that holds the imported ``esdlib`` package.

    For a source checkout or an editable install this is the repository; it is what a
    subprocess needs on ``PYTHONPATH`` to import the same code, and where
    :func:`esdlib.train.records.git_revision` reads the code's commit.
    """
    return _PACKAGE_DIR.parent


def schema_path(name: str) -> Path:
    """The JSON Schema file ``esdlib/schema/<name>.schema.json`` (package data).

    Args:
        name: schema name, e.g. ``"run_record"`` or ``"bench_record"``.
    """
    return _PACKAGE_DIR / "schema" / f"{name}.schema.json"


def _is_root(folder: Path) -> bool:
    return all((folder / marker).exists() for marker in ROOT_MARKERS)


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The project root: the first folder at or above ``start`` holding :data:`ROOT_MARKERS`.

    With ``start=None`` the search begins at the current directory and, as a documented
    fallback for code run from elsewhere, continues from :func:`code_root` (a source checkout
    or an editable install).

    Args:
        start: folder to search upwards from (``None``: the current directory, then the code).

    Raises:
        FileNotFoundError: no folder above the start(s) holds the markers.
    """
    starts = [Path(start).resolve()] if start is not None else [Path.cwd().resolve(), code_root()]
    for base in starts:
        for folder in (base, *base.parents):
            if _is_root(folder):
                return folder
    raise FileNotFoundError(
        f"cannot find the project root (a folder holding {' and '.join(ROOT_MARKERS)}) above "
        f"{' or '.join(str(s) for s in starts)}; run from inside the esdlib repository or pass "
        "the folder explicitly"
    )


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root) if root is not None else project_root()


def results_dir(root: str | os.PathLike | None = None) -> Path:
    """``<root>/results``: run records, the paper's tables and the benchmark records.

    Args:
        root: project root (``None``: :func:`project_root`).
    """
    return _root(root) / "results"


def paper_dir(results: str | os.PathLike | None = None) -> Path:
    """``<results>/paper``: CSV files of the values printed in the paper.

    Args:
        results: a results folder (``None``: :func:`results_dir` of the project).
    """
    return (Path(results) if results is not None else results_dir()) / "paper"


def bench_dir(results: str | os.PathLike | None = None) -> Path:
    """``<results>/bench``: benchmark records (``esd bench``).

    Args:
        results: a results folder (``None``: :func:`results_dir` of the project).
    """
    return (Path(results) if results is not None else results_dir()) / "bench"


def checkpoints_dir(root: str | os.PathLike | None = None) -> Path:
    """``<root>/checkpoints``: one ``<run_id>/`` folder of training checkpoints per run.

    Args:
        root: project root (``None``: :func:`project_root`).
    """
    return _root(root) / "checkpoints"


def papermill_runs_dir(root: str | os.PathLike | None = None) -> Path:
    """``<root>/papermill_runs``: executed experiment notebooks, ``<experiment>/<run_id>.ipynb``.

    Args:
        root: project root (``None``: :func:`project_root`).
    """
    return _root(root) / "papermill_runs"


def resolve_path(path: str | os.PathLike) -> Path:
    """A config path as an absolute :class:`~pathlib.Path`; a relative one is taken relative
    to the current working directory (never to the installed package).

    Args:
        path: e.g. a config's ``out_dir`` or ``checkpoint_dir``.
    """
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path.cwd() / p
