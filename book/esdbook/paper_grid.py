"""``python -m esdbook reproduce --profile paper``: the paper's grid on GPUs, checked, planned,
resumable, and rendered into the chapters; ``--dry-run`` runs every point for two steps on
synthetic files.

::

    python -m esdbook reproduce --profile paper --data-dir /data --plan     # checks + plan only
    python -m esdbook reproduce --profile paper --data-dir /data --gpus 8 --out pages  # + book
    python -m esdbook reproduce --profile paper --data-root imagenet=/ilsvrc --seeds 0-2 --no-book
    python -m esdbook reproduce --profile paper --dry-run                   # minutes, any CPU

The grid is the ``paper`` profile of ``book/experiments/manifest.yaml`` (one seed per cell;
``--seeds 0-2`` runs seeds 0, 1 and 2 of every point). Before any work the command checks that
every data set the points need is on disk (:func:`esdbook.paper_data.data_problem`: the folder
it looked in and how to provide it), that a GPU is there (or ``--device cpu`` is explicit) and
that the record and checkpoint folders are writable with room for the checkpoints; a refusal
is one line and exit status 2. It then prints the plan (:func:`plan_text`: points, GPU-hours
estimated from the GPU benchmark records and the per-epoch step counts, checkpoint disk) and
runs the points: every single-GPU point through its experiment notebook (papermill), one per
GPU at a time; ImageNet points through ``torchrun --nproc-per-node N`` (``--gpus N``) on
``esd train``, whose notebook then reads the finished record. Finished points (a complete
record) are skipped and an interrupted point resumes from its ``last.pt``, so after a kill the
same command continues. Finally the chapters are executed from the paper-profile records and
the book is built (``--no-book``: not).

``--dry-run`` (:func:`dry_run`) writes tiny synthetic copies of the data sets in their real
on-disk formats (:func:`esdbook.paper_data.write_synthetic_data`) into a scratch folder and runs
every point of the grid there for 2 optimiser steps and one evaluation batch
(:data:`DRY_RUN_OVERRIDES`), ImageNet through ``torchrun`` (gloo with ``--device cpu``), then
executes the chapters that read run records. Its records, notebooks and checkpoints stay in
the scratch folder, never in ``results/``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from esdbook.paper_data import data_problem, data_roots, parse_data_roots, write_synthetic_data
from esdbook.reproduce import GridPoint, book_root, grid_points, run_point
from esdlib.train import paths
from esdlib.train.config import ConfigError, RunConfig
from esdlib.train.records import make_run_id

__all__ = [
    "DATASET_SIZES",
    "DISTRIBUTED_DATASETS",
    "DRY_RUN_CHAPTERS",
    "DRY_RUN_OVERRIDES",
    "DryRunResult",
    "Estimate",
    "PaperGridError",
    "add_arguments",
    "check_machine",
    "dry_run",
    "estimate",
    "main",
    "paper_points",
    "plan_text",
    "refuse_paper_options",
    "run_grid",
    "torchrun_command",
]

DISTRIBUTED_DATASETS = frozenset({"imagenet"})
"""Data sets whose points run on every GPU through ``torchrun`` (the others on one GPU each)."""

DATASET_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000),
                 "imagenet": (1_281_167, 50_000), "cifar10_dvs": (9_000, 1_000)}
"""Training and test samples of the real data sets (CIFAR10-DVS: the 0.9/0.1 split of 10,000),
for the step counts of the plan."""

DRY_RUN_OVERRIDES: dict[str, Any] = {"epochs": 1, "max_train_steps": 2, "batch_size": 2,
                                     "eval_batch_size": 4, "width": 0.25, "num_workers": 0}
"""What ``--dry-run`` changes in every point: one epoch of 2 optimiser steps at batch 2 and one
evaluation batch (the synthetic test sets hold <= 4 samples), at width ×0.25 — every layer and
code path of the paper's networks at a size the CPU runs in a second (×0.125 gives 8-channel
1×1 stride-2 convolutions whose oneDNN weight gradient corrupts the heap on the CPU, see
``book/appendix_performance.md``)."""

DRY_RUN_CHAPTERS = ("04_table1_static", "05_dvs", "07_firing_rates", "08_gradient_error",
                    "09_ablations", "10_provenance")
"""The chapters that read run records; the dry run executes these on its synthetic records (the
others show no records of a profile: 01-03 explain the method, 06 reads benchmark records).
``11_verdicts`` is not among them: its cell table
(:func:`esdlib.analysis.evidence.cell_table`) refuses the paper grid, whose evidence cells
(method, T, architecture) hold a CIFAR-10 and a CIFAR-100 run of the same seed; the claims
table of the other chapters says "cannot decide" for those cells instead. Until the evidence
cells name the data set, ``tests/test_paper_grid.py`` checks that chapter 11 still fails."""

_IN_PROCESS = {"train.ipynb": "fit", "gradient_error.ipynb": "gradient_study"}
"""The library call each experiment notebook makes (the dry run makes it in this process)."""

_CHECKPOINT_FILES = 2  # last.pt and best.pt


class PaperGridError(ValueError):
    """A refusal before any work (missing data or GPU, bad option): one line, exit status 2."""


# --------------------------------------------------------------------------------------- points


def paper_points(seeds: int | Sequence[int] = 1, only: Iterable[str] | None = None,
                 overrides: Mapping[str, Any] | None = None,
                 roots: Mapping[str, str | os.PathLike] | None = None,
                 manifest: Mapping[str, Any] | None = None) -> list[GridPoint]:
    """The points of the manifest's paper grid, each for seeds ``0..seeds-1`` (or the given
    seeds).

    Args:
        seeds: seeds per cell (the manifest's points use seed 0), or the seeds themselves
            (``python -m esdbook reproduce --profile paper --seeds 0-2``).
        only: restrict to these experiments.
        overrides: applied to every point after the manifest's (``data_root``, ``device``,
            :data:`DRY_RUN_OVERRIDES`); fields that do not enter the run id keep it.
        roots: ``{dataset: folder}``: each point's ``data_root`` (not in the run id).
        manifest: a loaded manifest (default: the repository's).

    Returns:
        The validated points, experiments in manifest order, seeds innermost.

    Raises:
        PaperGridError: ``seeds`` < 1 or a manifest point sets its own seed.
        ConfigError: an invalid point.
    """
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise PaperGridError(f"--seeds must be a positive integer, got {seeds!r}")
        seeds = list(range(seeds))
    seeds = sorted({int(s) for s in seeds})
    if not seeds:
        raise PaperGridError("--seeds names no seed")
    several = seeds != [0]
    out = []
    for p in grid_points("paper", manifest, only):
        if "seed" in p.overrides and several:
            raise PaperGridError(f"experiment {p.experiment!r}, point {dict(p.overrides)} sets "
                                 "its own seed; --seeds would repeat it")
        for seed in seeds:
            ov = {**p.overrides, **({"seed": seed} if several else {}), **(overrides or {})}
            if roots is not None and p.config.dataset in roots:
                ov["data_root"] = str(roots[p.config.dataset])
            try:
                cfg = RunConfig.from_profile("paper", experiment=p.experiment, **ov)
            except ConfigError as err:
                raise ConfigError(f"experiment {p.experiment!r}, point {ov}: {err}") from err
            out.append(GridPoint(p.experiment, p.notebook, ov, cfg, make_run_id(cfg)))
    return out


def _is_distributed(point: GridPoint) -> bool:
    return point.config.dataset in DISTRIBUTED_DATASETS


def _set_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def torchrun_command(point: GridPoint, nproc: int, results: Path, checkpoints: Path,
                     quiet: bool = True) -> list[str]:
    """The ``torchrun --nproc-per-node N -m esdlib.cli train`` command of a point.

    ``torchrun`` is run as ``python -m torch.distributed.run`` of this interpreter (the same
    program, no PATH lookup). The command writes the point's record and checkpoints where its
    notebook looks for them (same run id).
    """
    sets = {**point.overrides, "experiment": point.experiment, "out_dir": str(results),
            "checkpoint_dir": str(checkpoints)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", str(nproc), "-m", "esdlib.cli", "train", "--profile", "paper"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={_set_value(value)}"]
    return cmd + (["--quiet"] if quiet else [])


# ------------------------------------------------------------------------------------ estimate


@dataclass(frozen=True)
class Estimate:
    """The cost of a set of points.

    Attributes:
        gpu_hours: estimated GPU-hours of all points (GPUs × wall hours for torchrun points).
        per_point: one dict per point: ``experiment``, ``run_id``, ``dataset``, ``arch``,
            ``method``, ``T``, ``steps_per_epoch``, ``step_s``, ``gpu_hours``,
            ``checkpoint_bytes``.
        checkpoint_bytes: disk for the points' ``last.pt`` and ``best.pt``.
        source: which benchmark records the step times come from.
    """

    gpu_hours: float
    per_point: list[dict[str, Any]]
    checkpoint_bytes: int
    source: str


def _bench_rows(bench_dir: Path, device_name: str | None):
    from esdlib.bench.records import load_bench

    df = load_bench(bench_dir)
    df = df[(df["device_type"] == "cuda") & (df["precision"] == "fp32") & df["channels_last"]]
    if df.empty:
        raise PaperGridError(f"no CUDA fp32 channels-last benchmark records in {bench_dir} to "
                             "estimate the GPU time from (run benchmarks/gpu_check.sh)")
    same = df[df["device_name"] == device_name] if device_name else df.iloc[:0]
    df = same if not same.empty else df
    names = sorted(set(df["device_name"]))
    return df, f"{', '.join(names)} records in {bench_dir}"


def _per_T(rows, column: str, T: int) -> float:
    """Median ``column`` at ``T``, linear in T between/beyond the measured T values."""
    import numpy as np

    by_T = rows.groupby("T")[column].median().dropna().sort_index()
    if by_T.empty:
        raise PaperGridError(f"benchmark rows without {column}")
    if T in by_T.index:
        return float(by_T[T])
    ts, vs = by_T.index.to_numpy(float), by_T.to_numpy(float)
    if len(ts) == 1:
        return float(vs[0] * T / ts[0])
    i = int(np.clip(np.searchsorted(ts, T), 1, len(ts) - 1))
    slope = (vs[i] - vs[i - 1]) / (ts[i] - ts[i - 1])
    return float(max(vs[i - 1] + slope * (T - ts[i - 1]), vs.min()))


def _step_times(df, cfg: RunConfig) -> tuple[float, float, float]:
    """(training step s, inference s, bench samples × pixels) of the bench at cfg's arch."""
    rows = df[df["arch"] == cfg.arch]
    if rows.empty:
        raise PaperGridError(f"no GPU benchmark of {cfg.arch} to estimate from")
    bench_method = {"sd": "esd", "esd_bptt": "bptt"}.get(cfg.method, cfg.method)
    m = rows[rows["method"] == bench_method]
    step = _per_T(m, "step_s", cfg.T)
    if cfg.method == "esd_bptt":  # BPTT plus the branches: BPTT × ESD/RateBP at this T
        ratio = (_per_T(rows[rows["method"] == "esd"], "step_s", cfg.T)
                 / _per_T(rows[rows["method"] == "ratebp"], "step_s", cfg.T))
        step *= ratio
    infer = _per_T(m, "infer_s", cfg.T)
    first = m.iloc[0]
    return step, infer, float(first["batch"] * first["image_size"] ** 2)


def _checkpoint_bytes(cfg: RunConfig) -> int:
    import torch

    from esdlib.train.setup import model_from_config

    classes = {"cifar100": 100, "imagenet": 1000}.get(cfg.dataset, 10)
    with torch.device("meta"):
        model = model_from_config(cfg, classes, 2 if cfg.dataset == "cifar10_dvs" else 3)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    momentum = sum(p.numel() * p.element_size() for p in model.parameters())
    return _CHECKPOINT_FILES * (state + momentum)


def estimate(points: Sequence[GridPoint], gpus: int = 1, bench_dir: str | os.PathLike | None = None,
             device_name: str | None = None) -> Estimate:
    """GPU-hours and checkpoint disk of ``points`` from the GPU benchmark records.

    Per point: ``epochs × (steps_per_epoch × step_s + eval_batches × infer_s)``; ``step_s`` and
    ``infer_s`` are the medians of the fp32, channels-last benchmark of the point's network,
    method and T (linear in T beyond the measured T; SD as ESD, ESD-on-BPTT as BPTT × ESD/RateBP)
    scaled by the point's batch × pixels over the benchmark's. Torchrun points count every GPU
    (each of ``gpus`` ranks steps through its share at the per-process batch). The benchmark's
    short steps are partly launch-bound, so this is a rough estimate (±30 %); data loading and
    the gradient-error measurements are not counted.

    Args:
        points: the points (their configs as they will run).
        gpus: GPUs of a torchrun point.
        bench_dir: benchmark records (default ``results/bench/gpu`` of the project).
        device_name: prefer records of this GPU (e.g. ``torch.cuda.get_device_name()``);
            otherwise every CUDA record (the committed H100 ones).

    Raises:
        PaperGridError: no usable benchmark record.
    """
    bench_dir = Path(bench_dir) if bench_dir is not None else paths.bench_dir(
        paths.results_dir(book_root())) / "gpu"
    df, source = _bench_rows(bench_dir, device_name)
    rows, total, disk = [], 0.0, 0
    ckpt_cache: dict[tuple, int] = {}
    for p in points:
        cfg = p.config
        world = gpus if _is_distributed(p) else 1
        n_train, n_test = DATASET_SIZES[cfg.dataset]
        steps = math.ceil(math.ceil(n_train / world) / cfg.batch_size)
        if cfg.max_train_steps is not None:
            steps = min(steps, cfg.max_train_steps)
        step_s, infer_s, volume = _step_times(df, cfg)
        size = cfg.image_size or 32
        train_s = steps * step_s * cfg.batch_size * size**2 / volume
        first = df[df["arch"] == cfg.arch].iloc[0]
        eval_s = (math.ceil(n_test / world) / first["batch"]) * infer_s \
            * size**2 / first["image_size"] ** 2
        hours = cfg.epochs * (train_s + eval_s) * world / 3600
        key = (cfg.arch, cfg.dataset, cfg.width, cfg.method in ("sd", "esd", "esd_bptt"),
               cfg.branch_kind)
        if key not in ckpt_cache:
            ckpt_cache[key] = _checkpoint_bytes(cfg)
        total += hours
        disk += ckpt_cache[key]
        rows.append({"experiment": p.experiment, "run_id": p.run_id, "dataset": cfg.dataset,
                     "arch": cfg.arch, "method": cfg.method, "T": cfg.T,
                     "steps_per_epoch": steps, "step_s": step_s, "gpu_hours": hours,
                     "checkpoint_bytes": ckpt_cache[key]})
    return Estimate(total, rows, disk, source)


def plan_text(points: Sequence[GridPoint], todo: Sequence[GridPoint], est: Estimate, *,
              gpus: int, device: str, seeds: int, roots: Mapping[str, Path],
              checkpoints: Path, at_once: int = 1) -> str:
    """The plan printed before the grid runs: points (to run / done), GPU-hours per experiment
    and data set, disk, data folders and how ImageNet is launched."""
    import pandas as pd

    df = pd.DataFrame(est.per_point)
    todo_ids = {p.run_id for p in todo}
    df["todo"] = df["run_id"].isin(todo_ids)
    lines = [f"paper grid: {len(points)} points ({seeds} seed{'s' if seeds > 1 else ''} per "
             f"cell), {len(todo)} to run, {len(points) - len(todo)} done",
             f"estimated GPU time: {est.gpu_hours:,.0f} GPU-hours for all points, "
             f"{df.loc[df['todo'], 'gpu_hours'].sum():,.0f} for those to run "
             f"(fp32 step times of {est.source}; ±30 %)"]
    for (exp, ds), g in df.groupby(["experiment", "dataset"], sort=False):
        lines.append(f"  {exp:15} {ds:12} {len(g):3} points, {int(g['todo'].sum()):3} to run, "
                     f"{g['gpu_hours'].sum():8,.1f} GPU-h, {g['steps_per_epoch'].iloc[0]:,} "
                     "steps/epoch")
    need = int(df.loc[df["todo"], "checkpoint_bytes"].sum())
    lines.append(f"checkpoints: {need / 1e9:.1f} GB more in {checkpoints} "
                 f"({est.checkpoint_bytes / 1e9:.1f} GB for the whole grid: last.pt + best.pt)")
    dvs = [p.config for p in todo if p.config.dataset == "cifar10_dvs"]
    if dvs:  # float32 frames, stored compressed (event counts are mostly zero)
        frames = sum(DATASET_SIZES["cifar10_dvs"]) * 2 * 4 * max(
            c.T * (c.image_size or 48) ** 2 for c in dvs)
        lines.append(f"CIFAR10-DVS frame cache: at most {frames / 1e9:.1f} GB beside the data")
    for name, root in roots.items():
        lines.append(f"data: {name} from {root}")
    dist = [p for p in todo if _is_distributed(p)]
    if dist:
        batch = dist[0].config.batch_size
        lines.append(f"ImageNet: {len(dist)} point(s) through torchrun --nproc-per-node {gpus} "
                     f"({'nccl' if device != 'cpu' else 'gloo'}); batch {batch} per process, "
                     f"{batch * gpus} per step in all")
    single = len(todo) - len(dist)
    lines.append(f"device: {device}; {single} single-device point(s), {at_once} at a time, "
                 "each through its notebook (papermill)")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- checks


def check_machine(device: str | None, gpus: int) -> str:
    """The device the grid runs on, or a refusal.

    Args:
        device: ``--device`` (``None``: a CUDA GPU is required).
        gpus: ``--gpus``.

    Returns:
        ``"cuda"`` or ``"cpu"``.

    Raises:
        PaperGridError: no GPU and no explicit ``--device cpu``, fewer GPUs than ``--gpus``,
            or an unknown device.
    """
    import torch

    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise PaperGridError(f"--gpus must be a positive integer, got {gpus!r}")
    if device not in (None, "cuda", "cpu"):
        raise PaperGridError(f"--device must be cuda or cpu, got {device!r}")
    if device == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise PaperGridError(
            "no CUDA GPU on this machine: the paper grid is GPU work (see the plan with --plan); "
            "pass --device cpu to run it on the CPU anyway, or --dry-run to check every point "
            "in minutes")
    if gpus > torch.cuda.device_count():
        raise PaperGridError(f"--gpus {gpus} but this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
    return "cuda"


def _check_folders(results: Path, checkpoints: Path, need: int) -> None:
    from esdlib.train.config import check_writable_dir

    for path, what in ((results, "results folder"), (checkpoints, "checkpoint folder")):
        try:
            check_writable_dir(path, what)
        except ConfigError as err:
            raise PaperGridError(str(err)) from None
    probe = next(p for p in (checkpoints, *checkpoints.parents) if p.exists())
    free = shutil.disk_usage(probe).free
    if free < need:
        raise PaperGridError(f"the checkpoints need {need / 1e9:.1f} GB but {probe} has "
                             f"{free / 1e9:.1f} GB free; free space or choose another disk")


# ------------------------------------------------------------------------------------- running


@dataclass
class _Outcome:
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, point: GridPoint, error: BaseException | None) -> None:
        with self.lock:
            if error is None:
                self.done.append(point.run_id)
            else:
                self.failed.append((point.run_id, f"{type(error).__name__}: {error}"))


def _run_torchrun(point: GridPoint, nproc: int, root: Path, results: Path, checkpoints: Path,
                  threads: int, log_dir: Path) -> None:
    cmd = torchrun_command(point, nproc, results, checkpoints)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    log = log_dir / point.experiment / f"{point.run_id}.torchrun.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"torchrun exited with {proc.returncode} (log {log}):\n{tail}")


def run_grid(points: Sequence[GridPoint], *, device: str, gpus: int, root: Path, results: Path,
             runs: Path, checkpoints: Path, threads: int = 1, jobs: int | None = None,
             progress: bool = True,
             in_process: Callable[[GridPoint], bool] | None = None,
             notebook: Callable[[GridPoint], bool] | None = None) -> _Outcome:
    """Run the points that have no complete record; return what finished and what failed.

    Single-device points run through their notebook (papermill), one per GPU at a time on
    ``cuda:0..gpus-1`` (``jobs`` > ``gpus``: that many at a time, sharing the GPUs; on the CPU:
    ``jobs`` at a time). Torchrun points
    (:data:`DISTRIBUTED_DATASETS`) run ``esd train`` on ``gpus`` processes, then their notebook
    reads the finished record; on CUDA they run first, one at a time, as they use every GPU.
    A failed point does not stop the others. For the dry run: points for which
    ``in_process(point)`` is true run the notebook's library call in this process instead
    of papermill, and a torchrun point for which ``notebook(point)`` is false skips its
    notebook.
    """
    from tqdm import tqdm

    from esdbook.build import kernel_environment
    from esdlib.train.records import record_exists

    todo = [p for p in points if not record_exists(results, p.experiment, p.run_id)]
    outcome = _Outcome()
    bar = tqdm(total=len(points), initial=len(points) - len(todo), desc="grid (paper)",
               unit="run", disable=not progress)
    slots = max(gpus, jobs or 0) if device == "cuda" else jobs or 1
    devices = [f"cuda:{i % gpus}" if device == "cuda" else "cpu" for i in range(slots)]
    free, lock = list(devices), threading.Lock()

    def single(p: GridPoint) -> None:
        with lock:
            d = free.pop()
        try:
            run_point(replace(p, overrides={**p.overrides, "device": d}), root, results, runs,
                      checkpoints)
        finally:
            with lock:
                free.append(d)

    def distributed(p: GridPoint) -> None:
        _run_torchrun(p, gpus, root, results, checkpoints, threads, runs)
        if notebook is None or notebook(p):
            run_point(p, root, results, runs, checkpoints)

    def attempt(fn: Callable[[GridPoint], Any], p: GridPoint) -> None:
        try:
            fn(p)
        except Exception as err:  # noqa: BLE001 - reported with the others at the end
            outcome.add(p, err)
        else:
            outcome.add(p, None)
        bar.set_postfix_str(p.run_id[-30:])
        bar.update(1)

    dist = [p for p in todo if _is_distributed(p)]
    here = [p for p in todo if p not in dist and in_process is not None and in_process(p)]
    kernels = [p for p in todo if p not in dist and p not in here]
    with kernel_environment(threads):
        if device == "cuda":  # torchrun points use every GPU: alone, before the others
            for p in dist:
                attempt(distributed, p)
        with cf.ThreadPoolExecutor(len(devices)) as ex:
            futures = [ex.submit(attempt, distributed, p) for p in dist if device != "cuda"]
            futures += [ex.submit(attempt, single, p) for p in kernels]
            for p in here:  # alongside the pool, in this thread
                attempt(lambda q: _run_in_process(q, results, checkpoints), p)
            for fut in futures:
                fut.result()
    bar.close()
    return outcome


def _run_in_process(point: GridPoint, results: Path, checkpoints: Path) -> dict[str, Any]:
    """What the point's experiment notebook does, in this process (same config, same call)."""
    import esdlib as esd

    call = _IN_PROCESS.get(Path(point.notebook).name)
    if call is None:
        raise PaperGridError(f"{point.notebook}: no in-process equivalent; run it through "
                             "papermill")
    cfg = RunConfig.from_notebook("paper", json.dumps(dict(point.overrides), sort_keys=True),
                                  experiment=point.experiment, out_dir=str(results),
                                  checkpoint_dir=str(checkpoints))
    return esd.gradient_study(cfg) if call == "gradient_study" else esd.fit(cfg, progress=False)


# ------------------------------------------------------------------------------------- dry run


@dataclass(frozen=True)
class DryRunResult:
    """What :func:`dry_run` did.

    Attributes:
        folder: the scratch folder (``data/``, ``results/``, ``papermill_runs/``,
            ``checkpoints/``, ``_executed/``).
        points: every point run.
        notebooks: the points run through papermill (the others ran in-process or, ImageNet,
            through torchrun and then their notebook).
        chapters: the executed chapters.
        failed: ``(run_id, error)`` of failed points.
        wall_s: seconds from start to end.
        points_s: seconds of the points (after the synthetic data were written).
        chapters_s: seconds of the chapters.
    """

    folder: Path
    points: list[GridPoint]
    notebooks: list[GridPoint]
    chapters: list[Path]
    failed: list[tuple[str, str]]
    wall_s: float
    points_s: float
    chapters_s: float


def _notebook_subset(points: Sequence[GridPoint]) -> list[GridPoint]:
    """One point per (notebook, data set): every experiment notebook on each of its data sets
    once (the first point in manifest order)."""
    seen, out = set(), []
    for p in points:
        key = (p.notebook, p.config.dataset)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _check_scratch(folder: Path, root: Path) -> None:
    for kept in (paths.results_dir(root), paths.papermill_runs_dir(root),
                 paths.checkpoints_dir(root), root / "book"):
        if folder == kept or kept in folder.parents or folder in kept.parents:
            raise PaperGridError(f"--dry-run-dir {folder}: the dry run must not write into or "
                                 f"above {kept}; choose a scratch folder, e.g. /tmp/esd-dry")


def dry_run(folder: str | os.PathLike | None = None, *, seeds: int = 1,
            only: Iterable[str] | None = None, device: str = "cpu", gpus: int = 2,
            notebooks: str = "subset", chapters: bool = True, jobs: int | None = None,
            progress: bool = False) -> DryRunResult:
    """Run every paper point for 2 steps and one evaluation batch on synthetic files.

    Budget and design. The whole dry run must take <= 2 min on 2 CPU cores (it is part of
    ``make test``), and every papermill kernel pays ~5 s to start and import torch, so 39
    points through papermill alone would take ~2 min of kernel start-up on 2 cores. What
    costs seconds is therefore run once per kind, and what is cheap runs for every point:

    - every point runs its notebook's library call with the notebook's config construction
      (``RunConfig.from_notebook`` then ``esd.fit`` / ``esd.gradient_study``), in this
      process (~0.5 s each at :data:`DRY_RUN_OVERRIDES`): every data set, network, method and
      T of the grid trains 2 steps, evaluates and writes its record;
    - ``notebooks="subset"``: one point per (notebook, data set) goes through its notebook
      with papermill instead (5 kernels: both notebooks, every data set), run alongside;
      ``"all"``: every point through papermill (the GPU check can afford it);
    - every ImageNet point runs through ``torchrun --nproc-per-node gpus`` on ``esd train``
      (gloo on the CPU: 2 processes), then its notebook reads the record;
    - the chapters that read run records (:data:`DRY_RUN_CHAPTERS`) are executed on the
      synthetic records, 2 at a time; the HTML build (~1 min) is left to the smoke pipeline.

    Args:
        folder: scratch folder (default: a new temporary one); must lie outside the project's
            ``results``, ``papermill_runs``, ``checkpoints`` and ``book``.
        seeds: seeds per cell.
        only: restrict to these experiments.
        device: ``cpu`` or ``cuda``.
        gpus: processes of a torchrun point (on CUDA: GPUs).
        notebooks: ``"subset"`` or ``"all"`` (see above).
        chapters: execute the chapters.
        jobs: papermill kernels at a time (default: one per CPU, at most 2).
        progress: progress bars.

    Returns:
        The :class:`DryRunResult` (its records are synthetic test data, marked as such).
    """
    from esdbook.build import execute_chapters

    if notebooks not in ("subset", "all"):
        raise PaperGridError(f"notebooks must be 'subset' or 'all', got {notebooks!r}")
    t0 = time.perf_counter()
    root = book_root()
    folder = Path(folder or tempfile.mkdtemp(prefix="esd-paper-dry-run-")).resolve()
    _check_scratch(folder, root)
    results, runs, ckpts = (paths.results_dir(folder), paths.papermill_runs_dir(folder),
                            paths.checkpoints_dir(folder))  # a scratch project, same layout
    base = paper_points(seeds, only)  # validates the grid before anything is written
    roots = write_synthetic_data(folder / "data", sorted({p.config.dataset for p in base}))
    for sub in ("paper", "bench"):
        if not (results / sub).is_dir():
            shutil.copytree(paths.results_dir(root) / sub, results / sub)
    extra = {**DRY_RUN_OVERRIDES, "device": device}
    points = paper_points(seeds, only, extra, roots)
    subset = points if notebooks == "all" else _notebook_subset(points)
    subset_ids = {p.run_id for p in subset}
    jobs = jobs or min(2, os.cpu_count() or 1)
    import torch

    torch.set_num_threads(1)
    t1 = time.perf_counter()
    outcome = run_grid(points, device=device, gpus=gpus, root=root, results=results, runs=runs,
                       checkpoints=ckpts, threads=1, jobs=jobs, progress=progress,
                       in_process=lambda p: p.run_id not in subset_ids,
                       notebook=lambda p: p.run_id in subset_ids)
    t2 = time.perf_counter()
    executed: list[Path] = []
    if chapters and not outcome.failed:
        executed = execute_chapters(root / "book" / "chapters", folder / "_executed",
                                    {"profile": "paper", "results_dir": str(results)},
                                    progress=False, cwd=root, timeout=600, threads=1, jobs=jobs,
                                    only=DRY_RUN_CHAPTERS)
    t3 = time.perf_counter()
    return DryRunResult(folder, points, [p for p in points if p.run_id in subset_ids],
                        executed, outcome.failed, t3 - t0, t2 - t1, t3 - t2)


# ---------------------------------------------------------------------------------- the command


def add_arguments(parser: Any) -> None:
    """Add the paper-grid options to the ``reproduce`` sub-command's parser."""
    g = parser.add_argument_group("paper profile (--profile paper)")
    g.add_argument("--data-root", action="append", metavar="DATASET=PATH",
                   help="folder of one data set (repeatable), e.g. cifar10=/data/cifar10")
    g.add_argument("--data-dir", metavar="DIR", default=None,
                   help="folder holding one sub-folder per data set (DIR/cifar10, DIR/imagenet, "
                        "...); default $ESDLIB_DATA or ./data")
    g.add_argument("--device", choices=("cuda", "cpu"), default=None,
                   help="default: cuda, required (--device cpu runs the grid on the CPU); "
                        "the dry run's default is cpu")
    g.add_argument("--gpus", type=int, default=None,
                   help="GPUs (default: all): single-GPU points run one per GPU, ImageNet on "
                        "all through torchrun --nproc-per-node GPUS (dry run on the CPU: 2 "
                        "gloo processes)")
    g.add_argument("--plan", action="store_true",
                   help="check and print the plan (points, GPU-hours, disk), run nothing")
    g.add_argument("--dry-run", action="store_true",
                   help="every point for 2 steps on synthetic data in a scratch folder, then "
                        "the chapters; never writes results/")
    g.add_argument("--dry-run-dir", metavar="DIR", default=None,
                   help="scratch folder of --dry-run (default: a new temporary folder)")
    g.add_argument("--dry-run-notebooks", choices=("subset", "all"), default="subset",
                   help="dry run: one point per experiment notebook and data set through "
                        "papermill, the others in-process (default), or all through papermill")


_PAPER_OPTIONS = ("data_root", "data_dir", "device", "gpus", "plan", "dry_run", "dry_run_dir")


def refuse_paper_options(args: Any) -> None:
    """Refuse the paper-only options with another profile (before any work)."""
    given = [f"--{k.replace('_', '-')}" for k in _PAPER_OPTIONS if getattr(args, k, None)]
    if args.dry_run_notebooks != "subset":
        given.append("--dry-run-notebooks")
    if given:
        raise PaperGridError(f"{', '.join(given)} only apply to --profile paper")


def _seeds(args: Any) -> list[int]:
    """``--seeds`` of the command line (``"0-2"``, ``"0,3"``): seed 0 when not given."""
    from esdbook.reproduce import parse_seeds

    return [0] if getattr(args, "seeds", None) is None else parse_seeds(args.seeds)


def main(args: Any) -> int:
    """``reproduce --profile paper`` from parsed arguments: checks, plan, grid, chapters.

    Returns:
        0 on success (or after ``--plan``), 1 when a point or the dry run failed.

    Raises:
        PaperGridError: a refusal before any work (exit status 2 in ``python -m esdbook``).
    """
    from esdlib.train.records import record_exists

    if args.fresh is not None:
        raise PaperGridError("--fresh re-runs the CPU evidence grid; not with --profile paper")
    if args.jobs is not None and args.jobs < 1:
        raise PaperGridError(f"--jobs must be >= 1, got {args.jobs}")
    explicit = parse_data_roots(args.data_root)
    if args.dry_run:
        if explicit or args.data_dir:
            raise PaperGridError("--dry-run writes its own synthetic data; drop --data-root and "
                                 "--data-dir")
        device = check_machine(args.device, args.gpus or (2 if args.device == "cpu" else 1)) \
            if args.device is not None else "cpu"
        gpus = args.gpus or (2 if device == "cpu" else 1)
        found = dry_run(args.dry_run_dir, seeds=_seeds(args), only=args.only, device=device,
                        gpus=gpus, notebooks=args.dry_run_notebooks, chapters=not args.no_book,
                        jobs=args.jobs, progress=not args.quiet)
        print(f"dry run: {len(found.points)} points ({len(found.notebooks)} through papermill, "
              f"ImageNet through torchrun with {gpus} {device} processes), "
              f"{len(found.chapters)} chapters in {found.wall_s:.0f} s (points "
              f"{found.points_s:.0f} s, chapters {found.chapters_s:.0f} s); records (synthetic "
              f"test data) in {found.folder / 'results'}")
        for run_id, err in found.failed:
            print(f"FAILED {run_id}: {err}", file=sys.stderr)
        return 1 if found.failed else 0

    import torch

    gpus = args.gpus or (torch.cuda.device_count() if args.device != "cpu" else 1) or 1
    root = book_root()
    results, runs, ckpts = (paths.results_dir(root), paths.papermill_runs_dir(root),
                            paths.checkpoints_dir(root))
    seeds = _seeds(args)
    base = paper_points(seeds, args.only)
    roots = data_roots(sorted({p.config.dataset for p in base}), explicit, args.data_dir)
    refusals = []
    try:
        device = check_machine(args.device, gpus)
    except PaperGridError as err:
        if not args.plan:
            raise
        device, refusals = args.device or "cuda", [str(err)]
    problems = [m for name, r in roots.items() if (m := data_problem(name, r))]
    if problems and not args.plan:
        raise PaperGridError(f"{len(problems)} data set(s) missing: " + " | ".join(problems))
    at_once = max(gpus, args.jobs or 0) if device == "cuda" else args.jobs or 1
    workers = max(1, min(8, (os.cpu_count() or 1) // at_once))  # DataLoader workers per run
    points = paper_points(seeds, args.only, {"device": device, "num_workers": workers},
                          roots)
    todo = [p for p in points if not record_exists(results, p.experiment, p.run_id)]
    name = torch.cuda.get_device_name() if device == "cuda" and not refusals else None
    est = estimate(points, gpus, device_name=name)
    plan = plan_text(points, todo, est, gpus=gpus, device=device, seeds=len(seeds),
                     roots=roots, checkpoints=ckpts, at_once=at_once)
    if args.plan:
        print(plan)
        for line in refusals + problems:
            print(f"would refuse: {line}")
        return 0
    need = sum(r["checkpoint_bytes"] for r in est.per_point if r["run_id"] in
               {p.run_id for p in todo})
    _check_folders(results, ckpts, need)
    print(plan, flush=True)
    outcome = run_grid(points, device=device, gpus=gpus, root=root, results=results, runs=runs,
                       checkpoints=ckpts, threads=args.threads, jobs=args.jobs,
                       progress=not args.quiet)
    for run_id, err in outcome.failed:
        print(f"FAILED {run_id}: {err}", file=sys.stderr)
    if outcome.failed:
        print(f"{len(outcome.failed)} of {len(todo)} points failed; fix them and run the same "
              "command again (finished points are kept)", file=sys.stderr)
        return 1
    if not args.no_book:
        from esdbook.build import build_book, execute_chapters, shown_path

        book = Path(getattr(args, "book_dir", None) or root / "book")
        execute_chapters(book / "chapters", book / "_executed",
                         {"profile": "paper", "results_dir": shown_path(results, root)},
                         progress=not args.quiet, cwd=root, threads=args.threads)
        print(f"book: {build_book(book)}")
    return 0
