"""Convolution for rate-based backpropagation that reuses the spike pass's work in the rate pass.

A convolution is linear, so on the time-averaged input it gives the time average of its
spike-pass outputs: ``conv(mean_t s[t]) = mean_t conv(s[t])``. :class:`SpikeConv2d` behaves
like ``nn.Conv2d`` in the multi-step mode; in the ``"spike"`` mode it also records
``mean_t conv(s[t])``, and in the ``"rate"`` mode it returns that recorded value instead of
convolving again, while its backward is the ordinary convolution backward at the rate input
(input and weight gradients). The rate pass therefore costs no forward convolutions in the
backbone, only their backward — the forward value is the spike pass's, as DESIGN §1b asks,
and the gradient is exactly that of ``conv(rate)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from esdlib.neurons import ModeAware, time_average

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


__all__ = ["GEMM_WEIGHT_GRAD_MAX_PIXELS", "SpikeConv2d", "conv_weight_grad_gemm"]
