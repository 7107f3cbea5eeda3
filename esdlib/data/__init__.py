"""Data sets for esdlib: embedded digits (+ emulated DVS), CIFAR-10/100, ImageNet, CIFAR10-DVS.

Public API: :func:`build_datasets` returns ``(train, test, info)``; :class:`DatasetInfo`
describes the result; :class:`DatasetNotFoundError` says how to obtain a missing data set;
:class:`DataError` names a damaged data file; :data:`DATASET_NAMES` lists the valid names.
Only torch/torchvision/numpy are imported here (scikit-learn is imported when digits are
built).
"""

from ._common import DATASET_NAMES, SPLITS, DataError, DatasetInfo, DatasetNotFoundError
from .build import DEFAULT_IMAGE_SIZE, build_datasets

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_IMAGE_SIZE",
    "SPLITS",
    "DataError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "build_datasets",
]
