"""Memory-layout helpers shared by the core's passes and neurons (time-major ``[T·B, ...]``).

- :func:`memory_order`: the order of a tensor's dimensions in memory, so that a reduction over
  time keeps NCHW and channels-last layouts alike;
- :func:`mean_over_steps`: the mean over time of a dense ``[T, N]`` tensor in at least float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["HALF_DTYPES", "mean_over_steps", "memory_order"]


def memory_order(x: Tensor) -> tuple[list[int], list[int]]:
    """Dimension order of ``x`` in memory (dim 0 first, the rest by decreasing stride) and its
    inverse: ``x.permute(order)`` is contiguous for NCHW and channels-last alike."""
    strides = x.stride()
    order = [0, *sorted(range(1, x.dim()), key=lambda d: -strides[d])]
    inverse = [0] * len(order)
    for i, d in enumerate(order):  # a plain loop: TorchDynamo traces it without a break
        inverse[d] = i
    return order, inverse


HALF_DTYPES = (torch.bfloat16, torch.float16)
"""The half-precision dtypes autocast computes in (bf16, fp16)."""


def mean_over_steps(flat: Tensor) -> Tensor:
    """``flat.mean(0)`` of a dense ``[T, N]`` tensor in at least float32, without autograd.

    Half-precision input is added step by step into one float32 buffer: ``mean(0, dtype=…)``
    would first copy the whole ``[T, N]`` tensor to float32 (3.5× slower for a stage-1 spike
    map of ResNet-18 at T = 6 on the project's CPU).
    """
    if flat.dtype not in HALF_DTYPES:
        return flat.mean(0)
    acc = flat[0].to(torch.float32, copy=True)
    for t in range(1, flat.shape[0]):
        acc.add_(flat[t])
    return acc.div_(flat.shape[0])
