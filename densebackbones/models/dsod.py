"""DS/64-192-48-1, the dense backbone of DSOD300 (Shen et al., "DSOD: Learning Deeply Supervised Object
Detectors from Scratch", ICCV 2017, Table 1), as a registered classification backbone.

* Stem (Sec. 3.1): 3x3/2 conv 64, 3x3 conv 64, 3x3 conv 128, each conv-BN-ReLU, then 2x2 max-pool (ceil).
* Four dense blocks of 6, 8, 8, 8 bottleneck layers, k=48, bottleneck 4k=192, compression 1 ("-1"), no dropout.
  Transition 1 pools (2x2 max, ceil: 75 -> 38 px at 300); transitions 2 and 3 keep the resolution ("transition
  w/o pooling"); a 2x2 max-pool follows transition 2, whose output is DSOD's first prediction source.
* For classification (pre-training, or any use outside the detector) a final BN-ReLU, global pool and classifier
  follow, as in DenseNet.

Its model contract is :class:`~densebackbones.models.base.DenseBackbone`'s; only the ``features`` sequence is its
own. Feature levels: the stem at stride 2, "First" (transition 2) at 8, block 4 at 16 (before the final norm, as the
detector consumes it) and the final BN-ReLU at 16.

The total stride is 16, so ``output_stride`` 32 and 16 give the published network; at 8 the max-pool after
transition 2 is removed (``pool2`` becomes an Identity) and blocks 3 and 4 are dilated by 2 (layers/dilation.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from copy import deepcopy
from typing import Any

import torch.nn as nn
from timm.models import generate_default_cfgs

from ..layers import DenseBlock, DilationPlan, LayerFn, Transition, conv2d, drop_path_rates, resolve_memory_mode
from ..registry import register_model
from . import checks
from .base import DenseBackbone, build_dense_backbone, default_cfg
from .published import with_published

__all__ = ["DSODNet"]


class DSODNet(DenseBackbone):
    """DSOD's dense backbone (DS/64-192-48-1 by default) with DenseNet's interface.

    Args:
        num_classes, in_chans, drop_rate, global_pool, norm_layer, act_layer, memory_efficient, memory_mode: as
            DenseNet.
        growth_rate: k (48).
        block_config: layers of the four dense blocks (6, 8, 8, 8).
        bn_size: bottleneck width in multiples of k (4: 192 channels).
        stem_chs: widths of the three stem convolutions (64, 64, 128).
        drop_path_rate: stochastic depth on the dense layers, as :class:`DenseNet` (not in the paper: 0).
        output_stride: 32 or 16 (the network as published: its stride is 16) or 8 (the pool after transition 2
            removed, blocks 3 and 4 dilated by 2).
    """

    stem_pattern = r"^features\.(?:conv|norm)[012]\."  # the three stem convolutions (Table 1, "Stem Block")

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        growth_rate: int = 48,
        block_config: Sequence[int] = (6, 8, 8, 8),
        bn_size: int = 4,
        stem_chs: Sequence[int] = (64, 64, 128),
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
        memory_efficient: bool = False,
        memory_mode: str | None = None,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        checks.check_head(num_classes, in_chans, drop_rate, global_pool)
        checks.check_rate("drop_path_rate", drop_path_rate)
        checks.check_int("growth_rate", growth_rate, 1, "DS/64-192-48-1: 48")
        checks.check_ints("block_config", block_config, 1, 4, "DS/64-192-48-1: (6, 8, 8, 8)", what="dense block")
        checks.check_int("bn_size", bn_size, 1, "bottleneck width in multiples of growth_rate (4)")
        checks.check_ints("stem_chs", stem_chs, 1, 3, "widths of the three stem convolutions, (64, 64, 128)", "conv")
        checks.check_layers(norm_layer, act_layer, memory_efficient)
        memory_mode = resolve_memory_mode(memory_efficient, memory_mode)
        features = OrderedDict()
        chs = in_chans
        for i, (out, stride) in enumerate(zip(stem_chs, (2, 1, 1))):
            features[f"conv{i}"] = conv2d(chs, out, 3, stride=stride, padding=1, bias=False)
            features[f"norm{i}"] = norm_layer(out)
            features[f"act{i}"] = act_layer(inplace=True)
            chs = out
        features["pool0"] = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        feature_info: list[dict[str, Any]] = [dict(num_chs=chs, reduction=2, module=f"features.act{len(stem_chs) - 1}")]
        layer = dict(bn_size=bn_size, norm_layer=norm_layer, act_layer=act_layer, memory_mode=memory_mode)
        common = dict(norm_layer=norm_layer, act_layer=act_layer)
        # (pooling of the transition, max-pool after it, feature tap after it)
        plan = [("max", False, False), ("none", True, True), ("none", False, False), (None, False, False)]
        strides = DilationPlan(output_stride, 4, type(self).__name__)
        path_rates = drop_path_rates(drop_path_rate, block_config)
        for i, (num_layers, (pool, pool_after, tap)) in enumerate(zip(block_config, plan)):
            rates = path_rates[i]
            block = DenseBlock(num_layers, chs, growth_rate, dilation=strides.dilation, drop_path_rates=rates, **layer)
            features[f"denseblock{i + 1}"] = block
            chs = block.out_chs
            if pool is None:
                break
            pooled = pool == "max" and strides.downsample()
            features[f"transition{i + 1}"] = Transition(
                chs, chs, pool=pool if pooled else "none", ceil_mode=True, **common
            )
            if tap:
                feature_info.append(dict(num_chs=chs, reduction=strides.stride, module=f"features.transition{i + 1}"))
            if pool_after:  # removed past output_stride (an Identity: the module names stay)
                pooled = strides.downsample()
                features[f"pool{i + 1}"] = nn.MaxPool2d(2, stride=2, ceil_mode=True) if pooled else nn.Identity()
        last = f"features.denseblock{len(block_config)}"
        feature_info.append(dict(num_chs=chs, reduction=strides.stride, module=last))
        head = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, global_pool=global_pool)
        self.build_tail(features, feature_info, chs, strides.stride, norm_layer, act_layer, **head)
        self.output_stride = output_stride


MODEL_ARCHS: dict[str, dict[str, Any]] = {
    "dsod_ds64_192_48_1": dict(growth_rate=48, block_config=(6, 8, 8, 8), bn_size=4, stem_chs=(64, 64, 128)),
    # DSOD300-lite's backbone. The official release names it DS-64-256-64-1 (stem 64, bottleneck 256, k=64,
    # compression 1) and gives 10.4M parameters for the detector; the layers per block are not published with it.
    # (3, 4, 4, 4) is our reconstruction: the layout that gives 10.39M trainable parameters with DSOD300's head.
    "dsod_ds64_256_64_1": dict(growth_rate=64, block_config=(3, 4, 4, 4), bn_size=4, stem_chs=(64, 64, 128)),
}


def _create_dsodnet(variant: str, pretrained: bool = False, **kwargs) -> DSODNet:
    model_args = dict(deepcopy(MODEL_ARCHS[variant]), **kwargs)
    return build_dense_backbone(DSODNet, variant, pretrained, 4, **model_args)


default_cfgs = generate_default_cfgs(
    with_published({name: default_cfg(paper_ids="arXiv:1708.01241", pool_size=(14, 14)) for name in MODEL_ARCHS})
)


@register_model(model_cls=DSODNet)
def dsod_ds64_192_48_1(pretrained: bool = False, **kwargs) -> DSODNet:
    """DS/64-192-48-1, DSOD300's backbone (Table 1), with a classification head."""
    return _create_dsodnet("dsod_ds64_192_48_1", pretrained, **kwargs)


@register_model(model_cls=DSODNet)
def dsod_ds64_256_64_1(pretrained: bool = False, **kwargs) -> DSODNet:
    """DS/64-256-64-1, DSOD300-lite's backbone (layers per block reconstructed, see MODEL_ARCHS)."""
    return _create_dsodnet("dsod_ds64_256_64_1", pretrained, **kwargs)
