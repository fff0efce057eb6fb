"""Input stems of the dense families.

Each stem is returned as a list of ``(name, module)`` pairs that the model adds to its ``features`` sequence, so
the parameter names stay those of torchvision (``features.conv0``, ``features.norm0``) and its checkpoints load
unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn as nn

from .conv import conv2d
from .dense import LayerFn

__all__ = ["Stem", "imagenet_stem", "cifar_stem"]


class Stem(NamedTuple):
    """A stem's named modules, the module whose output is feature level 0, and the strides there and at the end."""

    modules: list[tuple[str, nn.Module]]
    tap: str
    tap_reduction: int
    reduction: int


def imagenet_stem(
    in_chans: int,
    out_chs: int,
    *,
    norm_layer: LayerFn = nn.BatchNorm2d,
    act_layer: LayerFn = nn.ReLU,
) -> Stem:
    """7x7/2 convolution, BN, ReLU, 3x3/2 max-pool: the ImageNet stem of Table 1 (reduction 4).

    The pre-activation layers that follow still begin with BN-ReLU; the stem's own BN-ReLU is the paper's.
    """
    modules = [
        ("conv0", conv2d(in_chans, out_chs, kernel_size=7, stride=2, padding=3, bias=False)),
        ("norm0", norm_layer(out_chs)),
        ("act0", act_layer(inplace=True)),
        ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
    ]
    return Stem(modules, tap="act0", tap_reduction=2, reduction=4)


def cifar_stem(in_chans: int, out_chs: int, **_norm_act_unused) -> Stem:
    """One 3x3 convolution without norm or activation (Sec. 3, "Implementation details"; reduction 1).

    The first dense layer's BN-ReLU normalises its output (pre-activation).
    """
    modules = [("conv0", nn.Conv2d(in_chans, out_chs, kernel_size=3, padding=1, bias=False))]
    return Stem(modules, tap="conv0", tap_reduction=1, reduction=1)
