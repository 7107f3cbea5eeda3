"""Spiking ResNets (CIFAR stems: ResNet-18/19; ImageNet stem: PreAct-ResNet-34).

Every network is a :class:`SpikingNet`: a timestep-invariant *stem* (convolution + BN [+ pool])
applied once to a static image and repeated over the ``T`` steps, a list of *stages*, a *head*,
and optional auxiliary ANN branches tapped after chosen stages. Between layers, activations
have shape ``[T·B, C, H, W]`` (time-major) in the multi-step modes and ``[B, C, H, W]`` in the
rate pass; convolutions, BNs, pooling and residual additions act on either layout unchanged,
so the rate pass maps firing rates to firing rates exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from esdlib.layers import SpikeBatchNorm2d, SpikeConv2d
from esdlib.models.branches import BRANCH_KINDS, BRANCH_POOLS, AuxBranch
from esdlib.neurons import LIF, LIFParams
from esdlib.passes import ModeAware, time_average


class NetOutput(NamedTuple):
    """Output of a :class:`SpikingNet`.

    Attributes:
        logits: time-averaged class scores of the SNN, ``[B, K]``.
        aux_logits: one ``[B, K]`` tensor per auxiliary branch, shallow to deep (empty when the
            branches were not evaluated).
    """

    logits: Tensor
    aux_logits: tuple[Tensor, ...]

    @property
    def all_logits(self) -> list[Tensor]:
        """Branch outputs followed by the main output (the order the losses use)."""
        return [*self.aux_logits, self.logits]


def conv3x3(c_in: int, c_out: int, stride: int = 1, bias: bool = False) -> SpikeConv2d:
    """3×3 convolution with padding 1, reusing spike-pass outputs in the rate pass."""
    return SpikeConv2d(c_in, c_out, 3, stride, 1, bias=bias)


def stem_conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    """3×3 stem convolution (timestep-invariant for static input: a plain ``nn.Conv2d``)."""
    return nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)


class Stem(nn.Module):
    """Timestep-invariant first layers: conv → [BN] → [pool] (no neuron).

    Args:
        conv: first convolution.
        bn: optional rate-BP batch norm.
        pool: optional pooling (applied to analog values, before any neuron).
    """

    def __init__(self, conv: nn.Module, bn: nn.Module | None = None,
                 pool: nn.Module | None = None) -> None:
        super().__init__()
        self.conv, self.bn, self.pool = conv, bn, pool

    def forward(self, x: Tensor, repeats: int = 1) -> Tensor:
        """Apply the stem; ``repeats`` tells the BN each sample stands for that many steps."""
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x, repeats=repeats)
        if self.pool is not None:
            x = self.pool(x)
        return x


class SpikingNet(ModeAware, nn.Module):
    """A spiking network with optional auxiliary branches; the mode comes from :mod:`esdlib.passes`.

    Args:
        stem: timestep-invariant first layers.
        stages: the backbone stages, applied in order (each ``[N, C, H, W] → [N, C', H', W']``).
        head: pooled features ``[N, C]`` → logits ``[N, K]`` (may contain neurons).
        stage_widths: output channels of each stage.
        taps: indices of the stages after which a branch is attached.
        num_classes: ``K``.
        branch_kind: a block kind of :data:`~esdlib.models.branches.BRANCH_KINDS` or ``None``
            (no branches).
        pre_stage: module applied between the stem and the first stage (e.g. the stem neuron).
        branch_residual: add a standard residual block after each branch block (published
            ImageNet branches).
        branch_pool: ``"global"`` or ``"published"`` (fixed window ``pool_window``).
        pool_window: the published code's branch pooling window for this architecture.
    """

    def __init__(self, stem: Stem, stages: Sequence[nn.Module], head: nn.Module,
                 stage_widths: Sequence[int], taps: Sequence[int], num_classes: int,
                 branch_kind: str | None = "dsconv", pre_stage: nn.Module | None = None, *,
                 branch_residual: bool = False, branch_pool: str = "global",
                 pool_window: int | None = None) -> None:
        super().__init__()
        if branch_kind is not None and branch_kind not in BRANCH_KINDS:
            raise ValueError(f"aux must be one of {BRANCH_KINDS} or None, got {branch_kind!r}")
        if branch_pool not in BRANCH_POOLS:
            raise ValueError(f"branch_pool must be one of {BRANCH_POOLS}, got {branch_pool!r}")
        self.stem = stem
        self.pre_stage = pre_stage if pre_stage is not None else nn.Identity()
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = head
        self.num_classes = num_classes
        self.taps = tuple(taps) if branch_kind is not None else ()
        widths = tuple(stage_widths)
        self.branches = nn.ModuleList(
            AuxBranch(widths[i:], num_classes, branch_kind, branch_residual, branch_pool,
                      pool_window) for i in self.taps
        )
        _init_weights(self)

    def _time_mean(self, x: Tensor) -> Tensor:
        """Time average ``[T·B, ...] → [B, ...]`` in the multi-step modes; identity in rate mode."""
        if self.mode == "rate":
            return x
        return time_average(x, self.T)

    def encode(self, x: Tensor) -> Tensor:
        """Stem on a static ``[B, C, H, W]`` (computed once, repeated ``T`` times) or a
        time-varying ``[T, B, C, H, W]`` input; returns ``[T·B, ...]`` (``[B, ...]`` in rate mode).
        """
        T = self.T
        if self.mode == "rate":
            if x.dim() != 4:
                raise ValueError(f"rate mode expects [B, C, H, W], got shape {tuple(x.shape)}")
            return self.stem(x)
        if x.dim() == 5:
            if x.shape[0] != T:
                raise ValueError(f"time-varying input has {x.shape[0]} frames but T={T}")
            if self.mode == "spike" and isinstance(self.stem.pool, nn.MaxPool2d):
                raise ValueError(
                    "this network's stem max-pools analog values, which the rate pass reproduces "
                    "exactly only for a static input; train time-varying input with BPTT")
            return self.stem(x.flatten(0, 1))
        if x.dim() != 4:
            raise ValueError(f"expected [B, C, H, W] or [T, B, C, H, W], got {tuple(x.shape)}")
        y = self.stem(x, repeats=T)
        return torch.cat([y] * T) if T > 1 else y  # cat keeps y's memory layout

    def forward(self, x: Tensor, aux: bool = True) -> NetOutput:
        """Run the network in its current mode.

        Args:
            x: ``[B, C, H, W]`` or ``[T, B, C, H, W]`` (multi-step modes); ``[B, C, H, W]`` (rate).
            aux: evaluate the auxiliary branches (on time-averaged intermediate spikes in the
                multi-step modes, on rate maps in the rate pass).

        Returns:
            :class:`NetOutput` with time-averaged logits.
        """
        h = self.pre_stage(self.encode(x))
        taps = []
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if aux and i in self.taps:
                taps.append(h)
        logits = self._time_mean(self.head(self.pool(h).flatten(1)))
        aux_logits = tuple(b(self._time_mean(f)) for b, f in zip(self.branches, taps, strict=False))
        return NetOutput(logits, aux_logits)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters of the SNN used at inference (everything but the branches)."""
        branch = {id(p) for p in self.branches.parameters()}
        return [p for p in self.parameters() if id(p) not in branch]

    def parameter_counts(self) -> dict[str, int]:
        """Number of trainable parameters: ``{"backbone": …, "branches": …, "total": …}``."""
        bb = sum(p.numel() for p in self.backbone_parameters())
        br = sum(p.numel() for p in self.branches.parameters())
        return {"backbone": bb, "branches": br, "total": bb + br}


PUBLISHED_BRANCH_POOL = {"spiking_resnet18": 4, "spiking_resnet19": 6,
                         "preact_spiking_resnet34": 4}
"""Side of the published code's fixed branch pooling window, per architecture.

At the paper's input sizes it covers the whole 4×4 map of ResNet-18 on CIFAR (32 px), but only
16 of 36 positions of ResNet-18 on CIFAR10-DVS (6×6 at 48 px), 36 of 64 of ResNet-19 on CIFAR
(8×8 at 32 px) and 16 of 49 of PreAct-ResNet-34 on ImageNet (7×7 at 224 px).
"""

DOWNSAMPLING = {"spiking_resnet18": 3, "spiking_resnet19": 2, "preact_spiking_resnet34": 5}
"""Number of stride-2 layers between the input and the last stage (each maps ``H → ⌈H/2⌉``)."""


def final_map_size(arch: str, image_size: int) -> int:
    """Side of the last stage's (and every branch's final) feature map for a square input."""
    size = image_size
    for _ in range(DOWNSAMPLING[arch]):
        size = (size + 1) // 2
    return size


def _init_weights(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Spiking basic block: conv-BN-LIF-conv-BN, add shortcut, LIF (input and output spikes).

    Args:
        c_in: input channels.
        c_out: output channels.
        stride: stride of the first convolution (and of the 1×1 shortcut when needed).
        neuron: parameters of every LIF layer.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, neuron: LIFParams) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(c_in, c_out, stride), SpikeBatchNorm2d(c_out)
        self.lif1 = LIF(neuron)
        self.conv2, self.bn2 = conv3x3(c_out, c_out), SpikeBatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(SpikeConv2d(c_in, c_out, 1, stride, bias=False),
                                          SpikeBatchNorm2d(c_out))
        self.lif2 = LIF(neuron)

    def forward(self, x: Tensor) -> Tensor:
        """``[N, C_in, H, W]`` spikes/rates → ``[N, C_out, H/stride, W/stride]``."""
        out = self.bn2(self.conv2(self.lif1(self.bn1(self.conv1(x)))))
        return self.lif2(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Spiking block of the published PreAct-ResNet-34: LIF-conv-BN-LIF-conv-BN plus shortcut.

    The stream between blocks is analog (no neuron after the addition): the block fires on its
    analog input, ``out = BN(conv(LIF(BN(conv(LIF(x)))))) + shortcut(x)``, and a downsampling
    shortcut is a 1×1 strided convolution + BN of the analog input ``x``. As in the published
    code, every convolution carries a bias (redundant under the following BN, kept so that
    published weights map one to one).

    Args:
        c_in: input channels.
        c_out: output channels.
        stride: stride of the first convolution (and of the 1×1 shortcut when needed).
        neuron: parameters of every LIF layer.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, neuron: LIFParams) -> None:
        super().__init__()
        self.lif1, self.conv1 = LIF(neuron), conv3x3(c_in, c_out, stride, bias=True)
        self.bn1 = SpikeBatchNorm2d(c_out)
        self.lif2, self.conv2 = LIF(neuron), conv3x3(c_out, c_out, bias=True)
        self.bn2 = SpikeBatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(SpikeConv2d(c_in, c_out, 1, stride, bias=True),
                                          SpikeBatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        """``[N, C_in, H, W]`` analog stream → ``[N, C_out, H/stride, W/stride]`` (analog)."""
        out = self.bn2(self.conv2(self.lif2(self.bn1(self.conv1(self.lif1(x))))))
        return out + self.shortcut(x)


def _stage(block: type[nn.Module], c_in: int, c_out: int, n: int, stride: int,
           neuron: LIFParams) -> nn.Sequential:
    layers = [block(c_in, c_out, stride, neuron)]
    layers += [block(c_out, c_out, 1, neuron) for _ in range(n - 1)]
    return nn.Sequential(*layers)


def _stages(block: type[nn.Module], widths: Sequence[int], blocks: Sequence[int],
            neuron: LIFParams) -> list[nn.Sequential]:
    """One stage per entry of ``blocks``; the first keeps the resolution, the others halve it."""
    return [_stage(block, widths[max(i - 1, 0)], widths[i], n, 1 if i == 0 else 2, neuron)
            for i, n in enumerate(blocks)]


def _scale(widths: Sequence[int], width: float) -> list[int]:
    if width <= 0:
        raise ValueError(f"width multiplier must be > 0, got {width}")
    return [max(1, int(round(c * width))) for c in widths]


def _check(num_classes: int, in_channels: int) -> None:
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, "
                         f"{in_channels}")


def spiking_resnet18(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                     aux: str | None = "dsconv", neuron: LIFParams = LIFParams(),
                     branch_pool: str = "global") -> SpikingNet:
    """Spiking ResNet-18 with a CIFAR stem (3×3 conv, no pooling), as in RateBP/ESD.

    Stages 64-128-256-512 (× ``width``) of 2 basic blocks (strides 1, 2, 2, 2), global average
    pooling, linear classifier. Branches after stages 1, 2 and 3.

    Args:
        num_classes: ``K``.
        in_channels: input channels (3 for images, 2 for DVS frames, 1 for digits).
        width: channel multiplier.
        aux: branch kind (:data:`~esdlib.models.branches.BRANCH_KINDS`) or ``None``.
        neuron: parameters of every LIF layer (paper defaults).
        branch_pool: ``"global"`` or ``"published"`` (``AvgPool2d(4, 4)``).

    Returns:
        A :class:`SpikingNet`.
    """
    _check(num_classes, in_channels)
    w = _scale((64, 128, 256, 512), width)
    stem = Stem(stem_conv3x3(in_channels, w[0]), SpikeBatchNorm2d(w[0]))
    stages = _stages(BasicBlock, w, (2, 2, 2, 2), neuron)
    return SpikingNet(stem, stages, nn.Linear(w[3], num_classes), w, (0, 1, 2), num_classes,
                      aux, pre_stage=LIF(neuron), branch_pool=branch_pool,
                      pool_window=PUBLISHED_BRANCH_POOL["spiking_resnet18"])


def spiking_resnet19(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                     aux: str | None = "dsconv", neuron: LIFParams = LIFParams(),
                     branch_pool: str = "global") -> SpikingNet:
    """Spiking ResNet-19 with a CIFAR stem (TET/RateBP layout).

    3×3 conv stem (128), stages 128-256-512 (× ``width``) of 3, 3, 2 basic blocks (strides 1, 2, 2),
    global average pooling and a Linear(512→256)-LIF-Linear(256→K) classifier. Branches after
    stages 1 and 2.

    Args:
        num_classes: ``K``.
        in_channels: input channels.
        width: channel multiplier.
        aux: branch kind or ``None``.
        neuron: parameters of every LIF layer.
        branch_pool: ``"global"`` or ``"published"`` (``AvgPool2d(6, 6)``).

    Returns:
        A :class:`SpikingNet`.
    """
    _check(num_classes, in_channels)
    w = _scale((128, 256, 512, 256), width)
    stem = Stem(stem_conv3x3(in_channels, w[0]), SpikeBatchNorm2d(w[0]))
    stages = _stages(BasicBlock, w, (3, 3, 2), neuron)
    head = nn.Sequential(nn.Linear(w[2], w[3]), LIF(neuron), nn.Linear(w[3], num_classes))
    return SpikingNet(stem, stages, head, w[:3], (0, 1), num_classes, aux, pre_stage=LIF(neuron),
                      branch_pool=branch_pool,
                      pool_window=PUBLISHED_BRANCH_POOL["spiking_resnet19"])


def preact_spiking_resnet34(num_classes: int = 1000, in_channels: int = 3, width: float = 1.0,
                            aux: str | None = "dsconv", neuron: LIFParams = LIFParams(),
                            branch_pool: str = "global") -> SpikingNet:
    """The published spiking PreAct-ResNet-34 with an ImageNet stem (ESD/RateBP code layout).

    Stem: 7×7 stride-2 convolution (with bias) → BN → 3×3 stride-2 max pooling, applied once to
    the static image (timestep-invariant, so exact in the rate pass for direct-encoded input).
    Stages 64-128-256-512 (× ``width``) of 3, 4, 6, 3 :class:`PreActBlock` s carry an analog
    stream; the head averages it globally and applies Linear(512, K) — 32 LIF layers in all,
    21,806,184 parameters at K = 1000 and width 1 (the published count).

    Branches after stages 1, 2 and 3 take the stage's analog output (its time average in the
    multi-step modes); as published, each remaining stage adds a branch block followed by a
    standard residual block (19,555,512 branch parameters at K = 1000).

    Args:
        num_classes: ``K``.
        in_channels: input channels.
        width: channel multiplier.
        aux: branch kind or ``None``.
        neuron: parameters of every LIF layer.
        branch_pool: ``"global"`` or ``"published"`` (``AvgPool2d(4, 4)``).

    Returns:
        A :class:`SpikingNet`.
    """
    _check(num_classes, in_channels)
    w = _scale((64, 128, 256, 512), width)
    stem = Stem(nn.Conv2d(in_channels, w[0], 7, 2, 3, bias=True), SpikeBatchNorm2d(w[0]),
                nn.MaxPool2d(3, 2, 1))
    stages = _stages(PreActBlock, w, (3, 4, 6, 3), neuron)
    return SpikingNet(stem, stages, nn.Linear(w[3], num_classes), w, (0, 1, 2), num_classes, aux,
                      branch_residual=True, branch_pool=branch_pool,
                      pool_window=PUBLISHED_BRANCH_POOL["preact_spiking_resnet34"])


__all__ = [
    "DOWNSAMPLING", "PUBLISHED_BRANCH_POOL", "final_map_size",
    "NetOutput", "SpikingNet", "BasicBlock", "PreActBlock", "Stem",
    "spiking_resnet18", "spiking_resnet19", "preact_spiking_resnet34",
]
