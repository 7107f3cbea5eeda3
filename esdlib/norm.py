"""Batch normalisation for rate-based backpropagation.

:class:`SpikeBatchNorm2d` (and its 1-d twin) behave like ``nn.BatchNorm`` in the multi-step
mode and at inference. For rate-based backpropagation:

- ``"spike"`` mode (no graph): normalise with the batch mean/variance over all ``T·B``
  samples (per channel), record them, and update the running statistics once;
- ``"rate"`` mode: normalise the rate batch with the *recorded* spike statistics for the
  forward value, while the gradient flows as if the statistics were those of the rate batch:
  ``μ = sg(μ_spike) + μ_rate − sg(μ_rate)`` and the same for ``σ²`` (``sg`` = stop-gradient).
  Running statistics are not touched a second time.

In every training mode one forward counts one batch in ``num_batches_tracked``, as
``nn.BatchNorm`` does (the rate pass counts none: it is the same batch as the spike pass).

``repeats`` (passed by the model's stem for a direct-encoded static image) says the input
batch stands for ``repeats`` identical copies per sample; the statistics are the same, only
the unbiased correction ``n/(n−1)`` of the running variance uses the full ``n``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esdlib.neurons import ModeAware


def _stat_dtype(x: Tensor) -> torch.dtype:
    """Statistics of a half-precision (autocast) input are computed in float32."""
    return torch.promote_types(x.dtype, torch.float32)


class _RateBatchNorm(torch.autograd.Function):
    """Rate-pass BN with spike statistics forward and rate-batch statistics gradient, fused.

    Forward ``y = (x − μ_s) r_s w + b`` with ``r_s = (σ²_s + ε)^(-1/2)``. Differentiating
    ``μ = sg(μ_s) + μ_r − sg(μ_r)``, ``σ² = sg(σ²_s) + σ²_r − sg(σ²_r)`` by hand gives, per
    channel over the ``N`` reduced positions,

    ``∂L/∂x = w r_s (g − mean(g) − (x − μ_r) r_s² mean(g (x − μ_s)))``,
    ``∂L/∂w = Σ g (x − μ_s) r_s``, ``∂L/∂b = Σ g``.

    Only ``x`` and three per-channel vectors are saved for backward. Under mixed precision
    ``x`` (and the output) are half precision while the statistics and parameters are float32;
    the reductions and the backward are computed in float32 (:func:`_stat_dtype`).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean_s, var_s, eps):
        dims = [0] + list(range(2, x.dim()))
        mean_r = x.mean(dims, dtype=_stat_dtype(x))
        rstd = torch.rsqrt(var_s + eps)
        ctx.save_for_backward(x, weight, mean_s, rstd, mean_r)
        return torch.nn.functional.batch_norm(x, mean_s, var_s, weight, bias, False, 0.0, eps)

    @staticmethod
    def backward(ctx, g):
        x, weight, mean_s, rstd, mean_r = ctx.saved_tensors
        x, g = x.to(_stat_dtype(x)), g.to(_stat_dtype(x))
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        n = x.numel() // x.shape[1]
        g_sum = g.sum(dims)
        gx_sum = (g * x).sum(dims)
        g_xhat = (gx_sum - mean_s * g_sum) * rstd  # Σ g (x − μ_s) r_s
        mean_g = (g_sum / n).view(shape)
        mean_gxc = (g_xhat / (n * rstd)).view(shape)  # mean(g (x − μ_s))
        r = rstd.view(shape)
        dx = (weight.view(shape) * r) * (g - mean_g - (x - mean_r.view(shape)) * r * r * mean_gxc)
        return dx, g_xhat, g_sum, None, None, None


class _SpikeBatchNorm(ModeAware, nn.modules.batchnorm._BatchNorm):
    """Shared implementation of the rate-BP batch norms (see the module docstring)."""

    def __init__(self, num_features: int, eps: float = 1e-5,
                 momentum: float | None = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True,
                         track_running_stats=True)
        self.spike_mean: Tensor | None = None
        self.spike_var: Tensor | None = None

    def reset_state(self) -> None:
        """Drop the recorded spike-pass statistics."""
        self.spike_mean = self.spike_var = None

    def _reduce_dims(self, x: Tensor) -> list[int]:
        return [0] + list(range(2, x.dim()))

    def _shape(self, x: Tensor) -> list[int]:
        return [1, -1] + [1] * (x.dim() - 2)

    @torch.no_grad()
    def _count_batch(self) -> float:
        """Count one training batch and return the running-average factor, as ``nn.BatchNorm``.

        ``momentum=None`` gives the cumulative average ``1 / num_batches_tracked``.
        """
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, n: int) -> None:
        m = self._count_batch()
        self.running_mean.mul_(1 - m).add_(mean, alpha=m)
        self.running_var.mul_(1 - m).add_(var * (n / max(n - 1, 1)), alpha=m)

    def forward(self, x: Tensor, repeats: int = 1) -> Tensor:
        """Normalise ``x`` (``[N, C, ...]``) according to the mode and train/eval state.

        Args:
            x: input; ``N = T·B`` in the multi-step modes, ``B`` in rate mode.
            repeats: how many identical copies each sample of ``x`` stands for (stem reuse).

        Returns:
            Tensor of the same shape.
        """
        self._check_input_dim(x)
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        n = x.numel() // x.shape[1] * repeats
        if self.mode == "rate":
            if self.spike_mean is None:
                raise RuntimeError("BatchNorm in rate mode has no spike statistics: "
                                   "run spike_pass first")
            return _RateBatchNorm.apply(x, self.weight, self.bias, self.spike_mean,
                                        self.spike_var, self.eps)
        if self.mode == "spike":
            with torch.no_grad():
                # One fused pass computes the batch statistics and normalises with them.
                out, mean, invstd = torch.native_batch_norm(
                    x, self.weight, self.bias, None, None, True, 0.0, self.eps)
                var = invstd.pow(-2).sub_(self.eps).clamp_(min=0.0)
                self.spike_mean, self.spike_var = mean, var
                self._update_running(mean, var, n)
                return out
        if repeats == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                True, self._count_batch(), self.eps)
        with torch.no_grad():
            var, mean = torch.var_mean(x.to(_stat_dtype(x)), dim=self._reduce_dims(x),
                                       correction=0)
            self._update_running(mean, var, n)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class SpikeBatchNorm2d(_SpikeBatchNorm):
    """Rate-BP aware ``BatchNorm2d`` for ``[N, C, H, W]`` inputs (see :mod:`esdlib.norm`).

    Args:
        num_features: channels ``C``.
        eps: added to the variance.
        momentum: running-statistics momentum (PyTorch convention; ``None`` = cumulative
            average over the ``num_batches_tracked`` training batches).
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected a 4-D input [N, C, H, W], got {x.dim()}-D")


class SpikeBatchNorm1d(_SpikeBatchNorm):
    """Rate-BP aware ``BatchNorm1d`` for ``[N, C]`` or ``[N, C, L]`` inputs.

    Args:
        num_features: channels ``C``.
        eps: added to the variance.
        momentum: running-statistics momentum (PyTorch convention; ``None`` = cumulative
            average over the ``num_batches_tracked`` training batches).
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in (2, 3):
            raise ValueError(f"expected a 2-D or 3-D input, got {x.dim()}-D")
