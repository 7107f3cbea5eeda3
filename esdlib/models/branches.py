"""Auxiliary ANN branches (training only) attached to intermediate firing-rate maps.

A branch turns a stage's rate map ``[B, C_i, H_i, W_i]`` into class logits ``[B, K]`` with one
downsampling block per remaining backbone stage (each block halves the resolution and doubles
the width, so the branch ends at the last stage's width and resolution), optionally followed at
each new width by a standard residual block (the published ImageNet branches), then average
pooling and a linear classifier.

Block kinds (convolutions without bias, branch BNs are ordinary ``nn.BatchNorm2d``):

- ``"dsconv"`` — the published depthwise-separable block ``c_in → c_out``::

      body:     dw3×3/2 (c_in) → pw1×1 c_in→c_in → BN(c_in) → ReLU
                → dw3×3/1 (c_in) → pw1×1 c_in→c_out → BN(c_out) → ReLU
      shortcut: 1×1/2 conv c_in→c_out → BN(c_out)
      output:   ReLU(body + shortcut)

  ResNet-18 (CIFAR, 10 classes): 22,272 / 85,504 / 334,848 parameters for the blocks
  64→128 / 128→256 / 256→512, 1,213,214 for the three branches with their classifiers.
- ``"conv"`` (ablation) — the same block with each depthwise + pointwise pair replaced by one
  full 3×3 convolution of the same input and output widths.
- ``"dsconv_wide"`` (ablation) — esdlib's first, wider depthwise-separable block, which widens
  already in the first pointwise convolution (``pw c_in→c_out → BN(c_out) → ReLU → dw3×3 on
  c_out → pw c_out→c_out → BN(c_out)``, no ReLU before the addition; 1,925,598 parameters for
  ResNet-18). It is *not* the paper's block; the run records produced before 2026-11-26 with
  ``branch_kind="dsconv"`` used it.

Pooling (``pool``):

- ``"global"`` (default): global average pooling, right for any input size;
- ``"published"``: the published code's fixed ``AvgPool2d(k, k)`` window (``k`` per
  architecture, :data:`esdlib.models.PUBLISHED_BRANCH_POOL`), which covers only the top-left
  ``k×k`` positions of larger maps and works only for maps of ``k`` to ``2k − 1`` pixels (one
  pooled position per channel). Offered for exact replication of the published runs; a map
  outside that range is a clear error.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

BRANCH_KINDS = ("dsconv", "conv", "dsconv_wide")
BRANCH_POOLS = ("global", "published")


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (``groups = channels``) that stays float32 under CPU autocast.

    oneDNN's bfloat16 depthwise convolution (forward + backward) is 4–60× slower than its
    float32 one on a CPU with AVX512-BF16 (2-vCPU AMD EPYC, torch 2.14.1, batch 16, one
    thread: 256 channels 8×8 stride 2: 25.5 ms vs 0.4 ms; 64 channels 32×32 stride 2: 16.8 ms
    vs 4.7 ms), which made the branches the slowest part of a bf16 ESD step. Under CPU autocast
    this module therefore convolves in float32 (its input cast up, autocast off); elsewhere —
    no autocast, or CUDA — it is exactly ``nn.Conv2d``. Same parameters and state dict.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``nn.Conv2d.forward``, in float32 when CPU autocast is on (see the class)."""
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.to(torch.promote_types(x.dtype, torch.float32)))
        return super().forward(x)


def _dw_pw(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    """Depthwise 3×3 (stride ``stride``) on ``c_in`` channels, then pointwise ``c_in → c_out``."""
    return [DepthwiseConv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False)]


def _block_body(c_in: int, c_out: int, kind: str) -> nn.Sequential:
    if kind == "dsconv":
        return nn.Sequential(*_dw_pw(c_in, c_in, 2), nn.BatchNorm2d(c_in), nn.ReLU(inplace=True),
                             *_dw_pw(c_in, c_out, 1), nn.BatchNorm2d(c_out),
                             nn.ReLU(inplace=True))
    if kind == "conv":
        return nn.Sequential(nn.Conv2d(c_in, c_in, 3, 2, 1, bias=False), nn.BatchNorm2d(c_in),
                             nn.ReLU(inplace=True), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
                             nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
    if kind == "dsconv_wide":
        return nn.Sequential(*_dw_pw(c_in, c_out, 2), nn.BatchNorm2d(c_out),
                             nn.ReLU(inplace=True), *_dw_pw(c_out, c_out, 1),
                             nn.BatchNorm2d(c_out))
    raise ValueError(f"branch kind must be one of {BRANCH_KINDS}, got {kind!r}")


class BranchBlock(nn.Module):
    """One downsampling block of an auxiliary branch (layouts in the module docstring).

    Args:
        c_in: input channels.
        c_out: output channels.
        kind: ``"dsconv"`` (published), ``"conv"`` or ``"dsconv_wide"`` (ablations).
    """

    def __init__(self, c_in: int, c_out: int, kind: str = "dsconv") -> None:
        super().__init__()
        self.body = _block_body(c_in, c_out, kind)
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, 2, bias=False),
                                      nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C_in, H, W] → [B, C_out, ⌈H/2⌉, ⌈W/2⌉]``."""
        return self.act(self.body(x) + self.shortcut(x))


class ResidualBlock(nn.Module):
    """Standard ANN residual block at constant width (published ImageNet branches).

    ``ReLU(x + BN(conv3×3(ReLU(BN(conv3×3(x))))))``, convolutions without bias.

    Args:
        c: channels.
    """

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(c))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] → [B, C, H, W]``."""
        return self.act(x + self.body(x))


class AuxBranch(nn.Module):
    """An auxiliary classifier: blocks through ``widths``, average pooling, linear.

    Args:
        widths: channel path, e.g. ``(64, 128, 256, 512)`` for a branch after ResNet-18 stage 1
            (one block per consecutive pair).
        num_classes: ``K``.
        kind: block kind (``BRANCH_KINDS``).
        residual: follow each block by a :class:`ResidualBlock` at its output width (the
            published PreAct-ResNet-34 ImageNet branches).
        pool: ``"global"`` or ``"published"`` (see the module docstring).
        pool_window: the published window ``k`` (needed with ``pool="published"``).
    """

    def __init__(self, widths: tuple[int, ...], num_classes: int, kind: str = "dsconv",
                 residual: bool = False, pool: str = "global",
                 pool_window: int | None = None) -> None:
        super().__init__()
        if pool not in BRANCH_POOLS:
            raise ValueError(f"branch pool must be one of {BRANCH_POOLS}, got {pool!r}")
        if pool == "published" and (pool_window is None or pool_window < 1):
            raise ValueError("branch pool 'published' needs the window size pool_window >= 1")
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers.append(BranchBlock(a, b, kind))
            if residual:
                layers.append(ResidualBlock(b))
        self.blocks = nn.Sequential(*layers)
        self.pool_mode, self.pool_window = pool, pool_window
        self.pool = (nn.AdaptiveAvgPool2d(1) if pool == "global"
                     else nn.AvgPool2d(pool_window, pool_window))
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, rate_map: Tensor) -> Tensor:
        """``[B, C, H, W]`` rate map → logits ``[B, K]``."""
        h = self.blocks(rate_map)
        if self.pool_mode == "published":
            k, size = self.pool_window, tuple(h.shape[2:])
            if not all(k <= s < 2 * k for s in size):
                raise ValueError(
                    f"branch_pool='published' pools with the published AvgPool2d({k}, {k}), "
                    f"which needs a final branch map of {k} to {2 * k - 1} pixels per side; this "
                    f"input gives {size[0]}×{size[1]} (use branch_pool='global' for this size)")
        return self.fc(self.pool(h).flatten(1))
