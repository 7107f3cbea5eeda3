"""Open a chapter: check its papermill parameters and find its records, in one call.

Every chapter notebook takes the same two parameters, ``profile`` and ``results_dir``
(:data:`CHAPTER_PARAMETERS`), and opens itself with :func:`open_chapter` in the cell after its
``parameters`` cell::

    ch = esdbook.open_chapter(profile, results_dir)
    runs = ch.runs("table1")                 # complete runs of this profile
    paper = ch.paper("table1_static")        # results_dir/paper/table1_static.csv

The folders are passed explicitly (no environment variable): :class:`Chapter` holds the
validated results folder and everything a page reads is found from it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esdlib.train import paths

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CHAPTER_PARAMETERS",
    "Chapter",
    "check_notebook_parameters",
    "check_parameter_names",
    "injected_parameter_names",
    "open_chapter",
]

CHAPTER_PARAMETERS = ("profile", "results_dir")
"""The parameters every chapter notebook declares."""


def check_parameter_names(given: Iterable[str], declared: Iterable[str],
                          where: str = "the notebook") -> None:
    """Check papermill parameter names against the ones a notebook declares.

    papermill itself only warns about a parameter that the ``parameters`` cell does not
    declare (and the run then silently uses the default): this makes it an error.

    Args:
        given: Names passed (``-p NAME VALUE``).
        declared: Names the notebook's ``parameters`` cell assigns.
        where: The notebook, for the message.

    Raises:
        ValueError: Unknown names, with close matches and the list of valid names.
    """
    from esdlib.train.fields import did_you_mean

    declared = list(declared)
    unknown = [n for n in given if n not in declared]
    if unknown:
        hints = [f"{n!r}{did_you_mean(n, declared)}" for n in unknown]
        raise ValueError(f"unknown parameter(s) {', '.join(hints)} for {where}; valid "
                         f"parameters: {', '.join(declared)}")


def injected_parameter_names() -> list[str]:
    """Names papermill injected into the running IPython kernel (empty outside IPython).

    papermill runs the notebook's cells in order and inserts an ``injected-parameters`` cell
    whose source starts with ``# Parameters``; this reads the sources the kernel has executed
    and collects the names that cell assigns.
    """
    import ast

    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of papermill
        return []
    shell = get_ipython()
    if shell is None:
        return []
    names: list[str] = []
    for source in shell.history_manager.input_hist_raw:
        if not source.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        names += [t.id for node in tree.body if isinstance(node, ast.Assign)
                  for t in node.targets if isinstance(t, ast.Name)]
    return names


def check_notebook_parameters(declared: Iterable[str]) -> None:
    """Fail when papermill injected a parameter the notebook does not declare.

    Call it in the first code cell after the ``parameters`` cell, with the names that cell
    assigns: ``papermill nb.ipynb out.ipynb -p profil smoke`` then stops with
    ``ValueError: unknown parameter(s) 'profil' (did you mean 'profile'?) ...`` instead of
    running with the default profile. A no-op outside an IPython kernel.

    Raises:
        ValueError: see :func:`check_parameter_names`.
    """
    check_parameter_names(injected_parameter_names(), declared, "this notebook")


@dataclass(frozen=True)
class Chapter:
    """The validated parameters of one chapter and the folders it reads.

    Attributes:
        profile: the run profile whose runs the page shows.
        results: the results folder (absolute; holds ``paper/`` and ``bench/``).
    """

    profile: str
    results: Path

    @property
    def bench_dir(self) -> Path:
        """``<results>/bench``: the benchmark records and the same-host timings."""
        return paths.bench_dir(self.results)

    @property
    def papermill_runs(self) -> Path:
        """The executed experiment notebooks: ``papermill_runs/`` of the project whose results
        folder this is (:func:`esdlib.train.paths.papermill_runs_dir`)."""
        return paths.papermill_runs_dir(self.results.parent)

    def bench(self) -> pd.DataFrame:
        """The benchmark records of ``<results>/bench`` (:func:`esdlib.bench.load_bench`)."""
        from esdlib.bench import load_bench

        return load_bench(self.bench_dir)

    def revision(self) -> str | None:
        """The git revision of the project the book belongs to (``+dirty`` with uncommitted
        changes; :func:`esdlib.train.records.git_revision`), wherever ``results`` lies: a
        results folder outside the checkout (a ``--fresh`` re-run in ``/tmp``) still gives the
        book's revision."""
        from esdlib.train.records import git_revision

        return git_revision(paths.project_root())

    def records(self, experiment: str | None = None) -> pd.DataFrame:
        """Every record of ``experiment`` (all experiments when ``None``), any profile or
        status; unreadable files are rows with ``status == "damaged"``. Every
        ``config.<field>`` column exists even when there is no record (empty tables, never a
        ``KeyError``)."""
        import dataclasses

        import pandas as pd

        from esdlib import load_records
        from esdlib.train.config import RunConfig

        df = load_records(self.results, experiment, strict=False)
        if not len(df):  # no records: still every config column, so filters give empty tables
            missing = [f"config.{f.name}" for f in dataclasses.fields(RunConfig)
                       if f"config.{f.name}" not in df]
            df = pd.concat([df, pd.DataFrame(columns=missing, dtype=object)], axis=1)
        return df

    def runs(self, experiment: str | None = None) -> pd.DataFrame:
        """The complete runs of this chapter's profile (:func:`esdlib.analysis.runs.runs_of`)."""
        from esdlib.analysis.runs import runs_of

        return runs_of(self.records(experiment), self.profile)

    def full(self, runs: pd.DataFrame) -> list[Mapping[str, Any]]:
        """The full records (history, firing rates, extra) of the rows of ``runs``."""
        from esdlib import load_record

        return [load_record(p) for p in runs["path"]]

    def paper(self, name: str) -> pd.DataFrame:
        """A table of the paper's values, ``<results>/paper/<name>.csv``."""
        from esdlib import load_paper_table

        return load_paper_table(name, self.results)


def open_chapter(profile: str, results_dir: str | os.PathLike,
                 number: int | None = None) -> Chapter:
    """Validate a chapter's parameters and return its :class:`Chapter`.

    Inside a papermill run it also refuses injected parameters other than ``profile`` and
    ``results_dir`` (:func:`check_notebook_parameters`).

    Args:
        profile: a run profile, one of :data:`esdlib.train.config.PROFILES`.
        results_dir: the results directory; must contain ``paper/`` (the paper's values).
        number: the chapter's number: its titled tables are numbered ``Table <number>.1``, …
            (:func:`esdbook.display.number_tables`).

    Returns:
        The chapter, with ``results`` as an absolute path.

    Raises:
        ValueError: unknown profile (the message lists the valid ones), a ``results_dir`` that
            is not a path, or a results directory without ``paper/``.
    """
    from esdlib.train.config import PROFILES

    check_notebook_parameters(CHAPTER_PARAMETERS)
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    if not isinstance(results_dir, (str, os.PathLike)) or not str(results_dir):
        raise ValueError(f"results_dir must be a folder path (a string); got {results_dir!r}")
    path = Path(results_dir).resolve()
    if not (path / "paper").is_dir():
        raise ValueError(
            f"results_dir={str(results_dir)!r} ({path}) has no 'paper/' folder; pass the "
            "repository's 'results' directory or a copy of it"
        )
    from esdbook import display

    display.number_tables(number)
    return Chapter(profile, path)
