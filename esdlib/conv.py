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

from esdlib.neurons import NEURON_MODES, time_average


class _RecordedConv(torch.autograd.Function):
    """Forward: the recorded output; backward: the convolution backward at input ``x``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, out: Tensor, stride, padding, dilation,
                groups: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups)
        # A view: the value is shared with the module's record, not copied.
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_w):
            return None, None, None, None, None, None, None
        dtype = grad.dtype  # under autocast the recorded output may be half precision
        gx, gw, _ = torch.ops.aten.convolution_backward(
            grad, x.to(dtype), weight.to(dtype), None, stride, padding, dilation, False,
            [0] * len(stride), groups, [need_x, need_w, False])
        if gw is not None:
            gw = gw.to(weight.dtype)
        return gx, gw, None, None, None, None, None


class SpikeConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose rate-pass forward is the recorded spike-pass time average.

    Modes (set by :func:`esdlib.set_mode`):

    - ``"multistep"``: a plain convolution of ``[T·B, C, H, W]`` (BPTT, inference);
    - ``"spike"``: the convolution of ``[T·B, C, H, W]`` (time-major); it also records
      ``mean_t`` of its output, ``[B, C', H', W']`` (``rate_out``);
    - ``"rate"``: returns ``rate_out`` for the value; gradients w.r.t. the input and the weight
      are those of ``conv(x)`` at the rate input ``x`` (``[B, C, H, W]``).

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
        self.mode = "multistep"
        self.T = 1
        self.rate_out: Tensor | None = None
        self._rate_in_shape: tuple[int, ...] | None = None

    def set_mode(self, mode: str, T: int) -> None:
        """Select ``"multistep"``, ``"spike"`` or ``"rate"`` behaviour and the steps ``T``."""
        if mode not in NEURON_MODES:
            raise ValueError(f"mode must be one of {NEURON_MODES}, got {mode!r}")
        self.mode, self.T = mode, int(T)

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
            return _RecordedConv.apply(x, self.weight, out, self.stride, self.padding,
                                       self.dilation, self.groups)
        y = super().forward(x)
        if self.mode == "spike":
            self.rate_out = time_average(y.detach(), self.T)
            self._rate_in_shape = (self.rate_out.shape[0], *x.shape[1:])
        return y


__all__ = ["SpikeConv2d"]
