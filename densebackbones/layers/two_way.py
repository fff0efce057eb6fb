"""PeleeNet's layers (Wang et al., "Pelee: A Real-Time Object Detection System on Mobile Devices", NeurIPS 2018,
Sec. 3.1), next to the dense ones: they differ where PeleeNet differs.

* Post-activation units, conv (no bias)-BN-ReLU (:class:`ConvNormAct`), instead of DenseNet's BN-ReLU-conv.
* Two-way dense layer (:class:`TwoWayDenseLayer`): two branches of k/2 maps each, one with a 3x3 convolution and one
  with two stacked 3x3 convolutions (a larger receptive field), each after its own 1x1 bottleneck.
* Stem block (:class:`StemBlock`): 3x3/2 conv, then a 1x1-3x3/2 branch beside a 2x2/2 max-pool, concatenated and
  fused by a 1x1 conv (224 -> 56 px at little cost).

Module names follow the official PyTorch code (``branch1a``... ``stem1``..., ``conv``/``norm``), so that its
checkpoint loads without renaming. The two-way layer is a layer of :class:`~densebackbones.layers.DenseBlock`
(``layer_cls``), so PeleeNet's dense blocks have every memory mode.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .conv import conv2d
from .dense import LayerFn, concatenated, drop_path
from .routes import unit_recomputes
from .shared_buffer import recompute_in_backward

__all__ = ["ConvNormAct", "StemBlock", "TwoWayDenseLayer", "two_way_bottleneck"]


class ConvNormAct(nn.Module):
    """Conv (no bias)-BN-ReLU, the official ``BasicConv2d``; ``act=False`` leaves out the ReLU.

    It follows the memory mode (``set_memory_mode``): in the efficient mode a training step keeps only the unit's
    input and recomputes the unit in backward, with BN's running statistics updated once. A post-activation unit
    otherwise keeps two maps of its output's size (BN's input and ReLU's output); outside a dense block's buffer
    (PeleeNet's transitions, the Pelee head) that is most of what the efficient mode would still hold."""

    follows_memory_mode = True

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        *,
        act: bool = True,
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv = conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.norm = norm_layer(out_chs)
        self.act = act_layer(inplace=True) if act else nn.Identity()
        self.memory_mode = "buffer"

    def run(self, x: Tensor) -> Tensor:
        """The unit itself, never recomputed (what a recomputed enclosing unit calls)."""
        return self.act(self.norm(self.conv(x)))

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # recomputation is eager Python: scripted, the unit runs plainly
            return self.run(x)
        return self._forward_in_memory_mode(x)

    @torch.jit.unused
    def _forward_in_memory_mode(self, x: Tensor) -> Tensor:
        return recompute_in_backward(self, self.run, x) if unit_recomputes(self, (x,)) else self.run(x)


def two_way_bottleneck(in_chs: int, growth_rate: int, bottleneck_width: int) -> int:
    """Channels of a two-way layer's 1x1 bottlenecks: ``int(k/2 * width / 4) * 4``, capped as the official PyTorch
    code caps it (``int(in_chs / 8) * 4`` when larger than half the input)."""
    inter = int(growth_rate // 2 * bottleneck_width / 4) * 4
    return int(in_chs / 8) * 4 if inter > in_chs / 2 else inter


class TwoWayDenseLayer(nn.Module):
    """PeleeNet's dense layer: ``cat[branch1, branch2]`` with ``k/2`` maps each (the block concatenates them to its
    input). Branch 1: 1x1 (bottleneck)-3x3; branch 2: 1x1 (bottleneck)-3x3-3x3. Post-activation units.

    Args:
        in_chs: channels of the concatenated input.
        growth_rate: k, new maps of the layer (both branches together).
        bottleneck_width: w of the stage (1, 2, 4, 4), see :func:`two_way_bottleneck`.
        drop_rate: dropout after the layer (the official code accepts it and does not use it: 0).
        drop_path_rate: stochastic depth on the layer's new maps (:func:`~densebackbones.layers.dense.drop_path`).
        dilation: dilation of the three 3x3 convolutions (padding too, so the size is kept), for a reduced output
            stride (layers/dilation.py).

    Shape:
        Input: a tensor (N, in_chs, H, W) or a list of tensors whose channels sum to ``in_chs``.
        Output: (N, growth_rate, H, W).
    """

    preact = False  # post-activation: the shared buffer runs the layer's own modules (generic route)

    def __init__(
        self,
        in_chs: int,
        growth_rate: int,
        *,
        bottleneck_width: int = 4,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        if growth_rate % 2:
            raise ValueError(f"a two-way layer splits its growth rate over two branches; got an odd {growth_rate}")
        half, inter = growth_rate // 2, two_way_bottleneck(in_chs, growth_rate, bottleneck_width)
        if inter < 1:
            raise ValueError(
                f"a bottleneck of {inter} channels (growth_rate {growth_rate}, bottleneck_width {bottleneck_width}, "
                f"{in_chs} input channels): raise the growth rate or the width so that k/2 * w >= 4"
            )
        unit = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.branch1a = ConvNormAct(in_chs, inter, 1, **unit)
        dilated = dict(padding=dilation, dilation=dilation, **unit)
        self.branch1b = ConvNormAct(inter, half, 3, **dilated)
        self.branch2a = ConvNormAct(in_chs, inter, 1, **unit)
        self.branch2b = ConvNormAct(inter, half, 3, **dilated)
        self.branch2c = ConvNormAct(half, half, 3, **dilated)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.drop_path = drop_path(drop_path_rate)

    def output_channels(self) -> int:
        """Maps the layer writes, as its convolutions stand now (a pruning tool may have narrowed them)."""
        return self.branch1b.conv.out_channels + self.branch2c.conv.out_channels

    def forward(self, features):  # a Tensor or a sequence of Tensors; unannotated as DenseLayer.forward
        x = concatenated(features)
        branch1 = self.branch1b(self.branch1a(x))
        branch2 = self.branch2c(self.branch2b(self.branch2a(x)))
        return self.drop_path(self.drop(torch.cat([branch1, branch2], 1)))


class StemBlock(nn.Module):
    """PeleeNet's stem (Sec. 3.1, Fig. 2): stride 4 in total, ``out_chs`` maps (32).

    In the efficient memory mode the whole stem is recomputed in backward from its input (its maps at 1/2 and
    1/4 of the input size are what an ImageNet PeleeNet would otherwise keep most of outside its dense blocks).

    Shape:
        Input: (N, in_chs, H, W). Output: (N, out_chs, ceil(ceil(H / 2) / 2), ...). The max-pool rounds up, as
        Caffe's pooling (the official PyTorch code rounds down, which is the same for the even maps of 224 and 304 px
        inputs and makes the two branches disagree by a pixel on odd ones).
    """

    follows_memory_mode = True
    inner_tap = "stem1"  # a feature level inside the block (models/base.py, forward_intermediates)

    def __init__(
        self, in_chs: int, out_chs: int = 32, norm_layer: LayerFn = nn.BatchNorm2d, act_layer: LayerFn = nn.ReLU
    ) -> None:
        super().__init__()
        unit = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.stem1 = ConvNormAct(in_chs, out_chs, 3, stride=2, padding=1, **unit)
        self.stem2a = ConvNormAct(out_chs, out_chs // 2, 1, **unit)
        self.stem2b = ConvNormAct(out_chs // 2, out_chs, 3, stride=2, padding=1, **unit)
        self.stem3 = ConvNormAct(2 * out_chs, out_chs, 1, **unit)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)  # same size as stem2b's on odd maps
        self.memory_mode = "buffer"
        self.only_inner_tap = False

    def prune_to_inner_tap(self) -> None:
        """Keep only ``stem1``, whose map the block then returns (timm's ``prune_intermediate_layers`` down to
        PeleeNet's level 0: no parameter is left without a gradient, which DDP would refuse)."""
        self.pool = self.stem2a = self.stem2b = self.stem3 = nn.Identity()
        self.only_inner_tap = True

    def run(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The stem's output and its stride-2 map (``stem1``'s output)."""
        # The units are called as modules (their hooks fire); inside a recomputed stem they run plainly
        # (routes.recomputing).
        half = self.stem1(x)
        if self.only_inner_tap:
            return half, half
        return self.stem3(torch.cat([self.pool(half), self.stem2b(self.stem2a(half))], 1)), half

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_inner_tap(x)[0]

    def forward_with_inner_tap(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The stem's output and, second, its map at stride 2 (``stem1``'s output, named by :attr:`inner_tap`):
        PeleeNet's first feature level, which smp's encoders and FPNs need."""
        if torch.jit.is_scripting():  # recomputation is eager Python: scripted, the unit runs plainly
            return self.run(x)
        return self._forward_in_memory_mode(x)

    @torch.jit.unused
    def _forward_in_memory_mode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return recompute_in_backward(self, self.run, x) if unit_recomputes(self, (x,)) else self.run(x)
