"""DenseNet and DenseNet-BC, every model of the paper.

Huang, Liu, van der Maaten, Weinberger. "Densely Connected Convolutional Networks", CVPR 2017 (arXiv:1608.06993),
and "Convolutional Networks with Dense Connectivity", TPAMI 2019.

* ImageNet models (Table 1): DenseNet-BC with a 7x7/2 stem of 2k channels, four dense blocks, bottleneck
  ``bn_size=4``, compression 0.5; 121/169/201/264 (k=32), 161/232/264 (k=48).
* CIFAR/SVHN models (Table 2, Sec. 3 "Implementation details"): a 3x3 stem, three dense blocks of
  ``(L - 4) / 3`` layers each (halved for BC), 16 stem channels for DenseNet and 2k for DenseNet-BC, a global
  average pool at 8x8, and dropout 0.2 after every convolution but the first for the runs without augmentation.
  Wide-DenseNet-BC (official code, L=40, k=36/48/60) is DenseNet-BC with large k.

Feature taps (``feature_info`` / ``out_indices`` / ``forward_intermediates``), as in timm: level 0 is the stem
output (ImageNet: after its BN-ReLU at stride 2; CIFAR: the 3x3 conv output), levels 1..n-1 are dense block outputs
*before* the transition (un-normalised, as the next layer normalises them itself), and the last level is the final
block after ``norm5``/``act5``. smp taps after the transition's BN-ReLU and mmpretrain after the transition; a head
that wants those normalises the tap itself.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from copy import deepcopy
from typing import Any

import torch.nn as nn
from timm.models import generate_default_cfgs
from torch import Tensor

from ..layers import (
    DenseBlock,
    DilationPlan,
    LayerFn,
    Transition,
    cifar_stem,
    drop_path_rates,
    imagenet_stem,
    resolve_memory_mode,
)
from ..registry import register_model
from . import checks
from .base import DenseBackbone, build_dense_backbone, checkpoint_filter_fn, default_cfg
from .published import with_published

__all__ = ["DenseNet", "cifar_block_config", "checkpoint_filter_fn", "MODEL_ARCHS"]

_STEMS = {"imagenet": imagenet_stem, "cifar": cifar_stem}


def cifar_block_config(depth: int, bottleneck: bool, num_blocks: int = 3) -> tuple[int, ...]:
    """Layers per block of the paper's CIFAR/SVHN networks: ``(L - 4) / 3``, halved with bottlenecks (Sec. 4.2).

    The 4 counts the stem conv, the two transition convs and the classifier.
    """
    layers_per_block, rest = divmod(depth - (num_blocks + 1), num_blocks * (2 if bottleneck else 1))
    if rest or layers_per_block < 1:
        step = num_blocks * (2 if bottleneck else 1)
        raise ValueError(
            f"depth {depth} does not give whole dense blocks: depth - {num_blocks + 1} must be a positive multiple "
            f"of {step} ({'BC' if bottleneck else 'basic'} layers, {num_blocks} blocks); e.g. "
            f"{num_blocks + 1 + step * 6} or {num_blocks + 1 + step * 16}"
        )
    return (layers_per_block,) * num_blocks


class DenseNet(DenseBackbone):
    """Densely connected network with any depth, growth rate, bottleneck, compression and stem.

    Args:
        num_classes: classifier outputs; 0 removes the classifier (``forward`` returns pooled features).
        in_chans: input image channels.
        growth_rate: k, channels each dense layer adds.
        block_config: number of layers in each dense block.
        bn_size: bottleneck width as a multiple of k (paper: 4); ``None`` disables the bottleneck ("B").
        compression: theta, the fraction of channels a transition keeps (paper: 0.5 for "C", 1 otherwise).
        stem_type: ``'imagenet'`` (7x7/2 conv, BN-ReLU, 3x3/2 max-pool) or ``'cifar'`` (one 3x3 conv).
        stem_width: stem output channels; default ``2 * growth_rate``.
        drop_rate: dropout before the classifier (timm's meaning).
        proj_drop_rate: the paper's dropout after every convolution except the first (Sec. 4.2: 0.2 on C10, C100
            and SVHN without augmentation); timm's name.
        drop_path_rate: stochastic depth on each dense layer's new maps, rising linearly over the dense layers from 0
            to this rate (timm's name and rule; :func:`~densebackbones.layers.drop_path_rates`). Not in the paper: 0.
        global_pool: timm pool type for the head (``'avg'``, ``'max'``, ``'avgmax'``, ``''`` for none).
        transition_pool: ``'avg'`` (paper), ``'max'`` or ``'none'``.
        norm_layer: callable building a norm layer from a channel count.
        act_layer: callable building an activation (called with ``inplace=True``).
        memory_efficient: torchvision's flag; True is ``memory_mode='efficient'``.
        memory_mode: how dense blocks hold their features (same results and parameters in every mode):
            ``'buffer'`` (default, fastest: one shared buffer per block, no per-layer concatenation),
            ``'efficient'`` (shared buffer, activations recomputed in backward: least memory) or ``'plain'``
            (per-layer concatenation, as torchvision and timm). See :mod:`densebackbones.layers.shared_buffer`.
        output_stride: 32 (the network as published), 16 or 8: the transitions' pooling past that stride is
            removed and the later blocks' 3x3 convolutions are dilated by the factor removed (DenseASPP; timm's
            ``output_stride``), with the same parameters; ``feature_info`` gives the strides. Models whose total
            stride is at most ``output_stride`` (the 3-block CIFAR layout: 4) are unchanged.
            See :mod:`densebackbones.layers.dilation`.

    Shape:
        Input: (N, in_chans, H, W) with H, W at least the total stride (32 ImageNet, 4 CIFAR; ``output_stride``
        where that is smaller).
        Output: (N, num_classes), or (N, num_features) when ``num_classes=0``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        bn_size: int | None = 4,
        compression: float = 0.5,
        stem_type: str = "imagenet",
        stem_width: int | None = None,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        transition_pool: str = "avg",
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
        memory_efficient: bool = False,
        memory_mode: str | None = None,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        checks.check_head(num_classes, in_chans, drop_rate, global_pool)
        checks.check_int("growth_rate", growth_rate, 1, "the channels each dense layer adds, e.g. 12, 32 or 48")
        checks.check_ints("block_config", block_config, 1, hint="layers per dense block, e.g. (6, 12, 24, 16)")
        if bn_size is not None:
            checks.check_int("bn_size", bn_size, 1, "bottleneck width in multiples of growth_rate (4); None: none")
        hint = "the share of channels a transition keeps: 0.5 for DenseNet-BC, 1 for none"
        checks.check_number("compression", compression, 0.0, 1.0, low_open=True, hint=hint)
        checks.check_choice("stem_type", stem_type, tuple(_STEMS))
        if stem_width is not None:
            checks.check_int("stem_width", stem_width, 1, "None: 2 * growth_rate")
        checks.check_rate("proj_drop_rate", proj_drop_rate)
        checks.check_rate("drop_path_rate", drop_path_rate)
        checks.check_choice("transition_pool", transition_pool, ("avg", "max", "none"))
        checks.check_layers(norm_layer, act_layer, memory_efficient)
        memory_mode = resolve_memory_mode(memory_efficient, memory_mode)
        stem_width = stem_width or 2 * growth_rate
        stem = _STEMS[stem_type](in_chans, stem_width, norm_layer=norm_layer, act_layer=act_layer)
        features = OrderedDict(stem.modules)
        feature_info = [dict(num_chs=stem_width, reduction=stem.tap_reduction, module=f"features.{stem.tap}")]

        layer_kwargs = dict(
            bn_size=bn_size,
            drop_rate=proj_drop_rate,
            norm_layer=norm_layer,
            act_layer=act_layer,
            memory_mode=memory_mode,
        )
        num_features, plan = stem_width, DilationPlan(output_stride, stem.reduction, type(self).__name__)
        path_rates = drop_path_rates(drop_path_rate, block_config)
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(
                num_layers,
                num_features,
                growth_rate,
                dilation=plan.dilation,
                drop_path_rates=path_rates[i],
                **layer_kwargs,
            )
            features[f"denseblock{i + 1}"] = block
            num_features = block.out_chs
            if i == len(block_config) - 1:
                break
            feature_info.append(dict(num_chs=num_features, reduction=plan.stride, module=f"features.denseblock{i + 1}"))
            out_chs = math.floor(num_features * compression)  # Sec. 3, compression: floor(theta * m)
            if out_chs < 1:
                raise ValueError(
                    f"compression={compression} leaves transition{i + 1} no channels (floor({compression} * "
                    f"{num_features})); raise compression to at least {1 / num_features:.3g} or widen the blocks"
                )
            # Past output_stride the pooling is removed (pool="none": an Identity, no parameters either way).
            pooled = transition_pool != "none" and plan.downsample()
            transition = Transition(
                num_features,
                out_chs,
                pool=transition_pool if pooled else "none",
                drop_rate=proj_drop_rate,
                norm_layer=norm_layer,
                act_layer=act_layer,
            )
            features[f"transition{i + 1}"] = transition
            num_features = out_chs
        head = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, global_pool=global_pool)
        self.build_tail(features, feature_info, num_features, plan.stride, norm_layer, act_layer, **head)
        self.output_stride = output_stride

    def describe_checkpoint(self, state_dict: dict[str, Tensor]) -> tuple[str, list[str]]:
        """The DenseNet arguments a checkpoint that does not fit was made with, and the registered names it fits."""
        return _archs_matching_state_dict(state_dict)


# ------------------------------------------------------------------------------------------- checkpoint misfits
def _archs_matching_state_dict(state_dict: dict[str, Tensor]) -> tuple[str, list[str]]:
    """Describe the DenseNet a state_dict came from and list the registered names with that architecture."""
    layers: dict[int, int] = {}
    growth_rate, bottleneck = None, None
    for key, value in state_dict.items():
        match = re.match(r"^features\.denseblock(\d+)\.denselayer(\d+)\.conv1\.weight$", key)
        if match:
            block, layer = int(match.group(1)), int(match.group(2))
            layers[block] = max(layers.get(block, 0), layer)
            conv2 = state_dict.get(key.replace("conv1", "conv2"))
            bottleneck = conv2 is not None
            growth_rate = int((conv2 if bottleneck else value).shape[0])
    if not layers:
        return "no DenseNet layers found", []
    block_config = tuple(layers[b] for b in sorted(layers))
    stem = state_dict.get("features.conv0.weight")
    stem_width = int(stem.shape[0]) if stem is not None else None
    desc = f"growth_rate={growth_rate}, block_config={block_config}, bottleneck={bottleneck}, stem_width={stem_width}"
    matches = [
        name
        for name, arch in MODEL_ARCHS.items()
        if tuple(arch["block_config"]) == block_config
        and arch["growth_rate"] == growth_rate
        and (arch.get("bn_size", 4) is not None) == bottleneck
        and arch.get("stem_width", 2 * growth_rate) == stem_width
    ]
    return desc, matches


# ------------------------------------------------------------------------------------------------------- builders
def _cifar_arch(depth: int, growth_rate: int, bc: bool) -> dict[str, Any]:
    arch = dict(growth_rate=growth_rate, block_config=cifar_block_config(depth, bottleneck=bc), stem_type="cifar")
    if bc:
        return arch  # DenseNet-BC: bottleneck 4k, compression 0.5, stem 2k
    # DenseNet: no bottleneck, no compression, 16 stem channels (Sec. 3, "Implementation details").
    return dict(arch, bn_size=None, compression=1.0, stem_width=16)


# Architecture table (module constant; deep-copied before use). Names carry depth, BC, growth rate and family.
MODEL_ARCHS: dict[str, dict[str, Any]] = {
    # ImageNet, Table 1 (all DenseNet-BC).
    "densenet_bc121_k32": dict(growth_rate=32, block_config=(6, 12, 24, 16)),
    "densenet_bc169_k32": dict(growth_rate=32, block_config=(6, 12, 32, 32)),
    "densenet_bc201_k32": dict(growth_rate=32, block_config=(6, 12, 48, 32)),
    "densenet_bc264_k32": dict(growth_rate=32, block_config=(6, 12, 64, 48)),
    "densenet_bc161_k48": dict(growth_rate=48, block_config=(6, 12, 36, 24)),
    "densenet_bc232_k48": dict(growth_rate=48, block_config=(6, 12, 48, 48)),
    "densenet_bc264_k48": dict(growth_rate=48, block_config=(6, 12, 64, 48)),
    # CIFAR / SVHN, Table 2.
    "densenet40_k12_cifar": _cifar_arch(40, 12, bc=False),
    "densenet100_k12_cifar": _cifar_arch(100, 12, bc=False),
    "densenet100_k24_cifar": _cifar_arch(100, 24, bc=False),
    "densenet_bc100_k12_cifar": _cifar_arch(100, 12, bc=True),
    "densenet_bc250_k24_cifar": _cifar_arch(250, 24, bc=True),
    "densenet_bc190_k40_cifar": _cifar_arch(190, 40, bc=True),
    # Wide-DenseNet-BC of the official code's README: L=40 with large k.
    "wide_densenet_bc40_k36_cifar": _cifar_arch(40, 36, bc=True),
    "wide_densenet_bc40_k48_cifar": _cifar_arch(40, 48, bc=True),
    "wide_densenet_bc40_k60_cifar": _cifar_arch(40, 60, bc=True),
}


def _create_densenet(variant: str, pretrained: bool = False, **kwargs) -> DenseNet:
    model_args = dict(deepcopy(MODEL_ARCHS[variant]), **kwargs)
    levels = len(checks.check_ints("block_config", model_args["block_config"], hint="layers per dense block")) + 1
    return build_dense_backbone(DenseNet, variant, pretrained, levels, **model_args)


def _cifar_cfg(**kwargs) -> dict[str, Any]:
    # CIFAR-10 per-channel statistics; the 32-px family also serves CIFAR-100 and SVHN (set num_classes).
    return default_cfg(
        num_classes=10,
        input_size=(3, 32, 32),
        pool_size=(8, 8),
        crop_pct=1.0,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        **kwargs,
    )


_TV_URL = "https://download.pytorch.org/models/"
default_cfgs = generate_default_cfgs(
    with_published(
        {
            # torchvision's ports of the official Torch weights (ImageNet-1k top-1 74.434 / 75.600 / 76.896 / 77.138).
            "densenet_bc121_k32.tv_in1k": default_cfg(url=_TV_URL + "densenet121-a639ec97.pth", license="bsd-3-clause"),
            "densenet_bc169_k32.tv_in1k": default_cfg(url=_TV_URL + "densenet169-b2777c0a.pth", license="bsd-3-clause"),
            "densenet_bc201_k32.tv_in1k": default_cfg(url=_TV_URL + "densenet201-c1103571.pth", license="bsd-3-clause"),
            "densenet_bc161_k48.tv_in1k": default_cfg(url=_TV_URL + "densenet161-8d451a50.pth", license="bsd-3-clause"),
            "densenet_bc264_k32": default_cfg(),
            "densenet_bc232_k48": default_cfg(),
            "densenet_bc264_k48": default_cfg(),
            **{name: _cifar_cfg() for name in MODEL_ARCHS if name.endswith("_cifar")},
        }
    )
)


# ------------------------------------------------------------------------------------------------ registered models
@register_model(model_cls=DenseNet)
def densenet_bc121_k32(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-121 (DenseNet-BC, k=32, blocks 6-12-24-16), ImageNet, Table 1."""
    return _create_densenet("densenet_bc121_k32", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc169_k32(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-169 (DenseNet-BC, k=32, blocks 6-12-32-32), ImageNet, Table 1."""
    return _create_densenet("densenet_bc169_k32", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc201_k32(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-201 (DenseNet-BC, k=32, blocks 6-12-48-32), ImageNet, Table 1."""
    return _create_densenet("densenet_bc201_k32", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc264_k32(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-264 (DenseNet-BC, k=32, blocks 6-12-64-48), ImageNet, Table 1."""
    return _create_densenet("densenet_bc264_k32", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc161_k48(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-161 (DenseNet-BC, k=48, blocks 6-12-36-24, stem 96), ImageNet, official models."""
    return _create_densenet("densenet_bc161_k48", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc232_k48(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-232 (DenseNet-BC, k=48, blocks 6-12-48-48, stem 96), ImageNet, official models."""
    return _create_densenet("densenet_bc232_k48", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc264_k48(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-264 with k=48 (blocks 6-12-64-48, stem 96), ImageNet, official cosine-schedule model."""
    return _create_densenet("densenet_bc264_k48", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet40_k12_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet (L=40, k=12), CIFAR/SVHN, Table 2."""
    return _create_densenet("densenet40_k12_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet100_k12_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet (L=100, k=12), CIFAR/SVHN, Table 2."""
    return _create_densenet("densenet100_k12_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet100_k24_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet (L=100, k=24), CIFAR/SVHN, Table 2."""
    return _create_densenet("densenet100_k24_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc100_k12_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-BC (L=100, k=12), CIFAR/SVHN, Table 2."""
    return _create_densenet("densenet_bc100_k12_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc250_k24_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-BC (L=250, k=24), CIFAR/SVHN, Table 2."""
    return _create_densenet("densenet_bc250_k24_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc190_k40_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-BC (L=190, k=40), CIFAR/SVHN, Table 2."""
    return _create_densenet("densenet_bc190_k40_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def wide_densenet_bc40_k36_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """Wide-DenseNet-BC (L=40, k=36), CIFAR/SVHN, official code."""
    return _create_densenet("wide_densenet_bc40_k36_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def wide_densenet_bc40_k48_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """Wide-DenseNet-BC (L=40, k=48), CIFAR/SVHN, official code."""
    return _create_densenet("wide_densenet_bc40_k48_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def wide_densenet_bc40_k60_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """Wide-DenseNet-BC (L=40, k=60), CIFAR/SVHN, official code."""
    return _create_densenet("wide_densenet_bc40_k60_cifar", pretrained, **kwargs)
