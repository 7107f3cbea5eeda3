"""Benchmark records: one JSON file per run, validated against
``esdlib/schema/bench_record.schema.json`` (the run records' convention), and loading them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esdlib.bench.config import PHASES
from esdlib.io import atomic_write_json
from esdlib.train import paths
from esdlib.train.records import check_schema, read_record, to_jsonable

if TYPE_CHECKING:
    import pandas as pd

BENCH_SCHEMA = 1
"""Version of the benchmark record layout (key ``bench_schema``)."""


_ROW_NUMBERS = ("step_s", "step_s_min", "step_s_max", *(f"{p}_s" for p in PHASES),
                "step_cpu_s", "load_other", "step_s_quiet", "n_quiet", "page_faults",
                "saved_bytes", "saved_storages", "state_bytes", "param_bytes",
                "optimizer_state_bytes", "peak_baseline_bytes",
                "peak_bytes", "peak_growth_bytes", "infer_s", "infer_s_min", "infer_s_max",
                "final_loss")
_ROW_KEYS = ("arch", "batch", "precision", "method", "T", "n_steps", *_ROW_NUMBERS,
             "peak_source")
"""Row keys read into :func:`load_bench`'s table; a key the schema does not require (added
later) reads as ``None`` when absent (``precision``: from the record's former ``device.amp``,
fp16 or fp32). Which keys every record has: ``esdlib/schema/bench_record.schema.json``."""

BENCH_COLUMNS = (
    "bench_id", "created", "device_type", "device_name", "threads", "torch", "git_revision",
    "channels_last", "keep_freed_memory", "arch", "width", "image_size", "in_channels",
    "num_classes", "batch", "precision", "method", "T", "n_steps", *_ROW_NUMBERS, "peak_source",
    "path",
)
"""Columns of :func:`load_bench` (times in seconds, memory in bytes)."""


def validate_bench_record(record: Any) -> None:
    """Check a benchmark record against ``esdlib/schema/bench_record.schema.json``.

    The same validator as run records (:func:`esdlib.train.records.check_schema`).

    Args:
        record: a record from :func:`~esdlib.bench.run.run_bench` or read from
            ``results/bench/*.json``.

    Raises:
        esdlib.train.records.RecordError: (a ``ValueError``) listing every violation as
            ``<json path>: <message>``.
    """
    check_schema(record, "bench_record", "benchmark record")


def default_bench_dir() -> Path:
    """The records folder: ``results/bench`` of the project, else ``./results/bench``.

    Returns:
        :func:`esdlib.train.paths.bench_dir` when the project root is found.
    """
    try:
        return paths.bench_dir()
    except FileNotFoundError:
        return Path("results") / "bench"


def write_bench_record(record: Mapping[str, Any], out_dir: str | os.PathLike | None = None) -> Path:
    """Validate ``record`` and write it atomically to ``<out_dir>/<bench_id>.json``.

    Args:
        record: from :func:`run_bench`.
        out_dir: directory; ``None`` = :func:`default_bench_dir`.

    Returns:
        The path written.
    """
    validate_bench_record(record)
    folder = Path(out_dir) if out_dir is not None else default_bench_dir()
    return atomic_write_json(folder / f"{record['bench_id']}.json", to_jsonable(record))


def bench_frame(record: Mapping[str, Any], path: str | None = None) -> pd.DataFrame:
    """One benchmark record as a table, one row per (arch, batch, precision, method, T).

    Args:
        record: a validated record.
        path: the file it came from (stored in the ``path`` column).

    Returns:
        DataFrame with :data:`BENCH_COLUMNS` (seconds, bytes; raw samples left out).
    """
    import pandas as pd

    grid, device = record["grid"], record["device"]
    common = {"bench_id": record["bench_id"], "created": record["created"],
              "device_type": device["type"], "device_name": device["name"],
              "threads": record["threads"], "torch": record["torch"],
              "git_revision": record["git_revision"],
              "channels_last": device.get("channels_last", False),
              "keep_freed_memory": device.get("keep_freed_memory", False), "width": grid["width"],
              "image_size": grid["image_size"], "in_channels": grid["in_channels"],
              "num_classes": grid["num_classes"], "path": path}
    legacy = "fp16" if device.get("amp") else "fp32"  # records before the precision axis
    rows = [{**common, **{k: row.get(k) for k in _ROW_KEYS}} for row in record["rows"]]
    for row in rows:
        row["precision"] = row["precision"] or legacy
    df = pd.DataFrame(rows, columns=list(BENCH_COLUMNS))
    for col in _ROW_NUMBERS:
        df[col] = df[col].astype(float)
    return df


def load_bench(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Load every benchmark record in ``root`` (``*.json``, hidden files skipped).

    Args:
        root: folder of records; ``None`` = :func:`default_bench_dir`.

    Returns:
        One row per (record, arch, batch, precision, method, T) with :data:`BENCH_COLUMNS`,
        sorted by creation time; empty with those columns when there is no record.

    Raises:
        esdlib.train.records.RecordError: (a ``ValueError``) a file is not a valid benchmark
            record (:func:`esdlib.train.records.read_record`; its path starts the message).
    """
    import pandas as pd

    folder = Path(root) if root is not None else default_bench_dir()
    frames = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.startswith("."):
            continue
        record = read_record(path, "bench_record")
        frames.append(bench_frame(record, str(path)))
    if not frames:
        return pd.DataFrame(columns=list(BENCH_COLUMNS))
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(["created", "bench_id", "arch", "batch", "precision", "method", "T"],
                          ignore_index=True)
