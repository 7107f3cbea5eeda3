"""The pass protocol: which behaviour every spike/rate-aware layer has in each pass.

A network is trained by one of two procedures, each a sequence of explicit whole-model
passes; one call sets the behaviour (``mode``) of every mode-aware module of the model, and
the passes read like the method.

Rate-based backpropagation (the two-pass scheme of the official RateBP/ESD code: a no-grad
spike pass that records what the rate pass needs, then one differentiable step on the
time-averaged input whose forward values are the spike pass's) is two calls::

    spike_pass(model, x, T)         # no graph: T steps, every LIF records r and e,
                                    # every BN records its T·B batch statistics
    out = rate_pass(model, x)       # with graph: one step on the time-averaged input
    loss(out).backward()
    reset_state(model)

BPTT is ``bptt_forward(model, x, T)``; inference is :func:`infer`.

The spike pass launches a few small kernels per layer and timestep; on a GPU the step is then
bound by kernel launches. :class:`CompiledSpikePass` (``RunConfig.compile``) is the same pass
compiled by ``torch.compile`` into fused kernels (and, in the CUDA-graph modes, one replay).

The three modes (:data:`NEURON_MODES`), set by :func:`set_mode` / :func:`mode`:

- ``"multistep"``: ``T`` steps on ``[T·B, ...]`` with the surrogate gradient (BPTT, inference);
- ``"spike"``: ``T`` steps on ``[T·B, ...]`` without a graph, recording what the rate pass needs;
- ``"rate"``: one step on ``[B, ...]`` (the time-averaged input) that returns the recorded
  values and back-propagates the rate-BP gradient.

Every layer with a spike/rate behaviour derives from :class:`ModeAware`; :func:`reset_state`
drops what they record. They are:

- :class:`esdlib.neurons.LIF` (:mod:`esdlib.neurons`): spike mode records the firing rate
  ``r`` and the eligibility ``e``; rate mode returns ``r`` with gradient ``e``
  (:func:`esdlib.neurons.lif_spike_pass`, :func:`esdlib.neurons.lif_rate_pass`); multi-step
  mode records the per-step firing fraction for :func:`esdlib.evaluate_batch`;
- :class:`esdlib.layers.SpikeConv2d` (:mod:`esdlib.layers`): spike mode records the time
  average of its output; rate mode returns it, with the gradient of ``conv`` at the rate input;
- :class:`esdlib.layers.SpikeBatchNorm1d` / :class:`esdlib.layers.SpikeBatchNorm2d`: spike
  mode normalises with (and records) the ``T·B`` batch statistics; rate mode normalises with
  the recorded statistics, gradient as for the rate batch's statistics;
- :class:`esdlib.models.SpikingNet`: the stem is computed once for a static image and
  repeated ``T`` times; its time-mean helper (``SpikingNet._time_mean``, :func:`time_average`
  of the logits and of the branch inputs) averages over ``T`` in the multi-step modes and is
  the identity in the rate pass.

Input convention for the multi-step passes: ``x`` is either a static image batch
``[B, C, H, W]`` (direct encoding: the same image at each of the ``T`` steps) or a
time-varying batch ``[T, B, C, H, W]`` (event frames).
"""

from __future__ import annotations

import contextlib
import types
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from esdlib._layout import HALF_DTYPES, mean_over_steps, memory_order

NEURON_MODES = ("multistep", "spike", "rate")
"""The behaviours of a mode-aware module, one per kind of pass."""


class ModeAware:
    """Mixin for modules whose behaviour follows the pass: ``mode`` and ``T``.

    ``mode`` is one of :data:`NEURON_MODES` (``"multistep"`` by default) and ``T`` the number
    of timesteps of the multi-step modes; :func:`set_mode` sets both on every such module.
    Subclasses that record anything in a pass override :meth:`reset_state`.
    """

    mode: str = "multistep"
    T: int = 1

    def set_mode(self, mode: str, T: int) -> None:
        """Select the behaviour (``"multistep"``, ``"spike"``, ``"rate"``) and the steps ``T``."""
        if mode not in NEURON_MODES:
            raise ValueError(f"mode must be one of {NEURON_MODES}, got {mode!r}")
        # plain attributes written straight into the instance dict: ``nn.Module.__setattr__``
        # (parameter/buffer/submodule checks) made mode switches ~5 % of a small training run
        vars(self).update(mode=mode, T=int(T))

    def reset_state(self) -> None:
        """Drop everything recorded by the last pass (nothing by default)."""


def time_average(x: Tensor, T: int) -> Tensor:
    """Average a time-major ``[T·B, ...]`` tensor over its ``T`` steps: ``[B, ...]``.

    Equal to ``x.view(T, B, ...).mean(0)`` and differentiable, but it keeps the memory layout
    of ``x`` (channels-last stays channels-last) and reduces over one contiguous axis, which
    is several times faster than a strided reduction for permuted layouts.

    Half-precision input (bf16/fp16 under autocast) is summed in float32 and the mean is
    returned in the input's dtype; without autograd the sum runs step by step into one float32
    buffer (:func:`~esdlib._layout.mean_over_steps`).

    Args:
        x: ``[T·B, ...]`` with the time-major batch axis outermost in memory.
        T: number of steps.

    Returns:
        ``[B, ...]`` in the layout and dtype of ``x``.
    """
    if x.shape[0] % T:
        raise RuntimeError(f"leading dim {x.shape[0]} is not a multiple of T={T}")
    B = x.shape[0] // T
    order, inverse = memory_order(x)
    xp = x.permute(order)
    if not xp.is_contiguous():  # the batch axis is not outermost, or x is not dense
        return x.view(T, B, *x.shape[1:]).mean(0)
    flat = xp.reshape(T, -1)
    if flat.dtype in HALF_DTYPES and not (flat.requires_grad and torch.is_grad_enabled()):
        mean = mean_over_steps(flat).to(flat.dtype)
    else:
        mean = flat.mean(0)
    return mean.view(B, *xp.shape[1:]).permute(inverse)


def _mode_aware(model: nn.Module) -> Iterator[ModeAware]:
    return (m for m in model.modules() if isinstance(m, ModeAware))


def set_mode(model: nn.Module, mode: str, T: int = 1) -> None:
    """Set the behaviour of every mode-aware module of ``model`` (LIFs, BNs, networks).

    Args:
        model: any module tree.
        mode: ``"multistep"`` (BPTT / inference), ``"spike"`` (rate-BP pass 1) or ``"rate"``
            (rate-BP pass 2).
        T: number of timesteps of the multi-step modes.
    """
    _set_all(list(_mode_aware(model)), mode, T)


def _set_all(modules: list[ModeAware], mode: str, T: int) -> None:
    if mode not in NEURON_MODES:
        raise ValueError(f"mode must be one of {NEURON_MODES}, got {mode!r}")
    if int(T) < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    for m in modules:
        m.set_mode(mode, int(T))


@contextlib.contextmanager
def mode(model: nn.Module, name: str, T: int = 1) -> Iterator[nn.Module]:
    """Context manager form of :func:`set_mode`; restores each module's previous mode on exit.

    Args:
        model: module tree.
        name: mode name (see :func:`set_mode`).
        T: number of timesteps.

    Yields:
        ``model``.
    """
    modules = list(_mode_aware(model))  # one walk of the tree, not one per direction
    previous = [(m, m.mode, m.T) for m in modules]
    _set_all(modules, name, T)
    try:
        yield model
    finally:
        for m, old_mode, old_T in previous:
            m.set_mode(old_mode, old_T)


def reset_state(model: nn.Module) -> None:
    """Clear every recorded state (LIF rates/eligibilities/firing counts, BN spike statistics)."""
    for m in _mode_aware(model):
        m.reset_state()


@torch.no_grad()
def spike_pass(model: nn.Module, x: Tensor, T: int):
    """Rate-BP pass 1: run the SNN over ``T`` steps without a graph, recording r, e and BN stats.

    Explained in chapter 2 (`02_rate_bp`).

    Branches are not evaluated (they see rates only in the rate pass).

    Args:
        model: a spiking network (see :mod:`esdlib.models`), in ``train()`` mode for training.
        x: ``[B, C, H, W]`` static or ``[T, B, C, H, W]`` time-varying input.
        T: number of timesteps.

    Returns:
        The network output (time-averaged logits ``[B, K]``, no auxiliary logits).
    """
    with mode(model, "spike", T):
        return model(x, aux=False)


COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
"""Values of ``RunConfig.compile``: ``"none"`` (eager) or a ``torch.compile`` mode for the spike
pass (:class:`CompiledSpikePass`); ``"reduce-overhead"`` and ``"max-autotune"`` replay CUDA
graphs on CUDA devices."""

_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def _spike_forward(model: nn.Module, x: Tensor):
    return model(x, aux=False)


def _buffers(model: nn.Module) -> dict[str, Tensor]:
    return dict(model.named_buffers())


class CompiledSpikePass:
    """:func:`spike_pass` with the network's ``T``-step run compiled by ``torch.compile``.

    Called like :func:`spike_pass`, ``spike(model, x, T)``, it records the same rates,
    eligibilities, convolution averages and BN statistics (equal up to floating-point rounding,
    see :func:`esdlib.neurons.lif_spike_pass_traceable`) and updates the BN running statistics
    once. The mode is set outside the compiled region; inside, TorchDynamo traces the whole
    network — every layer's ``T`` steps — into one graph, which Inductor compiles into fused
    kernels (on CUDA, ``"reduce-overhead"``/``"max-autotune"`` also replay it as a CUDA graph:
    one launch per step instead of several per layer and timestep). Pass it to a training step
    as ``spike_fn`` (:class:`esdlib.methods.StepFn`); ``fit`` does so when
    ``RunConfig.compile`` is not ``"none"``.

    Compilation happens at the first call for each input signature (shape, dtype, layout,
    device, ``T``, train/eval, autocast) and is cached by this object: keep one per run. The
    cache belongs to this object alone (its own copy of the traced function), so other runs in
    the same process neither share nor use up its recompilation budget.

    If compiling or running the compiled pass fails, the batch is run again eagerly (the BN
    running statistics are first restored to their values before the failed call), one
    :class:`UserWarning` names the error, and every later call is eager; :attr:`error` then
    holds the reason. An error that the eager pass raises too (a wrong input shape) propagates.

    Args:
        mode: a ``torch.compile`` mode: ``"default"``, ``"reduce-overhead"`` or
            ``"max-autotune"`` (:data:`COMPILE_MODES` without ``"none"``).
        backend: the ``torch.compile`` backend; ``"inductor"`` (default) is the one the modes
            configure, ``"eager"`` runs TorchDynamo's captured graph without compiling it (to
            tell a tracing problem from a compiler problem; the mode is then not used).
        fullgraph: make a graph break an error (which then falls back as above) instead of
            compiling the pieces between breaks; for checking that the pass is one graph.

    Attributes:
        compile_mode: the ``torch.compile`` mode.
        error: ``None`` while the compiled pass works, else ``"<Exception>: <message>"`` of the
            failure that switched this object to the eager pass.
    """

    def __init__(self, mode: str = "default", *, backend: str = "inductor",
                 fullgraph: bool = False) -> None:
        if mode not in COMPILE_MODES[1:]:
            raise ValueError(f"compile mode must be one of {COMPILE_MODES[1:]}, got {mode!r}")
        self.compile_mode = mode
        self.error: str | None = None
        # TorchDynamo caches compiled code on the function's code object: a private copy of it
        # keeps this pass's cache (and its recompile limit) apart from every other instance's.
        code = _spike_forward.__code__.replace()
        fn = types.FunctionType(code, _spike_forward.__globals__, "spike_forward")
        self._compiled = torch.compile(fn, mode=mode if backend == "inductor" else None,
                                       backend=backend, fullgraph=fullgraph, dynamic=False)
        self._seen: set[tuple] = set()

    def _signature(self, model: nn.Module, x: Tensor, T: int) -> tuple:
        autocast = (torch.is_autocast_enabled(x.device.type),
                    torch.get_autocast_dtype(x.device.type))
        return (id(model), tuple(x.shape), tuple(x.stride()), x.dtype, x.device, int(T),
                model.training, autocast)

    def __call__(self, model: nn.Module, x: Tensor, T: int):
        """Run the spike pass of ``model`` on ``x`` over ``T`` steps (see :func:`spike_pass`).

        Returns:
            The network output (time-averaged logits ``[B, K]``, no auxiliary logits).
        """
        if self.error is not None:
            return spike_pass(model, x, T)
        key = self._signature(model, x, T)
        first = key not in self._seen  # this call may compile: keep what it would overwrite
        saved = {k: b.clone() for k, b in _buffers(model).items()} if first else None
        try:
            with torch.no_grad(), mode(model, "spike", T):
                if self.compile_mode in _CUDA_GRAPH_MODES and x.device.type == "cuda":
                    # the previous step's recorded tensors are dead: the graph may reuse them
                    torch.compiler.cudagraph_mark_step_begin()
                out = self._compiled(model, x)
        except Exception as err:  # noqa: BLE001  any failure of the compiler falls back
            if saved is None:
                raise
            with torch.no_grad():
                for k, b in _buffers(model).items():
                    b.copy_(saved[k])
            reset_state(model)
            out = spike_pass(model, x, T)  # raises the model's own error, if it is one
            self.error = f"{type(err).__name__}: {' '.join(str(err).split())[:500]}"
            warnings.warn(f"torch.compile(mode={self.compile_mode!r}) of the spike pass "
                          f"failed; the spike pass runs eagerly from now on ({self.error})",
                          UserWarning, stacklevel=2)
            return out
        self._seen.add(key)
        return out


def compile_spike_pass(mode: str) -> Callable[[nn.Module, Tensor, int], object]:
    """The spike pass for a ``RunConfig.compile`` value: :func:`spike_pass` for ``"none"``,
    else a new :class:`CompiledSpikePass` (keep it for the run: it holds the compiled code).

    Args:
        mode: one of :data:`COMPILE_MODES`.

    Returns:
        A callable ``spike(model, x, T)`` with the signature of :func:`spike_pass`.
    """
    if mode == "none":
        return spike_pass
    return CompiledSpikePass(mode)


def rate_input(x: Tensor) -> Tensor:
    """The rate-pass input: ``x`` for a static batch, its time average for ``[T, B, ...]``."""
    return x.mean(0) if x.dim() == 5 else x


def rate_pass(model: nn.Module, x: Tensor, aux: bool = True):
    """Rate-BP pass 2: one differentiable pass on the time-averaged input.

    Explained in chapter 2 (`02_rate_bp`).

    Forward values equal the SNN's time-averaged activations from the preceding
    :func:`spike_pass` on the same batch; gradients through each LIF are its eligibility.

    Args:
        model: the network the spike pass just ran on.
        x: the same batch given to :func:`spike_pass` (``[B, ...]`` or ``[T, B, ...]``).
        aux: also evaluate the auxiliary ANN branches on the rate maps.

    Returns:
        The network output (logits ``[B, K]`` and auxiliary logits).
    """
    with mode(model, "rate", 1):
        return model(rate_input(x), aux=aux)


def bptt_forward(model: nn.Module, x: Tensor, T: int, aux: bool = True):
    """Multi-step forward with the surrogate gradient (BPTT when followed by ``backward``).

    Explained in chapter 2 (`02_rate_bp`).

    Args:
        model: spiking network.
        x: ``[B, C, H, W]`` static or ``[T, B, C, H, W]`` input.
        T: number of timesteps.
        aux: evaluate the auxiliary branches on time-averaged intermediate spikes.

    Returns:
        The network output (time-averaged logits ``[B, K]`` and auxiliary logits).
    """
    with mode(model, "multistep", T):
        return model(x, aux=aux)


@torch.no_grad()
def infer(model: nn.Module, x: Tensor, T: int):
    """Inference: the plain SNN over ``T`` steps, no branches, no graph.

    Args:
        model: spiking network (call ``model.eval()`` first for running BN statistics).
        x: ``[B, C, H, W]`` or ``[T, B, C, H, W]``.
        T: number of timesteps.

    Returns:
        The network output with time-averaged logits ``[B, K]``.
    """
    with mode(model, "multistep", T):
        return model(x, aux=False)
