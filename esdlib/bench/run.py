"""Running the benchmark: the peak-memory subprocess worker (``python -m esdlib.bench --worker
SPEC``) and :func:`run_bench`, the interleaved grid (the trainer of one configuration:
:mod:`esdlib.bench.trainer`)."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from esdlib.bench.config import PHASES, BenchConfig, config_from_args
from esdlib.bench.probes import LoadProbe, wait_quiet
from esdlib.bench.records import BENCH_SCHEMA, bench_frame, write_bench_record
from esdlib.bench.tables import bench_table, phase_table
from esdlib.bench.trainer import Trainer, make_batch, no_gc
from esdlib.train import paths
from esdlib.train.records import (
    environment_info,
    git_revision,
    to_jsonable,
    utc_now_iso,
)
from esdlib.train.runtime import peak_memory, reset_peak_memory

if TYPE_CHECKING:
    import argparse


def peak_worker(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Body of ``python -m esdlib.bench --worker SPEC`` (runs in a fresh process)."""
    cfg = BenchConfig.from_dict(spec["config"])
    torch.set_num_threads(cfg.threads)
    arch, batch, method, T = spec["arch"], int(spec["batch"]), spec["method"], int(spec["T"])
    dev = cfg.device_type
    trainer = Trainer(cfg, arch, method, spec.get("precision", "fp32"))
    x, y = make_batch(cfg, batch)
    trainer.infer_step(x, T)  # warm-up: first-call allocations, code paged in, optimiser state
    trainer.train_step(x, y, T)
    reset = reset_peak_memory(dev)
    trainer.infer_step(x, T)
    baseline, counter = peak_memory(dev)
    reset = reset_peak_memory(dev) and reset
    for _ in range(cfg.peak_steps):
        trainer.train_step(x, y, T)
    peak, _ = peak_memory(dev)
    source = f"{counter}_{'reset' if reset else 'from_start'}_subprocess"
    return {"peak_baseline_bytes": baseline, "peak_bytes": peak,
            "peak_growth_bytes": max(0, peak - baseline), "peak_source": source}


def measure_peak(cfg: BenchConfig, arch: str, batch: int, method: str, T: int, *,
                 precision: str = "fp32", timeout_s: float = 1800.0) -> dict[str, Any]:
    """Peak-memory growth of training over inference, in a fresh subprocess.

    The worker (``python -m esdlib.bench --worker SPEC``) builds the model, runs one inference
    batch and one training step as warm-up, resets the peak counter, runs one inference batch
    (baseline peak), resets it again and runs ``cfg.peak_steps`` training steps (training
    peak); see the module docstring. On the CPU the counter is the resident-set high-water mark
    ``VmHWM`` (reset via ``/proc/self/clear_refs``; ``ru_maxrss`` where ``/proc`` is missing), on
    CUDA ``torch.cuda.max_memory_allocated``.

    Args:
        cfg: benchmark configuration (device, threads, sizes, ``peak_steps``).
        arch: architecture.
        batch: batch size (samples).
        method: training method.
        T: timesteps.
        precision: a resolved precision (``"fp32"``, ``"bf16"``, ``"fp16"``).
        timeout_s: seconds before the worker is killed.

    Returns:
        ``{"peak_baseline_bytes", "peak_bytes", "peak_growth_bytes", "peak_source"}`` (bytes as
        non-negative integers).

    Raises:
        RuntimeError: the worker failed (its stderr tail is in the message).
    """
    spec = {"config": cfg.to_dict(), "arch": arch, "batch": int(batch), "method": method,
            "T": int(T), "precision": precision}
    env = dict(os.environ)
    code = str(paths.code_root())  # the worker imports this same esdlib
    env["PYTHONPATH"] = os.pathsep.join(p for p in (code, env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = str(cfg.threads)
    proc = subprocess.run(
        [sys.executable, "-m", "esdlib.bench", "--worker", json.dumps(spec)],
        capture_output=True, text=True, timeout=timeout_s, env=env, check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"peak-memory worker for {spec} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def _stats(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def _device_info(cfg: BenchConfig, env: Mapping[str, Any]) -> dict[str, Any]:
    from esdlib.train.runtime import cpu_bf16_units

    info = {"type": cfg.device_type, "name": env.get("device_name"), "threads": cfg.threads,
            "precisions": list(cfg.resolved_precisions), "channels_last": cfg.channels_last,
            "keep_freed_memory": cfg.keep_freed_memory and cfg.device_type == "cpu"}
    if cfg.device_type == "cpu":
        info["cpu_bf16_units"] = cpu_bf16_units()
    return info


class _Interleaved:
    """The timed part of :func:`run_bench`: repetitions of one step of every configuration,
    in an order shuffled anew for every repetition, on models and batches built once; then the
    peak memory of each configuration in its own subprocess.

    Per training configuration ``(arch, batch, precision, method, T)`` it keeps the step times,
    their phases, the process load and page faults of each timed step, the last loss and the
    saved-for-backward memory (measured at repetition 0); per inference configuration
    ``(arch, batch, precision, T)`` the inference times.
    """

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        precisions = cfg.resolved_precisions
        self.cases = [(a, b, p, m, T) for a in cfg.archs for b in cfg.batches
                      for p in precisions for m in cfg.methods for T in cfg.Ts]
        self.units: list[tuple[str, tuple]] = [("train", c) for c in self.cases]
        if cfg.inference:
            self.units += [("infer", (a, b, p, T)) for a in cfg.archs for b in cfg.batches
                           for p in precisions for T in cfg.Ts]
        extra = 1 if cfg.saved_memory and cfg.warmup == 0 else 0
        self.reps = extra + cfg.warmup + cfg.steps
        self.first_timed = extra + cfg.warmup
        self.trainers: dict[tuple[str, str, str, bool], Trainer] = {}
        self.data: dict[int, tuple[Tensor, Tensor]] = {}
        self.times: dict[tuple, list[float]] = {c: [] for c in self.cases}
        self.phases: dict[tuple, dict[str, list[float]]] = {c: {} for c in self.cases}
        self.losses: dict[tuple, float] = {}
        self.load: dict[tuple, dict[str, list[float]]] = {
            c: {"cpu_s": [], "load_other": [], "page_faults": []} for c in self.cases}
        self.memory: dict[tuple, dict[str, int]] = {}
        self.infer: dict[tuple, list[float]] = {}

    @property
    def total_steps(self) -> int:
        """Units of work for the progress bar (steps, then one per peak-memory worker)."""
        return self.reps * len(self.units) + (len(self.cases) if self.cfg.peak_memory else 0)

    def trainer(self, arch: str, method: str, precision: str, *,
                inference: bool = False) -> Trainer:
        """The model and optimiser of one (arch, method, precision), built on first use;
        ``inference``: the separate, never-trained model of the inference timings (pass
        ``method="bptt"``: no branches)."""
        key = (arch, method, precision, inference)
        if key not in self.trainers:
            self.trainers[key] = Trainer(self.cfg, arch, method, precision)
        return self.trainers[key]

    def batch_of(self, b: int) -> tuple[Tensor, Tensor]:
        """The fixed synthetic batch of size ``b``, built on first use."""
        if b not in self.data:
            self.data[b] = make_batch(self.cfg, b)
        return self.data[b]

    def run(self, bar: Any) -> None:
        """Every repetition of every unit, interleaved (``bar``: a tqdm bar)."""
        rng = random.Random(self.cfg.seed)
        for rep in range(self.reps):
            order = list(self.units)
            rng.shuffle(order)
            for kind, case in order:
                bar.set_postfix_str(f"rep {rep + 1}/{self.reps} {kind} {case}", refresh=False)
                if rep >= self.first_timed:
                    wait_quiet(self.cfg.quiet_wait_s, self.cfg.quiet_load)
                if kind == "infer":
                    self.infer_step(case, rep)
                else:
                    self.train_step(case, rep)
                bar.update()

    def infer_step(self, case: tuple, rep: int) -> None:
        """One inference batch of ``(arch, batch, precision, T)``; timed after the warm-up."""
        a, b, p, T = case
        x, _ = self.batch_of(b)
        with no_gc():
            dt = self.trainer(a, "bptt", p, inference=True).infer_step(x, T)
        if rep >= self.first_timed:
            self.infer.setdefault(case, []).append(dt)

    def train_step(self, case: tuple, rep: int) -> None:
        """One training step of ``case`` (the saved-memory measurement at repetition 0);
        its time, phases and load are kept after the warm-up."""
        a, b, p, m, T = case
        x, y = self.batch_of(b)
        tr = self.trainer(a, m, p)
        if rep == 0 and self.cfg.saved_memory:
            self.memory[case] = tr.memory_step(x, y, T)
            return
        with no_gc():
            probe = LoadProbe()
            dt, ph, loss = tr.train_step(x, y, T)
            cpu_s, others, faults = probe.stop()
        self.losses[case] = loss
        if rep < self.first_timed:
            return
        self.times[case].append(dt)
        for phase, v in ph.items():
            self.phases[case].setdefault(phase, []).append(v)
        load = self.load[case]
        load["cpu_s"].append(cpu_s)
        if others is not None:
            load["load_other"].append(others)
        if faults is not None:
            load["page_faults"].append(faults)

    def peaks(self, bar: Any, timeout_s: float) -> dict[tuple, dict[str, Any]]:
        """Peak memory of every training configuration, one subprocess each, after this
        process has dropped its models and batches."""
        self.trainers.clear()
        self.data.clear()
        gc.collect()
        out = {}
        for case in self.cases:
            bar.set_postfix_str(f"peak memory {case}", refresh=False)
            a, b, p, m, T = case
            out[case] = measure_peak(self.cfg, a, b, m, T, precision=p, timeout_s=timeout_s)
            bar.update()
        return out

    def row(self, case: tuple, peak: Mapping[str, Any]) -> dict[str, Any]:
        """The record row of one training configuration: medians (and ranges) of what was
        measured, ``None`` where nothing was, and every sample under ``samples``."""
        a, b, prec, m, T = case
        times, load = self.times[case], self.load[case]
        med, lo, hi = _stats(times)
        row: dict[str, Any] = {"arch": a, "batch": b, "precision": prec, "method": m, "T": T,
                               "n_steps": len(times), "step_s": med, "step_s_min": lo,
                               "step_s_max": hi}
        for p in PHASES:
            vals = self.phases[case].get(p)
            row[f"{p}_s"] = statistics.median(vals) if vals else None
        for key, name in (("cpu_s", "step_cpu_s"), ("load_other", "load_other"),
                          ("page_faults", "page_faults")):
            row[name] = _stats(load[key])[0]
        quiet = [t for t, o in zip(times, load["load_other"], strict=False)
                 if o <= self.cfg.quiet_load]
        row["step_s_quiet"], row["n_quiet"] = _stats(quiet)[0], len(quiet)
        row.update(dict.fromkeys(("saved_bytes", "saved_storages", "state_bytes",
                                  "param_bytes", "optimizer_state_bytes")))
        row.update(self.memory.get(case, {}))
        row.update(dict.fromkeys(("peak_baseline_bytes", "peak_bytes", "peak_growth_bytes",
                                  "peak_source")))
        row.update(peak)
        infer = self.infer.get((a, b, prec, T), [])
        row.update(zip(("infer_s", "infer_s_min", "infer_s_max"), _stats(infer), strict=True))
        row["final_loss"] = self.losses.get(case)
        row["samples"] = {"step_s": times, **{f"{p}_s": v for p, v in self.phases[case].items()},
                          "step_cpu_s": load["cpu_s"], "load_other": load["load_other"],
                          "page_faults": load["page_faults"], "infer_s": infer}
        return row


def run_bench(cfg: BenchConfig, *, progress: bool = True,
              worker_timeout_s: float = 1800.0) -> dict[str, Any]:
    """Measure every configuration of ``cfg`` and return the benchmark record.

    Sets ``torch.set_num_threads(cfg.threads)`` for the duration (restored afterwards) and, with
    ``cfg.keep_freed_memory`` on the CPU, tunes this process's ``malloc`` for good. Steps of
    all configurations are interleaved: repetition ``r`` runs one step of every
    (arch, batch, precision, method, T) configuration and one inference batch per
    (arch, batch, precision, T), in an order shuffled anew for every repetition. Peak memory is
    measured afterwards, one subprocess per configuration, so the workers never overlap the
    timed steps.

    Args:
        cfg: the grid and measurement settings.
        progress: show a tqdm progress bar.
        worker_timeout_s: seconds allowed to each peak-memory subprocess.

    Returns:
        The record (see :func:`validate_bench_record`): device (with the resolved precisions),
        threads, torch version, git revision, grid and one row per
        (arch, batch, precision, method, T) with times in seconds and memory in bytes.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    created = utc_now_iso()
    if cfg.keep_freed_memory and cfg.device_type == "cpu":
        from esdlib.train.runtime import keep_freed_memory

        keep_freed_memory()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        env = environment_info(cfg.device_type)
        grid = _Interleaved(cfg)
        with tqdm(total=grid.total_steps, desc="esd bench", disable=not progress,
                  unit="step") as bar:
            grid.run(bar)
            peaks = grid.peaks(bar, worker_timeout_s) if cfg.peak_memory else {}
        rows = [grid.row(case, peaks.get(case, {})) for case in grid.cases]
        config = cfg.to_dict()
        digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
        stamp = created.replace("-", "").replace(":", "")
        return to_jsonable({
            "bench_schema": BENCH_SCHEMA, "kind": "esd-bench",
            "bench_id": f"{stamp}-{cfg.device_type}-{digest}", "created": created,
            "device": _device_info(cfg, env), "threads": cfg.threads,
            "torch": torch.__version__, "git_revision": git_revision(paths.code_root()),
            "environment": env, "grid": config, "wall_s": time.perf_counter() - started,
            "rows": rows})
    finally:
        torch.set_num_threads(prev_threads)


def bench_command(args: argparse.Namespace) -> int:
    """Run ``esd bench``: measure, write the record, print the comparison table.

    Args:
        args: parsed options of :func:`add_bench_arguments`.

    Returns:
        Exit status (0 on success, 2 for an invalid configuration).
    """
    import pandas as pd

    try:
        cfg = config_from_args(args)
    except ValueError as err:
        print(f"esd bench: {err}", file=sys.stderr)
        return 2
    record = run_bench(cfg, progress=not args.no_progress)
    path = write_bench_record(record, args.out)
    df = bench_frame(record, str(path))
    with pd.option_context("display.width", 200, "display.max_columns", None,
                           "display.float_format", "{:.3g}".format):
        print(phase_table(df).drop(columns="bench_id").to_string(index=False))
        print()
        print(bench_table(df).drop(columns=["bench_id", "device_name"]).to_string(index=False))
    print(f"\nrecord: {path}")
    return 0
