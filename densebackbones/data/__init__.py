"""Data sets in their real on-disk formats and the paper's transforms."""

from .classification import (
    DATASETS,
    ArrayDataset,
    DatasetInfo,
    ImageFolderDataset,
    build_classification_dataset,
    read_idx,
)
from .transforms import (
    AUGMENTATIONS,
    AugmentOptions,
    Lighting,
    TenCropStack,
    build_eval_transform,
    build_train_transform,
)

__all__ = [
    "AUGMENTATIONS",
    "AugmentOptions",
    "DATASETS",
    "ArrayDataset",
    "DatasetInfo",
    "ImageFolderDataset",
    "Lighting",
    "TenCropStack",
    "build_classification_dataset",
    "build_eval_transform",
    "build_train_transform",
    "read_idx",
]
