"""Firing rates and a synaptic-operation (SOP) energy estimate (:class:`OpCounter`).

**Firing rates** (evaluation mode, plain SNN, no branches). For LIF layer ``ℓ`` with ``N_ℓ``
neurons per sample, ``rate_ℓ[t]`` is the fraction of its neurons that spike at step ``t``,
averaged over all test samples. The network rate at step ``t`` is the neuron-weighted mean
``Σ_ℓ N_ℓ rate_ℓ[t] / Σ_ℓ N_ℓ`` (every neuron of the network counts once); a layer's rate is
``mean_t rate_ℓ[t]``; the network's average rate is ``mean_t`` of the network rate.

**Energy.** Each convolution/linear layer of the SNN is counted as executed: its multiply-
accumulates per call are ``out.numel() · (C_in/groups) · k_h · k_w`` (``in_features`` for a linear
layer). When its input is binary (spikes), only the non-zero inputs trigger work, so it costs
``MACs × (fraction of non-zero inputs)`` accumulates (ACs, the usual mean-field estimate that
assumes spikes are spread evenly over receptive fields); otherwise (the analog first layer, the
classifier on pooled rates) it costs MACs. Energy = ``E_AC·ACs + E_MAC·MACs`` with the 45 nm
CMOS figures ``E_AC = 0.9 pJ`` and ``E_MAC = 4.6 pJ`` (Horowitz, ISSCC 2014), per sample. A
direct-encoded static image enters the first convolution once (the stem is timestep-invariant
and our implementation computes it once); BN, LIF updates, pooling and memory traffic are not
counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

E_AC_PJ = 0.9
"""Energy of one accumulate (pJ, 45 nm, Horowitz 2014)."""
E_MAC_PJ = 4.6
"""Energy of one multiply-accumulate (pJ, 45 nm, Horowitz 2014)."""

FIRING_RATE_DEFINITION = (
    "eval mode, plain SNN; layer rate[t] = fraction of the layer's neurons spiking at step t, "
    "averaged over test samples; network rate[t] = neuron-weighted mean over all LIF layers; "
    "per-layer value = mean over t"
)


@dataclass
class FiringRateMeter:
    """Accumulates per-layer, per-timestep firing rates over evaluation batches.

    Feed it :class:`esdlib.EvalOutput` objects with :meth:`update`; read :meth:`summary`.
    """

    sums: dict[str, Tensor] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    samples: int = 0

    def update(self, firing_per_t: Mapping[str, Tensor], num_neurons: Mapping[str, int],
               batch_size: int) -> None:
        """Add one batch (rates are batch means, so they are weighted by ``batch_size``)."""
        for name, r in firing_per_t.items():
            r = r.detach().double().cpu() * batch_size
            self.sums[name] = self.sums[name] + r if name in self.sums else r
            self.sizes[name] = int(num_neurons[name])
        self.samples += batch_size

    def summary(self) -> dict:
        """Return ``{"per_timestep": [T], "per_layer": {name: rate}, "mean", "definition"}``."""
        if not self.samples:
            return {"per_timestep": [], "per_layer": {}, "mean": None,
                    "definition": FIRING_RATE_DEFINITION}
        layer = {n: s / self.samples for n, s in self.sums.items()}
        total = sum(self.sizes.values())
        per_t = sum(layer[n] * self.sizes[n] for n in layer) / total
        return {
            "per_timestep": [float(v) for v in per_t],
            "per_layer": {n: float(r.mean()) for n, r in layer.items()},
            "mean": float(per_t.mean()),
            "definition": FIRING_RATE_DEFINITION,
        }


class OpCounter:
    """Counts MACs and spike-driven ACs of the convolution/linear layers of a model.

    Use as a context manager around inference calls; forward hooks only *measure* (they never
    change what the model computes) and are removed on exit.

    Args:
        model: the network (auxiliary branches are skipped: they are training-only).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.macs = 0.0
        self.acs = 0.0
        self.samples = 0
        self._handles: list = []

    def _hook(self, module: nn.Module, inputs, output: Tensor) -> None:
        x = inputs[0]
        if isinstance(module, nn.Conv2d):
            per_out = module.in_channels // module.groups * module.kernel_size[0] \
                * module.kernel_size[1]
        else:
            per_out = module.in_features
        macs = float(output.numel()) * per_out
        # binary (spikes) iff every non-zero entry is a one; two counting passes, no masks kept
        nonzero = int(torch.count_nonzero(x))
        if nonzero == int(torch.count_nonzero(x == 1)):
            self.acs += macs * nonzero / max(x.numel(), 1)
        else:
            self.macs += macs

    def __enter__(self) -> OpCounter:
        for name, m in self.model.named_modules():
            if name.startswith("branches"):
                continue
            if isinstance(m, nn.Conv2d | nn.Linear):
                self._handles.append(m.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def add_samples(self, n: int) -> None:
        """Record that ``n`` samples went through the counted calls."""
        self.samples += n

    def summary(self) -> dict[str, float]:
        """Per-sample ``macs``, ``acs`` (SOPs) and ``energy_uj`` (µJ), with the constants used."""
        n = max(self.samples, 1)
        energy_pj = (E_AC_PJ * self.acs + E_MAC_PJ * self.macs) / n
        return {"macs_per_sample": self.macs / n, "sops_per_sample": self.acs / n,
                "energy_uj_per_sample": energy_pj * 1e-6, "e_ac_pj": E_AC_PJ,
                "e_mac_pj": E_MAC_PJ}
