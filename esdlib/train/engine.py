"""Training engine: ``fit(cfg)`` trains, evaluates, checkpoints and writes one run record.

- SGD with momentum; weight decay only on convolution/linear weights (tensors with ≥ 2 dims);
  optional linear warm-up then cosine annealing, stepped per epoch.
- Each epoch: train with the method's step (:mod:`esdlib.methods`), evaluate the plain SNN at
  the full ``T`` on the test set (accuracy, firing rates, SOP energy), append to the history
  (the epoch's training means ``train_loss``, ``train_acc`` and the loss diagnostics, e.g.
  ``train_acc_out{i}``: outputs numbered branches first, main last, :func:`record_diagnostics`),
  save ``last.pt`` (and ``best.pt``), write the record with ``status="running"``.
- **Headline = final-epoch test accuracy.** The best epoch's accuracy is kept as a secondary
  figure; the official code reports the best epoch chosen on the test set (no validation split).
- **Exact resume**: checkpoints (written atomically every ``cfg.checkpoint_every`` steps and at
  each epoch end) hold the model, optimiser, scheduler, all RNG states, the epoch, the position
  inside the epoch and the running sums of the epoch; data order is a function of
  ``(seed, epoch)``. A run killed mid-epoch and resumed ends with the same metrics as an
  uninterrupted one (CPU, ``num_workers=0``; with workers, augmentation draws differ).
- **Safe, checksummed checkpoints**: a checkpoint file is a one-line header (SHA-256 and length
  of the payload, position of the run) followed by the ``torch.save`` payload, which holds only
  tensors and plain data and is loaded with ``torch.load(weights_only=True)``; a damaged,
  truncated, empty or foreign file is a :class:`CheckpointError` naming the file. Automatic
  resume from a damaged ``last.pt`` stops with that error and the advice to delete the file
  (the run then starts again) — it never silently falls back to other weights.
- **Runs always finish their record**: a finished run with a valid ``complete`` record is
  returned without loading anything; a finished checkpoint whose record is ``running``,
  damaged or missing re-creates the record from the checkpoint (a damaged record is moved aside
  to ``<name>.corrupt-<time>``). ``best.pt`` is written before ``last.pt`` and re-derived on
  resume when it is missing but recoverable.
- **Divergence**: a non-finite loss, a loss above :data:`DIVERGED_LOSS`, or non-finite
  weights after an optimiser step, stops training; the record gets ``status="diverged"`` with
  the epoch and step (no checkpoint of the diverged state is written) and a
  :class:`DivergenceWarning` is issued.
- **Fast path by default**: channels-last model and batches (``cfg.channels_last``), glibc
  keeping freed memory on the CPU (``cfg.keep_freed_memory``), and the training step under
  ``cfg.precision``'s autocast (fp32 by default; bf16/fp16/auto, fp16 with a gradient scaler);
  evaluation runs in float32. What was resolved at run time is stored in the record's
  ``extra.runtime`` (:func:`runtime_settings`), next to the config.
- **Opt-in speed settings**: ``cfg.compile`` runs the two-pass methods' spike pass compiled by
  ``torch.compile`` (:class:`esdlib.passes.CompiledSpikePass`, one per run; a failed
  compilation falls back to the eager pass with one warning, recorded as
  ``extra.runtime.compile_error``); ``cfg.tf32`` allows TF32 in float32 CUDA matmuls and
  convolutions for the run (:func:`esdlib.train.runtime.tf32`, restored afterwards).
- **DDP** under ``torchrun``: each rank trains on its shard of every epoch's permutation,
  gradients are averaged with ``all_reduce`` after each backward, evaluation is sharded and
  reduced; rank 0 writes checkpoints and records.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import resource
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from esdlib.data import DataError, DatasetInfo, build_datasets
from esdlib.io import atomic_open, remove_stale_temps
from esdlib.methods import evaluate_batch, get_method
from esdlib.models import SpikingNet, build_model, check_branch_pool
from esdlib.passes import CompiledSpikePass, compile_spike_pass
from esdlib.train.config import ConfigError, RunConfig, check_runtime
from esdlib.train.metrics import FiringRateMeter, OpCounter
from esdlib.train.paths import resolve_path
from esdlib.train.records import (
    RecordError,
    load_record,
    make_record,
    make_run_id,
    record_path,
    write_record,
)
from esdlib.train.runtime import autocast, tf32

CHECKPOINT_VERSION = 2
"""Format of checkpoints written now (2: checksummed header + RNG states as tensors; 1: the
format before checksums, still readable)."""


# ---------------------------------------------------------------------------------------------
# Set-up helpers
# ---------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA if available, else MPS, else CPU; other names are checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} requested but CUDA is not available")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.SGD:
    """SGD with momentum; weight decay on conv/linear weights only (no BN, bias or decay terms)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def lr_factor(epoch: int, cfg: RunConfig) -> float:
    """Learning-rate multiplier of ``epoch``: linear warm-up, then cosine annealing to 0."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    span = max(cfg.epochs - cfg.warmup_epochs, 1)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))


def make_scheduler(opt: torch.optim.Optimizer, cfg: RunConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch scheduler applying :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, cfg))


def datasets_of(cfg: RunConfig, *, data_root: str | os.PathLike | None = None,
                T: int | None = None, augment: bool | None = None,
                download: bool | None = None) -> tuple[Dataset, Dataset, DatasetInfo]:
    """The train and test sets of a config: the one place a :class:`RunConfig` becomes data
    (training, the gradient study and ``esd evaluate`` all come here, so every one of them
    uses the config's split, seed, training subset and cache folder).

    Args:
        cfg: the run configuration.
        data_root: instead of ``cfg.data_root`` (e.g. ``esd evaluate --data-root``).
        T: instead of ``cfg.T`` (frames of a time-varying data set).
        augment: instead of ``cfg.augment``.
        download: instead of ``cfg.download``.
    """
    return build_datasets(
        cfg.dataset, cfg.data_root if data_root is None else data_root,
        T=cfg.T if T is None else T, image_size=cfg.image_size,
        augment=cfg.augment if augment is None else augment, split=cfg.split,
        download=cfg.download if download is None else download, seed=cfg.seed,
        cache_dir=None if cfg.cache_dir is None else resolve_path(cfg.cache_dir),
        train_subset=cfg.train_subset)


def build_run(cfg: RunConfig) -> tuple[Dataset, Dataset, DatasetInfo, SpikingNet]:
    """Data sets and model of a config (branches only for methods that train them)."""
    train, test, info = datasets_of(cfg)
    if cfg.uses_branches:  # the published pooling window fits only some input sizes
        check_branch_pool(cfg.arch, info.image_size[0], cfg.branch_pool)
    return train, test, info, model_from_config(cfg, info.num_classes, info.in_channels)


def model_from_config(cfg: RunConfig, num_classes: int, in_channels: int) -> SpikingNet:
    """The network of a config (branches only for methods that train them)."""
    return build_model(cfg.arch, num_classes, in_channels, cfg.width,
                       aux=cfg.branch_kind if cfg.uses_branches else None,
                       neuron=cfg.lif_params(), branch_pool=cfg.branch_pool)


def time_first(x: Tensor) -> Tensor:
    """``[B, T, C, H, W]`` (collated frames) → ``[T, B, C, H, W]``; static batches unchanged."""
    return x.transpose(0, 1).contiguous() if x.dim() == 5 else x


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


def _dist_info() -> tuple[int, int]:
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


def _all_reduce(tensor: Tensor, what: str) -> None:
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
    rank, world = _dist_info()
    if world == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    _all_reduce(flat, "averaging the gradients")
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def sync_batchnorm_stats(model: nn.Module) -> None:
    """Average every BatchNorm's running mean and variance over ranks (a no-op in a single
    process).

    Under DDP each rank's running statistics follow its own shard; only gradients are
    averaged. :func:`fit` calls this before every evaluation and every checkpoint, so all
    ranks evaluate (and rank 0 saves) one and the same model: the record's test metrics are
    those of the saved checkpoint, and a run resumed after a killed rank continues from the
    statistics an uninterrupted run has at that point. Running statistics are used only at
    inference, so training itself is unchanged.
    """
    _, world = _dist_info()
    if world == 1:
        return
    buffers = [b for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
               for b in (m.running_mean, m.running_var) if b is not None]
    if not buffers:
        return
    flat = torch.cat([b.detach().flatten().double() for b in buffers])
    _all_reduce(flat, "averaging the BatchNorm statistics")
    flat /= world
    offset = 0
    for b in buffers:
        b.copy_(flat[offset:offset + b.numel()].view_as(b).to(b.dtype))
        offset += b.numel()


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak CUDA memory allocated, or the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) * 1024  # Linux reports KiB


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, T: int, *, batch_size: int = 256,
             device: torch.device | str = "cpu", progress: bool = False,
             channels_last: bool = False, count_ops: bool = True) -> dict[str, Any]:
    """Test accuracy, firing rates and SOP energy of the plain SNN (no branches) at ``T`` steps.

    Under DDP every rank evaluates its shard (``index ≡ rank mod world``) and the sums are
    reduced, so every rank returns the full-test-set figures.

    Args:
        model: trained network (set to ``eval()`` here and left in eval mode).
        dataset: test set yielding ``(x, label)``.
        T: timesteps.
        batch_size: evaluation batch size.
        device: where to run.
        progress: show a progress bar.
        channels_last: feed channels-last inputs.
        count_ops: count MACs and SOPs (:class:`~esdlib.train.metrics.OpCounter`; about a fifth
            of a small network's evaluation time). ``False`` leaves ``"energy"`` empty.

    Returns:
        ``{"test_acc", "test_loss", "firing_rates": {...}, "energy": {...}, "samples"}``.

    Raises:
        DataError: some samples hold NaN or Inf values (the message counts them; under DDP
            every rank raises it).
    """
    device = torch.device(device)
    rank, world = _dist_info()
    model.eval()
    shard = torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False)
    meter = FiringRateMeter()
    correct = torch.zeros(4, dtype=torch.float64)  # correct, count, loss sum, non-finite
    with OpCounter(model) if count_ops else contextlib.nullcontext(OpCounter(None)) as ops:
        for x, y in tqdm(loader, desc="eval", leave=False, disable=not progress):
            correct[3] += int((~torch.isfinite(x)).reshape(len(x), -1).any(1).sum())
            x, y = time_first(x).to(device), y.to(device)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            out = evaluate_batch(model, x, T)
            correct[0] += (out.logits.argmax(1) == y).sum().item()
            correct[1] += y.numel()
            correct[2] += nn.functional.cross_entropy(out.logits.float(), y,
                                                      reduction="sum").item()
            meter.update(out.firing_per_t, out.num_neurons, y.numel())
            ops.add_samples(y.numel())
    energy = ops.summary() if count_ops else {}
    if world > 1:
        names = sorted(meter.sums)
        packed = torch.cat([correct, torch.tensor([ops.macs, ops.acs, ops.samples],
                                                  dtype=torch.float64)]
                           + [meter.sums[n] for n in names])
        _all_reduce(packed, "summing the evaluation")
        correct = packed[:4]
        ops.macs, ops.acs, ops.samples = (float(v) for v in packed[4:7])
        T_len = len(meter.sums[names[0]]) if names else 0
        for i, n in enumerate(names):
            meter.sums[n] = packed[7 + i * T_len: 7 + (i + 1) * T_len]
        meter.samples = int(correct[1])
        energy = ops.summary() if count_ops else {}
    if correct[3] > 0:  # a NaN never crosses a threshold: silently "no spike", a wrong answer
        raise DataError(f"the evaluation data hold {int(correct[3])} of {int(correct[1])} "
                        "samples with non-finite (NaN/Inf) values; their predictions would be "
                        "meaningless (check the data set or its cache)")
    n = max(float(correct[1]), 1.0)
    return {"test_acc": float(correct[0]) / n, "test_loss": float(correct[2]) / n,
            "firing_rates": meter.summary(), "energy": energy, "samples": int(correct[1])}


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain Python values (loadable with ``weights_only=True``)."""
    import random

    import numpy as np

    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": str(kind), "key": torch.from_numpy(key.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    random.setstate(state["python"])
    npst = state["numpy"]
    if isinstance(npst, dict):
        key = np.asarray(npst["key"].cpu().numpy() if isinstance(npst["key"], Tensor)
                         else npst["key"], dtype=np.uint32)
        np.random.set_state((npst["kind"], key, npst["pos"], npst["has_gauss"],
                             npst["cached_gaussian"]))
    else:  # format-1 checkpoints stored NumPy's own tuple
        np.random.set_state(tuple(npst))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, damaged (checksum, truncation), not written by
    esdlib, of another configuration, or holding objects other than tensors and plain data.
    The message names the file and says what to do."""


CHECKPOINT_MAGIC = b"ESDLIB-CHECKPOINT "
"""First bytes of a checkpoint file: this magic, a one-line JSON header, ``\n``, then the
``torch.save`` payload. The header holds the payload's SHA-256 and length (and the position of
the run, so consistency checks need not read the payload)."""

_MAX_HEADER = 4096


def _legacy_safe_globals() -> list[Any]:
    """The NumPy globals a format-1 checkpoint's RNG state needs (a plain ``uint32`` array)."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def save_checkpoint(path: Path, **payload: Any) -> None:
    """Write ``payload`` to ``path`` atomically, with a SHA-256 checksum of the serialised
    payload in the file's header (format :data:`CHECKPOINT_MAGIC`).

    ``payload`` must hold only tensors and plain Python data (it is loaded back with
    ``torch.load(weights_only=True)``). The bytes are serialised in memory first, so a full
    disk raises :class:`esdlib.io.DiskFullError` ("no space left on device while writing
    <path>") and leaves the previous file intact.
    """
    import hashlib
    import io
    import json

    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getbuffer()
    state = payload.get("state") or {}
    header = {"format": CHECKPOINT_VERSION, "sha256": hashlib.sha256(data).hexdigest(),
              "bytes": len(data), "config_hash": payload.get("config_hash"),
              **{k: state.get(k) for k in ("epoch", "step_in_epoch", "global_step",
                                            "best_epoch")}}
    line = CHECKPOINT_MAGIC + json.dumps(header, sort_keys=True).encode("ascii") + b"\n"
    with atomic_open(path, "wb") as f:
        f.write(line)
        f.write(data)


def read_checkpoint_header(path: str | os.PathLike) -> dict[str, Any] | None:
    """The header of a checkpoint file (without reading the payload), or None for a file of
    format 1 (no header). The file's size is checked against the header.

    Raises:
        CheckpointError: missing, empty, truncated, not an esdlib checkpoint.
    """
    import json

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file (expected a last.pt or best.pt)")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(_MAX_HEADER)
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it is damaged")
    if head.startswith(b"PK\x03\x04"):
        return None
    if not head.startswith(CHECKPOINT_MAGIC):
        raise CheckpointError(f"{path} is not an esdlib checkpoint (unknown file format)")
    end = head.find(b"\n")
    try:
        if end < 0:
            raise ValueError("no end of header")
        header = json.loads(head[len(CHECKPOINT_MAGIC):end].decode("ascii"))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        expected = end + 1 + int(header["bytes"])
        str(header["sha256"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint {path} is damaged (unreadable header)") from None
    if size != expected:
        what = "truncated" if size < expected else "extra data"
        raise CheckpointError(f"checkpoint {path} is damaged: {size} bytes on disk, its header "
                              f"says {expected} ({what})")
    header["_offset"] = end + 1
    return header


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`fit` (its ``config`` rebuilds the run), safely.

    The payload's SHA-256 is checked against the file's header, and it is unpickled with
    ``torch.load(weights_only=True)``: only tensors and plain data are accepted, so a crafted
    file cannot run code. Checkpoints written before checksums were added (format 1)
    are still loaded with the same safe loader, with a warning that they cannot be verified.

    Raises:
        CheckpointError: missing, empty, truncated, damaged (checksum mismatch), not an esdlib
            checkpoint, or holding anything but tensors and plain data. The message names
            the file.
    """
    import hashlib
    import io
    import pickle
    path = Path(path)
    header = read_checkpoint_header(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    except MemoryError:
        size = path.stat().st_size
        raise CheckpointError(f"checkpoint {path} ({size:,} bytes) does not fit in this "
                              "process's memory: damaged, or not an esdlib checkpoint") from None
    if header is not None:
        data = memoryview(raw)[header["_offset"]:]
        if hashlib.sha256(data).hexdigest() != header["sha256"]:
            raise CheckpointError(f"checkpoint {path} is damaged: its SHA-256 does not match the "
                                  "checksum written with it")
        safe: list[Any] = []
    else:
        data = memoryview(raw)
        safe = _legacy_safe_globals()
    try:
        with torch.serialization.safe_globals(safe):
            ckpt = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [w.strip() for w in str(err).splitlines()]
        detail = next((w for w in lines if "nsupported" in w), "not plain data")[:200]
        raise CheckpointError(f"refusing to load {path}: it holds objects other than tensors and "
                              f"plain data ({detail}); it was not written by esdlib and may be "
                              "malicious") from None
    except Exception as err:  # noqa: BLE001 - any failure of the reader means a damaged file
        raise CheckpointError(f"checkpoint {path} is damaged and cannot be read "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("version") not in (1, CHECKPOINT_VERSION):
        version = ckpt.get("version") if isinstance(ckpt, dict) else None
        raise CheckpointError(f"{path} is not an esdlib checkpoint (version {version})")
    missing = [k for k in ("config", "config_hash", "model", "state") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a complete esdlib checkpoint "
                              f"(missing {', '.join(missing)})")
    if header is None:
        warnings.warn(f"{path} predates checkpoint checksums (format 1): it was loaded safely "
                      "but cannot be verified", UserWarning, stacklevel=2)
    return ckpt


def checkpoint_paths(cfg: RunConfig) -> dict[str, Path]:
    """``{"dir", "last", "best"}`` paths of a run's checkpoints."""
    d = resolve_path(cfg.checkpoint_dir) / make_run_id(cfg)
    return {"dir": d, "last": d / "last.pt", "best": d / "best.pt"}


# ---------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------


def record_diagnostics(diagnostics: dict[str, float]) -> dict[str, float]:
    """A training step's loss diagnostics under the keys the run record's history uses.

    The losses name the per-output batch accuracies ``acc_branch1``, ``acc_branch2``, … (shallow
    → deep) and ``acc_main`` (:class:`~esdlib.losses.LossOutput`). The records keep the keys
    they have always had: ``acc_out{i}`` numbers the outputs in the losses' order, **branches
    first, main output last** — ``acc_out0 … acc_out{n−1}`` for ``n`` outputs, so with three
    branches ``acc_out3`` is the main output, and for a single-output method (``bptt``,
    ``ratebp``) ``acc_out0`` is the main output. The history stores their epoch means as
    ``train_acc_out{i}``. Other keys pass unchanged, in their order.

    Args:
        diagnostics: ``StepResult.diagnostics`` of one training step.

    Returns:
        A new dict with the record keys.
    """
    n_branches = sum(k.startswith("acc_branch") for k in diagnostics)
    out = {}
    for k, v in diagnostics.items():
        if k.startswith("acc_branch"):
            k = f"acc_out{int(k[len('acc_branch'):]) - 1}"
        elif k == "acc_main":
            k = f"acc_out{n_branches}"
        out[k] = v
    return out


class _Running:
    """Sums of the current training epoch (part of the checkpoint, for exact resume).

    ``diag`` sums the step diagnostics under the record keys (:func:`record_diagnostics`).
    """

    def __init__(self) -> None:
        self.loss = 0.0
        self.correct = 0.0
        self.samples = 0
        self.steps = 0
        self.diag: dict[str, float] = {}

    def add(self, loss: float, correct: float, n: int, diag: dict[str, float]) -> None:
        self.loss += loss * n
        self.correct += correct
        self.samples += n
        self.steps += 1
        for k, v in diag.items():
            self.diag[k] = self.diag.get(k, 0.0) + v * n

    def means(self) -> dict[str, float]:
        n = max(self.samples, 1)
        out = {"train_loss": self.loss / n, "train_acc": self.correct / n}
        out.update({f"train_{k}": v / n for k, v in self.diag.items()})
        return out


class DivergenceWarning(RuntimeWarning):
    """Training stopped: the loss or the weights became non-finite, or the loss exploded."""


DIVERGED_LOSS = 1e4
"""A finite training loss above this counts as divergence: a cross-entropy of 10⁴ nats gives
the true class a probability of e^-10000, far beyond anything a converging run passes through
(an untrained network starts near ``log K`` per output, ~2.3 for 10 classes)."""


REBUILD_TOLERANCE = 0.01
"""Largest difference (accuracy, as a fraction) between a finished checkpoint's recorded final
test accuracy and a re-evaluation of its weights when a record is rebuilt from it: numerics of
another machine move a sample or two, an altered history moves far more."""

STUCK_LOSS_FACTOR = 4.0
"""An epoch whose mean training loss is more than this many times the run's first step's loss
counts as divergence ("stuck"): a run that learns goes below its start (the committed records
never exceed 1.02× their first epoch's mean), while a too-large step can leave the loss
bouncing far above it without ever reaching :data:`DIVERGED_LOSS`."""


def _stuck_reason(epoch_loss: float, first_loss: float | None, world: int) -> str | None:
    """The divergence reason of an epoch whose mean loss is stuck far above the first step's
    (:data:`STUCK_LOSS_FACTOR`), agreed by all ranks; ``None`` otherwise."""
    stuck = (first_loss is not None and math.isfinite(first_loss) and first_loss > 0
             and epoch_loss > STUCK_LOSS_FACTOR * first_loss)
    if world > 1:
        flag = torch.tensor([1.0 if stuck else 0.0])
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        _all_reduce(flag, "checking for divergence")
        if float(flag) > 0 and not stuck:
            return "divergence on another rank"
    if not stuck:
        return None
    return (f"training loss stuck far above its start (epoch mean {epoch_loss:.3g} > "
            f"{STUCK_LOSS_FACTOR:g}× the first step's {first_loss:.3g})")


def _checked_tensors(model: nn.Module) -> list[Tensor]:
    """The parameters and floating-point buffers whose finiteness :func:`_divergence` checks.

    Collected once per run: the optimiser and ``load_state_dict`` update them in place, so
    the list stays valid, and walking the module tree every step costs ~5 % of a small run."""
    return [t.detach() for t in (*model.parameters(), *model.buffers())
            if t.is_floating_point() and t.numel()]


def _params_finite(tensors: list[Tensor]) -> bool:
    """Whether every tensor of ``tensors`` is finite (one device sync)."""
    if not tensors:
        return True
    if hasattr(torch, "_foreach_norm"):
        norms = torch._foreach_norm(tensors, float("inf"))  # max |x|; NaN propagates
        return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _divergence(loss: float, checked: list[Tensor], world: int) -> str | None:
    """Why training must stop (non-finite or exploding loss, or non-finite weights after the
    optimiser step; ``checked`` from :func:`_checked_tensors`), or None. Under DDP the verdict
    is agreed by all ranks."""
    reason = None
    if not math.isfinite(loss):
        reason = f"non-finite training loss ({loss})"
    elif loss > DIVERGED_LOSS:
        reason = f"exploding training loss ({loss:.3g} > {DIVERGED_LOSS:g})"
    elif not _params_finite(checked):
        reason = "non-finite weights after the optimiser step"
    if world > 1:
        flag = torch.tensor([0.0 if reason is None else 1.0])
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        _all_reduce(flag, "checking for divergence")
        if reason is None and float(flag) > 0:
            reason = "divergence on another rank"
    return reason


def _refuse_newer_schema(path: Path) -> None:
    """A record of a newer schema is not damaged: it was written by a newer esdlib, and this
    one must neither replace nor move it."""
    import json

    from esdlib.train.records import SCHEMA_VERSION

    try:
        version = json.loads(path.read_text(encoding="utf-8")).get("schema_version")
    except (OSError, ValueError, AttributeError, RecursionError):
        return
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise RecordError(f"{path}: run record of schema version {version}, written by a newer "
                          f"esdlib (this one reads version {SCHEMA_VERSION}); update esdlib or "
                          "use another out_dir")


def _existing_record(path: Path, cfg: RunConfig, rank: int) -> dict[str, Any] | None:
    """The valid record of this run at ``path``, or None when there is none.

    A damaged record (not JSON, not a valid record) or the record of another configuration is
    moved aside to ``<name>.corrupt-<UTC time>`` (never deleted) with a warning giving every
    reason, so the run can re-create it from its checkpoint (or by training). A record of a
    newer schema version is left alone.

    Raises:
        RecordError: the record was written by a newer esdlib (a newer ``schema_version``).
    """
    if not path.is_file():
        return None
    try:
        record = load_record(path)
        if record.get("config_hash") == cfg.config_hash():
            return record
        problem = f"it belongs to another configuration (config_hash {record.get('config_hash')})"
    except ValueError as err:  # RecordError, UnicodeDecodeError
        problem = " ".join(str(err).split())[:500]  # every reason, on one line
        _refuse_newer_schema(path)
    if rank != 0:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # a concurrent run moved it already
        return None
    warnings.warn(f"damaged run record {path} moved to {aside.name} ({problem}); it is re-created "
                  "from the checkpoint or by training", UserWarning, stacklevel=4)
    return None


def _check_resume_state(saved: Any, fresh: dict[str, Any]) -> None:
    """Check a resumed checkpoint's ``state`` against a fresh run's: the same keys, of the
    same types (an int where a float is expected is fine; ``last_eval`` may be anything).

    Raises:
        KeyError, TypeError: a missing key or a value of the wrong type (named).
    """
    if not isinstance(saved, dict):
        raise TypeError(f"state is a {type(saved).__name__}, not a dict")
    for key, default in fresh.items():
        if default is None:  # free-form (last_eval)
            continue
        if key not in saved:
            raise KeyError(f"state has no {key!r}")
        value = saved[key]
        want = (int, float) if isinstance(default, float) else type(default)
        if isinstance(value, bool) or not isinstance(value, want):
            raise TypeError(f"state[{key!r}] is a {type(value).__name__}, expected "
                            f"{type(default).__name__}")


def _check_finished_best(paths: dict[str, Path], record: dict[str, Any]) -> None:
    """For a finished run whose record is returned as it is: re-derive or warn about a
    missing or damaged ``best.pt`` (e.g. an empty file), as a resumed run would
    (:func:`_ensure_best_checkpoint`). Nothing is checked when neither checkpoint exists."""
    if not paths["last"].is_file():
        return
    try:
        header = read_checkpoint_header(paths["last"]) or {}
    except CheckpointError:
        header = {}
    best_epoch = record.get("metrics", {}).get("best_epoch")
    state = {"best_epoch": best_epoch if isinstance(best_epoch, int) else -1,
             "epoch": header.get("epoch"), "step_in_epoch": header.get("step_in_epoch")}
    _ensure_best_checkpoint(paths, state)


def _ensure_best_checkpoint(paths: dict[str, Path], state: dict[str, Any]) -> None:
    """Make ``best.pt`` hold the best epoch that ``state`` (just resumed) names.

    ``best.pt`` is written before ``last.pt`` at each epoch end, so a kill between the two
    writes redoes the epoch and rewrites both. A ``best.pt`` lost otherwise (older versions
    wrote it second; deleted; damaged) is re-derived when the best epoch is the epoch that
    ``last.pt`` ended: the two files then hold the same state. Otherwise it cannot be rebuilt
    and a warning says so.
    """
    best_epoch = state.get("best_epoch", -1)
    if best_epoch is None or best_epoch < 1:
        return
    try:
        header = read_checkpoint_header(paths["best"])
        if header is None or (header.get("epoch") == best_epoch
                              and header.get("step_in_epoch") == 0):
            return  # format 1 (position unknown) or consistent
        problem = f"holds epoch {header.get('epoch')}, not the best epoch {best_epoch}"
    except CheckpointError as err:
        problem = str(err)
    if state["epoch"] == best_epoch and state["step_in_epoch"] == 0:
        header = read_checkpoint_header(paths["last"])
        if header is not None:
            with atomic_open(paths["best"], "wb") as f:
                f.write(paths["last"].read_bytes())
            warnings.warn(f"{paths['best']} re-derived from {paths['last']} ({problem})",
                          UserWarning, stacklevel=4)
            return
    warnings.warn(f"{paths['best']} cannot be re-derived: {problem}; the weights of the best "
                  f"epoch ({best_epoch}) are not available (the record still reports its "
                  "accuracy from the history)", UserWarning, stacklevel=4)


def runtime_settings(cfg: RunConfig, device: torch.device) -> dict[str, Any]:
    """Resolve and apply the run's speed settings; what it returns goes into the record.

    - ``precision``: ``cfg.precision`` resolved for ``device``
      (:func:`esdlib.train.runtime.resolve_precision`; ``"auto"`` becomes ``"fp32"`` or ``"bf16"``);
    - ``channels_last``: ``cfg.channels_last`` (the model and the batches are converted by
      :func:`fit`);
    - ``keep_freed_memory``: whether glibc now keeps freed memory for reuse — applied here
      (:func:`esdlib.train.runtime.keep_freed_memory`, process-wide and permanent) when
      ``cfg.keep_freed_memory`` is on and the run uses the CPU; ``False`` when off, on other
      devices or where glibc is not the C library;
    - ``compile``: ``cfg.compile`` (the record adds ``compile_error`` when the compiled spike
      pass failed and the run fell back to the eager one);
    - ``tf32``: whether TF32 is in effect for float32 matmuls and convolutions — ``cfg.tf32``
      on CUDA (:func:`fit` applies it for the run), ``False`` elsewhere; a ``tf32=True`` run on
      another device adds ``tf32_note`` saying it had no effect.

    Args:
        cfg: the run's config (already checked by :func:`esdlib.train.config.check_runtime`).
        device: the resolved device.

    Returns:
        ``{"precision", "channels_last", "keep_freed_memory", "compile", "tf32"}`` (and
        ``tf32_note``), stored as the record's ``extra.runtime``.

    Raises:
        ConfigError: the precision cannot run on ``device``.
    """
    from esdlib.train.runtime import keep_freed_memory, resolve_precision

    try:
        precision = resolve_precision(cfg.precision, device)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    kept = bool(cfg.keep_freed_memory and device.type == "cpu" and keep_freed_memory())
    settings = {"precision": precision, "channels_last": cfg.channels_last,
                "keep_freed_memory": kept, "compile": cfg.compile,
                "tf32": bool(cfg.tf32 and device.type == "cuda")}
    if cfg.tf32 and device.type != "cuda":
        settings["tf32_note"] = (f"tf32=true has no effect on {device.type}: TF32 is a mode of "
                                 "CUDA tensor cores; float32 arithmetic was used")
    return settings


def fit(cfg: RunConfig, *, progress: bool = True, resume: bool = True,
        stop_after_steps: int | None = None,
        on_epoch_end: Callable[[SpikingNet, int], None] | None = None,
        extra: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; write checkpoints and the run record.

    Args:
        cfg: the validated run configuration.
        progress: show tqdm progress bars (rank 0 only).
        resume: continue from ``<checkpoint_dir>/<run_id>/last.pt`` when it exists. A finished
            run is not retrained: its ``complete`` (or ``diverged``) record is returned, or
            re-created from a finished ``last.pt`` when it is ``running``, damaged or missing.
            A damaged ``last.pt`` raises :class:`CheckpointError` (delete it to start over).
        stop_after_steps: stop (after saving a checkpoint) once this many optimiser steps have
            run in this call — for tests of resumption and for time-boxed sessions.
        on_epoch_end: ``f(model, epochs_done)`` called before training (0) and after each
            epoch's evaluation, e.g. :class:`esdlib.train.gradients.GradientErrorTracker` (its own
            state is not checkpointed).
        extra: ``f() -> dict`` whose result is stored under the record's ``extra``.

    Returns:
        The run record (a dict following ``esdlib/schema/run_record.schema.json``); its
        ``status`` is ``"running"`` if the run was stopped early and ``"diverged"`` if the loss
        or the weights became non-finite (with a :class:`DivergenceWarning`; the record's
        ``divergence`` says where, its headline metrics are null).

    Raises:
        CheckpointError: ``last.pt`` is damaged, unsafe or of another configuration.
        esdlib.io.DiskFullError: the disk filled while writing a checkpoint or the record.
    """
    wall0 = time.perf_counter()
    check_runtime(cfg)  # device, precision, writable folders: fail before any work
    device = resolve_device(cfg.device)
    runtime = runtime_settings(cfg, device)
    owns_pg = init_distributed(device)
    rank, world = _dist_info()
    try:
        with tf32(cfg.tf32):
            return _fit(cfg, device, rank, world, progress and rank == 0, resume,
                        stop_after_steps, wall0, on_epoch_end, extra, runtime)
    finally:
        if owns_pg:
            dist.destroy_process_group()


def _fit(cfg, device, rank, world, progress, resume, stop_after_steps, wall0, on_epoch_end,
         extra, runtime):
    paths = checkpoint_paths(cfg)
    out_dir = resolve_path(cfg.out_dir)
    rec_path = record_path(out_dir, cfg.experiment, make_run_id(cfg))
    if rank == 0:  # temporary files of writers killed in an earlier run
        for target in (paths["last"], paths["best"], rec_path):
            remove_stale_temps(target)
    existing = _existing_record(rec_path, cfg, rank)
    if resume and existing is not None:
        if existing["status"] == "diverged":
            return existing
        if existing["status"] == "complete" and len(existing["history"]) == cfg.epochs:
            if rank == 0:
                _check_finished_best(paths, existing)
            return existing

    seed_everything(cfg.seed)
    train_set, test_set, info, model = build_run(cfg)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg)
    step_fn = get_method(cfg.method)
    spike_fn = compile_spike_pass(cfg.compile)  # one per run: it holds the compiled code
    lcfg = cfg.loss_config()
    precision = runtime["precision"]
    # fp16 needs loss scaling; the disabled scaler is a pass-through that still checkpoints
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    sampler = EpochSampler(len(train_set), cfg.seed, rank, world)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler,
                        num_workers=cfg.num_workers, generator=torch.Generator(),
                        pin_memory=device.type == "cuda", persistent_workers=False)

    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "history": [],
             "best_acc": -1.0, "best_epoch": -1, "train_s": 0.0, "last_eval": None,
             "first_loss": None}
    running = _Running()
    if resume and paths["last"].is_file():
        try:
            ckpt = load_checkpoint(paths["last"], device)
        except CheckpointError as err:
            raise CheckpointError(f"{err}. Cannot resume this run: delete {paths['last']} to "
                                  "train it from the start (or run with --no-resume / "
                                  "resume=False)") from None
        if ckpt["config_hash"] != cfg.config_hash():
            raise CheckpointError(f"checkpoint {paths['last']} belongs to a different config; "
                                  "delete it or choose another checkpoint_dir")
        try:  # a valid checksum says nothing about the structure of what was saved
            _check_resume_state(ckpt.get("state"), state)
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            running.__dict__.update(ckpt["running"])
            _set_rng_state(ckpt["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            what = " ".join(str(err).split())[:300] or type(err).__name__
            raise CheckpointError(
                f"{paths['last']}: its checksum is valid but its contents do not fit this run "
                f"({type(err).__name__}: {what}); delete it to train the run from the start "
                "(or run with --no-resume / resume=False)") from None
        state = ckpt["state"]
        del ckpt
        if rank == 0:
            _ensure_best_checkpoint(paths, state)

    def checkpoint(kind: str = "last") -> None:
        sync_batchnorm_stats(model)  # every rank calls this: rank 0 saves the common model
        if rank != 0:
            return
        save_checkpoint(paths[kind], version=CHECKPOINT_VERSION, config=cfg.to_dict(),
                        config_hash=cfg.config_hash(), model=model.state_dict(),
                        optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                        scaler=scaler.state_dict(), state=state, running=dict(running.__dict__),
                        rng=_rng_state(), num_classes=info.num_classes,
                        in_channels=info.in_channels, time_varying=info.time_varying)

    def backward(loss: Tensor) -> None:
        scaler.scale(loss).backward()

    def record(status: str) -> dict[str, Any]:
        settings = dict(runtime)
        if isinstance(spike_fn, CompiledSpikePass) and spike_fn.error is not None:
            settings["compile_error"] = spike_fn.error
        more = {"parameter_counts": model.parameter_counts(), "runtime": settings}
        return _record(cfg, state, device, world, wall0, status, info,
                       more | (extra() if extra is not None else {}))

    if on_epoch_end is not None and state["global_step"] == 0:
        on_epoch_end(model, 0)
    steps_this_call = 0
    stopped = False
    checked = _checked_tensors(model)
    steps_per_epoch = math.ceil(len(sampler.indices()) / cfg.batch_size)
    if cfg.max_train_steps is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.max_train_steps)

    while state["epoch"] < cfg.epochs and not stopped:
        epoch = state["epoch"]
        sampler.set_position(epoch, state["step_in_epoch"] * cfg.batch_size)
        model.train()
        t0 = time.perf_counter()
        epoch_s = 0.0  # this epoch's training time in this call (as train_s counts it)
        bar = tqdm(total=steps_per_epoch, initial=state["step_in_epoch"], disable=not progress,
                   desc=f"epoch {epoch + 1}/{cfg.epochs} {cfg.method}", leave=False)
        for x, y in loader:
            if state["step_in_epoch"] >= steps_per_epoch:
                break
            x, y = time_first(x).to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cfg.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            with autocast(precision, device.type):
                res = step_fn(model, x, y, cfg.T, lcfg, rate_grad_scale=cfg.rate_grad_scale,
                              backward=backward, spike_fn=spike_fn)
            loss_value = float(res.loss)
            allreduce_gradients(model)
            scaler.step(opt)
            scaler.update()
            reason = _divergence(loss_value, checked, world)
            if reason is not None:
                state["divergence"] = {"epoch": epoch + 1, "step": state["step_in_epoch"] + 1,
                                       "global_step": state["global_step"] + 1,
                                       "reason": reason}
                break
            if state["global_step"] == 0:
                state["first_loss"] = loss_value  # the reference of _stuck_reason
            correct = (res.logits.argmax(1) == y).sum().item()
            running.add(loss_value, correct, y.numel(), record_diagnostics(res.diagnostics))
            state["step_in_epoch"] += 1
            state["global_step"] += 1
            steps_this_call += 1
            elapsed = epoch_s + time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{running.loss / max(running.samples, 1):.3f}",
                            acc=f"{running.correct / max(running.samples, 1):.3f}",
                            sps=f"{running.samples / max(elapsed, 1e-9):.0f}")
            if (stop_after_steps is not None and steps_this_call >= stop_after_steps
                    and state["step_in_epoch"] < steps_per_epoch):
                stopped = True  # at the epoch's last step: end the epoch as usual (the loader
                break  # may fetch one more batch, which draws augmentation RNG), then stop
            if state["global_step"] % cfg.checkpoint_every == 0:
                segment = time.perf_counter() - t0
                state["train_s"] += segment
                epoch_s += segment
                t0 = time.perf_counter()
                checkpoint()
        bar.close()
        segment = time.perf_counter() - t0
        state["train_s"] += segment
        epoch_s += segment
        if "divergence" in state:
            break
        if stopped and state["step_in_epoch"] < steps_per_epoch:
            checkpoint()
            break
        reason = _stuck_reason(running.means()["train_loss"], state.get("first_loss"), world)
        if reason is not None:
            state["divergence"] = {"epoch": epoch + 1, "step": state["step_in_epoch"],
                                   "global_step": state["global_step"], "reason": reason}
            break
        epoch_time = epoch_s  # the whole epoch, not only the part after its last checkpoint
        sync_batchnorm_stats(model)  # every rank evaluates the model rank 0 then saves
        # Operations (SOPs, energy) are counted for the record's final metrics only: counting
        # them every epoch costs ~4 % of a small run and nothing reads them per epoch.
        ev = evaluate(model, test_set, cfg.T, batch_size=cfg.eval_batch_size, device=device,
                      channels_last=cfg.channels_last, count_ops=epoch + 1 == cfg.epochs)
        entry = {"epoch": epoch + 1, **running.means(), "test_acc": ev["test_acc"],
                 "test_loss": ev["test_loss"], "lr": opt.param_groups[0]["lr"],
                 "epoch_time_s": epoch_time,
                 "throughput_sps": running.samples * world / max(epoch_time, 1e-9),
                 "firing_rate_mean": ev["firing_rates"]["mean"]}
        if ev["energy"]:
            entry.update(sops_per_sample=ev["energy"]["sops_per_sample"],
                         energy_uj_per_sample=ev["energy"]["energy_uj_per_sample"])
        state["history"].append(entry)
        state["last_eval"] = ev
        if on_epoch_end is not None:
            on_epoch_end(model, epoch + 1)
        sched.step()
        state["epoch"] += 1
        state["step_in_epoch"] = 0
        running = _Running()
        is_best = ev["test_acc"] > state["best_acc"]
        if is_best:
            state["best_acc"], state["best_epoch"] = ev["test_acc"], epoch + 1
        if is_best:  # best first: a kill between the two writes redoes this epoch
            checkpoint("best")
        checkpoint()
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: train loss {entry['train_loss']:.4f} "
                       f"acc {entry['train_acc']:.4f} | test acc {ev['test_acc']:.4f} "
                       f"| {epoch_time:.1f}s")
        if rank == 0:
            write_record(record("running"), out_dir)
        if stop_after_steps is not None and steps_this_call >= stop_after_steps:
            stopped = True

    if "divergence" in state:
        final = record("diverged")
        if rank == 0:
            write_record(final, out_dir)
        d = state["divergence"]
        warnings.warn(DivergenceWarning(
            f"training diverged at epoch {d['epoch']}, step {d['step']}: {d['reason']}; "
            f"the record {rec_path} has status 'diverged' (last good checkpoint kept: "
            f"{paths['last']})"), stacklevel=3)
        return final
    status = "complete" if state["epoch"] >= cfg.epochs else "running"
    if status == "complete" and state["last_eval"] is None:  # cannot happen after an epoch end
        sync_batchnorm_stats(model)
        state["last_eval"] = evaluate(model, test_set, cfg.T, batch_size=cfg.eval_batch_size,
                                      device=device, channels_last=cfg.channels_last)
    elif status == "complete" and steps_this_call == 0 and state["history"]:
        # the record is rebuilt from a finished checkpoint: its weights must give its history
        sync_batchnorm_stats(model)
        ev = evaluate(model, test_set, cfg.T, batch_size=cfg.eval_batch_size, device=device,
                      channels_last=cfg.channels_last)
        saved = state["history"][-1].get("test_acc")
        if not isinstance(saved, int | float) or abs(ev["test_acc"] - saved) > REBUILD_TOLERANCE:
            raise CheckpointError(
                f"{paths['last']}: its history says final test accuracy {saved!r}, its weights "
                f"give {ev['test_acc']:.4f}: the checkpoint was altered; delete it to train "
                "the run again")
    final = record(status)
    if rank == 0 and state["history"]:
        write_record(final, out_dir)
    return final


def _record(cfg: RunConfig, state: dict, device: torch.device, world: int, wall0: float,
            status: str, info: DatasetInfo, more: dict[str, Any]) -> dict[str, Any]:
    hist = state["history"]
    diverged = status == "diverged"
    ev = {} if diverged else state["last_eval"] or {}
    metrics: dict[str, Any] = {  # a diverged run has no result (its history is kept)
        "final_test_acc": hist[-1]["test_acc"] if hist and not diverged else None,
        "best_test_acc": state["best_acc"] if hist and not diverged else None,
        "best_epoch": state["best_epoch"] if hist and not diverged else None,
        "epochs_completed": len(hist),
    }
    if hist and not diverged:
        metrics.update({k: v for k, v in hist[-1].items()
                        if k.startswith("train_") and isinstance(v, float)})
        metrics["test_loss"] = hist[-1]["test_loss"]
        metrics.update({k: v for k, v in ev.get("energy", {}).items()})
        metrics["firing_rate_mean"] = ev["firing_rates"]["mean"]
    firing = None
    if ev:
        fr = ev["firing_rates"]
        firing = {"per_timestep": fr["per_timestep"], "per_layer": fr["per_layer"],
                  "definition": fr["definition"]}
    timing = {"wall_s": time.perf_counter() - wall0, "train_s": state["train_s"],
              "peak_memory_bytes": peak_memory_bytes(device)}
    extra = {"world_size": world, "dataset_split": info.split,
             "dataset_description": info.description,
             "headline": "final-epoch test accuracy (best epoch selected on the test set is "
                         "secondary, as in the official code)", **more}
    return make_record(cfg, metrics=metrics, history=hist, timing=timing, firing_rates=firing,
                       status=status, extra=extra, divergence=state.get("divergence"))


def load_trained_model(checkpoint: str | os.PathLike,
                       device: str | torch.device = "cpu") -> tuple[SpikingNet, RunConfig]:
    """Rebuild the model of a checkpoint written by :func:`fit`, with its trained weights.

    The model is built as the run trained it (:func:`model_from_config`): with the auxiliary
    branches (and their weights) for a branch method, without them otherwise. Inference
    (:func:`esdlib.infer`, :func:`esdlib.evaluate_batch`, :func:`evaluate`) runs the plain SNN
    and never evaluates the branches, so they cost memory but no compute.

    Args:
        checkpoint: path to ``last.pt`` or ``best.pt``.
        device: where to load it.

    Returns:
        ``(model in eval mode, config)``.
    """
    ckpt = load_checkpoint(checkpoint, device)
    cfg = RunConfig.from_dict(ckpt["config"])
    model = model_from_config(cfg, ckpt["num_classes"], ckpt["in_channels"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg

