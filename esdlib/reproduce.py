"""``esd reproduce``: run a profile's experiment grid through papermill, then build the book.

The grid of every profile lives in one manifest, ``experiments/manifest.yaml``::

    experiments:                       # name -> experiment notebook
      table1: notebooks/experiments/train.ipynb
    profiles:
      default:
        table1:
          base: {epochs: 12}           # RunConfig overrides shared by the grid
          grid: {method: [bptt, esd], seed: [0, 1, 2]}   # cartesian product
          extra: [{arch: spiking_resnet19, method: esd}]  # single points added to the product

Each grid point is one validated :class:`~esdlib.config.RunConfig` (``experiment`` = the
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esdlib.config import PROFILES, ConfigError, RunConfig
from esdlib.results import make_run_id, record_exists

MANIFEST = Path("experiments") / "manifest.yaml"


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


def project_root(start: Path | None = None) -> Path:
    """The folder holding ``pyproject.toml`` above ``start`` (default: cwd, then the package)."""
    candidates = [start or Path.cwd(), Path(__file__).resolve().parent]
    for base in candidates:
        for folder in (base, *base.parents):
            if (folder / MANIFEST).is_file():
                return folder
    raise FileNotFoundError(f"no {MANIFEST} found above {candidates[0]}: run from the repository")


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read and check the manifest (experiments exist, profiles are known).

    Raises:
        ConfigError: the file is not valid YAML or not a valid manifest (names the file).
    """
    import yaml

    path = Path(path) if path is not None else project_root() / MANIFEST
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict) or set(data) != {"experiments", "profiles"}:
        raise ConfigError(f"{path}: expected top-level keys 'experiments' and 'profiles'")
    for prof, exps in data["profiles"].items():
        if prof not in PROFILES:
            raise ConfigError(f"{path}: unknown profile {prof!r}; valid: {PROFILES}")
        for name in exps:
            if name not in data["experiments"]:
                raise ConfigError(f"{path}: profile {prof!r} uses unknown experiment {name!r}; "
                                 f"declared: {sorted(data['experiments'])}")
    return data


def expand_grid(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Overrides of every point of one experiment spec (``base`` × product(``grid``) + ``extra``).

    Args:
        spec: ``{"base": {...}, "grid": {key: [values]}, "extra": [{...}]}`` (all optional).

    Returns:
        A list of override dicts, in a deterministic order, without duplicates.
    """
    unknown = set(spec) - {"base", "grid", "extra"}
    if unknown:
        raise ValueError(f"unknown experiment keys {sorted(unknown)}; use base, grid, extra")
    base = dict(spec.get("base") or {})
    grid = spec.get("grid") or {}
    keys = list(grid)
    points = [base | dict(zip(keys, values, strict=True))
              for values in itertools.product(*(grid[k] for k in keys))]
    points += [base | dict(p) for p in spec.get("extra") or []]
    unique, seen = [], set()
    for p in points:
        key = json.dumps(p, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def grid_points(profile: str, manifest: Mapping[str, Any] | None = None,
                only: Iterable[str] | None = None) -> list[GridPoint]:
    """All grid points of a profile, each validated (errors name the experiment and point).

    Args:
        profile: one of :data:`esdlib.config.PROFILES`.
        manifest: a loaded manifest (default: the repository's).
        only: restrict to these experiment names.

    Returns:
        The points, experiments in manifest order.

    Raises:
        ConfigError: an invalid point or an unknown experiment in ``only``.
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
    points = []
    for name, spec in exps.items():
        if only and name not in only:
            continue
        for overrides in expand_grid(spec):
            try:
                cfg = RunConfig.profile(profile, experiment=name, **overrides)
            except ConfigError as err:
                raise ConfigError(f"experiment {name!r}, point {overrides}: {err}") from err
            points.append(GridPoint(name, manifest["experiments"][name], overrides, cfg,
                                    make_run_id(cfg)))
    return points


def run_point(point: GridPoint, root: Path, results: Path, runs: Path, checkpoints: Path,
              timeout: float | None = None) -> Path:
    """Execute one grid point's notebook with papermill (atomically) and return its path."""
    from esdlib.bookbuild import run_notebook

    target = runs / point.experiment / f"{point.run_id}.ipynb"
    params = {"profile": point.config.profile, "experiment": point.experiment,
              "overrides_json": json.dumps(dict(point.overrides), sort_keys=True),
              "results_dir": str(results), "checkpoint_dir": str(checkpoints)}
    run_notebook(root / point.notebook, target, params, cwd=root, timeout=timeout)
    return target


def reproduce(profile: str = "default", *, build: bool = True, progress: bool = True,
              only: Iterable[str] | None = None, results_dir: str | os.PathLike | None = None,
              runs_dir: str | os.PathLike | None = None,
              checkpoint_dir: str | os.PathLike | None = None,
              book_dir: str | os.PathLike | None = None,
              build_dir: str | os.PathLike | None = None, jobs: int | None = None,
              threads: int = 1) -> Path | None:
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
            ``<book_dir>/chapters``).
        build_dir: where the HTML goes (default ``<book_dir>/_build``).
        jobs: grid points run concurrently, each in its own kernel (default: one per CPU).
        threads: CPU threads per kernel. One thread per kernel with one kernel per CPU is
            several times faster for the book's small networks than fewer, wider kernels.

    Returns:
        Path of the built ``index.html`` (``None`` when ``build`` is False).
    """
    from tqdm import tqdm

    from esdlib.bookbuild import build_book, execute_chapters, kernel_environment

    root = project_root()
    results = Path(results_dir or root / "results").resolve()
    runs = Path(runs_dir or root / "papermill_runs").resolve()
    ckpts = Path(checkpoint_dir or root / "checkpoints").resolve()
    book = Path(book_dir or root / "book").resolve()
    points = grid_points(profile, only=only)  # validates everything before any work
    jobs = jobs or os.cpu_count() or 1
    if jobs < 1 or threads < 1:
        raise ValueError(f"jobs and threads must be >= 1, got {jobs}, {threads}")
    todo = [p for p in points if not record_exists(results, p.experiment, p.run_id)]
    bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=f"grid ({profile})",
               unit="run", disable=not progress)
    with kernel_environment(threads), cf.ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(run_point, p, root, results, runs, ckpts): p for p in todo}
        for fut in cf.as_completed(futures):
            fut.result()
            bar.set_postfix_str(futures[fut].run_id[-30:])
            bar.update(1)
    bar.close()
    if not build:
        return None
    execute_chapters(root / "notebooks" / "chapters", book / "chapters",
                     {"profile": profile, "results_dir": str(results)}, progress=progress,
                     cwd=root, threads=threads)
    return build_book(book, build_dir)
