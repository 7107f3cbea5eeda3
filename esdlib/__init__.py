"""esdlib: Enhanced Self-Distillation (ESD) for spiking neural networks.

A flat public namespace (``import esdlib as esd``): LIF neurons (:mod:`esdlib.neurons`), the
explicit passes of rate-based backpropagation and BPTT (:mod:`esdlib.passes`), the rate-pass
aware layers (:mod:`esdlib.layers`), spiking ResNets with auxiliary branches
(:mod:`esdlib.models`), the reliability-decoupled self-distillation loss (:mod:`esdlib.losses`)
and the table of training methods (:data:`METHODS`, one :class:`Method` per name).
"""

from esdlib.layers import SpikeBatchNorm1d, SpikeBatchNorm2d, SpikeConv2d
from esdlib.losses import (
    LossConfig,
    LossOutput,
    Teacher,
    ce_loss,
    distillation_loss,
    esd_loss,
    hard_loss,
    overconfidence_penalty,
    reliable_teacher,
    sd_loss,
    self_distillation_loss,
)
from esdlib.methods import (
    BRANCH_METHODS,
    METHODS,
    RATE_BP_METHODS,
    EvalOutput,
    Method,
    StepFn,
    StepResult,
    evaluate_batch,
    get_method,
)
from esdlib.models import (
    ARCHITECTURES,
    BRANCH_KINDS,
    BRANCH_POOLS,
    PUBLISHED_BRANCH_POOL,
    AuxBranch,
    NetOutput,
    SpikingNet,
    build_model,
    check_branch_pool,
    final_map_size,
    preact_spiking_resnet34,
    spiking_resnet18,
    spiking_resnet19,
)
from esdlib.neurons import (
    LIF,
    RESET_MODES,
    LIFParams,
    LIFState,
    charge,
    fire,
    heaviside,
    lif_multistep,
    lif_rate_pass,
    lif_spike_pass,
    lif_spike_pass_traceable,
    lif_step,
    surrogate_derivative,
    voltage_reset,
)
from esdlib.passes import (
    COMPILE_MODES,
    NEURON_MODES,
    CompiledSpikePass,
    ModeAware,
    bptt_forward,
    compile_spike_pass,
    infer,
    mode,
    rate_input,
    rate_pass,
    reset_state,
    set_mode,
    spike_pass,
    time_average,
)

# Run-level API (after the core: config takes its choices from the modules above).
from esdlib.train.config import ConfigError, RunConfig  # noqa: E402  isort: skip
from esdlib.data import DatasetInfo, DatasetNotFoundError, build_datasets  # noqa: E402  isort: skip
from esdlib.train.checkpoint import (  # noqa: E402  isort: skip
    CheckpointError,
    load_checkpoint,
    load_trained_model,
)
from esdlib.train.divergence import DivergenceWarning  # noqa: E402  isort: skip
from esdlib.train.engine import fit  # noqa: E402  isort: skip
from esdlib.train.evaluation import evaluate  # noqa: E402  isort: skip
from esdlib.train.gradients import gradient_errors, gradient_study  # noqa: E402  isort: skip
from esdlib.train.records import (  # noqa: E402  isort: skip
    load_paper_table,
    load_record,
    load_records,
    make_run_id,
)

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES", "BRANCH_KINDS", "BRANCH_METHODS", "BRANCH_POOLS", "COMPILE_MODES", "LIF",
    "METHODS", "NEURON_MODES", "PUBLISHED_BRANCH_POOL", "RATE_BP_METHODS", "RESET_MODES",
    "check_branch_pool", "final_map_size", "AuxBranch", "CompiledSpikePass", "EvalOutput",
    "LIFParams", "LIFState", "LossConfig", "LossOutput", "Method", "ModeAware", "NetOutput",
    "SpikeBatchNorm1d", "SpikeBatchNorm2d", "SpikeConv2d", "SpikingNet", "StepFn", "StepResult",
    "Teacher", "bptt_forward", "build_model", "ce_loss", "compile_spike_pass", "charge",
    "distillation_loss", "esd_loss", "evaluate_batch", "fire", "get_method", "hard_loss",
    "heaviside", "infer", "lif_multistep", "lif_rate_pass", "lif_spike_pass",
    "lif_spike_pass_traceable", "lif_step", "mode", "overconfidence_penalty",
    "preact_spiking_resnet34", "rate_input", "rate_pass", "reliable_teacher", "reset_state",
    "sd_loss", "self_distillation_loss", "set_mode", "spike_pass", "spiking_resnet18",
    "spiking_resnet19", "surrogate_derivative", "time_average", "voltage_reset", "CheckpointError",
    "ConfigError", "DatasetInfo", "DatasetNotFoundError", "DivergenceWarning", "RunConfig",
    "build_datasets", "evaluate", "fit", "gradient_errors", "gradient_study",
    "load_checkpoint", "load_paper_table", "load_record", "load_records", "load_trained_model",
    "make_run_id",
]
