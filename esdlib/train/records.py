"""Run records: one validated JSON file per run, written atomically, read by :func:`read_record`.

Every run writes one JSON *record* (schema: ``esdlib/schema/run_record.schema.json``,
JSON Schema draft 2020-12) to ``<out_dir>/<experiment>/<run_id>.json``. Records are
validated before they are written and written atomically, so a reader never sees a
half-written file and a crashed writer never damages an existing record. The run id
is a deterministic function of the experiment and the config hash: re-running the
same configuration maps to the same file, which lets drivers skip finished runs
(:func:`record_exists`).

Layout (where the folders are: :mod:`esdlib.train.paths`)::

    results/
      <experiment>/<run_id>.json     one record per run
      paper/*.csv, paper/README.md   values printed in the paper (never edited)

Units in records: accuracies are fractions in [0, 1], times are seconds, memory is
bytes; non-finite floats (a diverged loss) are stored as ``null``. The run id and config hash
live in :mod:`esdlib.train.identity`, the record's provenance in :mod:`esdlib.train.provenance`,
the paper's values in :mod:`esdlib.train.paper_values` (their names are re-exported here).
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esdlib.io import atomic_write_json
from esdlib.train import paths
from esdlib.train.config import RunConfig
from esdlib.train.identity import make_run_id
from esdlib.train.paper_values import load_paper_table, paper_table_names
from esdlib.train.provenance import environment_info, git_revision, utc_now_iso

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RecordError", "SCHEMA_VERSION", "check_schema", "environment_info", "git_revision",
    "load_paper_table", "load_record", "load_records", "load_schema", "make_record",
    "make_run_id", "paper_table_names", "read_record", "record_exists", "record_path",
    "scale_info", "to_jsonable", "utc_now_iso", "validate_record", "write_record",
]

SCHEMA_VERSION = 1
"""Version of the run-record schema written by this module."""


class RecordError(ValueError):
    """A run record that does not satisfy the schema; the message lists every violation."""


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types.

    Tuples become lists, numpy/torch scalars and arrays become numbers/lists
    (via ``tolist``), paths become strings, dict keys become strings and
    non-finite floats become ``None``.

    Raises:
        TypeError: For objects with no JSON representation.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist())
    raise TypeError(f"cannot store an object of type {type(obj).__name__} in a JSON record")


def scale_info(cfg: RunConfig, seeds: Iterable[int] | None = None) -> dict[str, Any]:
    """The record's ``scale`` block: what data, model size and schedule a number comes from.

    Args:
        cfg: The run's config.
        seeds: For a record aggregating several seeds, all of them (replaces ``seed``).
    """
    scale: dict[str, Any] = {
        "dataset": cfg.dataset,
        "image_size": cfg.image_size,
        "arch": cfg.arch,
        "width": cfg.width,
        "T": cfg.T,
        "epochs": cfg.epochs,
        "max_train_steps": cfg.max_train_steps,
    }
    if seeds is None:
        scale["seed"] = cfg.seed
    else:
        scale["seeds"] = [int(s) for s in seeds]
    label = cfg.scale_label()
    if seeds is not None and len(scale["seeds"]) > 1:
        label += f", {len(scale['seeds'])} seeds"
    scale["label"] = label
    return scale


_AUTO: Any = object()


def make_record(cfg: RunConfig, *, metrics: Mapping[str, Any],
                history: Iterable[Mapping[str, Any]], timing: Mapping[str, Any],
                firing_rates: Mapping[str, Any] | None = None, status: str = "complete",
                experiment: str | None = None, seeds: Iterable[int] | None = None,
                environment: Mapping[str, Any] | None = None, git_rev: str | None = _AUTO,
                created: str | None = None, extra: Mapping[str, Any] | None = None,
                divergence: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Assemble a complete run record (not yet validated or written).

    Args:
        cfg: The run's config; gives ``config``, ``config_hash``, ``run_id``, ``scale``.
        metrics: At least ``final_test_acc``, ``best_test_acc`` (fractions) and
            ``best_epoch``; more numeric keys allowed.
        history: Per-epoch dicts with at least ``epoch``, ``train_loss``,
            ``test_acc`` (fraction), ``lr``, ``epoch_time_s`` (s).
        timing: ``wall_s``, ``train_s`` (s) and ``peak_memory_bytes`` (or None).
        firing_rates: ``{"per_timestep": [T floats], "per_layer": {name: rate},
            "definition": str}`` or None when not measured.
        status: ``"complete"``, ``"running"``, ``"failed"`` or ``"diverged"`` (training
            stopped on a non-finite loss or weights; needs ``divergence``; such a record is
            not a result: its headline metrics are null).
        experiment: Defaults to ``cfg.experiment``.
        seeds: All seeds, for a record that aggregates several.
        environment: Defaults to :func:`environment_info` for ``cfg.device``.
        git_rev: Defaults to :func:`git_revision` of the current directory.
        created: ISO-8601 UTC time; defaults to now.
        extra: Free-form additional data, stored under ``extra``.
        divergence: Where a diverged run stopped: ``{"epoch", "step", "global_step",
            "reason"}`` (1-based epoch and step within the epoch).

    Returns:
        The record as a plain-JSON dict (see :func:`to_jsonable`).
    """
    experiment = cfg.experiment if experiment is None else experiment
    if environment is None:
        environment = environment_info(cfg.device)
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": make_run_id(cfg, experiment),
        "experiment": experiment,
        "created": created or utc_now_iso(),
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "scale": scale_info(cfg, seeds),
        "metrics": dict(metrics),
        "history": [dict(h) for h in history],
        "firing_rates": None if firing_rates is None else dict(firing_rates),
        "timing": dict(timing),
        "environment": dict(environment),
        "git_revision": git_revision() if git_rev is _AUTO else git_rev,
        "status": status,
    }
    if extra is not None:
        record["extra"] = dict(extra)
    if divergence is not None:
        record["divergence"] = dict(divergence)
    return to_jsonable(record)


@functools.cache
def load_schema(name: str = "run_record") -> dict[str, Any]:
    """A record JSON Schema (draft 2020-12) as a dict.

    Args:
        name: ``"run_record"`` or ``"bench_record"`` (``esdlib/schema/<name>.schema.json``).
    """
    return json.loads(paths.schema_path(name).read_text(encoding="utf-8"))


@functools.cache
def _validator(name: str) -> Any:
    try:
        import jsonschema
    except ImportError as err:  # pragma: no cover - jsonschema is a dependency
        raise ImportError(
            "validating records needs the 'jsonschema' package: pip install jsonschema"
        ) from err
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def check_schema(record: Any, name: str, what: str) -> None:
    """Validate ``record`` against the JSON Schema ``esdlib/schema/<name>.schema.json``.

    The one validator of both record kinds (run records and benchmark records).

    Args:
        record: the parsed JSON object.
        name: schema name, ``"run_record"`` or ``"bench_record"``.
        what: the record kind for the message, e.g. ``"run record"``.

    Raises:
        RecordError: ``invalid <what>:`` followed by every violation as
            ``<json path>: <message>``, each listed once.
    """
    errors = sorted(_validator(name).iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [
            f"{'/'.join(str(p) for p in e.absolute_path) or '<record>'}: {e.message}"
            for e in errors
        ]
        # dict.fromkeys: a schema's if/then may repeat some checks; report each once.
        raise RecordError(f"invalid {what}:\n  " + "\n  ".join(dict.fromkeys(lines)))


def validate_record(record: Any) -> None:
    """Check ``record`` against the run-record schema, then its headline metrics against its
    own history (final/best test accuracy, best epoch, epochs completed), so a hand-edited
    number is caught.

    Raises:
        RecordError: Listing every violation as ``<json path>: <message>``.
    """
    check_schema(record, "run_record", "run record")
    problems = _inconsistencies(record)
    if problems:
        raise RecordError("inconsistent run record (edited or damaged?): "
                          + "; ".join(problems))


def _inconsistencies(record: Mapping[str, Any]) -> list[str]:
    """Headline metrics that disagree with the record's own per-epoch history."""
    history, metrics = record.get("history") or [], record.get("metrics") or {}
    if record.get("status") == "diverged" or not history:
        return []
    accs = [entry.get("test_acc") for entry in history]
    if any(not isinstance(a, (int, float)) for a in accs):
        return []
    problems = []
    done, final = metrics.get("epochs_completed"), metrics.get("final_test_acc")
    if done is not None and done != len(history):
        problems.append(f"metrics/epochs_completed={done} but the history has {len(history)} "
                        "epochs")
    if final is not None and final != accs[-1]:
        problems.append(f"metrics/final_test_acc={final} but the last epoch's test_acc is "
                        f"{accs[-1]}")
    best, epoch = metrics.get("best_test_acc"), metrics.get("best_epoch")
    at_best = [e.get("test_acc") for e in history if e.get("epoch") == epoch]
    if best is not None and (best != max(accs) or at_best != [best]):
        problems.append(f"metrics/best_test_acc={best} at epoch {epoch} but the history's best "
                        f"is {max(accs)}")
    return problems


def record_path(out_dir: str | os.PathLike, experiment: str, run_id: str) -> Path:
    """Where a record lives: ``<out_dir>/<experiment>/<run_id>.json``."""
    for name, value in (("experiment", experiment), ("run_id", run_id)):
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise RecordError(f"{name}={value!r} is not a safe file name (letters, digits, _ . -)")
    return Path(out_dir) / experiment / f"{run_id}.json"


def write_record(record: Mapping[str, Any], out_dir: str | os.PathLike) -> Path:
    """Validate ``record`` and write it atomically to ``<out_dir>/<experiment>/<run_id>.json``.

    Nothing is written if the record is invalid. An existing record with the same
    run id is replaced as a whole (see :func:`esdlib.io.atomic_open`).

    Returns:
        The record's path.

    Raises:
        RecordError: The record does not satisfy the schema.
    """
    record = to_jsonable(record)
    validate_record(record)
    path = record_path(out_dir, record["experiment"], record["run_id"])
    atomic_write_json(path, record)
    return path


_RECORD_KINDS = {"run_record": ("run record", "schema_version"),
                 "bench_record": ("benchmark record", "bench_schema")}
"""Per schema: the record kind named in messages, and the key every record of it has."""


def read_record(path: str | os.PathLike, schema: str = "run_record", *,
                skip_other_json: bool = False) -> dict[str, Any] | None:
    """Read one JSON record file and validate it: the one reader of run and benchmark records.

    Args:
        path: the file.
        schema: ``"run_record"`` (validated by :func:`validate_record`: the schema and the
            headline metrics against the history) or ``"bench_record"`` (the schema).
        skip_other_json: return ``None`` for a file of valid JSON that is not a record of
            this kind at all (not an object, or without its version key), instead of raising.

    Returns:
        The record (or ``None``, see ``skip_other_json``).

    Raises:
        RecordError: one line that starts with the path: the file is not valid JSON (or not
            UTF-8), or not a valid record (then every violation follows).
        OSError: the file cannot be read (the error names it).
    """
    path = Path(path)
    kind, marker = _RECORD_KINDS[schema]
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise RecordError(f"{path}: not valid JSON ({err})") from err
    if skip_other_json and not (isinstance(record, dict) and marker in record):
        return None
    try:
        if schema == "run_record":
            validate_record(record)
        else:
            check_schema(record, schema, kind)
    except RecordError as err:
        raise RecordError(f"{path}: {err}") from None
    return record


def load_record(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate one run record (:func:`read_record`).

    Raises:
        RecordError: The file is not valid JSON or not a valid record.
    """
    return read_record(path)


def record_exists(out_dir: str | os.PathLike, experiment: str, run_id: str) -> bool:
    """Whether a valid record with ``status == "complete"`` exists for this run id."""
    try:
        path = record_path(out_dir, experiment, run_id)
        return load_record(path)["status"] == "complete"
    except (OSError, ValueError):
        return False


_BASE_COLUMNS = (
    "run_id",
    "experiment",
    "status",
    "scale_label",
    "created",
    "config_hash",
    "git_revision",
    "path",
)


def _record_row(record: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """One row of :func:`load_records`' table."""
    row = {
        "run_id": record["run_id"],
        "experiment": record["experiment"],
        "status": record["status"],
        "scale_label": record["scale"]["label"],
        "created": record["created"],
        "config_hash": record["config_hash"],
        "git_revision": record["git_revision"],
        "path": str(path),
        # absent in records written before the published branch block (2026-11-26)
        "branch_params": (record.get("extra") or {}).get("parameter_counts", {}).get("branches"),
        # the machine, so that a table of runs can say where they ran
        "environment.device_name": (record.get("environment") or {}).get("device_name"),
    }
    for block in ("config", "metrics", "scale", "timing"):
        row.update({f"{block}.{k}": v for k, v in record[block].items()
                    if not (block == "scale" and k == "label")})
    return row


def load_records(
    root: str | os.PathLike, experiment: str | None = None, *, strict: bool = True
) -> pd.DataFrame:
    """Load every record under ``root`` into a table, one row per record.

    Scans ``<root>/<experiment>/*.json`` (all experiment folders when
    ``experiment`` is None), ignoring hidden files (temporary files of writes in
    progress) and JSON files without a ``schema_version`` key (not records).

    Args:
        root: The results directory.
        experiment: Restrict to one experiment folder.
        strict: Raise on an invalid record; otherwise warn and keep it as a row with
            ``status == "damaged"`` (``run_id`` = the file name's stem, ``path``, and the
            problem in ``error``), so a page can show it instead of silently dropping it.

    Returns:
        Columns ``run_id, experiment, status, scale_label, created, config_hash,
        git_revision, path, branch_params`` (the model's branch parameter count; missing in
        records written before 2026-11-26), ``environment.device_name`` (the machine), then
        ``config.<field>``, ``metrics.<key>``, ``scale.<key>`` and ``timing.<key>`` (and
        ``error`` when a record is damaged);
        rows sorted by experiment and run id. Empty (with the base columns) when there are
        no records.

    Raises:
        RecordError: ``strict`` and a record is invalid.
    """
    import pandas as pd

    root = Path(root)
    if experiment is not None:
        folders = [root / experiment]
    elif root.is_dir():
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    else:
        folders = []
    rows = []
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                record = read_record(path, skip_other_json=True)
            except (RecordError, OSError) as err:
                if strict:
                    raise RecordError(str(err) if str(path) in str(err) else f"{path}: {err}"
                                      ) from err
                warnings.warn(f"damaged record {path}: {err}", stacklevel=2)
                rows.append({"run_id": path.stem, "experiment": folder.name,
                             "status": "damaged", "path": str(path),
                             "error": str(err).replace(f"{path}: ", "")})
                continue
            if record is not None:
                rows.append(_record_row(record, path))
    if not rows:
        return pd.DataFrame(columns=list(_BASE_COLUMNS))
    df = pd.DataFrame(rows)
    return df.sort_values(["experiment", "run_id"], ignore_index=True)
