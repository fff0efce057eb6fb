"""Dense primitives shared by every family: layers, blocks, transitions, stems, the memory-efficient function."""

from .dense import DenseBlock, DenseLayer, LayerFn, Transition
from .memory_efficient import checkpoint_once
from .stems import Stem, cifar_stem, imagenet_stem

__all__ = [
    "DenseBlock",
    "DenseLayer",
    "LayerFn",
    "Stem",
    "Transition",
    "checkpoint_once",
    "cifar_stem",
    "imagenet_stem",
]
