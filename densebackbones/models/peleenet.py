"""PeleeNet (Wang, Li, Ling, "Pelee: A Real-Time Object Detection System on Mobile Devices", NeurIPS 2018, Sec. 3.1
and Table 1), exact to the official PyTorch code (Robert-JunWang/PeleeNet, ``peleenet.py``).

* Stem block (224 -> 56 px, 32 maps), :class:`~densebackbones.layers.StemBlock`.
* Four stages of two-way dense layers (:class:`~densebackbones.layers.TwoWayDenseLayer`, k=32: two branches of 16
  maps) with 3-4-8-6 layers and bottleneck widths 1-2-4-4; each stage ends in a 1x1 conv-BN-ReLU transition that keeps
  its width (128, 256, 512, 704), followed by a 2x2 average pool after stages 1-3 only (no compression).
* Post-activation units throughout; global average pool, dropout 0.05, linear classifier. 2,802,248 parameters with
  1000 classes (docs/reference.md).

Feature levels (timm's ``feature_info``): the stem block's first unit (``stemblock.stem1``, stride 2) and each stage's
transition output before its pool (strides 4, 8, 16, 32), one level per stride as smp's encoders and FPNs take them
(the stem block's own output, also at stride 4, is not a level: stage 1's output is the deeper map there). The Pelee
detector's sources are levels 3 (stride 16) and 4 (stride 32).
``transition_ceil=True`` rounds the average pools up, as Caffe does and the Pelee detector needs (19 -> 10 px at 304).
``output_stride`` 16 or 8 removes the average pools past that stride (``transitionN_pool`` becomes an Identity) and
dilates the 3x3 convolutions of the later stages (layers/dilation.py); the stem block keeps its stride 4.

Module names are the official code's (``features.stemblock.stem1.conv``, ``features.denseblock1.denselayer1
.branch1a.norm``, ``features.transition1``, ``classifier``), so its checkpoint ``peleenet_acc7208.pth.tar`` loads once
DataParallel's ``module.`` prefix is stripped (timm's reader does that).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from copy import deepcopy
from typing import Any

import torch.nn as nn
from timm.models import generate_default_cfgs

from ..layers import (
    ConvNormAct,
    DenseBlock,
    DilationPlan,
    LayerFn,
    StemBlock,
    TwoWayDenseLayer,
    drop_path_rates,
    resolve_memory_mode,
    set_memory_mode,
)
from ..registry import register_model
from . import checks
from .base import DenseBackbone, build_dense_backbone, default_cfg
from .published import with_published

__all__ = ["PeleeNet"]


class PeleeNet(DenseBackbone):
    """PeleeNet with DenseNet's interface (timm contract, memory modes, feature levels).

    Args:
        num_classes: classifier outputs; 0 removes the classifier.
        in_chans: input channels.
        growth_rate: k of every stage (32), or one per stage.
        block_config: two-way layers per stage (3, 4, 8, 6).
        bottleneck_width: w per stage (1, 2, 4, 4), see :func:`~densebackbones.layers.two_way_bottleneck`.
        stem_width: stem maps (32).
        drop_rate: dropout before the classifier (0.05).
        drop_path_rate: stochastic depth on the two-way layers, as :class:`DenseNet` (not in the paper: 0).
        transition_ceil: round the transition pools up (the Pelee detector: 19 -> 10 px).
        output_stride: 32 (as published), 16 or 8: the transition pools past that stride removed, the later
            stages' 3x3 convolutions dilated (2 and 4 at 8).
        global_pool, norm_layer, act_layer, memory_efficient, memory_mode: as :class:`DenseNet`.

    Shape:
        Input: (N, in_chans, H, W) with H, W >= 32. Output: (N, num_classes).
    """

    stem_pattern = r"^features\.stemblock"

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        growth_rate: int | Sequence[int] = 32,
        block_config: Sequence[int] = (3, 4, 8, 6),
        bottleneck_width: int | Sequence[int] = (1, 2, 4, 4),
        stem_width: int = 32,
        drop_rate: float = 0.05,
        drop_path_rate: float = 0.0,
        transition_ceil: bool = False,
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
        stages = len(checks.check_ints("block_config", block_config, 1, hint="two-way layers per stage, (3, 4, 8, 6)"))
        checks.check_per_stage("growth_rate", growth_rate, stages)
        checks.check_per_stage("bottleneck_width", bottleneck_width, stages)
        checks.check_int("stem_width", stem_width, 1, "PeleeNet: 32")
        checks.check_flag("transition_ceil", transition_ceil)
        checks.check_layers(norm_layer, act_layer, memory_efficient)
        growth_rates = [growth_rate] * stages if isinstance(growth_rate, int) else list(growth_rate)
        widths = [bottleneck_width] * stages if isinstance(bottleneck_width, int) else list(bottleneck_width)
        if not stages or len(growth_rates) != stages or len(widths) != stages or min(block_config) < 1:
            raise ValueError(
                f"block_config {tuple(block_config)}, growth_rate {growth_rate} and bottleneck_width "
                f"{bottleneck_width} must describe the same stages (one positive layer count each)"
            )
        memory_mode = resolve_memory_mode(memory_efficient, memory_mode)
        unit = dict(norm_layer=norm_layer, act_layer=act_layer)
        features: OrderedDict[str, nn.Module] = OrderedDict(stemblock=StemBlock(in_chans, stem_width, **unit))
        feature_info = [dict(num_chs=stem_width, reduction=2, module="features.stemblock.stem1")]
        chs, plan = stem_width, DilationPlan(output_stride, 4, type(self).__name__)
        path_rates = drop_path_rates(drop_path_rate, block_config)
        for i, (num_layers, k, width) in enumerate(zip(block_config, growth_rates, widths)):
            layer = dict(layer_cls=TwoWayDenseLayer, bottleneck_width=width, dilation=plan.dilation, **unit)
            block = DenseBlock(num_layers, chs, k, memory_mode=memory_mode, drop_path_rates=path_rates[i], **layer)
            features[f"denseblock{i + 1}"] = block
            chs = block.out_chs
            features[f"transition{i + 1}"] = ConvNormAct(chs, chs, 1, **unit)
            if i == stages - 1:
                break
            feature_info.append(dict(num_chs=chs, reduction=plan.stride, module=f"features.transition{i + 1}"))
            pooled = plan.downsample()  # past output_stride an Identity: the module names stay
            pool = nn.AvgPool2d(2, stride=2, ceil_mode=transition_ceil) if pooled else nn.Identity()
            features[f"transition{i + 1}_pool"] = pool
        head = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, global_pool=global_pool)
        # no final norm: the last transition ends in BN-ReLU
        self.build_tail(features, feature_info, chs, plan.stride, norm_layer, act_layer, final_norm=False, **head)
        set_memory_mode(self, memory_mode)  # the stem and transitions follow the blocks' mode
        self.output_stride = output_stride

    def _init_weights(self) -> None:
        # The official initialisation: convolutions N(0, sqrt(2 / (k * k * out))), BN 1/0, classifier N(0, 0.01).
        super()._init_weights()
        if isinstance(self.classifier, nn.Linear):
            nn.init.normal_(self.classifier.weight, 0.0, 0.01)


MODEL_ARCHS: dict[str, dict[str, Any]] = {
    "peleenet": dict(growth_rate=32, block_config=(3, 4, 8, 6), bottleneck_width=(1, 2, 4, 4), stem_width=32),
}


def _create_peleenet(variant: str, pretrained: bool = False, **kwargs: Any) -> PeleeNet:
    model_args = dict(deepcopy(MODEL_ARCHS[variant]), **kwargs)
    levels = len(checks.check_ints("block_config", model_args["block_config"], hint="two-way layers per stage")) + 1
    return build_dense_backbone(PeleeNet, variant, pretrained, levels, **model_args)


default_cfgs = generate_default_cfgs(
    with_published(
        {
            "peleenet": default_cfg(
                paper_ids="arXiv:1804.06882", first_conv="features.stemblock.stem1.conv", crop_pct=0.875
            )
        }
    )
)


@register_model(model_cls=PeleeNet)
def peleenet(pretrained: bool = False, **kwargs: Any) -> PeleeNet:
    """PeleeNet (k=32, 3-4-8-6 two-way layers, widths 1-2-4-4), ImageNet, Table 1: 2,802,248 parameters."""
    return _create_peleenet("peleenet", pretrained, **kwargs)
