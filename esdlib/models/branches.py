"""Auxiliary ANN branches (training only) attached to intermediate firing-rate maps.

A branch turns a stage's rate map ``[B, C_i, H_i, W_i]`` into class logits ``[B, K]`` with one
block per remaining backbone stage (each block halves the resolution and moves to the next
stage's width, so the branch ends at the last stage's width), then global average pooling and a
linear classifier. Global pooling makes the branch correct for any input size (16×16 digits,
32×32 CIFAR, 48×48 DVS, 224×224 ImageNet).

Block kinds:

- ``"dsconv"`` (paper): depthwise 3×3 stride 2 → pointwise 1×1 → BN → ReLU → depthwise 3×3 →
  pointwise 1×1 → BN, plus a 1×1 stride-2 conv + BN shortcut, then ReLU of the sum;
- ``"conv"`` (ablation): the same with full 3×3 convolutions instead of depthwise + pointwise.

Branch BNs are ordinary ``nn.BatchNorm2d`` (branches are ANNs and never run in the spike pass).
"""

from __future__ import annotations

from torch import Tensor, nn

BRANCH_KINDS = ("dsconv", "conv")


def _sep_conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False),
    )


class BranchBlock(nn.Module):
    """One downsampling block of an auxiliary branch.

    Args:
        c_in: input channels.
        c_out: output channels.
        kind: ``"dsconv"`` (depthwise-separable, paper) or ``"conv"`` (plain 3×3).
    """

    def __init__(self, c_in: int, c_out: int, kind: str = "dsconv") -> None:
        super().__init__()
        if kind == "dsconv":
            conv1, conv2 = _sep_conv(c_in, c_out, 2), _sep_conv(c_out, c_out, 1)
        elif kind == "conv":
            conv1 = nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False)
            conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        else:
            raise ValueError(f"branch kind must be one of {BRANCH_KINDS}, got {kind!r}")
        self.body = nn.Sequential(
            conv1, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), conv2, nn.BatchNorm2d(c_out)
        )
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, 2, bias=False),
                                      nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C_in, H, W] → [B, C_out, ⌈H/2⌉, ⌈W/2⌉]``."""
        return self.act(self.body(x) + self.shortcut(x))


class AuxBranch(nn.Module):
    """An auxiliary classifier: blocks through ``widths``, global average pool, linear.

    Args:
        widths: channel path, e.g. ``(64, 128, 256, 512)`` for a branch after ResNet-18 stage 1
            (one block per consecutive pair).
        num_classes: ``K``.
        kind: block kind (``BRANCH_KINDS``).
    """

    def __init__(self, widths: tuple[int, ...], num_classes: int, kind: str = "dsconv") -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *[BranchBlock(a, b, kind) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, rate_map: Tensor) -> Tensor:
        """``[B, C, H, W]`` rate map → logits ``[B, K]``."""
        return self.fc(self.pool(self.blocks(rate_map)).flatten(1))
