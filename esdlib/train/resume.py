"""What a run finds on disk when it starts, and how it recovers: its existing record (kept,
moved aside when damaged, refused when newer), and a ``best.pt`` to re-derive or warn about.

:func:`esdlib.train.engine.fit` asks here before it trains: a finished run returns its record,
and a run killed between writes continues from consistent files.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from esdlib.io import atomic_open
from esdlib.train.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_header
from esdlib.train.config import RunConfig
from esdlib.train.records import SCHEMA_VERSION, RecordError, load_record

REBUILD_TOLERANCE = 0.01
"""Largest difference (accuracy, as a fraction) between a finished checkpoint's recorded final
test accuracy and a re-evaluation of its weights when a record is rebuilt from it: numerics of
another machine move a sample or two, an altered history moves far more."""


def _refuse_newer_schema(path: Path) -> None:
    """A record of a newer schema is not damaged: it was written by a newer esdlib, and this
    one must neither replace nor move it."""
    try:
        version = json.loads(path.read_text(encoding="utf-8")).get("schema_version")
    except (OSError, ValueError, AttributeError, RecursionError):
        return
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise RecordError(f"{path}: run record of schema version {version}, written by a newer "
                          f"esdlib (this one reads version {SCHEMA_VERSION}); update esdlib or "
                          "use another out_dir")


def existing_record(path: Path, cfg: RunConfig, rank: int) -> dict[str, Any] | None:
    """The valid record of this run at ``path``, or None when there is none.

    A damaged record (not JSON, not a valid record) or the record of another configuration is
    moved aside to ``<name>.corrupt-<UTC time>`` (never deleted) with a warning giving every
    reason, so the run can re-create it from its checkpoint (or by training). A record of a
    newer schema version is left alone.

    Raises:
        RecordError: the record was written by a newer esdlib (a newer ``schema_version``).
    """
    if not path.is_file():
        return None
    try:
        record = load_record(path)
        if record.get("config_hash") == cfg.config_hash():
            return record
        problem = f"it belongs to another configuration (config_hash {record.get('config_hash')})"
    except ValueError as err:  # RecordError, UnicodeDecodeError
        problem = " ".join(str(err).split())[:500]  # every reason, on one line
        _refuse_newer_schema(path)
    if rank != 0:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # a concurrent run moved it already
        return None
    warnings.warn(f"damaged run record {path} moved to {aside.name} ({problem}); it is re-created "
                  "from the checkpoint or by training", UserWarning, stacklevel=5)
    return None


def check_finished_best(paths: dict[str, Path], record: dict[str, Any]) -> None:
    """For a finished run whose record is returned as it is: re-derive or warn about a
    missing or damaged ``best.pt`` (e.g. an empty file), as a resumed run would
    (:func:`ensure_best_checkpoint`). Nothing is checked when neither checkpoint exists."""
    if not paths["last"].is_file():
        return
    try:
        header = read_checkpoint_header(paths["last"]) or {}
    except CheckpointError:
        header = {}
    best_epoch = record.get("metrics", {}).get("best_epoch")
    state = {"best_epoch": best_epoch if isinstance(best_epoch, int) else -1,
             "epoch": header.get("epoch"), "step_in_epoch": header.get("step_in_epoch")}
    ensure_best_checkpoint(paths, state)


def ensure_best_checkpoint(paths: dict[str, Path], state: dict[str, Any]) -> None:
    """Make ``best.pt`` hold the best epoch that ``state`` (just resumed) names.

    ``best.pt`` is written before ``last.pt`` at each epoch end, so a kill between the two
    writes redoes the epoch and rewrites both. A ``best.pt`` lost otherwise (older versions
    wrote it second; deleted; damaged) is re-derived when the best epoch is the epoch that
    ``last.pt`` ended: the two files then hold the same state. Otherwise it cannot be rebuilt
    and a warning says so.
    """
    best_epoch = state.get("best_epoch", -1)
    if best_epoch is None or best_epoch < 1:
        return
    try:
        header = read_checkpoint_header(paths["best"])
        if header is None or (header.get("epoch") == best_epoch
                              and header.get("step_in_epoch") == 0):
            return  # format 1 (position unknown) or consistent
        problem = f"holds epoch {header.get('epoch')}, not the best epoch {best_epoch}"
    except CheckpointError as err:
        problem = str(err)
    if state["epoch"] == best_epoch and state["step_in_epoch"] == 0:
        header = read_checkpoint_header(paths["last"])
        if header is not None:
            with atomic_open(paths["best"], "wb") as f:
                f.write(paths["last"].read_bytes())
            warnings.warn(f"{paths['best']} re-derived from {paths['last']} ({problem})",
                          UserWarning, stacklevel=5)
            return
    warnings.warn(f"{paths['best']} cannot be re-derived: {problem}; the weights of the best "
                  f"epoch ({best_epoch}) are not available (the record still reports its "
                  "accuracy from the history)", UserWarning, stacklevel=5)


def load_run_checkpoint(path: Path, device: Any, cfg: RunConfig) -> dict[str, Any]:
    """The checkpoint ``path`` of the run ``cfg``, loaded onto ``device`` to resume from
    (:func:`~esdlib.train.checkpoint.load_checkpoint`).

    Raises:
        CheckpointError: the file is damaged or unsafe, or belongs to another configuration;
            the message says how to start the run over instead.
    """
    try:
        ckpt = load_checkpoint(path, device)
    except CheckpointError as err:
        raise CheckpointError(f"{err}. Cannot resume this run: delete {path} to train it "
                              "from the start (or run with --no-resume / resume=False)"
                              ) from None
    if ckpt["config_hash"] != cfg.config_hash():
        raise CheckpointError(f"checkpoint {path} belongs to a different config; delete it "
                              "or choose another checkpoint_dir")
    return ckpt


def check_rebuilt_accuracy(path: Path, history: list[dict[str, Any]], test_acc: float) -> None:
    """A record rebuilt from the finished checkpoint ``path``: its weights' ``test_acc`` must
    equal the final test accuracy of its ``history`` within :data:`REBUILD_TOLERANCE`.

    Raises:
        CheckpointError: they differ (the checkpoint was altered).
    """
    saved = history[-1].get("test_acc")
    if not isinstance(saved, int | float) or abs(test_acc - saved) > REBUILD_TOLERANCE:
        raise CheckpointError(
            f"{path}: its history says final test accuracy {saved!r}, its weights give "
            f"{test_acc:.4f}: the checkpoint was altered; delete it to train the run again")
