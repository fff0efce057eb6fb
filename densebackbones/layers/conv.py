"""Convolutions with a workaround for a wrong CPU bfloat16 kernel.

PyTorch's CPU (oneDNN) bfloat16 convolution computes a wrong weight gradient, non-finite in about one call of ten
and depending on what memory the allocator hands out, when a *strided* convolution with *implicit* zero padding
reads a 1-pixel-wide input (measured with torch 2.14: 3x3/2 and 5x5/2 convolutions on 1x1 maps, under bf16
autocast and in bf16 models; float32 and float16 are right; ``tests/engine/test_numerics.py`` reproduces it). DSOD's and
Pelee's extra prediction scales run exactly such convolutions on their smallest maps (DSOD at 96 px: a 3x3/2 on a
1x1 map), so a bf16 training run stopped with a NaN loss in some runs and not in others. The same convolution with
the zeros padded explicitly is computed right. :class:`PaddedConv2d` does that for every strided, zero-padded
convolution; it is an ``nn.Conv2d`` with the same parameters and state-dict keys, and gives the same values.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PaddedConv2d", "conv2d"]


class PaddedConv2d(nn.Conv2d):
    """``nn.Conv2d`` that pads its input with zeros explicitly (``F.pad``) and convolves without padding.

    Same parameters, state-dict keys and values as ``nn.Conv2d``; used for strided convolutions, where the CPU
    bfloat16 kernel with implicit padding is wrong on 1-pixel inputs (module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("PaddedConv2d takes numeric zero padding (padding_mode='zeros')")
        ph, pw = self.padding
        self.explicit_padding = (pw, pw, ph, ph)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, self.explicit_padding)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv2d(in_chs: int, out_chs: int, kernel_size, stride=1, padding=0, **kwargs) -> nn.Conv2d:
    """``nn.Conv2d``, or :class:`PaddedConv2d` where the convolution is strided and zero-padded."""
    strided = any(s > 1 for s in nn.modules.utils._pair(stride))
    padded = not isinstance(padding, str) and any(p > 0 for p in nn.modules.utils._pair(padding))
    if strided and padded and kwargs.get("padding_mode", "zeros") == "zeros":
        return PaddedConv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, **kwargs)
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, **kwargs)
