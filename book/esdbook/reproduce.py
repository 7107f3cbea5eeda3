"""``python -m esdbook reproduce``: run a profile's experiment grid, then build the book.

The grid of every profile lives in one manifest, ``book/experiments/manifest.yaml``::

    experiments:                       # name -> experiment notebook
      table1: book/experiments/train.ipynb
    profiles:
      default:
        table1:
          base: {epochs: 12}           # RunConfig overrides shared by the grid
          grid: {method: [bptt, esd], seed: [0, 1, 2]}   # cartesian product
          extra: [{arch: spiking_resnet19, method: esd}]  # single points added to the product

``grid`` may also be a list of such mappings: the union of their products (e.g. every method
at T = 4 plus two methods at other T).

``python -m esdbook reproduce --fresh DIR`` (:func:`reproduce_fresh`) re-runs a profile's grid
into ``DIR`` without touching the committed records and reports, per cell and per claim of
:mod:`esdlib.analysis.evidence`, the committed and the fresh numbers and whether every verdict
holds.

Each grid point is one validated :class:`~esdlib.train.config.RunConfig` (``experiment`` = the
experiment name) whose run id names both outputs: ``papermill_runs/<experiment>/<run_id>.ipynb``
(the executed notebook) and ``results/<experiment>/<run_id>.json`` (the run record). A point
whose complete record already exists is skipped, so re-runs are incremental. Every point is
validated before any notebook runs.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esdlib.train import paths
from esdlib.train.config import PROFILES, ConfigError, RunConfig
from esdlib.train.records import environment_info, make_run_id, record_exists

MANIFEST = Path("book") / "experiments" / "manifest.yaml"

MAX_POINTS = 10_000
"""Most points one experiment of a manifest may expand to (the default grid has a few
hundred): a larger product is refused before it is expanded, with its size."""

_PRIMITIVES = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class GridPoint:
    """One experiment run of a manifest.

    Attributes:
        experiment: experiment name (results sub-folder).
        notebook: experiment notebook (relative to the project root).
        overrides: RunConfig overrides on top of the profile (JSON-able primitives).
        config: the validated config.
        run_id: its run id.
    """

    experiment: str
    notebook: str
    overrides: Mapping[str, Any]
    config: RunConfig
    run_id: str


def book_root(start: Path | None = None) -> Path:
    """The project root (:func:`esdlib.train.paths.project_root`), which must hold the book's
    manifest (raises ``FileNotFoundError`` otherwise)."""
    root = paths.project_root(start)
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"no {MANIFEST} in the project root {root}")
    return root


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read and check the manifest (experiments exist, profiles are known).

    Raises:
        ConfigError: the file is not valid YAML or not a valid manifest (names the file).
    """
    import yaml

    path = Path(path) if path is not None else book_root() / MANIFEST
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict) or set(data) != {"experiments", "profiles"}:
        raise ConfigError(f"{path}: expected top-level keys 'experiments' and 'profiles'")
    if not isinstance(data["experiments"], dict) or not isinstance(data["profiles"], dict):
        raise ConfigError(f"{path}: 'experiments' and 'profiles' must be mappings")
    for name, notebook in data["experiments"].items():
        if not isinstance(notebook, str) or not notebook.endswith(".ipynb"):
            raise ConfigError(f"{path}: experiment {name!r} must name a notebook file "
                              f"(a path ending in .ipynb), got {notebook!r}")
    for prof, exps in data["profiles"].items():
        if prof not in PROFILES:
            raise ConfigError(f"{path}: unknown profile {prof!r}; valid: {PROFILES}")
        if not isinstance(exps, dict):
            raise ConfigError(f"{path}: profile {prof!r} must map experiment names to their "
                              f"grids, got {type(exps).__name__}")
        for name in exps:
            if name not in data["experiments"]:
                raise ConfigError(f"{path}: profile {prof!r} uses unknown experiment {name!r}; "
                                 f"declared: {sorted(data['experiments'])}")
    return data


def expand_grid(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Overrides of every point of one experiment spec (``base`` × product(``grid``) + ``extra``).

    Args:
        spec: ``{"base": {...}, "grid": {key: [values]}, "extra": [{...}]}`` (all optional);
            ``grid`` may be a list of such mappings (the union of their products).

    Returns:
        A list of override dicts, in a deterministic order, without duplicates.

    Raises:
        ValueError: an unknown key, a grid that is not a mapping of non-empty lists, a value
            that is not a plain str/int/float/bool/None, or more than :data:`MAX_POINTS` points
            (checked before anything is expanded).
    """
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise ValueError(f"an experiment spec maps base/grid/extra, got {type(spec).__name__}")
    unknown = set(spec) - {"base", "grid", "extra"}
    if unknown:
        raise ValueError(f"unknown experiment keys {sorted(unknown)}; use base, grid, extra")
    base = spec.get("base") or {}
    grids = spec.get("grid") or {}
    extra = spec.get("extra") or []
    if not isinstance(base, Mapping) or not isinstance(extra, list) or not all(
            isinstance(e, Mapping) for e in extra):
        raise ValueError("'base' must be a mapping and 'extra' a list of mappings")
    grids = grids if isinstance(grids, list) else [grids]
    total = len(extra)
    for grid in grids:
        if not isinstance(grid, Mapping) or not all(isinstance(v, list) for v in grid.values()):
            raise ValueError(f"a grid maps each key to a list of values, got {grid!r:.200}")
        empty = [k for k, v in grid.items() if not v]
        if empty:
            raise ValueError(f"grid key(s) {empty} have no values: the grid would run nothing")
        size = 1
        for values in grid.values():
            size *= len(values)
        total += size
    if total > MAX_POINTS:
        raise ValueError(f"the grid has {total:,} points (more than {MAX_POINTS:,}); split it "
                         "or use fewer values")
    for mapping in [base, *extra, *({k: x} for g in grids for k, v in g.items() for x in v)]:
        for key, value in mapping.items():
            if not isinstance(key, str) or type(value) not in _PRIMITIVES:
                raise ValueError(f"point value {key!r}: {value!r:.80} is not a plain str, "
                                 "int, float, bool or null")
    base = dict(base)
    points = []
    for grid in grids:
        keys = list(grid)
        points += [base | dict(zip(keys, values, strict=True))
                   for values in itertools.product(*(grid[k] for k in keys))]
    points += [base | dict(p) for p in extra]
    unique, seen = [], set()
    for p in points:
        key = json.dumps(p, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"5-9"``, ``"0,2,4"`` or a mix (``"0-4,7"``), sorted, without duplicates.

    Raises:
        ValueError: Not a list of non-negative ints and ranges.
    """
    seeds: set[int] = set()
    for part in str(text).split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"--seeds {text!r}: expected seeds and ranges such as 5-9 or 0,2,4")
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise ValueError(f"--seeds {text!r}: the range {part.strip()} is empty")
        if b - a >= 1000:
            raise ValueError(f"--seeds {text!r}: at most 1000 seeds")
        seeds.update(range(a, b + 1))
    return sorted(seeds)


def with_seeds(points: list[dict[str, Any]], seeds: Iterable[int]) -> list[dict[str, Any]]:
    """The same grid on other seeds: every point (its own ``seed`` dropped) once per seed."""
    seeds = list(seeds)
    out, seen = [], set()
    for p in points:
        for seed in seeds:
            q = {k: v for k, v in p.items() if k != "seed"} | {"seed": int(seed)}
            key = json.dumps(q, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(q)
    return out


def grid_points(profile: str, manifest: Mapping[str, Any] | None = None,
                only: Iterable[str] | None = None,
                seeds: Iterable[int] | None = None) -> list[GridPoint]:
    """All grid points of a profile, each validated (errors name the experiment and point).

    Args:
        profile: one of :data:`esdlib.train.config.PROFILES`.
        manifest: a loaded manifest (default: the repository's).
        only: restrict to these experiment names.
        seeds: run the grid on these seeds instead of the manifest's (:func:`with_seeds`),
            e.g. to test whether a verdict depends on the seed set.

    Returns:
        The points, experiments in manifest order; points that are the same run (same run id,
        e.g. a grid point repeated in ``extra`` with its default value spelled out) once.

    Raises:
        ConfigError: an invalid grid or point, an experiment notebook that does not exist, or
            an unknown experiment in ``only``.
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    manifest = manifest or load_manifest()
    exps = manifest["profiles"].get(profile, {})
    if only:
        missing = sorted(set(only) - set(exps))
        if missing:
            raise ConfigError(f"profile {profile!r} has no experiment(s) {missing}; "
                              f"available: {sorted(exps)}")
    root = book_root()
    points: dict[str, GridPoint] = {}
    for name, spec in exps.items():
        if only and name not in only:
            continue
        if not (root / manifest["experiments"][name]).is_file():
            raise ConfigError(f"experiment {name!r}: its notebook "
                              f"{manifest['experiments'][name]} does not exist in {root}")
        try:
            expanded = expand_grid(spec)
        except ValueError as err:
            raise ConfigError(f"experiment {name!r} of profile {profile!r}: {err}") from None
        if seeds is not None:
            expanded = with_seeds(expanded, seeds)
        for overrides in expanded:
            try:
                cfg = RunConfig.from_profile(profile, experiment=name, **overrides)
            except ConfigError as err:
                raise ConfigError(f"experiment {name!r}, point {overrides}: {err}") from err
            point = GridPoint(name, manifest["experiments"][name], overrides, cfg,
                              make_run_id(cfg))
            same = points.get(point.run_id)
            if same is None:
                points[point.run_id] = point
            elif same.config != cfg or same.notebook != point.notebook:
                raise ConfigError(f"experiment {name!r}: points {same.overrides} and "
                                  f"{overrides} have the same run id {point.run_id} but "
                                  "differ")
    return list(points.values())


def longest_first(points: Iterable[GridPoint]) -> list[GridPoint]:
    """``points`` ordered by their expected cost, largest first (ties keep manifest order).

    A job that starts a long point last runs alone while the other jobs idle; starting the
    longest points first shortens that tail. The cost model is rough on purpose: epochs ×
    (T + 1), i.e. T spike steps and one backward per batch.
    """
    return sorted(points, key=lambda p: -p.config.epochs * (p.config.T + 1))


def run_point(point: GridPoint, root: Path, results: Path, runs: Path, checkpoints: Path,
              timeout: float | None = None, session: Any = None) -> Path:
    """Execute one grid point's notebook with papermill (atomically) and return its path.

    ``session``: an :class:`esdbook.build.KernelSession` to run it in (default: a fresh kernel).
    """
    from esdbook.build import run_notebook, shown_path

    target = runs / point.experiment / f"{point.run_id}.ipynb"
    params = {"profile": point.config.profile, "experiment": point.experiment,
              "overrides_json": json.dumps(dict(point.overrides), sort_keys=True),
              "results_dir": shown_path(results, root),
              "checkpoint_dir": shown_path(checkpoints, root)}
    run_notebook(root / point.notebook, target, params, cwd=root, timeout=timeout,
                 session=session)
    return target


def reproduce(profile: str = "default", *, build: bool = True, progress: bool = True,
              only: Iterable[str] | None = None, results_dir: str | os.PathLike | None = None,
              runs_dir: str | os.PathLike | None = None,
              checkpoint_dir: str | os.PathLike | None = None,
              book_dir: str | os.PathLike | None = None,
              build_dir: str | os.PathLike | None = None, jobs: int | None = None,
              threads: int = 1, seeds: Iterable[int] | None = None) -> Path | None:
    """Run the grid of ``profile`` (skipping finished points), execute the chapters, build the book.

    Args:
        profile: ``smoke``, ``default`` or ``paper``.
        build: also execute the chapter notebooks and build the book.
        progress: progress bars.
        only: run only these experiments.
        results_dir: run records (default ``<root>/results``; must contain ``paper/`` for the
            chapters).
        runs_dir: executed experiment notebooks (default ``<root>/papermill_runs``).
        checkpoint_dir: checkpoints (default ``<root>/checkpoints``).
        book_dir: the book source (default ``<root>/book``; chapters are executed into
            ``<book_dir>/_executed``).
        build_dir: where the HTML goes (default ``<book_dir>/_build``).
        jobs: grid points run concurrently, one kernel per job that runs point after point
            (:class:`esdbook.build.KernelSession`; default: one job per CPU); also the
            chapters executed at once.
        threads: CPU threads per kernel. One thread per kernel with one kernel per CPU is
            several times faster for the book's small networks than fewer, wider kernels.
        seeds: run the grid on these seeds instead of the manifest's.

    Returns:
        Path of the built ``index.html`` (``None`` when ``build`` is False).
    """
    from tqdm import tqdm

    from esdbook.build import (
        KernelSession,
        build_book,
        execute_chapters,
        kernel_environment,
        shown_path,
    )

    root = book_root()
    results = Path(results_dir or paths.results_dir(root)).resolve()
    runs = Path(runs_dir or paths.papermill_runs_dir(root)).resolve()
    ckpts = Path(checkpoint_dir or paths.checkpoints_dir(root)).resolve()
    book = Path(book_dir or root / "book").resolve()
    points = grid_points(profile, only=only, seeds=seeds)  # validates all before any work
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1 or threads < 1:
        raise ValueError(f"jobs and threads must be >= 1, got {jobs}, {threads}")
    todo = longest_first([p for p in points if not record_exists(results, p.experiment,
                                                                  p.run_id)])
    bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=f"grid ({profile})",
               unit="run", disable=not progress)
    # One kernel per worker thread, reused from point to point (KernelSession): starting a
    # kernel and importing the libraries costs about as much as a tenth of a small point.
    sessions: list[KernelSession] = []
    local = threading.local()

    def run(p: GridPoint) -> Path:
        if not hasattr(local, "session"):
            local.session = KernelSession(root)
            sessions.append(local.session)
        return run_point(p, root, results, runs, ckpts, session=local.session)

    try:
        with kernel_environment(threads), cf.ThreadPoolExecutor(jobs) as pool:
            futures = {pool.submit(run, p): p for p in todo}
            for fut in cf.as_completed(futures):
                fut.result()
                bar.set_postfix_str(futures[fut].run_id[-30:])
                bar.update(1)
    finally:
        for session in sessions:
            session.discard()
    bar.close()
    if not build:
        return None
    execute_chapters(book / "chapters", book / "_executed",
                     {"profile": profile, "results_dir": shown_path(results, root)},
                     progress=progress, cwd=root, threads=threads, jobs=jobs)
    return build_book(book, build_dir)


@dataclass(frozen=True)
class FreshComparison:
    """What :func:`reproduce_fresh` found.

    Attributes:
        cells: Per cell, committed vs fresh mean (:func:`esdlib.analysis.evidence.compare_cells`).
        verdicts: Per claim, committed vs fresh verdict
            (:func:`esdlib.analysis.evidence.compare_verdicts`).
        report: The written Markdown report (``<DIR>/comparison.md``).
        grid: What this call ran and how long it took: ``runs_executed`` (points without a
            fresh record before the call), ``runs_total``, ``wall_s``, ``jobs``, ``threads``
            and the host (``device_name``, ``cpu_count``). The wall time is the whole grid's
            from scratch only when ``runs_executed == runs_total``.
    """

    cells: Any
    verdicts: Any
    report: Path
    grid: dict[str, Any]

    @property
    def all_hold(self) -> bool:
        """Whether every compared verdict (claims whose experiments were re-run) held."""
        return bool((self.verdicts["status"] != "changed").all())


def _fresh_folders(fresh_dir: str | os.PathLike, committed: Path, root: Path) -> dict[str, Path]:
    import tempfile

    fresh = Path(fresh_dir).resolve()
    if fresh.exists() and not fresh.is_dir():
        raise ValueError(f"--fresh {fresh_dir}: exists and is not a folder")
    folders = {"results": paths.results_dir(fresh),  # a fresh project: the same layout
               "papermill_runs": paths.papermill_runs_dir(fresh),
               "checkpoints": paths.checkpoints_dir(fresh)}
    for kept in (committed, paths.papermill_runs_dir(root), paths.checkpoints_dir(root)):
        kept = Path(kept).resolve()
        # resolved (symlinks followed), as reproduce() will: a symlinked sub-folder must not
        # lead into the committed runs
        for folder in (fresh, *(f.resolve() for f in folders.values())):
            if folder == kept or kept in folder.parents or folder in kept.parents:
                raise ValueError(f"--fresh {fresh_dir}: the fresh re-run must not write into "
                                 f"or above {kept} (the committed runs); choose a separate "
                                 "folder, e.g. /tmp/esd-fresh")
    try:
        fresh.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=fresh).close()
    except OSError as err:
        raise ValueError(f"--fresh {fresh_dir}: not a writable folder "
                         f"({err.strerror or err})") from None
    return folders


def reproduce_fresh(profile: str, fresh_dir: str | os.PathLike, *,
                    committed_dir: str | os.PathLike | None = None, progress: bool = True,
                    only: Iterable[str] | None = None, jobs: int | None = None,
                    threads: int = 1, seeds: Iterable[int] | None = None) -> FreshComparison:
    """Re-run a profile's grid into a separate folder and compare it with the committed runs.

    The grid runs into ``<fresh_dir>/results``, ``<fresh_dir>/papermill_runs`` and
    ``<fresh_dir>/checkpoints`` (finished points there are skipped, so an interrupted check
    resumes); the committed records are only read. The report ``<fresh_dir>/comparison.md``
    (and ``comparison.json``) lists, per cell of :data:`esdbook.claims.CLAIMS`, the
    committed and the fresh mean, and per claim both verdicts and whether the verdict holds.
    Digits are not expected to match across machines (other CPUs pick other kernels; spiking
    thresholds amplify last-bit differences); the verdicts are.

    Args:
        profile: The profile to re-run (usually ``default``).
        fresh_dir: Folder of the fresh re-run; must not be, contain or lie inside the
            committed results, papermill runs or checkpoints.
        committed_dir: The committed results (default ``<root>/results``).
        progress: Progress bars.
        only: Re-run only these experiments; only the claims whose cells all lie in them are
            compared, the others are listed as ``"not re-run"``.
        jobs: Grid points run at once (default: one per CPU).
        threads: CPU threads per kernel.
        seeds: Re-run on these seeds instead of the manifest's (e.g. ``range(5, 10)``), to
            test whether the verdicts depend on the seed set.

    Returns:
        The :class:`FreshComparison`.

    Raises:
        ValueError: ``fresh_dir`` overlaps the committed folders.
        ConfigError: An invalid grid point (before any run).
    """
    from esdbook import claims as book_claims
    from esdlib.analysis import evidence
    from esdlib.analysis.runs import runs_of
    from esdlib.io import atomic_write_json, atomic_write_text
    from esdlib.train.records import load_records

    root = book_root()
    committed = Path(committed_dir or paths.results_dir(root)).resolve()
    folders = _fresh_folders(fresh_dir, committed, root)
    seeds = None if seeds is None else sorted(set(int(s) for s in seeds))
    points = grid_points(profile, only=only, seeds=seeds)
    todo = sum(not record_exists(folders["results"], p.experiment, p.run_id) for p in points)
    t0 = time.perf_counter()
    reproduce(profile, build=False, progress=progress, only=only,
              results_dir=folders["results"], runs_dir=folders["papermill_runs"],
              checkpoint_dir=folders["checkpoints"], jobs=jobs, threads=threads, seeds=seeds)
    host = environment_info()
    grid = {"runs_executed": todo, "runs_total": len(points),
            "wall_s": round(time.perf_counter() - t0, 1),
            "jobs": jobs or os.cpu_count() or 1, "threads": threads,
            "device_name": host["device_name"], "cpu_count": host["cpu_count"]}
    old = runs_of(load_records(committed, strict=False), profile)
    new = runs_of(load_records(folders["results"], strict=False), profile)
    claims = book_claims.MNIST_CLAIMS if profile == "mnist" else book_claims.CLAIMS
    rerun = sorted({p.experiment for p in points})
    cells = evidence.compare_cells(old, new, claims)
    verdicts = evidence.compare_verdicts(old, new, claims, rerun=rerun)
    out = folders["results"].parent
    atomic_write_json(out / "comparison.json", {
        "profile": profile, "committed": str(committed), "fresh": str(folders["results"]),
        "grid": grid, "rerun": rerun, "seeds": seeds,
        "cells": json.loads(cells.to_json(orient="records")),
        "verdicts": json.loads(verdicts.to_json(orient="records"))})
    compared = verdicts[verdicts["status"] != "not re-run"]
    changed = compared[compared["status"] == "changed"]
    text = "\n".join([
        f"# Fresh re-run of the {profile} profile", "",
        f"- committed records: {committed}", f"- fresh records: {folders['results']}",
        f"- experiments re-run: {', '.join(rerun)}; seeds: "
        f"{'as in the manifest' if seeds is None else evidence.format_seeds(seeds)}",
        f"- verdicts that hold: {len(compared) - len(changed)} of {len(compared)} compared "
        f"({len(verdicts) - len(compared)} claims not re-run)",
        *(f"- changed: {r.key}: {r.verdict_committed} → {r.verdict_fresh}"
          for r in changed.itertuples()),
        f"- grid: {todo} of {len(points)} runs executed by this call in "
        f"{grid['wall_s'] / 60:.1f} min wall ({grid['jobs']} jobs × {threads} thread(s)) on "
        f"{grid['device_name']} ({grid['cpu_count']} CPUs)", "",
        "## Verdicts", "", "```",
        verdicts.drop(columns=["claim"]).to_string(index=False, float_format="{:+.2f}".format),
        "```", "", "## Cells (mean over seeds)", "", "```",
        cells.to_string(index=False, float_format="{:.2f}".format), "```", ""])
    report = atomic_write_text(out / "comparison.md", text)
    return FreshComparison(cells, verdicts, report, grid)
