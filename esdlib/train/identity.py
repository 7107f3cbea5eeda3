"""Run identity: is this the same run? The config hash and the run id, in one place.

A run's id is a deterministic function of its experiment and its config hash
(:func:`make_run_id`): re-running the same configuration maps to the same record file, so
drivers skip finished runs. The hash (:func:`config_hash`) covers every field that can change
what is computed, in a form that keeps the ids of every committed record valid:

- :data:`HASH_EXCLUDED_FIELDS` are left out (where files live, how work is scheduled);
- :data:`HASHED_WHEN_NOT_DEFAULT` are hashed only when set (fields added later);
- :data:`HASH_LEGACY_VALUES` are keys earlier versions hashed, emitted unchanged;
- ``precision`` is hashed as the former ``amp`` flag (plus itself for ``bf16``/``auto``);
- a changed digits split and a CIFAR10-DVS file list add their digests.

The functions take a :class:`~esdlib.train.config.RunConfig`; this module does not import it
at load time (``config`` imports this one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from esdlib.train.config import RunConfig

__all__ = ["HASHED_WHEN_NOT_DEFAULT", "HASH_EXCLUDED_FIELDS", "HASH_LEGACY_VALUES",
           "canonical_json", "config_hash", "hash_dict", "make_run_id"]

HASHED_WHEN_NOT_DEFAULT = frozenset({"branch_pool", "train_subset", "compile", "tf32"})
"""Fields added after the first records were written: :meth:`RunConfig.config_hash` covers them
only when they differ from their default, so the run ids of earlier records stay valid."""

HASH_EXCLUDED_FIELDS = frozenset(
    {"out_dir", "checkpoint_dir", "num_workers", "device", "data_root", "download",
     "checkpoint_every", "cache_dir", "channels_last", "keep_freed_memory", "precision"}
)
"""Fields left out of :meth:`RunConfig.config_hash` as they are: they say where files live or
how the work is scheduled (memory layout, allocator, like the device), not what is computed.
``precision`` does change what is computed; it enters the hash through its legacy form (see
:meth:`RunConfig.hash_dict`)."""

HASH_LEGACY_VALUES: dict[str, Any] = {"channels_last": False}
"""Keys earlier versions hashed that no longer say anything about the result, with the value
every committed record hashed: :meth:`RunConfig.hash_dict` emits them unchanged so the run ids
of those records stay valid (``channels_last`` became a scheduling choice, default on)."""

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def canonical_json(obj: Any) -> str:
    """Deterministic compact JSON (sorted keys, ASCII, no NaN) used for hashing."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def hash_dict(cfg: RunConfig) -> dict[str, Any]:
    """The fields :func:`config_hash` hashes: ``cfg.to_dict()`` minus the excluded ones.

    Fields of :data:`HASHED_WHEN_NOT_DEFAULT` are left out at their default; the keys of
    :data:`HASH_LEGACY_VALUES` are emitted with their legacy values. ``precision`` is
    hashed in the form that keeps earlier run ids: ``amp`` (``true`` for ``fp16``, as the
    former flag) and, for ``bf16`` and ``auto`` only, ``precision`` itself — an fp32 or
    fp16 config has the run id it had when the field was the ``amp`` flag. ``auto`` is
    hashed as ``auto`` (the config, not the machine; the record says what it resolved
    to). When the run reads a split index file whose content is not the committed split
    (``esdlib.data.digits.changed_split_digest``), its digest is added as
    ``split_sha256``: a changed split gives other run ids, the committed one keeps them.
    A ``cifar10_dvs`` run adds the digest of its release's file list
    (:func:`esdlib.data.cifar10_dvs.file_list_digest`) as ``files_sha256``: a run on a
    folder with files missing or added is another run.
    """
    from esdlib.data.digits import changed_split_digest

    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    d = {k: v for k, v in cfg.to_dict().items()
         if k not in HASH_EXCLUDED_FIELDS
         and not (k in HASHED_WHEN_NOT_DEFAULT and v == defaults[k])}
    d.update(HASH_LEGACY_VALUES)
    d["amp"] = cfg.precision == "fp16"
    if cfg.precision not in ("fp32", "fp16"):
        d["precision"] = cfg.precision
    digest = changed_split_digest(cfg.dataset, cfg.seed)
    if digest is not None:
        d["split_sha256"] = digest
    if cfg.dataset == "cifar10_dvs":  # the run is tied to the files it trains on
        from esdlib.data._common import default_root
        from esdlib.data.cifar10_dvs import file_list_digest

        root = cfg.data_root if cfg.data_root is not None else default_root(cfg.dataset)
        files = file_list_digest(root)
        if files is not None:
            d["files_sha256"] = files
    return d


def config_hash(cfg: RunConfig) -> str:
    """SHA-256 (64 hex digits) of the fields that can change a run's results.

    The hash covers :func:`hash_dict`, serialised by :func:`canonical_json`. It is stable
    across processes and machines; adding a field to ``RunConfig`` changes every hash (old
    records are then not re-used), unless the field is listed in
    :data:`HASHED_WHEN_NOT_DEFAULT`.
    """
    return hashlib.sha256(canonical_json(hash_dict(cfg)).encode("ascii")).hexdigest()


def make_run_id(cfg: RunConfig | Mapping[str, Any], experiment: str | None = None) -> str:
    """Deterministic run id: ``<experiment>-<dataset>-<method>-<arch>-T<T>-s<seed>-<hash12>``.

    The same configuration always gives the same id (so finished runs can be
    skipped); configurations with different :meth:`RunConfig.config_hash` get
    different ids (the 12-hex-digit hash prefix differs except with probability
    ~2**-48). Characters other than letters, digits, ``_ . -`` become ``_``.

    Args:
        cfg: A :class:`RunConfig` or its :meth:`~RunConfig.to_dict` (missing keys
            take the field defaults).
        experiment: Experiment name; defaults to ``cfg.experiment``.
    """
    from esdlib.train.config import RunConfig

    if not isinstance(cfg, RunConfig):
        cfg = RunConfig.from_dict(cfg)
    experiment = cfg.experiment if experiment is None else experiment
    raw = (f"{experiment}-{cfg.dataset}-{cfg.method}-{cfg.arch}-T{cfg.T}-s{cfg.seed}-"
           f"{cfg.config_hash()[:12]}")
    return _UNSAFE_CHARS.sub("_", raw).lstrip("_.-") or "run"
