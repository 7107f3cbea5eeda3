"""Opt-in analysis of run records: numbers and figures by concept, for anyone re-running the grid.

``from esdlib import analysis`` (not imported by ``import esdlib``):

- :mod:`~esdlib.analysis.runs`: which runs count (:func:`runs_of`), their scale
  (:func:`scale_of`), mean ± std over seeds (:func:`summarize`), learning curves;
- :mod:`~esdlib.analysis.accuracy`: final vs best epoch, accuracy vs T;
- :mod:`~esdlib.analysis.firing`: firing rates per timestep and per layer;
- :mod:`~esdlib.analysis.gradient_error`: ``K_rate`` and ``K_esd`` over training and per layer;
- :mod:`~esdlib.analysis.paired`: the paired-seed tests (superiority, non-inferiority,
  equivalence) that turn per-seed differences into a verdict;
- :mod:`~esdlib.analysis.evidence`: claims about cells of runs, evaluated with those tests (the
  caller supplies the claims);
- :mod:`~esdlib.analysis.plots`: the figures of the above.

Tables are pandas DataFrames computed from :func:`esdlib.load_records` tables or
:func:`esdlib.load_record` records; nothing here writes prose or knows about the book.
"""

from esdlib.analysis import evidence, paired
from esdlib.analysis.accuracy import accuracy_vs_T_table, final_and_best
from esdlib.analysis.firing import (
    esd_lower_layers,
    firing_rate_claim,
    firing_rate_comparison,
    firing_rate_definition,
    firing_rate_table,
    layer_rate_table,
)
from esdlib.analysis.gradient_error import (
    final_per_layer_gradient_error,
    gradient_error_history,
    per_layer_gradient_error,
)
from esdlib.analysis.plots import (
    accuracy_vs_T_figure,
    gradient_error_figure,
    layer_rate_figure,
    learning_curve_figure,
    new_figure,
)
from esdlib.analysis.runs import (
    complete,
    damaged,
    data_splits,
    learning_curves,
    runs_of,
    scale_of,
    select_records,
    split_recipes,
    summarize,
)

__all__ = [
    "accuracy_vs_T_figure", "accuracy_vs_T_table", "complete", "damaged", "data_splits",
    "esd_lower_layers", "evidence", "final_and_best", "final_per_layer_gradient_error",
    "firing_rate_claim", "firing_rate_comparison", "firing_rate_definition", "firing_rate_table",
    "gradient_error_figure", "gradient_error_history", "layer_rate_figure", "layer_rate_table",
    "learning_curve_figure", "learning_curves", "new_figure", "paired", "per_layer_gradient_error",
    "runs_of", "scale_of", "select_records", "split_recipes", "summarize",
]
