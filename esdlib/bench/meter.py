"""Exact autograd memory: bytes saved for the backward pass and tensors held by modules.

:class:`SavedTensorMeter` sees every tensor saved while a step's graph is built
(``torch.autograd.graph.saved_tensors_hooks``) and sums the unique storages still alive when the
backward starts, excluding the model's parameters and buffers.
"""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensor


class _Saved:
    """What autograd stores instead of a saved tensor while a meter is active."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor


def _storage_key(t: Tensor) -> tuple[str, int] | None:
    # None for tensors without memory of their own: meta tensors, and the fake and functional
    # tensors torch.compile leaves alive in a process that compiled something (the guard
    # PyTorch asks for: their data_ptr() is 0 with a warning, or raises)
    if isinstance(t, FakeTensor):
        return None
    try:
        return (str(t.device), t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def storage_bytes(tensors: Iterator[Tensor], exclude: set | frozenset = frozenset()) -> dict:
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        key = _storage_key(t)
        if key is None or key in exclude or key in seen:
            continue
        seen[key] = t.untyped_storage().nbytes()
    return seen


def param_storages(model: nn.Module) -> set[tuple[str, int]]:
    keys = (_storage_key(t) for t in (*model.parameters(), *model.buffers()))
    return {k for k in keys if k is not None}


class SavedTensorMeter:
    """Count the tensors autograd saves for backward (context manager, allocator-independent).

    While active, every saved tensor is wrapped (``saved_tensors_hooks``); the wrapper lives
    exactly as long as autograd keeps the tensor. :meth:`live` sums the unique storages of the
    wrappers still alive, i.e. what the graph holds *now* (call it right before ``backward``).

    Example::

        with SavedTensorMeter() as meter:
            loss = model(x).sum()
            nbytes, nstorages = meter.live(exclude=model)
        loss.backward()
    """

    def __init__(self) -> None:
        self._holders: weakref.WeakSet[_Saved] = weakref.WeakSet()
        self._hooks: contextlib.AbstractContextManager | None = None

    def _pack(self, tensor: Tensor) -> _Saved:
        holder = _Saved(tensor)
        self._holders.add(holder)
        return holder

    @staticmethod
    def _unpack(holder: _Saved) -> Tensor:
        return holder.tensor

    def __enter__(self) -> SavedTensorMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._hooks is not None
        self._hooks.__exit__(*exc)
        self._hooks = None

    def live_storages(self, exclude: nn.Module | None = None) -> dict[tuple[str, int], int]:
        """``{(device, data_ptr): bytes}`` of the saved storages alive now, minus ``exclude``'s
        parameters and buffers."""
        skip = param_storages(exclude) if exclude is not None else set()
        return storage_bytes((h.tensor for h in list(self._holders)), skip)

    def live(self, exclude: nn.Module | None = None) -> tuple[int, int]:
        """Bytes and number of unique storages saved for backward and still alive.

        Args:
            exclude: a model whose parameters and buffers are not counted.

        Returns:
            ``(bytes, storages)``.
        """
        seen = self.live_storages(exclude)
        return sum(seen.values()), len(seen)


def tensors_in(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, Tensor):
                yield v
    elif isinstance(value, dict):
        for v in value.values():
            if isinstance(v, Tensor):
                yield v


_MODULE_INTERNALS = frozenset({"_parameters", "_buffers", "_modules"})


def held_tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    """Tensors the modules of ``model`` reference outside their parameters and buffers.

    Looks at every module attribute (and one level into lists, tuples and dicts). After
    :func:`esdlib.evaluate_batch` or a training step this should be empty: recorded spike maps,
    rates or statistics left behind are memory leaks (a defect of the published code).

    Args:
        model: any module tree.

    Returns:
        ``[(qualified attribute name, tensor), ...]``.
    """
    found = []
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if attr in _MODULE_INTERNALS:
                continue
            for t in tensors_in(value):
                if not isinstance(t, nn.Parameter):
                    found.append((f"{name}.{attr}" if name else attr, t))
    return found


def live_tensor_bytes(device: str | torch.device | None = None) -> int:
    """Bytes of all tensor storages reachable from live Python tensor objects.

    Runs ``gc.collect()``, then sums ``untyped_storage().nbytes()`` over the unique storages of
    the ``torch.Tensor`` objects found by ``gc.get_objects()`` (tensors referenced only from C++,
    e.g. inside an autograd graph, are invisible). Compare before/after a call to find leaks.

    Args:
        device: count only tensors on this device (type or full name); ``None`` = all.

    Returns:
        Bytes.
    """
    gc.collect()
    want = None if device is None else str(device)
    tensors = []
    for obj in gc.get_objects():
        if not issubclass(type(obj), Tensor):  # type(), not isinstance: no proxy attribute access
            continue
        dev = str(obj.device)
        if want is None or dev == want or dev.split(":")[0] == want:
            tensors.append(obj)
    return sum(storage_bytes(iter(tensors)).values())
