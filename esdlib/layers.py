"""The rate-pass-aware layers: convolution and batch normalisation.

Both behave like their ``torch.nn`` counterparts in the multi-step mode (BPTT, inference) and
take part in the two passes of rate-based backpropagation (:mod:`esdlib.passes`).

Convolution (:class:`SpikeConv2d`)
----------------------------------

A convolution is linear, so on the time-averaged input it gives the time average of its
spike-pass outputs: ``conv(mean_t s[t]) = mean_t conv(s[t])``. :class:`SpikeConv2d` behaves
like ``nn.Conv2d`` in the multi-step mode; in the ``"spike"`` mode it also records
``mean_t conv(s[t])``, and in the ``"rate"`` mode it returns that recorded value instead of
convolving again, while its backward is the ordinary convolution backward at the rate input
(input and weight gradients). The rate pass therefore costs no forward convolutions in the
backbone, only their backward: its forward value is the spike pass's time average (as in
rate-based backpropagation, where every rate-pass activation equals the spike pass's time
average), and the gradient is exactly that of ``conv(rate)``.

Batch normalisation (:class:`SpikeBatchNorm2d`, :class:`SpikeBatchNorm1d`)
---------------------------------------------------------------------------

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

from esdlib.passes import ModeAware, time_average

GEMM_WEIGHT_GRAD_MAX_PIXELS = 64
"""CPU: output maps of at most this many pixels get their weight gradient from one GEMM.

oneDNN's weight-gradient kernel reaches only ~40 % of the machine's GEMM throughput on small
maps with many channels (ResNet-18's last stage at 4×4: 30 ms for what one im2col + GEMM does
in 14 ms on the project's 2-core CPU); on large maps it is the faster of the two.
"""


def conv_weight_grad_gemm(grad: Tensor, x: Tensor, kernel_size: tuple[int, int],
                          stride: tuple[int, int], padding: tuple[int, int]) -> Tensor:
    """Weight gradient of a dense 2-d convolution as one matrix product (im2col).

    ``∂L/∂W[o, c, i, j] = Σ_{n,y,x} g[n, o, y, x] · x_pad[n, c, s·y + i, s·x + j]``: the
    windows of the zero-padded input are gathered channels-last into ``[N·H'·W', kh·kw·C]``
    and multiplied by the gradient ``[N·H'·W', O]``.

    Args:
        grad: output gradient ``[N, O, H', W']`` (any memory layout).
        x: convolution input ``[N, C, H, W]`` (any memory layout).
        kernel_size: ``(kh, kw)``.
        stride: ``(sh, sw)``.
        padding: ``(ph, pw)`` (dilation 1, groups 1).

    Returns:
        ``[O, C, kh, kw]`` (channels-last strides).
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    N, C = x.shape[:2]
    Ho, Wo, O = grad.shape[2], grad.shape[3], grad.shape[1]
    xp = torch.nn.functional.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))
    sN, sH, sW, sC = xp.stride()
    windows = xp.as_strided((N, Ho, Wo, kh, kw, C), (sN, sh * sH, sw * sW, sH, sW, sC))
    cols = windows.reshape(N * Ho * Wo, kh * kw * C)
    g = grad.permute(0, 2, 3, 1).reshape(N * Ho * Wo, O)
    return torch.mm(g.t(), cols).view(O, kh, kw, C).permute(0, 3, 1, 2)


def _use_gemm_weight_grad(grad: Tensor, dilation, groups: int) -> bool:
    return (grad.device.type == "cpu" and groups == 1 and all(d == 1 for d in dilation)
            and grad.shape[2] * grad.shape[3] <= GEMM_WEIGHT_GRAD_MAX_PIXELS)


class _RecordedConv(torch.autograd.Function):
    """Forward: the recorded output; backward: the convolution backward at input ``x``.

    ``bias`` only takes part in autograd: its value is already inside the recorded output.

    Mixed precision: the backward runs in the recorded output's dtype, i.e. in the dtype the
    spike pass convolved in (bf16/fp16 under autocast, as an autocast ``conv2d`` would), and
    the input is saved in that dtype (half the bytes of the float32 rates); the weight
    gradient is returned in the weight's dtype (float32 master weights).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor, stride,
                padding, dilation, groups: int) -> Tensor:
        ctx.save_for_backward(x.to(out.dtype), weight)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.conf = (stride, padding, dilation, groups)
        # A view: the value is shared with the module's record, not copied.
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gb = grad.sum((0, 2, 3), dtype=ctx.bias_dtype) if need_b else None
        if not (need_x or need_w):
            return None, None, gb, None, None, None, None, None
        dtype = x.dtype  # the recorded output's dtype (half precision under autocast)
        grad, w = grad.to(dtype), weight.to(dtype)
        gemm_w = need_w and _use_gemm_weight_grad(grad, dilation, groups)
        gx, gw, _ = torch.ops.aten.convolution_backward(
            grad, x, w, None, stride, padding, dilation, False, [0] * len(stride), groups,
            [need_x, need_w and not gemm_w, False])
        if gemm_w:
            gw = conv_weight_grad_gemm(grad, x, tuple(w.shape[2:]), stride, padding)
        if gw is not None:
            gw = gw.to(weight.dtype)
        return gx, gw, gb, None, None, None, None, None


class SpikeConv2d(ModeAware, nn.Conv2d):
    """``nn.Conv2d`` whose rate-pass forward is the recorded spike-pass time average.

    Modes (set by :func:`esdlib.set_mode`):

    - ``"multistep"``: a plain convolution of ``[T·B, C, H, W]`` (BPTT, inference);
    - ``"spike"``: the convolution of ``[T·B, C, H, W]`` (time-major); it also records
      ``mean_t`` of its output, ``[B, C', H', W']`` (``rate_out``);
    - ``"rate"``: returns ``rate_out`` for the value; gradients w.r.t. the input and the weight
      are those of ``conv(x)`` at the rate input ``x`` (``[B, C, H, W]``); with ``bias=True``
      the bias gradient is ``Σ_{n,y,x}`` of the output gradient, as for ``conv(x) + b``.

    The record is dropped by :func:`esdlib.reset_state`. Same arguments as ``nn.Conv2d``
    (``padding_mode="zeros"`` only).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"SpikeConv2d supports padding_mode='zeros' only, got "
                             f"{self.padding_mode!r}")
        if isinstance(self.padding, str):
            raise ValueError("SpikeConv2d needs explicit integer padding")
        self.rate_out: Tensor | None = None
        self._rate_in_shape: tuple[int, ...] | None = None

    def reset_state(self) -> None:
        """Drop the recorded spike-pass output."""
        self.rate_out = self._rate_in_shape = None

    def forward(self, x: Tensor) -> Tensor:
        """Convolve (multi-step, spike) or return the recorded rate output (rate); see class."""
        if self.mode == "rate":
            out = self.rate_out
            if out is None:
                raise RuntimeError("SpikeConv2d in rate mode has no recorded output: "
                                   "run spike_pass first")
            if tuple(x.shape) != self._rate_in_shape:
                raise RuntimeError(
                    f"rate pass input shape {tuple(x.shape)} differs from the spike pass's "
                    f"{self._rate_in_shape}: run spike_pass on the same batch first")
            return _RecordedConv.apply(x, self.weight, self.bias, out, self.stride,
                                       self.padding, self.dilation, self.groups)
        y = super().forward(x)
        if self.mode == "spike":
            self.rate_out = time_average(y.detach(), self.T)
            self._rate_in_shape = (self.rate_out.shape[0], *x.shape[1:])
        return y


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
    """Rate-BP aware ``BatchNorm2d`` for ``[N, C, H, W]`` inputs (see :mod:`esdlib.layers`).

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


__all__ = [
    "GEMM_WEIGHT_GRAD_MAX_PIXELS", "SpikeBatchNorm1d", "SpikeBatchNorm2d", "SpikeConv2d",
    "conv_weight_grad_gemm",
]
