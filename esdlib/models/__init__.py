"""Spiking ResNets with auxiliary branches, reached through :func:`build_model`."""

from __future__ import annotations

from esdlib.models.branches import BRANCH_KINDS, AuxBranch, BranchBlock
from esdlib.models.spiking_resnet import (
    BasicBlock,
    NetOutput,
    NeuronFactory,
    PreActBlock,
    SpikingNet,
    Stem,
    preact_spiking_resnet34,
    spiking_resnet18,
    spiking_resnet19,
)

ARCHITECTURES = {
    "spiking_resnet18": spiking_resnet18,
    "spiking_resnet19": spiking_resnet19,
    "preact_spiking_resnet34": preact_spiking_resnet34,
}


def build_model(name: str, num_classes: int, in_channels: int = 3, width: float = 1.0,
                aux: str | None = "dsconv", *, decay: float = 0.2, v_threshold: float = 1.0,
                surrogate_alpha: float = 4.0, reset: str = "soft") -> SpikingNet:
    """Build a spiking network by name.

    Args:
        name: one of ``ARCHITECTURES`` (``"spiking_resnet18"``, ``"spiking_resnet19"``,
            ``"preact_spiking_resnet34"``).
        num_classes: ``K``.
        in_channels: input channels (3 images, 2 DVS frames, 1 digits).
        width: channel multiplier (1.0 = the paper's widths).
        aux: auxiliary branch kind (``"dsconv"`` as in the paper, ``"conv"``) or ``None``.
        decay: LIF leak ``λ`` (paper 0.2).
        v_threshold: LIF threshold ``θ`` (1.0).
        surrogate_alpha: surrogate steepness ``α`` (4.0).
        reset: LIF reset mode (``"soft"``, ``"soft_nodetach"``, ``"hard"``).

    Returns:
        A :class:`SpikingNet`.

    Raises:
        ValueError: unknown name or branch kind, or invalid sizes.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; valid: {sorted(ARCHITECTURES)}")
    if aux == "none":
        aux = None
    neuron = NeuronFactory(decay, v_threshold, surrogate_alpha, reset)
    neuron()  # validates the neuron parameters before building
    return ARCHITECTURES[name](num_classes, in_channels, width, aux, neuron)


__all__ = [
    "ARCHITECTURES", "BRANCH_KINDS", "AuxBranch", "BasicBlock", "BranchBlock", "NetOutput",
    "NeuronFactory", "PreActBlock", "SpikingNet", "Stem", "build_model",
    "preact_spiking_resnet34", "spiking_resnet18", "spiking_resnet19",
]
