"""Setting up a run from its config: seeds, optimiser, learning-rate schedule, data sets and
the network (the steps of a torchtune recipe's ``setup``), each a function of the config alone.
"""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from esdlib.data import DatasetInfo, build_datasets
from esdlib.models import SpikingNet, build_model, check_branch_pool
from esdlib.train.config import RunConfig
from esdlib.train.paths import resolve_path


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
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
