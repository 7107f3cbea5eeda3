"""The checkpoint file format, and where a run's checkpoints live.

A checkpoint file is :data:`CHECKPOINT_MAGIC`, a one-line JSON header (SHA-256 and length of
the payload, position of the run) and the ``torch.save`` payload, which holds only tensors and
plain data and is loaded with ``torch.load(weights_only=True)``: a damaged, truncated, empty or
foreign file is a :class:`CheckpointError` naming the file, and a crafted one cannot run code.
:func:`esdlib.train.engine.fit` writes ``last.pt`` (and ``best.pt``, before ``last.pt``) in
each run's folder (:func:`checkpoint_paths`); what the payload holds is described by
:class:`esdlib.train.state.RunState`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from esdlib.io import atomic_open
from esdlib.models import SpikingNet
from esdlib.train.config import RunConfig
from esdlib.train.paths import resolve_path
from esdlib.train.records import make_run_id
from esdlib.train.setup import model_from_config

CHECKPOINT_VERSION = 2
"""Format of checkpoints written now (2: checksummed header + RNG states as tensors; 1: the
format before checksums, still readable)."""


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain Python values (loadable with ``weights_only=True``)."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": str(kind), "key": torch.from_numpy(key.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states of :func:`rng_state` (and those of format-1 checkpoints)."""
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
    """Load a checkpoint written by :func:`esdlib.train.engine.fit` (its ``config`` rebuilds
    the run), safely.

    The payload's SHA-256 is checked against the file's header, and it is unpickled with
    ``torch.load(weights_only=True)``: only tensors and plain data are accepted, so a crafted
    file cannot run code. Checkpoints written before checksums were added (format 1)
    are still loaded with the same safe loader, with a warning that they cannot be verified.

    Raises:
        CheckpointError: missing, empty, truncated, damaged (checksum mismatch), not an esdlib
            checkpoint, or holding anything but tensors and plain data. The message names
            the file.
    """
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


def load_trained_model(checkpoint: str | os.PathLike,
                       device: str | torch.device = "cpu") -> tuple[SpikingNet, RunConfig]:
    """Rebuild the model of a checkpoint written by :func:`esdlib.train.engine.fit`, with its
    trained weights.

    The model is built as the run trained it (:func:`esdlib.train.setup.model_from_config`):
    with the auxiliary branches (and their weights) for a branch method, without them
    otherwise. Inference (:func:`esdlib.infer`, :func:`esdlib.evaluate_batch`,
    :func:`esdlib.train.evaluation.evaluate`) runs the plain SNN and never evaluates the
    branches, so they cost memory but no compute.

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
