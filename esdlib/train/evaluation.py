"""Evaluation of the plain SNN (no branches): accuracy, loss, firing rates and SOP energy on
a test set, sharded over DDP ranks and reduced so every rank returns the full-set figures."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from esdlib.data import DataError
from esdlib.methods import evaluate_batch
from esdlib.train.distributed import all_reduce, dist_info
from esdlib.train.metrics import FiringRateMeter, OpCounter
from esdlib.train.setup import time_first


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, T: int, *, batch_size: int = 256,
             device: torch.device | str = "cpu", progress: bool = False,
             channels_last: bool = False, count_ops: bool = True) -> dict[str, Any]:
    """Test accuracy, firing rates and SOP energy of the plain SNN (no branches) at ``T`` steps.

    Under DDP every rank evaluates its shard (``index ≡ rank mod world``) and the sums are
    reduced, so every rank returns the full-test-set figures.

    Args:
        model: trained network (set to ``eval()`` here and left in eval mode).
        dataset: test set yielding ``(x, label)``.
        T: timesteps.
        batch_size: evaluation batch size.
        device: where to run.
        progress: show a progress bar.
        channels_last: feed channels-last inputs.
        count_ops: count MACs and SOPs (:class:`~esdlib.train.metrics.OpCounter`; about a fifth
            of a small network's evaluation time). ``False`` leaves ``"energy"`` empty.

    Returns:
        ``{"test_acc", "test_loss", "firing_rates": {...}, "energy": {...}, "samples"}``.

    Raises:
        DataError: some samples hold NaN or Inf values (the message counts them; under DDP
            every rank raises it).
    """
    device = torch.device(device)
    rank, world = dist_info()
    model.eval()
    shard = torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False)
    meter = FiringRateMeter()
    correct = torch.zeros(4, dtype=torch.float64)  # correct, count, loss sum, non-finite
    with OpCounter(model) if count_ops else contextlib.nullcontext(OpCounter(None)) as ops:
        for x, y in tqdm(loader, desc="eval", leave=False, disable=not progress):
            correct[3] += int((~torch.isfinite(x)).reshape(len(x), -1).any(1).sum())
            x, y = time_first(x).to(device), y.to(device)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            out = evaluate_batch(model, x, T)
            correct[0] += (out.logits.argmax(1) == y).sum().item()
            correct[1] += y.numel()
            correct[2] += nn.functional.cross_entropy(out.logits.float(), y,
                                                      reduction="sum").item()
            meter.update(out.firing_per_t, out.num_neurons, y.numel())
            ops.add_samples(y.numel())
    if world > 1:
        correct = _sum_over_ranks(correct, ops, meter)
    energy = ops.summary() if count_ops else {}
    if correct[3] > 0:  # a NaN never crosses a threshold: silently "no spike", a wrong answer
        raise DataError(f"the evaluation data hold {int(correct[3])} of {int(correct[1])} "
                        "samples with non-finite (NaN/Inf) values; their predictions would be "
                        "meaningless (check the data set or its cache)")
    n = max(float(correct[1]), 1.0)
    return {"test_acc": float(correct[0]) / n, "test_loss": float(correct[2]) / n,
            "firing_rates": meter.summary(), "energy": energy, "samples": int(correct[1])}


def _sum_over_ranks(sums: torch.Tensor, ops: OpCounter, meter: FiringRateMeter) -> torch.Tensor:
    """Add up every rank's evaluation sums: ``sums`` (returned), and in place the operation
    counts of ``ops`` and the per-layer, per-step spike sums of ``meter``; one ``all_reduce``."""
    names = sorted(meter.sums)
    packed = torch.cat([sums, torch.tensor([ops.macs, ops.acs, ops.samples], dtype=torch.float64)]
                       + [meter.sums[n] for n in names])
    all_reduce(packed, "summing the evaluation")
    ops.macs, ops.acs, ops.samples = (float(v) for v in packed[4:7])
    steps = len(meter.sums[names[0]]) if names else 0
    for i, n in enumerate(names):
        meter.sums[n] = packed[7 + i * steps: 7 + (i + 1) * steps]
    meter.samples = int(packed[1])
    return packed[:4]
