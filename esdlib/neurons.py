"""Leaky integrate-and-fire neurons: a pure step function and a module with three behaviours.

The discrete LIF neuron of the ESD paper (direct encoding, soft reset) is

.. math::

    v[t] = \\lambda\\, v[t-1] + x[t]                  \\qquad \\text{(charge)}

    s[t] = H(v[t] - \\theta)                            \\qquad \\text{(fire)}

    v[t] \\leftarrow v[t] - \\theta\\, \\mathrm{sg}(s[t])   \\qquad \\text{(reset; sg: stop-grad)}

with leak ``λ = decay`` (paper: 0.2), threshold ``θ = v_threshold`` (1.0) and the sigmoid
surrogate derivative ``H'(u) ≈ α σ(α u)(1 − σ(α u))`` with ``α = surrogate_alpha`` (4.0).

The same neuron runs in one of three *modes*, one per kind of pass (the pass protocol and the
list of every mode-aware layer are in :mod:`esdlib.passes`):

- ``"multistep"``: ``T`` steps with the surrogate gradient (BPTT training and inference);
- ``"spike"``: ``T`` steps without an autograd graph, recording the firing rate
  ``r = mean_t s[t]`` and the eligibility ``e = mean_t sg(v[t]) · ∂v[t]/∂x`` for a constant
  input ``x`` (rate-based backpropagation, pass 1);
- ``"rate"``: one step on the time-averaged input; the output's value is the recorded ``r``
  and its gradient is ``e`` (rate-based backpropagation, pass 2).

Shapes: in the multi-step modes a module receives ``[T·B, ...]`` (time stacked on the batch
axis, time-major) and returns the same shape; in rate mode it receives and returns ``[B, ...]``.

Naming rule (written down as SpikingJelly's functional module does): the three equations are
functions named after the equation; everything that runs a whole neuron is ``lif_<job>``,
the neuron first and the job last; the module is the neuron's name:

- :func:`charge`, :func:`fire`, :func:`voltage_reset`: the three equations above (the membrane
  reset is ``voltage_reset``, distinct from :func:`esdlib.reset_state`, which clears recorded
  state, and from ``LIFParams.reset``, the reset mode);
- :func:`lif_step`: one time step (charge → fire → voltage reset);
- :func:`lif_multistep`: the reference loop of :func:`lif_step` over a ``[T, ...]`` sequence
  (differentiable, BPTT);
- :func:`lif_spike_pass`: the fused no-grad kernel of the spike pass (spikes, ``r``, ``e``);
  :func:`lif_spike_pass_traceable` is the same pass out of place, which ``torch.compile``
  traces into one graph (:class:`esdlib.passes.CompiledSpikePass`);
- :func:`lif_rate_pass`: the rate pass's autograd function (value ``r``, gradient ``e``);
- :class:`LIF`: the module, which holds a :class:`LIFParams` record (``LIF(p)``) and the
  recorded state, and dispatches on its mode to the functions above.

State contract: none of the functions reads module memory, the mode or ``training``, and none
mutates its arguments in place; state enters and leaves as arguments and return values
(:class:`LIFState`). Only :class:`LIF` keeps state between calls, and
:func:`esdlib.reset_state` clears it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from esdlib._layout import mean_over_steps, memory_order
from esdlib.passes import ModeAware

RESET_MODES = ("soft", "soft_nodetach", "hard")


@dataclass(frozen=True)
class LIFParams:
    """Parameters of a LIF neuron.

    Args:
        decay: leak factor ``λ ∈ (0, 1)`` applied to the membrane each step (paper: 0.2).
        v_threshold: firing threshold ``θ`` (paper: 1.0).
        surrogate_alpha: steepness ``α`` of the sigmoid surrogate derivative (paper: 4.0).
        reset: ``"soft"`` (subtract θ, reset path detached; paper default),
            ``"soft_nodetach"`` (subtract θ, gradient flows through the reset) or
            ``"hard"`` (membrane set to 0 after a spike, reset path detached).
    """

    decay: float = 0.2
    v_threshold: float = 1.0
    surrogate_alpha: float = 4.0
    reset: str = "soft"

    def __post_init__(self) -> None:
        if not 0.0 < float(self.decay) < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {self.decay}")
        if self.v_threshold <= 0:
            raise ValueError(f"v_threshold must be > 0, got {self.v_threshold}")
        if self.surrogate_alpha <= 0:
            raise ValueError(f"surrogate_alpha must be > 0, got {self.surrogate_alpha}")
        if self.reset not in RESET_MODES:
            raise ValueError(f"reset must be one of {RESET_MODES}, got {self.reset!r}")


class LIFState(NamedTuple):
    """Membrane potential ``v`` after the reset of the previous step (same shape as the input)."""

    v: Tensor


def surrogate_derivative(u: Tensor, alpha: float) -> Tensor:
    """Sigmoid surrogate of the Heaviside derivative, ``α σ(α u) (1 − σ(α u))``.

    Explained in chapter 2 (`02_rate_bp`).

    Args:
        u: distance to threshold ``v − θ`` (any shape).
        alpha: steepness ``α``.

    Returns:
        Tensor of the same shape as ``u``.
    """
    sig = torch.sigmoid(alpha * u)
    return alpha * sig * (1.0 - sig)


class _HeavisideSigmoid(torch.autograd.Function):
    """Heaviside step forward, sigmoid surrogate derivative backward."""

    @staticmethod
    def forward(ctx, u: Tensor, alpha: float) -> Tensor:
        ctx.save_for_backward(u)
        ctx.alpha = alpha
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (u,) = ctx.saved_tensors
        return grad * surrogate_derivative(u, ctx.alpha), None


def heaviside(u: Tensor, alpha: float) -> Tensor:
    """Spike function ``H(u)`` (``1`` where ``u ≥ 0``) with the sigmoid surrogate gradient.

    Args:
        u: distance to threshold ``v − θ``.
        alpha: surrogate steepness ``α``.

    Returns:
        Binary spikes, same shape and dtype as ``u``.
    """
    return _HeavisideSigmoid.apply(u, alpha)


def charge(x: Tensor, v: Tensor, decay: float | Tensor) -> Tensor:
    """Leaky integration ``v[t] = λ v[t−1] + x[t]``; pure (returns a new tensor, ``v`` untouched).

    Explained in chapter 2 (`02_rate_bp`).

    Args:
        x: input current at this step.
        v: membrane potential after the previous reset.
        decay: leak ``λ``.

    Returns:
        The membrane potential before firing.
    """
    return decay * v + x


def fire(v: Tensor, params: LIFParams) -> Tensor:
    """Spikes ``s = H(v − θ)`` with the surrogate gradient; pure (``v`` untouched).

    Explained in chapter 2 (`02_rate_bp`).

    Args:
        v: membrane potential before firing.
        params: neuron parameters (threshold, surrogate α).

    Returns:
        Binary spikes of the same shape as ``v``.
    """
    return heaviside(v - params.v_threshold, params.surrogate_alpha)


def voltage_reset(v: Tensor, s: Tensor, params: LIFParams) -> Tensor:
    """Membrane reset after firing; pure (returns a new tensor, ``v`` untouched).

    Explained in chapter 2 (`02_rate_bp`).

    ``soft``: ``v − θ·sg(s)``; ``soft_nodetach``: ``v − θ·s``; ``hard``: ``v·(1 − sg(s))``.

    Args:
        v: membrane potential before reset.
        s: spikes of this step.
        params: neuron parameters.

    Returns:
        The membrane potential carried to the next step.
    """
    if params.reset == "soft":
        return v - params.v_threshold * s.detach()
    if params.reset == "soft_nodetach":
        return v - params.v_threshold * s
    return v * (1.0 - s.detach())


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype neuron state is kept in for inputs of ``dtype``: at least float32.

    Under mixed precision (bf16/fp16 autocast) the input currents are half precision; the
    membrane potential, eligibility and firing rate are accumulated in float32 (float64 stays
    float64). Spikes (0/1) are exact in any format and are returned in the input's dtype.
    """
    return torch.promote_types(dtype, torch.float32)


def lif_step(x: Tensor, state: LIFState | None, params: LIFParams) -> tuple[Tensor, LIFState]:
    """One LIF step: charge → fire → voltage reset.

    Explained in chapter 2 (`02_rate_bp`).

    Does not read module memory and does not mutate ``x`` or ``state`` in place: the new
    state is returned.

    Args:
        x: input current ``x[t]``, any shape.
        state: the previous state, or ``None`` for a neuron at rest (``v = 0``).
        params: neuron parameters.

    Returns:
        ``(s[t], new_state)``: spikes (same shape as ``x``, in the membrane's dtype) and the
        post-reset membrane (at least float32, see :func:`state_dtype`).
    """
    v_prev = torch.zeros_like(x, dtype=state_dtype(x.dtype)) if state is None else state.v
    v = charge(x, v_prev, params.decay)
    s = fire(v, params)
    return s, LIFState(voltage_reset(v, s, params))


def lif_multistep(x_seq: Tensor, params: LIFParams) -> Tensor:
    """Run :func:`lif_step` over the leading time axis, starting at rest (the reference loop).

    Explained in chapter 2 (`02_rate_bp`).

    Does not read module memory and does not mutate ``x_seq`` in place.

    Args:
        x_seq: input currents ``[T, ...]``.
        params: neuron parameters.

    Returns:
        Spikes ``[T, ...]`` in the dtype of ``x_seq`` (exact), differentiable through the
        surrogate (BPTT); the membrane is kept in at least float32.
    """
    state = None
    spikes = []
    for x in x_seq:
        s, state = lif_step(x, state, params)
        spikes.append(s.to(x_seq.dtype))
    return torch.stack(spikes)


def soft_reset_kappa(decay: float, T: int) -> list[float]:
    """``κ[t] = Σ_{k=0..t} λ^k``: ``∂v[t]/∂x`` for a constant input under detached soft reset.

    Explained in chapter 2 (`02_rate_bp`).

    Args:
        decay: leak ``λ``.
        T: number of steps.

    Returns:
        ``[κ[0], …, κ[T−1]]``.
    """
    return [(1.0 - decay ** (t + 1)) / (1.0 - decay) for t in range(T)]


@torch.no_grad()
def lif_spike_pass(x_seq: Tensor, params: LIFParams,
                   eligibility: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
    """The no-grad spike pass of one LIF layer: spikes, firing rate and eligibility.

    Explained in chapter 2 (`02_rate_bp`).

    For a neuron driven by a constant input ``x`` the derivative of its mean spike count is
    ``e = mean_t sg(v[t]) · κ[t]`` with ``κ[t] = ∂v[t]/∂x`` (before reset) following

    - ``soft``:          ``κ[t] = λ κ[t−1] + 1``                      (``= Σ_{k≤t} λ^k``)
    - ``soft_nodetach``: ``κ[t] = λ κ[t−1] (1 − θ sg(v[t−1])) + 1``
    - ``hard``:          ``κ[t] = λ κ[t−1] (1 − s[t−1]) + 1``

    where ``sg(v) = α σ(α(v−θ))(1−σ(α(v−θ)))``.

    The loop is fused and works in place on its own buffers (no graph); ``x_seq`` is not
    modified and no module memory is read (the caller stores ``r`` and ``e``). With
    ``eligibility=False`` it is the fast inference path (charge → fire → reset only).

    Args:
        x_seq: input currents ``[T, ...]``.
        params: neuron parameters.
        eligibility: also compute ``e`` (otherwise ``None`` is returned for it).

    Returns:
        ``(spikes [T, ...], rate [...], eligibility [...] or None)``: spikes in the dtype of
        ``x_seq`` (0/1, exact), rate and eligibility in at least float32 (the membrane is kept
        in that dtype too, :func:`state_dtype`).
    """
    T = x_seq.shape[0]
    lam, th, alpha = float(params.decay), params.v_threshold, params.surrogate_alpha
    # Work on a contiguous [T, N] view in the input's memory order (no copy for NCHW or
    # channels-last): every elementwise op below is then one dense 1-D sweep.
    order, inverse = memory_order(x_seq)
    xp = x_seq.permute(order).contiguous()
    x_flat = xp.view(T, -1)
    spikes = torch.empty_like(x_flat)
    v = torch.zeros_like(x_flat[0], dtype=state_dtype(x_flat.dtype))
    elig = torch.zeros_like(v)
    buf = torch.empty_like(v)
    kappa_const = soft_reset_kappa(lam, T) if params.reset == "soft" else None
    kappa = None
    for t in range(T):
        torch.add(x_flat[t], v, alpha=lam, out=v)  # charge: v = λ v + x[t]
        s = torch.ge(v, th, out=spikes[t])  # fire (float spikes written in place)
        if not eligibility:
            if params.reset == "hard":
                v.mul_(1.0 - s)
            else:
                v.sub_(s, alpha=th)
            continue
        # sg(v)/α = σ(u) − σ(u)² with u = α(v − θ); α is folded into the accumulation.
        sig = torch.sigmoid(torch.sub(v, th, out=buf).mul_(alpha), out=buf)
        sg = torch.addcmul(sig, sig, sig, value=-1.0, out=buf)
        if kappa_const is not None:
            elig.add_(sg, alpha=alpha * kappa_const[t])
        else:
            kappa = torch.ones_like(v) if kappa is None else kappa.mul_(lam).add_(1.0)
            elig.addcmul_(sg, kappa, value=alpha)
            if params.reset == "soft_nodetach":
                kappa.mul_(sg.mul_(-alpha * th).add_(1.0))
            else:
                kappa.mul_(1.0 - s)
        if params.reset == "hard":
            v.mul_(1.0 - s)
        else:
            v.sub_(s, alpha=th)
    def unflatten(flat: Tensor, lead: int) -> Tensor:  # back to x_seq's shape and strides
        return flat.view(lead, *xp.shape[1:]).permute(inverse)

    rate = unflatten(mean_over_steps(spikes), 1)[0]
    elig = unflatten(elig.div_(T), 1)[0] if eligibility else None
    return unflatten(spikes, T), rate, elig


@torch.no_grad()
def lif_spike_pass_traceable(x_seq: Tensor, params: LIFParams,
                             decay: Tensor | float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`lif_spike_pass` written out of place, for ``torch.compile``.

    The same equations, in the same order, with fresh tensors at every step instead of the
    eager kernel's ``out=``/in-place buffers: TorchDynamo traces this loop into one graph and
    Inductor fuses the ``T`` steps of a layer into a few kernels. The results equal
    :func:`lif_spike_pass`'s up to floating-point rounding (a compiler may contract
    ``λ v + x`` into one fused multiply-add; ``κ[t]`` is accumulated by its recurrence in the
    decay's dtype instead of the closed form in double precision), so spikes agree except where
    ``v[t]`` lies within rounding of ``θ``. :class:`LIF` calls it in spike mode while
    ``torch.compile`` traces (:class:`esdlib.passes.CompiledSpikePass`).

    Args:
        x_seq: input currents ``[T, ...]``.
        params: neuron parameters.
        decay: the leak ``λ`` as a 0-d tensor (or a float), replacing ``params.decay``: a
            traced graph cannot read a tensor's value into a Python float without breaking.

    Returns:
        ``(spikes [T, ...], rate [...], eligibility [...])`` in the layouts and dtypes of
        :func:`lif_spike_pass`.
    """
    T = x_seq.shape[0]
    lam = params.decay if decay is None else decay
    th, alpha = params.v_threshold, params.surrogate_alpha
    order, inverse = memory_order(x_seq)
    xp = x_seq.permute(order).contiguous()
    x_flat = xp.view(T, -1)
    dtype = state_dtype(x_flat.dtype)
    v = torch.zeros_like(x_flat[0], dtype=dtype)
    count = torch.zeros_like(v)
    elig = torch.zeros_like(v)
    kappa = 0.0 if params.reset == "soft" else torch.zeros_like(v)
    spikes = []
    for t in range(T):
        v = x_flat[t] + lam * v  # charge
        s = (v >= th).to(dtype)  # fire (in the membrane's dtype: θ·s is exact)
        spikes.append(s)
        count = count + s
        sig = torch.sigmoid((v - th) * alpha)
        sg = sig - sig * sig  # sg(v) / α
        kappa = kappa * lam + 1.0  # κ[t] before this step's reset factor
        elig = elig + sg * (alpha * kappa)
        if params.reset == "soft_nodetach":
            kappa = kappa * (1.0 - (alpha * th) * sg)
        elif params.reset == "hard":
            kappa = kappa * (1.0 - s)
        v = v * (1.0 - s) if params.reset == "hard" else v - th * s  # voltage reset

    def unflatten(flat: Tensor, lead: int) -> Tensor:  # back to x_seq's shape and strides
        return flat.view(lead, *xp.shape[1:]).permute(inverse)

    spike_seq = unflatten(torch.stack(spikes).to(x_flat.dtype), T)
    return spike_seq, unflatten(count / T, 1)[0], unflatten(elig / T, 1)[0]


class _LIFRatePass(torch.autograd.Function):
    """Rate-pass LIF: forward returns the recorded rate, backward multiplies by ``e``."""

    @staticmethod
    def forward(ctx, x: Tensor, rate: Tensor, elig: Tensor) -> Tensor:
        ctx.save_for_backward(elig)
        return rate.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        (elig,) = ctx.saved_tensors
        return grad * elig, None, None


def lif_rate_pass(x: Tensor, rate: Tensor, elig: Tensor) -> Tensor:
    """Rate-pass output ``r + x·e − sg(x·e)``: value ``r``, gradient ``∂/∂x = e``.

    Pure: ``r`` and ``e`` come in as arguments (from :func:`lif_spike_pass`), nothing is
    read from module memory, and the result is a new tensor.

    Args:
        x: time-averaged input current ``[B, ...]`` (requires grad).
        rate: firing rate recorded in the spike pass, same shape.
        elig: eligibility recorded in the spike pass, same shape.

    Returns:
        Tensor equal to ``rate`` whose gradient w.r.t. ``x`` is ``elig``.
    """
    if x.shape != rate.shape:
        raise RuntimeError(
            f"rate pass input shape {tuple(x.shape)} differs from the spike pass rate shape "
            f"{tuple(rate.shape)}: run spike_pass on the same batch first"
        )
    return _LIFRatePass.apply(x, rate, elig)


class LIF(ModeAware, nn.Module):
    """LIF layer with the three modes of :mod:`esdlib.neurons` (holds parameters, calls the step).

    The neuron takes its parameters as one :class:`LIFParams` record, ``LIF(p)`` (as Norse's
    ``LIF(p=LIFParameters(...))``). The leak is stored as ``logit(decay)``
    (``λ = sigmoid(decay_logit)``), as a buffer unless ``learnable_decay=True``. Recorded
    quantities are explicit state cleared by :func:`esdlib.reset_state`: ``rate`` and ``elig``
    (spike mode, for the rate pass) and ``firing_per_t`` (multi-step mode: the fraction of
    neurons firing at each step, which :func:`esdlib.evaluate_batch` reports; training steps
    never read it, so the spike pass skips that reduction over every spike map).

    Args:
        p: neuron parameters (paper defaults: ``λ = 0.2``, ``θ = 1``, ``α = 4``, soft reset).
        learnable_decay: make ``logit(λ)`` a trainable parameter.
    """

    def __init__(self, p: LIFParams = LIFParams(), learnable_decay: bool = False) -> None:
        super().__init__()
        if not isinstance(p, LIFParams):
            raise TypeError(f"LIF takes a LIFParams record, got {type(p).__name__}")
        decay = float(p.decay)
        logit = torch.tensor(math.log(decay / (1.0 - decay)))
        if learnable_decay:
            self.decay_logit = nn.Parameter(logit)
        else:
            self.register_buffer("decay_logit", logit)
        self.p = dataclasses.replace(p, v_threshold=float(p.v_threshold),
                                     surrogate_alpha=float(p.surrogate_alpha))
        self.rate: Tensor | None = None
        self.elig: Tensor | None = None
        self.firing_per_t: Tensor | None = None
        self.num_neurons = 0

    def params(self) -> LIFParams:
        """The current parameters as a :class:`LIFParams` record.

        The decay is a Python float, or a 0-d tensor when it is learnable (so BPTT can train it;
        the rate pass gives it no gradient).
        """
        decay = torch.sigmoid(self.decay_logit)
        return dataclasses.replace(
            self.p, decay=decay if self.decay_logit.requires_grad else float(decay))

    def reset_state(self) -> None:
        """Drop everything recorded by the last pass."""
        self.rate = self.elig = self.firing_per_t = None

    def forward(self, x: Tensor) -> Tensor:
        """Apply the neuron in the current mode (see the module docstring for shapes)."""
        if self.mode == "rate":
            if self.rate is None:
                raise RuntimeError("LIF in rate mode has no recorded rate: run spike_pass first")
            return lif_rate_pass(x, self.rate, self.elig)
        T = self.T
        if x.shape[0] % T:
            raise RuntimeError(f"leading dim {x.shape[0]} is not a multiple of T={T}")
        x_seq = x.reshape(T, x.shape[0] // T, *x.shape[1:])
        self.num_neurons = x_seq[0, 0].numel()
        if self.mode == "spike" and torch.compiler.is_compiling():
            spikes, self.rate, self.elig = lif_spike_pass_traceable(
                x_seq, self.p, torch.sigmoid(self.decay_logit))
        elif self.mode == "spike":
            spikes, self.rate, self.elig = lif_spike_pass(x_seq, self.params())
        elif not torch.is_grad_enabled():
            spikes = lif_spike_pass(x_seq, self.params(), eligibility=False)[0]
        else:
            spikes = lif_multistep(x_seq, self.params())
        if self.mode == "multistep":
            self.firing_per_t = spikes.detach().mean(dim=tuple(range(1, spikes.dim())),
                                                     dtype=state_dtype(spikes.dtype))
        return spikes.reshape(x.shape)

    def extra_repr(self) -> str:
        lam = float(torch.sigmoid(self.decay_logit))
        return f"decay={lam:.3g}, v_threshold={self.p.v_threshold}, " \
               f"alpha={self.p.surrogate_alpha}, reset={self.p.reset}"
