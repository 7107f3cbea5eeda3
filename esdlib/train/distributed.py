"""Data-parallel training under ``torchrun``: process group, sharded epoch order, gradient and
BatchNorm averaging, and collectives that fail with a clear error instead of hanging.

In a single process every function here is a no-op (or returns ``(0, 1)``), so the run layer
calls them unconditionally.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Sampler

from esdlib.train.fields import ConfigError


class EpochSampler(Sampler[int]):
    """Deterministic per-epoch permutation, sharded over ranks, resumable at any position.

    The order of epoch ``e`` is ``randperm(n)`` from a generator seeded with ``seed·10007 + e``;
    rank ``r`` of ``world`` takes every ``world``-th index starting at ``r``.

    Args:
        n: data-set size.
        seed: run seed.
        rank: this process's rank.
        world: number of processes.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` from its ``start``-th sample (of this rank's shard)."""
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        """This rank's indices of the current epoch (before ``start`` is applied)."""
        g = torch.Generator().manual_seed(self.seed * 10007 + self.epoch)
        return torch.randperm(self.n, generator=g)[self.rank::self.world].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start:])

    def __len__(self) -> int:
        return len(self.indices()) - self.start


def dist_info() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


DDP_TIMEOUT_S = 600.0
"""How long a rank waits for the others in one collective (seconds; torch's default is 30
minutes). ``ESD_DDP_TIMEOUT_S`` in the environment overrides it (e.g. for very slow steps)."""


class DistributedError(RuntimeError):
    """A collective operation of a DDP run failed or timed out (a rank stopped or died); the
    message says which operation and how long this rank waited."""


def ddp_timeout_s() -> float:
    """The collective timeout of DDP runs: ``ESD_DDP_TIMEOUT_S`` or :data:`DDP_TIMEOUT_S`.

    Raises:
        ConfigError: ``ESD_DDP_TIMEOUT_S`` is not a positive number.
    """
    text = os.environ.get("ESD_DDP_TIMEOUT_S")
    if text is None:
        return DDP_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value < 1e7):
        raise ConfigError(f"ESD_DDP_TIMEOUT_S={text!r} must be a number of seconds > 0")
    return value


def all_reduce(tensor: Tensor, what: str) -> None:
    """Sum ``tensor`` over ranks in place; a failure or timeout becomes a
    :class:`DistributedError` saying ``what`` was being reduced and which rank gave up."""
    try:
        dist.all_reduce(tensor)
    except RuntimeError as err:  # gloo/NCCL timeouts and dead peers (DistBackendError etc.)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DistributedError(
            f"rank {dist.get_rank()}: {what} failed; another rank stopped, died or took longer "
            f"than the {ddp_timeout_s():g} s timeout (ESD_DDP_TIMEOUT_S) ({first[:200]})"
        ) from err


def init_distributed(device: torch.device) -> bool:
    """Initialise ``torch.distributed`` from torchrun's environment (``WORLD_SIZE`` > 1), with
    a collective timeout of :func:`ddp_timeout_s` seconds, so a stopped rank ends the run with
    a :class:`DistributedError` instead of a 30-minute hang.

    Returns:
        True when this call created the process group (the caller destroys it).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=ddp_timeout_s()))
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def allreduce_gradients(model: nn.Module) -> None:
    """Average ``.grad`` over ranks (one flat buffer; a no-op in a single process)."""
    rank, world = dist_info()
    if world == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    all_reduce(flat, "averaging the gradients")
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def sync_batchnorm_stats(model: nn.Module) -> None:
    """Average every BatchNorm's running mean and variance over ranks (a no-op in a single
    process).

    Under DDP each rank's running statistics follow its own shard; only gradients are
    averaged. :func:`esdlib.train.engine.fit` calls this before every evaluation and every
    checkpoint, so all ranks evaluate (and rank 0 saves) one and the same model: the record's
    test metrics are those of the saved checkpoint, and a run resumed after a killed rank
    continues from the statistics an uninterrupted run has at that point. Running statistics
    are used only at inference, so training itself is unchanged.
    """
    _, world = dist_info()
    if world == 1:
        return
    buffers = [b for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
               for b in (m.running_mean, m.running_var) if b is not None]
    if not buffers:
        return
    flat = torch.cat([b.detach().flatten().double() for b in buffers])
    all_reduce(flat, "averaging the BatchNorm statistics")
    flat /= world
    offset = 0
    for b in buffers:
        b.copy_(flat[offset:offset + b.numel()].view_as(b).to(b.dtype))
        offset += b.numel()


def any_rank(flag: bool, what: str) -> bool:
    """Whether ``flag`` is true on any rank (this rank's ``flag`` in a single process).

    Args:
        flag: this rank's verdict.
        what: what the ranks agree on, for the error of a failed collective.
    """
    if dist_info()[1] == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    all_reduce(t, what)
    return float(t) > 0
