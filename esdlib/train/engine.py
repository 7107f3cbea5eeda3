"""Training engine: ``fit(cfg)`` trains, evaluates, checkpoints and writes one run record.

The loop is a small run object (``_Run``: ``finished → setup → resume → (train_epoch →
end_epoch)* → finish``) around one :class:`~esdlib.train.state.RunState`, the checkpoint's
``state``. What it builds on lives beside it, one concept per module: :mod:`~esdlib.train.setup`
(optimiser, schedule, data sets, model), :mod:`~esdlib.train.checkpoint` (the checksummed file
format, loaded with ``weights_only=True``), :mod:`~esdlib.train.resume` (what a run finds on
disk), :mod:`~esdlib.train.distributed` (DDP), :mod:`~esdlib.train.divergence` and
:mod:`~esdlib.train.evaluation`.

- SGD with momentum; weight decay only on convolution/linear weights (tensors with ≥ 2 dims);
  optional linear warm-up then cosine annealing, stepped per epoch.
- Each epoch: train with the method's step (:mod:`esdlib.methods`), evaluate the plain SNN at
  the full ``T`` on the test set (accuracy, firing rates, SOP energy), append to the history
  (the epoch's training means and loss diagnostics, :func:`record_diagnostics`), save
  ``last.pt`` (and ``best.pt``), write the record with ``status="running"``.
- **Headline = final-epoch test accuracy.** The best epoch's accuracy is kept as a secondary
  figure; the official code reports the best epoch chosen on the test set (no validation split).
- **Exact resume**: checkpoints (written atomically every ``cfg.checkpoint_every`` steps and at
  each epoch end) hold the model, optimiser, scheduler, all RNG states, the epoch, the position
  inside the epoch and the epoch's running sums; data order is a function of ``(seed, epoch)``.
  A run killed mid-epoch and resumed ends with the same metrics as an uninterrupted one (CPU,
  ``num_workers=0``). A damaged ``last.pt`` stops the run with a :class:`CheckpointError` and
  the advice to delete it; it never silently falls back to other weights.
- **Runs always finish their record**: a finished run with a valid ``complete`` record is
  returned without loading anything; otherwise the record is re-created from the finished
  checkpoint (:mod:`~esdlib.train.resume`).
- **Divergence** (:mod:`~esdlib.train.divergence`) stops training: the record gets
  ``status="diverged"`` with the epoch and step, no checkpoint of the diverged state is written,
  and a :class:`DivergenceWarning` is issued.
- **Fast path by default**: channels-last model and batches, glibc keeping freed memory on the
  CPU, the training step under ``cfg.precision``'s autocast (fp16 with a gradient scaler);
  evaluation in float32. What was resolved is stored in the record's ``extra.runtime``.
- **Opt-in speed settings**: ``cfg.compile`` (the spike pass compiled by ``torch.compile``, one
  per run, eager fallback with one warning) and ``cfg.tf32`` (for the run, restored afterwards).
- **DDP** under ``torchrun``: each rank trains on its shard of every epoch's permutation,
  gradients are averaged with ``all_reduce`` after each backward, evaluation is sharded and
  reduced; rank 0 writes checkpoints and records.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from esdlib.io import remove_stale_temps
from esdlib.methods import get_method
from esdlib.models import SpikingNet
from esdlib.passes import CompiledSpikePass, compile_spike_pass
from esdlib.train.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    checkpoint_paths,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from esdlib.train.config import RunConfig
from esdlib.train.distributed import (
    EpochSampler,
    allreduce_gradients,
    dist_info,
    init_distributed,
    sync_batchnorm_stats,
)
from esdlib.train.divergence import (
    DivergenceWarning,
    checked_tensors,
    divergence_reason,
    stuck_reason,
)
from esdlib.train.evaluation import evaluate
from esdlib.train.paths import resolve_path
from esdlib.train.records import make_record, make_run_id, record_path, write_record
from esdlib.train.resume import (
    check_finished_best,
    check_rebuilt_accuracy,
    ensure_best_checkpoint,
    existing_record,
    load_run_checkpoint,
)
from esdlib.train.runtime import autocast, check_runtime, peak_memory_bytes, tf32
from esdlib.train.setup import (
    build_run,
    make_optimizer,
    make_scheduler,
    seed_everything,
    time_first,
)
from esdlib.train.state import EpochSums, RunState, record_diagnostics

__all__ = ["fit"]


def fit(cfg: RunConfig, *, progress: bool = True, resume: bool = True,
        stop_after_steps: int | None = None,
        on_epoch_end: Callable[[SpikingNet, int], None] | None = None,
        extra: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; write checkpoints and the run record.

    Args:
        cfg: the validated run configuration.
        progress: show tqdm progress bars (rank 0 only).
        resume: continue from ``<checkpoint_dir>/<run_id>/last.pt`` when it exists. A finished
            run is not retrained: its ``complete`` (or ``diverged``) record is returned, or
            re-created from a finished ``last.pt`` when it is ``running``, damaged or missing.
            A damaged ``last.pt`` raises :class:`CheckpointError` (delete it to start over).
        stop_after_steps: stop (after saving a checkpoint) once this many optimiser steps have
            run in this call — for tests of resumption and for time-boxed sessions.
        on_epoch_end: ``f(model, epochs_done)`` called before training (0) and after each
            epoch's evaluation, e.g. :class:`esdlib.train.gradients.GradientErrorTracker` (its own
            state is not checkpointed).
        extra: ``f() -> dict`` whose result is stored under the record's ``extra``.

    Returns:
        The run record (a dict following ``esdlib/schema/run_record.schema.json``); its
        ``status`` is ``"running"`` if the run was stopped early and ``"diverged"`` if the loss
        or the weights became non-finite (with a :class:`DivergenceWarning`; the record's
        ``divergence`` says where, its headline metrics are null).

    Raises:
        CheckpointError: ``last.pt`` is damaged, unsafe or of another configuration.
        esdlib.io.DiskFullError: the disk filled while writing a checkpoint or the record.
    """
    wall0 = time.perf_counter()
    runtime = check_runtime(cfg)  # device, precision, writable folders: before any work
    device = runtime.device
    settings = runtime.apply()  # what the record stores as extra.runtime
    owns_pg = init_distributed(device)
    try:
        with tf32(cfg.tf32):
            run = _Run(cfg, device, settings, wall0=wall0, progress=progress,
                       on_epoch_end=on_epoch_end, extra=extra)
            return run.run(resume=resume, stop_after_steps=stop_after_steps)
    finally:
        if owns_pg:
            dist.destroy_process_group()


class _Run:
    """One call of :func:`fit`: the phases of a run around one :class:`RunState`.

    ``run`` = ``finished`` (a run with nothing left to do returns its record) → ``setup`` →
    ``resume`` (from ``last.pt``) → (``train_epoch`` → ``end_epoch``) per epoch → ``finish``
    (the final record); ``save`` writes a checkpoint, ``record`` builds the run record. Every
    rank runs every phase; rank 0 alone writes files.
    """

    def __init__(self, cfg: RunConfig, device: torch.device, runtime: dict[str, Any], *,
                 wall0: float, progress: bool,
                 on_epoch_end: Callable[[SpikingNet, int], None] | None,
                 extra: Callable[[], dict[str, Any]] | None) -> None:
        self.cfg, self.device, self.runtime, self.wall0 = cfg, device, runtime, wall0
        self.rank, self.world = dist_info()
        self.progress = progress and self.rank == 0
        self.on_epoch_end, self.extra = on_epoch_end, extra
        self.paths = checkpoint_paths(cfg)
        self.out_dir = resolve_path(cfg.out_dir)
        self.rec_path = record_path(self.out_dir, cfg.experiment, make_run_id(cfg))
        self.state, self.sums = RunState(), EpochSums()
        self.steps_this_call = 0
        self.stop_after_steps: int | None = None
        self._t0, self.epoch_s = time.perf_counter(), 0.0

    def run(self, *, resume: bool, stop_after_steps: int | None) -> dict[str, Any]:
        """Train what is left of the run; its record (see :func:`fit`)."""
        done = self.finished(resume)
        if done is not None:
            return done
        self.setup()
        if resume and self.paths["last"].is_file():
            self.resume()
        self.stop_after_steps = stop_after_steps
        if self.on_epoch_end is not None and self.state.global_step == 0:
            self.on_epoch_end(self.model, 0)
        while self.state.epoch < self.cfg.epochs:
            if not self.train_epoch() or not self.end_epoch() or self.out_of_steps():
                break
        return self.finish()

    def finished(self, resume: bool) -> dict[str, Any] | None:
        """The record of a run with nothing left to do (complete or diverged), or None.
        Temporary files of writers killed in an earlier call are removed first."""
        if self.rank == 0:
            for target in (self.paths["last"], self.paths["best"], self.rec_path):
                remove_stale_temps(target)
        existing = existing_record(self.rec_path, self.cfg, self.rank)
        if not resume or existing is None:
            return None
        if existing["status"] == "diverged":
            return existing
        if existing["status"] == "complete" and len(existing["history"]) == self.cfg.epochs:
            if self.rank == 0:
                check_finished_best(self.paths, existing)
            return existing
        return None

    def setup(self) -> None:
        """Seed; build the data, model, optimiser, schedule, step and loader of the config."""
        cfg = self.cfg
        seed_everything(cfg.seed)
        self.train_set, self.test_set, self.info, self.model = build_run(cfg)
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt = make_optimizer(self.model, cfg)
        self.sched = make_scheduler(self.opt, cfg)
        self.step_fn = get_method(cfg.method)
        self.spike_fn = compile_spike_pass(cfg.compile)  # one per run: it holds the compiled code
        self.loss_cfg = cfg.loss_config()
        self.precision = self.runtime["precision"]
        # fp16 needs loss scaling; the disabled scaler is a pass-through that still checkpoints
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.sampler = EpochSampler(len(self.train_set), cfg.seed, self.rank, self.world)
        self.loader = DataLoader(self.train_set, batch_size=cfg.batch_size, sampler=self.sampler,
                                 num_workers=cfg.num_workers, generator=torch.Generator(),
                                 pin_memory=self.device.type == "cuda", persistent_workers=False)
        self.checked = checked_tensors(self.model)  # updated in place: collected once
        steps = math.ceil(len(self.sampler.indices()) / cfg.batch_size)
        self.steps_per_epoch = steps if cfg.max_train_steps is None else min(
            steps, cfg.max_train_steps)

    def resume(self) -> None:
        """Continue from ``last.pt``: weights, optimiser, schedule, scaler, RNGs, position.

        Raises:
            CheckpointError: the file is damaged, of another config, or does not fit the run.
        """
        last = self.paths["last"]
        ckpt = load_run_checkpoint(last, self.device, self.cfg)
        try:  # a valid checksum says nothing about the structure of what was saved
            state = RunState.from_dict(ckpt.get("state"))
            self.model.load_state_dict(ckpt["model"])
            self.opt.load_state_dict(ckpt["optimizer"])
            self.sched.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.sums = EpochSums(**ckpt["running"])
            set_rng_state(ckpt["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            what = " ".join(str(err).split())[:300] or type(err).__name__
            raise CheckpointError(
                f"{last}: its checksum is valid but its contents do not fit this run "
                f"({type(err).__name__}: {what}); delete it to train the run from the start "
                "(or run with --no-resume / resume=False)") from None
        self.state = state
        if self.rank == 0:
            ensure_best_checkpoint(self.paths, state.to_dict())

    def out_of_steps(self) -> bool:
        """Whether this call has run its ``stop_after_steps``."""
        return self.stop_after_steps is not None and self.steps_this_call >= self.stop_after_steps

    def lap(self) -> None:
        """Add the training time since the last lap to the run's and the epoch's totals
        (checkpoint writes between laps are not training time)."""
        now = time.perf_counter()
        self.state.train_s += now - self._t0
        self.epoch_s += now - self._t0
        self._t0 = now

    def train_epoch(self) -> bool:
        """Train the current epoch from its position; checkpoint every ``checkpoint_every``
        steps. False when the run stops inside it: diverged (``state.divergence``), or out of
        steps before the epoch's last step (after saving a checkpoint)."""
        cfg, state = self.cfg, self.state
        self.sampler.set_position(state.epoch, state.step_in_epoch * cfg.batch_size)
        self.model.train()
        self._t0, self.epoch_s = time.perf_counter(), 0.0
        bar = tqdm(total=self.steps_per_epoch, initial=state.step_in_epoch,
                   disable=not self.progress, leave=False,
                   desc=f"epoch {state.epoch + 1}/{cfg.epochs} {cfg.method}")
        stopped = False
        for x, y in self.loader:
            if state.step_in_epoch >= self.steps_per_epoch or not self.train_step(x, y):
                break
            bar.update(1)
            n, elapsed = max(self.sums.samples, 1), self.epoch_s + time.perf_counter() - self._t0
            bar.set_postfix(loss=f"{self.sums.loss / n:.3f}", acc=f"{self.sums.correct / n:.3f}",
                            sps=f"{self.sums.samples / max(elapsed, 1e-9):.0f}")
            if self.out_of_steps() and state.step_in_epoch < self.steps_per_epoch:
                stopped = True  # at the epoch's last step: end the epoch as usual (the loader
                break  # may fetch one more batch, which draws augmentation RNG), then stop
            if state.global_step % cfg.checkpoint_every == 0:
                self.lap()
                self.save()
        bar.close()
        self.lap()
        if stopped:
            self.save()
        return state.divergence is None and not stopped

    def train_step(self, x: Tensor, y: Tensor) -> bool:
        """One optimiser step of the method; False (with ``state.divergence``) when it diverged."""
        cfg, state = self.cfg, self.state
        x, y = time_first(x).to(self.device, non_blocking=True), y.to(self.device,
                                                                       non_blocking=True)
        if cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.precision, self.device.type):
            res = self.step_fn(self.model, x, y, cfg.T, self.loss_cfg,
                               rate_grad_scale=cfg.rate_grad_scale,
                               backward=lambda loss: self.scaler.scale(loss).backward(),
                               spike_fn=self.spike_fn)
        loss = float(res.loss)
        allreduce_gradients(self.model)
        self.scaler.step(self.opt)
        self.scaler.update()
        reason = divergence_reason(loss, self.checked)
        if reason is not None:
            state.divergence = {"epoch": state.epoch + 1, "step": state.step_in_epoch + 1,
                                "global_step": state.global_step + 1, "reason": reason}
            return False
        if state.global_step == 0:
            state.first_loss = loss  # the reference of stuck_reason
        correct = (res.logits.argmax(1) == y).sum().item()
        self.sums.add(loss, correct, y.numel(), record_diagnostics(res.diagnostics))
        state.step_in_epoch += 1
        state.global_step += 1
        self.steps_this_call += 1
        return True

    def end_epoch(self) -> bool:
        """Evaluate, append the history entry, step the schedule, save ``best.pt`` (when
        best) and ``last.pt``, write the ``running`` record. False when the epoch's mean loss
        is stuck (``state.divergence``)."""
        cfg, state = self.cfg, self.state
        epoch = state.epoch
        reason = stuck_reason(self.sums.means()["train_loss"], state.first_loss)
        if reason is not None:
            state.divergence = {"epoch": epoch + 1, "step": state.step_in_epoch,
                                "global_step": state.global_step, "reason": reason}
            return False
        # Operations (SOPs, energy) are counted for the record's final metrics only: counting
        # them every epoch costs ~4 % of a small run and nothing reads them per epoch.
        ev = self.evaluate_model(count_ops=epoch + 1 == cfg.epochs)
        entry = self.history_entry(ev)
        state.history.append(entry)
        state.last_eval = ev
        if self.on_epoch_end is not None:
            self.on_epoch_end(self.model, epoch + 1)
        self.sched.step()
        state.epoch, state.step_in_epoch, self.sums = epoch + 1, 0, EpochSums()
        if ev["test_acc"] > state.best_acc:  # best first: a kill between the writes redoes it
            state.best_acc, state.best_epoch = ev["test_acc"], epoch + 1
            self.save("best")
        self.save()
        if self.progress:
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: train loss {entry['train_loss']:.4f} "
                       f"acc {entry['train_acc']:.4f} | test acc {ev['test_acc']:.4f} "
                       f"| {entry['epoch_time_s']:.1f}s")
        if self.rank == 0:
            write_record(self.record("running"), self.out_dir)
        return True

    def evaluate_model(self, count_ops: bool = True) -> dict[str, Any]:
        """:func:`~esdlib.train.evaluation.evaluate` on the test set, after every rank has
        the same BatchNorm statistics (the model rank 0 then saves)."""
        sync_batchnorm_stats(self.model)
        return evaluate(self.model, self.test_set, self.cfg.T,
                        batch_size=self.cfg.eval_batch_size, device=self.device,
                        channels_last=self.cfg.channels_last, count_ops=count_ops)

    def history_entry(self, ev: dict[str, Any]) -> dict[str, Any]:
        """The history entry of the epoch just trained and evaluated (``ev``); its time is the
        whole epoch's, not only the part after its last mid-epoch checkpoint."""
        entry = {"epoch": self.state.epoch + 1, **self.sums.means(),
                 "test_acc": ev["test_acc"], "test_loss": ev["test_loss"],
                 "lr": self.opt.param_groups[0]["lr"], "epoch_time_s": self.epoch_s,
                 "throughput_sps": self.sums.samples * self.world / max(self.epoch_s, 1e-9),
                 "firing_rate_mean": ev["firing_rates"]["mean"]}
        if ev["energy"]:
            entry.update(sops_per_sample=ev["energy"]["sops_per_sample"],
                         energy_uj_per_sample=ev["energy"]["energy_uj_per_sample"])
        return entry

    def save(self, kind: str = "last") -> None:
        """Write ``last.pt`` or ``best.pt`` (rank 0; every rank first agrees on BatchNorm)."""
        sync_batchnorm_stats(self.model)  # every rank calls this: rank 0 saves the common model
        if self.rank != 0:
            return
        cfg, info = self.cfg, self.info
        save_checkpoint(self.paths[kind], version=CHECKPOINT_VERSION, config=cfg.to_dict(),
                        config_hash=cfg.config_hash(), model=self.model.state_dict(),
                        optimizer=self.opt.state_dict(), scheduler=self.sched.state_dict(),
                        scaler=self.scaler.state_dict(), state=self.state.to_dict(),
                        running=asdict(self.sums), rng=rng_state(),
                        num_classes=info.num_classes, in_channels=info.in_channels,
                        time_varying=info.time_varying)

    def finish(self) -> dict[str, Any]:
        """The final record (written by rank 0): ``diverged`` (with a warning), ``complete``
        or ``running`` (stopped early)."""
        state = self.state
        if state.divergence is not None:
            final = self.record("diverged")
            if self.rank == 0:
                write_record(final, self.out_dir)
            d = state.divergence
            warnings.warn(DivergenceWarning(
                f"training diverged at epoch {d['epoch']}, step {d['step']}: {d['reason']}; "
                f"the record {self.rec_path} has status 'diverged' (last good checkpoint "
                f"kept: {self.paths['last']})"), stacklevel=4)
            return final
        status = "complete" if state.epoch >= self.cfg.epochs else "running"
        if status == "complete" and state.last_eval is None:  # cannot happen after an epoch end
            state.last_eval = self.evaluate_model()
        elif status == "complete" and self.steps_this_call == 0 and state.history:
            check_rebuilt_accuracy(self.paths["last"], state.history,
                                   self.evaluate_model()["test_acc"])
        final = self.record(status)
        if self.rank == 0 and state.history:
            write_record(final, self.out_dir)
        return final

    def record(self, status: str) -> dict[str, Any]:
        """The run record of the run as it stands (a diverged run has no result metrics)."""
        state, settings = self.state, dict(self.runtime)
        if isinstance(self.spike_fn, CompiledSpikePass) and self.spike_fn.error is not None:
            settings["compile_error"] = self.spike_fn.error
        timing = {"wall_s": time.perf_counter() - self.wall0, "train_s": state.train_s,
                  "peak_memory_bytes": peak_memory_bytes(self.device)}
        extra = {"world_size": self.world, "dataset_split": self.info.split,
                 "dataset_description": self.info.description,
                 "headline": "final-epoch test accuracy (best epoch selected on the test set "
                             "is secondary, as in the official code)",
                 "parameter_counts": self.model.parameter_counts(), "runtime": settings,
                 **(self.extra() if self.extra is not None else {})}
        return make_record(self.cfg, metrics=state.metrics(status), history=state.history,
                           timing=timing, firing_rates=state.firing_rates(status),
                           status=status, extra=extra, divergence=state.divergence)
