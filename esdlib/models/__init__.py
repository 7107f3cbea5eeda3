"""Spiking ResNets with auxiliary branches, reached through :func:`build_model`."""

from __future__ import annotations

from esdlib.models.branches import (
    BRANCH_KINDS,
    BRANCH_POOLS,
    AuxBranch,
    BranchBlock,
    ResidualBlock,
)
from esdlib.models.spiking_resnet import (
    DOWNSAMPLING,
    PUBLISHED_BRANCH_POOL,
    BasicBlock,
    NetOutput,
    PreActBlock,
    SpikingNet,
    Stem,
    final_map_size,
    preact_spiking_resnet34,
    spiking_resnet18,
    spiking_resnet19,
)
from esdlib.neurons import LIFParams

ARCHITECTURES = {
    "spiking_resnet18": spiking_resnet18,
    "spiking_resnet19": spiking_resnet19,
    "preact_spiking_resnet34": preact_spiking_resnet34,
}


def build_model(name: str, num_classes: int, in_channels: int = 3, width: float = 1.0,
                aux: str | None = "dsconv", *, neuron: LIFParams = LIFParams(),
                branch_pool: str = "global") -> SpikingNet:
    """Build a spiking network by name.

    Args:
        name: one of ``ARCHITECTURES`` (``"spiking_resnet18"``, ``"spiking_resnet19"``,
            ``"preact_spiking_resnet34"``).
        num_classes: ``K``.
        in_channels: input channels (3 images, 2 DVS frames, 1 digits).
        width: channel multiplier (1.0 = the paper's widths).
        aux: auxiliary branch kind — ``"dsconv"`` (the published block), ``"conv"`` or
            ``"dsconv_wide"`` (ablations; see :mod:`esdlib.models.branches`) — or ``None``.
        neuron: parameters of every LIF layer (:class:`~esdlib.neurons.LIFParams`; paper
            defaults ``λ = 0.2``, ``θ = 1``, ``α = 4``, soft reset).
        branch_pool: ``"global"`` (default: global average pooling, any input size) or
            ``"published"`` (the published code's fixed window,
            :data:`PUBLISHED_BRANCH_POOL`, for exact replication at the paper's sizes).

    Returns:
        A :class:`SpikingNet`.

    Raises:
        ValueError: unknown name or branch kind, or invalid sizes.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; valid: {sorted(ARCHITECTURES)}")
    if aux == "none":
        aux = None
    if not isinstance(neuron, LIFParams):
        raise TypeError(f"neuron must be a LIFParams record, got {type(neuron).__name__}")
    return ARCHITECTURES[name](num_classes, in_channels, width, aux, neuron, branch_pool)


def check_branch_pool(arch: str, image_size: int, branch_pool: str = "global") -> None:
    """Fail early if ``branch_pool="published"`` cannot pool an ``image_size`` input.

    The published window ``k`` (:data:`PUBLISHED_BRANCH_POOL`) works only when the final branch
    map (:func:`final_map_size`) has ``k`` to ``2k − 1`` pixels per side; the published code
    fails elsewhere (e.g. ResNet-19 at 48 px, PreAct-ResNet-34 below 97 px).

    Raises:
        ValueError: naming the window, the map size and the input sizes that work.
    """
    if branch_pool not in BRANCH_POOLS:
        raise ValueError(f"branch_pool must be one of {BRANCH_POOLS}, got {branch_pool!r}")
    if branch_pool != "published":
        return
    k, size = PUBLISHED_BRANCH_POOL[arch], final_map_size(arch, image_size)
    if not k <= size < 2 * k:
        ok = [s for s in range(1, 1025) if k <= final_map_size(arch, s) < 2 * k]
        raise ValueError(
            f"branch_pool='published' uses the published AvgPool2d({k}, {k}) for {arch}, which "
            f"needs a final map of {k}-{2 * k - 1} px; image_size={image_size} gives {size} px "
            f"(working input sizes: {ok[0]}-{ok[-1]} px); use branch_pool='global'")


__all__ = [
    "ARCHITECTURES", "BRANCH_KINDS", "BRANCH_POOLS", "DOWNSAMPLING", "PUBLISHED_BRANCH_POOL",
    "AuxBranch", "BasicBlock", "BranchBlock", "NetOutput", "PreActBlock",
    "ResidualBlock", "SpikingNet", "Stem", "build_model", "check_branch_pool", "final_map_size",
    "preact_spiking_resnet34", "spiking_resnet18", "spiking_resnet19",
]
