"""Data sets for esdlib: embedded digits (plain, hard, emulated DVS), CIFAR-10/100, ImageNet, DVS.

Public API: :func:`build_datasets` returns ``(train, test, info)``; :class:`DatasetInfo`
describes the result; :class:`DatasetNotFoundError` says how to obtain a missing data set;
:class:`DataError` names a damaged data file; :data:`DATASET_NAMES` lists the valid names and
:data:`TIME_VARYING_DATASETS` those whose samples are event frames.
Only torch/torchvision/numpy are imported here (scikit-learn is imported when digits are
built).
"""

from ._common import (
    DATASET_NAMES,
    SPLITS,
    TIME_VARYING_DATASETS,
    DataError,
    DatasetInfo,
    DatasetNotFoundError,
)
from .build import DEFAULT_IMAGE_SIZE, FIXED_IMAGE_SIZE, build_datasets

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_IMAGE_SIZE",
    "FIXED_IMAGE_SIZE",
    "SPLITS",
    "TIME_VARYING_DATASETS",
    "DataError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "build_datasets",
]
