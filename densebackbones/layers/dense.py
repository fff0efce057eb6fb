"""Dense connectivity primitives shared by every family in the library.

Huang et al., "Densely Connected Convolutional Networks" (CVPR 2017; TPAMI 2019):

* Sec. 3, "Composite function": a layer is BN-ReLU-Conv (pre-activation).
* Sec. 3, "Bottleneck layers": BN-ReLU-Conv(1x1, ``bn_size * k``)-BN-ReLU-Conv(3x3, k), with ``bn_size = 4``.
* Sec. 3, "Compression": a transition maps ``c`` channels to ``floor(theta * c)``.
* Sec. 4.2: dropout 0.2 after every convolution except the first one (the stem) when no augmentation is used;
  the official Torch code places it after both convolutions of a bottleneck layer and after the transition
  convolution.

The same pieces build FC-DenseNet (3x3 layers without bottleneck, max-pool transitions), DSOD (transitions without
pooling) and post-activation families (``preact=False``), so every choice is a constructor argument.
Module names (``norm1``/``conv1``/``norm2``/``conv2``, ``norm``/``conv``) follow torchvision so that its and timm's
checkpoints load without renaming.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from timm.layers import DropPath
from torch import Tensor

from .routes import check_memory_mode
from .shared_buffer import dense_block_forward

__all__ = [
    "DenseLayer",
    "DenseBlock",
    "Transition",
    "LayerFn",
    "drop_path",
    "drop_path_rates",
    "memory_mode_of",
    "set_memory_mode",
]

LayerFn = Callable[..., nn.Module]


def concatenated(features):
    """One map from a layer's input: the map itself, or the channel concatenation of a sequence of maps. Unannotated:
    TorchScript compiles it for a Tensor and, seeing the isinstance test true, skips the other branch."""
    if isinstance(features, Tensor):
        return features
    return torch.cat(features, 1) if len(features) > 1 else features[0]


def _dropout(rate: float) -> nn.Module:
    return nn.Dropout(rate) if rate > 0 else nn.Identity()


def drop_path(rate: float) -> nn.Module:
    """Stochastic depth on a dense layer's new maps (timm's ``DropPath``): in training, each sample's maps are zeroed
    with probability ``rate`` and the kept ones scaled by ``1 / (1 - rate)``; the identity in eval or at rate 0."""
    return DropPath(rate) if rate > 0 else nn.Identity()


def drop_path_rates(drop_path_rate: float, block_config: Sequence[int]) -> list[list[float]]:
    """Per-block lists of the dense layers' drop-path rates: timm's linear rule over the network's depth, from 0 at
    the first dense layer to ``drop_path_rate`` at the last (Huang et al., "Deep Networks with Stochastic Depth",
    ECCV 2016, Sec. 4: the rate grows linearly with depth, so early layers, which later ones depend on, are kept)."""
    total = sum(block_config)
    rates = [drop_path_rate * i / (total - 1) if total > 1 else drop_path_rate for i in range(total)]
    starts = [sum(block_config[:b]) for b in range(len(block_config))]
    return [rates[start : start + n] for start, n in zip(starts, block_config)]


class DenseLayer(nn.Module):
    """One densely connected layer: reads the concatenation of all earlier maps, writes ``growth_rate`` new maps.

    With ``bn_size`` set the layer is the paper's bottleneck ("B") layer:
    BN-ReLU-Conv1x1(``bn_size * growth_rate``)-Dropout-BN-ReLU-Conv3x3(``growth_rate``)-Dropout.
    With ``bn_size=None`` it is the basic layer BN-ReLU-Conv3x3(``growth_rate``)-Dropout.
    ``preact=False`` turns every unit into Conv-BN-ReLU (post-activation, as PeleeNet uses).

    ``forward`` concatenates its inputs; :class:`DenseBlock` in its default memory modes instead calls the entry
    (BN-ReLU, or its shared-statistics equivalent) and :meth:`rest` on a view of one shared feature buffer.

    Args:
        in_chs: channels of the concatenated input.
        growth_rate: new channels this layer produces (k in the paper).
        bn_size: bottleneck width as a multiple of ``growth_rate``; ``None`` for no bottleneck.
        drop_rate: dropout after each convolution of the layer (paper: 0.2 without augmentation, else 0).
        drop_path_rate: stochastic depth on the layer's new maps (:func:`drop_path`; 0: none).
        norm_layer: callable building a norm layer from a channel count.
        act_layer: callable building an activation; called with ``inplace=True``.
        preact: BN-ReLU-Conv order (True, DenseNet) or Conv-BN-ReLU (False).
        kernel_size: kernel of the last convolution (3 in every family here).
        conv_bias: convolutions with bias (FC-DenseNet's have one; DenseNet's do not).
        dilation: dilation of the ``kernel_size`` convolution (padded by ``dilation * (kernel_size // 2)``, so the
            size is kept): a backbone at a reduced output stride dilates its later blocks (layers/dilation.py).

    Shape:
        Input: a tensor (N, in_chs, H, W) or a list of tensors whose channels sum to ``in_chs``.
        Output: (N, growth_rate, H, W).
    """

    def __init__(
        self,
        in_chs: int,
        growth_rate: int,
        *,
        bn_size: int | None = 4,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
        preact: bool = True,
        kernel_size: int = 3,
        conv_bias: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.preact = preact
        first_out = bn_size * growth_rate if bn_size else growth_rate
        first_kernel = 1 if bn_size else kernel_size
        spatial = dict(padding=dilation * (kernel_size // 2), dilation=dilation)
        first_spatial = dict(padding=0) if bn_size else spatial
        self.norm1 = norm_layer(in_chs if preact else first_out)
        self.act1 = act_layer(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, first_out, first_kernel, bias=conv_bias, **first_spatial)
        self.drop1 = _dropout(drop_rate)
        if bn_size:
            self.norm2 = norm_layer(first_out if preact else growth_rate)
            self.act2 = act_layer(inplace=True)
            self.conv2 = nn.Conv2d(first_out, growth_rate, kernel_size, bias=conv_bias, **spatial)
            self.drop2 = _dropout(drop_rate)
        else:
            self.norm2 = self.act2 = self.conv2 = self.drop2 = None
        self.drop_path = drop_path(drop_path_rate)

    def rest(self, z: Tensor) -> Tensor:
        """Everything after the entry BN-ReLU (pre-activation) or the whole layer (post-activation)."""
        if self.preact:
            return self.after_first_conv(self.conv1(z))
        x = self.drop1(self.act1(self.norm1(self.conv1(z))))
        if self.conv2 is not None:
            x = self.drop2(self.act2(self.norm2(self.conv2(x))))
        return self.drop_path(x)

    def after_first_conv(self, h: Tensor) -> Tensor:
        """A pre-activation layer from the output of ``conv1`` to its end."""
        if self.conv2 is None:
            return self.drop_path(self.drop1(h))
        return self.drop_path(self.drop2(self.conv2(self.act2(self.norm2(self.drop1(h))))))

    def last_conv_input(self, z: Tensor) -> Tensor:
        """A pre-activation bottleneck layer from after its entry BN-ReLU up to the input of ``conv2``."""
        return self.act2(self.norm2(self.drop1(self.conv1(z))))

    def output_channels(self) -> int:
        """Maps the layer writes, as its convolutions stand now (a pruning tool may have narrowed them)."""
        return (self.conv2 if self.conv2 is not None else self.conv1).out_channels

    def rest_parameters(self) -> list[nn.Parameter]:
        """Parameters used by :meth:`rest` when the entry is pre-activation (all but the first norm's)."""
        entry = {id(p) for p in self.norm1.parameters()} if self.preact else set()
        return [p for p in self.parameters() if id(p) not in entry]

    # Unannotated on purpose: a Tensor or a sequence of Tensors in Python; TorchScript takes an unannotated argument
    # for a Tensor, which is what a scripted DenseBlock passes.
    def forward(self, features):
        x = concatenated(features)
        return self.rest(self.act1(self.norm1(x))) if self.preact else self.rest(x)


class DenseBlock(nn.Module):
    """``num_layers`` dense layers, each fed with the block input and every earlier layer's output (Sec. 3).

    Args:
        num_layers: number of dense layers.
        in_chs: channels entering the block.
        growth_rate: channels each layer adds.
        concat_input: return the input concatenated with all new maps (DenseNet); False returns only the
            new maps, as the up-path blocks of FC-DenseNet do (Jegou et al. 2017, Sec. 3.2).
        memory_mode: ``'buffer'`` (default: layers write into one shared feature buffer, no concatenations),
            ``'efficient'`` (the same, recomputing each layer's activations in backward: least memory) or
            ``'plain'`` (concatenate per layer, as torchvision does). All three give the same outputs, gradients
            and running statistics and use the same parameters; see :mod:`densebackbones.layers.routes` for the
            route a call takes.
        drop_path_rates: stochastic depth per layer (:func:`drop_path_rates`), passed to layer ``i`` as
            ``drop_path_rate``; None: none.
        layer_cls: the layer type, called as ``layer_cls(in_chs, growth_rate, **layer_kwargs)``: :class:`DenseLayer`,
            or a family's own (PeleeNet's two-way layer). A layer whose ``preact`` is False runs in the shared buffer
            through the generic route (its own modules on a buffer view).
        **layer_kwargs: passed to every layer (:class:`DenseLayer`: bn_size, drop_rate, norm_layer, act_layer, preact).

    Shape:
        Input: (N, in_chs, H, W).
        Output: (N, out_chs, H, W) with ``out_chs = in_chs * concat_input + num_layers * growth_rate``.
    """

    def __init__(
        self,
        num_layers: int,
        in_chs: int,
        growth_rate: int,
        *,
        concat_input: bool = True,
        memory_mode: str = "buffer",
        drop_path_rates: Sequence[float] | None = None,
        layer_cls: Callable[..., nn.Module] | None = None,
        **layer_kwargs,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"a dense block needs at least one layer, got num_layers={num_layers}")
        if drop_path_rates is not None and len(drop_path_rates) != num_layers:
            raise ValueError(f"drop_path_rates gives {len(drop_path_rates)} rates for {num_layers} dense layers")
        self.concat_input = concat_input
        self.memory_mode = check_memory_mode(memory_mode)
        # per block, set for a whole model by set_cpu_channels_last (layers/shared_buffer.py)
        self.cpu_channels_last = True
        self.num_layers = num_layers
        self.growth_rate = growth_rate
        self.out_chs = in_chs * concat_input + num_layers * growth_rate
        layer_cls = layer_cls or DenseLayer
        for i in range(num_layers):
            if drop_path_rates is not None:
                layer_kwargs["drop_path_rate"] = drop_path_rates[i]
            layer = layer_cls(in_chs + i * growth_rate, growth_rate, **layer_kwargs)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # the shared buffer is eager Python: scripted, the block concatenates
            features = [x]
            for layer in self.children():
                features.append(layer(torch.cat(features, 1)))
            return torch.cat(features if self.concat_input else features[1:], 1)
        return self._forward_in_memory_mode(x)

    @torch.jit.unused
    def _forward_in_memory_mode(self, x: Tensor) -> Tensor:
        return dense_block_forward(self, x)

    def extra_repr(self) -> str:
        return f"memory_mode={self.memory_mode!r}"


def set_memory_mode(module: nn.Module, mode: str) -> int:
    """Put every dense block inside ``module`` into ``mode``, and the units outside them that follow it (those
    with a ``follows_memory_mode`` class flag, such as PeleeNet's post-activation units: recomputed in backward in
    the efficient mode); returns how many dense blocks there are (parameters unchanged)."""
    check_memory_mode(mode)
    blocks = [m for m in module.modules() if isinstance(m, DenseBlock)]
    for unit in module.modules():
        if isinstance(unit, DenseBlock) or getattr(unit, "follows_memory_mode", False):
            unit.memory_mode = mode
    return len(blocks)


def memory_mode_of(module: nn.Module) -> str:
    """The memory mode of the dense blocks inside ``module`` (held by the blocks alone; ``'mixed'`` if they differ):
    what a model's ``memory_mode`` property reports."""
    modes = {m.memory_mode for m in module.modules() if isinstance(m, DenseBlock)}
    return modes.pop() if len(modes) == 1 else "mixed"


class Transition(nn.Module):
    """Transition between dense blocks: norm-act-Conv1x1-Dropout-pool (Sec. 3, "Pooling layers").

    Args:
        in_chs: input channels.
        out_chs: output channels; ``floor(compression * in_chs)`` for DenseNet-BC (Sec. 3, "Compression").
        pool: ``'avg'`` (DenseNet, 2x2/2), ``'max'`` (FC-DenseNet transition down, DSOD), or ``'none'``
            (DSOD's transition w/o pooling).
        drop_rate: dropout after the convolution (Sec. 4.2).
        ceil_mode: ceil-mode pooling (DSOD rounds 75 px to 38 px this way).
        norm_layer, act_layer, preact, conv_bias: as in :class:`DenseLayer`.

    Shape:
        Input: (N, in_chs, H, W).
        Output: (N, out_chs, H/2, W/2), or (N, out_chs, H, W) with ``pool='none'``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        pool: str = "avg",
        drop_rate: float = 0.0,
        ceil_mode: bool = False,
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
        preact: bool = True,
        conv_bias: bool = False,
    ) -> None:
        super().__init__()
        self.preact = preact
        self.norm = norm_layer(in_chs if preact else out_chs)
        self.act = act_layer(inplace=True)
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=conv_bias)
        self.drop = _dropout(drop_rate)
        if pool == "avg":
            self.pool = nn.AvgPool2d(2, stride=2, ceil_mode=ceil_mode)
        elif pool == "max":
            self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=ceil_mode)
        elif pool == "none":
            self.pool = nn.Identity()
        else:
            raise ValueError(f"unknown transition pool {pool!r}; use 'avg', 'max' or 'none'")
        self.reduction = 1 if pool == "none" else 2

    def forward(self, x: Tensor) -> Tensor:
        if self.preact:
            x = self.conv(self.act(self.norm(x)))
        else:
            x = self.act(self.norm(self.conv(x)))
        return self.pool(self.drop(x))
