"""Training-cost benchmark (opt-in): step time, its phases, autograd and peak memory versus ``T``.

``esd bench`` / ``python -m esdlib.bench`` trains every configuration of a grid (architecture ×
batch × precision × method × ``T``, :class:`~esdlib.bench.config.BenchConfig`) for a few
interleaved steps (:mod:`~esdlib.bench.run`), measures exactly the bytes autograd saves for the
backward pass (:mod:`~esdlib.bench.meter`) and the peak memory of each configuration in a fresh
subprocess (:mod:`~esdlib.bench.probes`), writes one JSON record validated against
``esdlib/schema/bench_record.schema.json`` to ``results/bench/`` (:mod:`~esdlib.bench.records`)
and compares methods as ratios within one run (:mod:`~esdlib.bench.tables`). How each number is
measured, and why: ``book/appendix_performance.md`` (the book's appendix on performance).
"""

from esdlib.bench.config import PHASES, BenchConfig, add_bench_arguments, config_from_args
from esdlib.bench.meter import SavedTensorMeter, held_tensors, live_tensor_bytes
from esdlib.bench.records import (
    BENCH_COLUMNS,
    BENCH_SCHEMA,
    bench_frame,
    default_bench_dir,
    load_bench,
    validate_bench_record,
    write_bench_record,
)
from esdlib.bench.run import bench_command, measure_peak, run_bench
from esdlib.bench.tables import RATIO_PAIRS, bench_table, phase_table, plot_bench

__all__ = [
    "BENCH_COLUMNS", "BENCH_SCHEMA", "PHASES", "RATIO_PAIRS",
    "BenchConfig", "SavedTensorMeter", "add_bench_arguments", "bench_command", "bench_frame",
    "bench_table", "config_from_args", "default_bench_dir", "held_tensors", "live_tensor_bytes",
    "load_bench", "measure_peak", "phase_table", "plot_bench", "run_bench",
    "validate_bench_record", "write_bench_record",
]
