"""The run layer: everything needed to train and evaluate the core's models as reproducible runs.

- :mod:`~esdlib.train.config`: :class:`RunConfig`, one validated, hashable description of a run
  (its choice lists come from the core: methods, architectures, data sets, reset modes);
- :mod:`~esdlib.train.engine`: ``fit``, the run loop (a small run object around
  :class:`~esdlib.train.state.RunState`), built on :mod:`~esdlib.train.setup` (optimiser,
  schedule, data sets, model), :mod:`~esdlib.train.checkpoint` (the checksummed file format),
  :mod:`~esdlib.train.distributed` (DDP), :mod:`~esdlib.train.divergence` and
  :mod:`~esdlib.train.evaluation` (``evaluate``);
- :mod:`~esdlib.train.records`: the run record (JSON Schema
  ``esdlib/schema/run_record.schema.json``), deterministic run ids, loading records and the
  paper's reference tables;
- :mod:`~esdlib.train.paths`: the one owner of where files live (project root, results,
  checkpoints, papermill runs, benchmark records);
- :mod:`~esdlib.train.metrics` (firing rates, operation counts, energy),
  :mod:`~esdlib.train.gradients` (gradient error of rate-BP against BPTT) and
  :mod:`~esdlib.train.runtime` (precision, autocast, glibc memory settings).

The layer depends on the core, never the other way round, and imports nothing from the opt-in
packages (:mod:`esdlib.bench`, analysis) or the book. ``import esdlib as esd`` exports its
main names (``esd.RunConfig``, ``esd.fit``, ``esd.load_records`` ...).
"""
