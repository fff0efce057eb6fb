"""DSOD300: Deeply Supervised Object Detectors trained from scratch (Shen et al., ICCV 2017).

* Backbone DS/64-192-48-1 with its stem (Table 1), the registered model ``dsod_ds64_192_48_1``
  (``densebackbones/models/dsod.py``): its feature levels 1 and 2 are the first prediction source ("First",
  transition 2, 38 px, 800 channels) and block 4 (19 px, 1568 channels).
* Dense prediction structure (Sec. 3.1, Fig. 1): each further scale concatenates a *learning half*
  (BN-ReLU-1x1 n, BN-ReLU-3x3/2 n) computed from the previous scale and a *re-using half*: the previous scale
  max-pooled (2x2/2, ceil) and compressed by BN-ReLU-1x1 n. The second scale (19 px) learns from block 4
  (BN-ReLU-1x1 256) and re-uses First. Widths 800 @38, 512 @19, 512 @10, 256 @5, 256 @3, 256 @2.
* Prediction: L2Norm with a learnable per-channel scale (init 20) on every source, then 3x3 conv localisation and
  confidence layers over SSD's default boxes (``heads/ssd.py``), each followed by a batch norm as in the official
  code (``use_batchnorm=True``; the paper is silent on it, the released Caffe models have it).

:class:`DSODHead` needs only the channels of two maps (a "First" map and a deeper map at half its resolution), so
it also sits on any registered dense backbone (``DSOD(backbone='densenet_bc121_k32')`` takes its last two levels).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import generate_default_cfgs
from torch import Tensor

from densebackbones.layers import LayerFn, conv2d
from densebackbones.models import checks
from densebackbones.models.helpers import build_task_model
from densebackbones.models.published import with_published
from densebackbones.registry import register_model

from .ssd import VOC_PRIORS, PriorConfig, SingleShotDetector, voc_detector_cfg

__all__ = ["DSODHead", "DSOD", "L2Norm", "dsod300", "dsod300_lite", "dsod_bc121_k32"]


def _norm_act_conv(in_chs: int, out_chs: int, kernel: int, stride: int, norm_layer: LayerFn, act_layer: LayerFn):
    # Pre-activation unit of the dense prediction structure: BN-ReLU-conv.
    return nn.Sequential(
        OrderedDict(
            norm=norm_layer(in_chs),
            act=act_layer(inplace=True),
            conv=conv2d(in_chs, out_chs, kernel, stride=stride, padding=kernel // 2, bias=False),
        )
    )


def _prediction(in_chs: int, out_chs: int, norm_layer: LayerFn) -> nn.Sequential:
    """A localisation or confidence layer as the official DSOD300 has it: a 3x3 conv without bias, then a batch
    norm with its affine scale and shift (eps 0.001) -- ``CreateMultiBoxHead(use_batchnorm=True)`` of
    DSOD300_pascal.py and DSOD300_coco.py (model_libs.py ``ConvBNLayer``); the paper does not describe it."""
    norm = norm_layer(out_chs)
    if hasattr(norm, "eps"):
        norm.eps = 1e-3
    return nn.Sequential(OrderedDict(conv=conv2d(in_chs, out_chs, 3, padding=1, bias=False), norm=norm))


def concat_top_left(a: Tensor, b: Tensor) -> Tensor:
    """The channel concatenation of the top-left part ``a`` and ``b`` have in common."""
    h, w = min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])
    return torch.cat([a[..., :h, :w], b[..., :h, :w]], 1)


# One torch.fx graph node, called with the actual maps when the graph runs: a symbolic trace knows no sizes to compare.
torch.fx.wrap("concat_top_left")


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learnable per-channel scale (ParseNet; SSD and DSOD init it to 20)."""

    caffe_type = "l2norm"  # SSD Caffe's Normalize layer (densebackbones/models/caffe.py reads its scale)

    def __init__(self, channels: int, scale: float = 20.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1, eps=1e-10) * self.weight.view(1, -1, 1, 1)


class _DensePredictionScale(nn.Module):
    """One further scale: re-using half (2x2/2 max-pool (ceil), BN-ReLU-1x1 n) + learning half (BN-ReLU-1x1 n,
    BN-ReLU-3x3/2 n), concatenated to 2n channels in that order (the official code's)."""

    def __init__(self, in_chs: int, half: int, norm_layer: LayerFn, act_layer: LayerFn) -> None:
        super().__init__()
        self.learn = nn.Sequential(
            _norm_act_conv(in_chs, half, 1, 1, norm_layer, act_layer),
            _norm_act_conv(half, half, 3, 2, norm_layer, act_layer),
        )
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.reuse = _norm_act_conv(in_chs, half, 1, 1, norm_layer, act_layer)

    def forward(self, x: Tensor) -> Tensor:
        # The re-used half first, in the channels and in the computing order: the official add_bl_layer2
        # (model_libs.py) concatenates (pooled, learned), and its Caffe files list the layers in that order.
        reused = self.reuse(self.pool(x))
        return torch.cat([reused, self.learn(x)], 1)


class DSODHead(nn.Module):
    """Dense prediction structure, L2Norm and the 3x3 localisation / confidence layers.

    Args:
        first_chs: channels of the "First" map.
        deep_chs: channels of the deeper map at half First's resolution (block 4 of DSOD).
        num_classes: classes including background (VOC: 21).
        boxes: default boxes per location for each of the six sources.
        second_half: channels of each half of the second source (256).
        extra_halves: half widths of the further scales (256, 128, 128, 128).
    """

    def __init__(
        self,
        first_chs: int,
        deep_chs: int,
        num_classes: int,
        boxes: Sequence[int] = (4, 6, 6, 6, 4, 4),
        *,
        second_half: int = 256,
        extra_halves: Sequence[int] = (256, 128, 128, 128),
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
    ) -> None:
        super().__init__()
        checks.check_int("first_chs", first_chs, 1)
        checks.check_int("deep_chs", deep_chs, 1)
        checks.check_int("num_classes", num_classes, 2, "classes including background: VOC 21, COCO 81")
        checks.check_ints("boxes", boxes, 1, hint="default boxes per location of each source, (4, 6, 6, 6, 4, 4)")
        checks.check_int("second_half", second_half, 1, "channels of each half of the second source (256)")
        checks.check_ints(
            "extra_halves", extra_halves, 1, hint="half widths of the further scales (256, 128, 128, 128)"
        )
        checks.check_layer_fn("norm_layer", norm_layer, "nn.BatchNorm2d")
        checks.check_layer_fn("act_layer", act_layer, "nn.ReLU")
        if len(boxes) != 2 + len(extra_halves):
            raise ValueError(f"{len(boxes)} box counts for {2 + len(extra_halves)} prediction sources")
        self.num_classes = num_classes
        self.second_learn = _norm_act_conv(deep_chs, second_half, 1, 1, norm_layer, act_layer)
        self.second_pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.second_reuse = _norm_act_conv(first_chs, second_half, 1, 1, norm_layer, act_layer)
        chs = [first_chs, 2 * second_half]
        self.scales = nn.ModuleList()
        for half in extra_halves:
            self.scales.append(_DensePredictionScale(chs[-1], half, norm_layer, act_layer))
            chs.append(2 * half)
        self.source_channels = chs
        self.norms = nn.ModuleList(L2Norm(c) for c in chs)
        self.loc = nn.ModuleList(_prediction(c, n * 4, norm_layer) for c, n in zip(chs, boxes))
        self.conf = nn.ModuleList(_prediction(c, n * num_classes, norm_layer) for c, n in zip(chs, boxes))

    def sources(self, first: Tensor, deep: Tensor) -> list[Tensor]:
        learned, reused = self.second_learn(deep), self.second_reuse(self.second_pool(first))
        # DSOD's backbone pools round up, so both halves have the same size. A backbone whose pools round down
        # (DenseNet) gives floor(n / 2) for an odd First of n px, one less than the ceil-mode pool: keeping the
        # top-left common part is a floor-mode pool there, aligned with the backbone's own.
        second = concat_top_left(learned, reused)
        maps = [first, second]
        for scale in self.scales:
            maps.append(scale(maps[-1]))
        return maps

    def forward(self, first: Tensor, deep: Tensor) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
        """Returns loc (N, P, 4), conf (N, P, num_classes) and the sources' spatial sizes."""
        maps = self.sources(first, deep)
        batch = first.shape[0]
        loc: list[Tensor] = []
        conf: list[Tensor] = []
        for i, (norm, loc_layer, conf_layer) in enumerate(zip(self.norms, self.loc, self.conf)):
            x = norm(maps[i])
            loc.append(loc_layer(x).permute(0, 2, 3, 1).reshape(batch, -1, 4))
            conf.append(conf_layer(x).permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes))
        return torch.cat(loc, 1), torch.cat(conf, 1), [(m.shape[-2], m.shape[-1]) for m in maps]


class DSOD(SingleShotDetector):
    """A DSOD detector: a backbone giving "First" and a deeper map, the DSOD head, SSD default boxes.

    Args:
        num_classes: classes including background (VOC: 21, COCO: 81).
        backbone: a registered backbone name (``'dsod_ds64_192_48_1'`` for DSOD300, ``'densenet_bc121_k32'``...).
        backbone_indices: its two feature levels used as "First" and the deeper map at half First's resolution
            (DSOD300: (1, 2); by default the last two levels, e.g. DenseNet-121's strides 16 and 32).
        backbone_kwargs: passed to ``create_model`` (``memory_efficient``, ``pretrained``...).
        priors: default-box settings (``VOC_PRIORS`` or ``COCO_PRIORS``); feature sizes and steps are taken
            from the backbone's actual maps at ``priors.image_size``.
        head_kwargs: passed to :class:`DSODHead`.

    ``forward`` returns ``(loc, conf)`` for the loss; :meth:`detect` returns post-processed boxes per image.
    """

    head_cls = DSODHead

    def __init__(
        self,
        num_classes: int = 21,
        *,
        backbone: str = "dsod_ds64_192_48_1",
        backbone_indices: tuple[int, int] = (-2, -1),
        backbone_kwargs: dict[str, Any] | None = None,
        priors: PriorConfig = VOC_PRIORS,
        head_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            num_classes,
            backbone=backbone,
            backbone_indices=backbone_indices,
            backbone_kwargs=backbone_kwargs,
            priors=priors,
            head_kwargs=head_kwargs,
        )


# ------------------------------------------------------------------------------------------------ registered models
# Pascal VOC as DSOD300 trains on it: 20 classes + background, 300x300 inputs.
default_cfgs = generate_default_cfgs(
    with_published(
        {name: voc_detector_cfg(300, "arXiv:1708.01241") for name in ("dsod300", "dsod300_lite", "dsod_bc121_k32")}
    )
)


def _create_dsod(variant: str, pretrained: bool, **kwargs: Any) -> DSOD:
    return build_task_model(DSOD, variant, pretrained, default_cfgs, **kwargs)


@register_model(task="detection", model_cls=DSOD)
def dsod300(pretrained: bool = False, **kwargs: Any) -> DSOD:
    """DSOD300 (Table 4): DS/64-192-48-1 backbone, dense prediction structure, SSD300 default boxes."""
    model_args = dict(backbone="dsod_ds64_192_48_1", backbone_indices=(1, 2))
    return _create_dsod("dsod300", pretrained, **dict(model_args, **kwargs))


@register_model(task="detection", model_cls=DSOD)
def dsod300_lite(pretrained: bool = False, **kwargs: Any) -> DSOD:
    """DSOD300-lite (official release: DS-64-256-64-1, 10.4M parameters, 76.7 VOC07 mAP) on the backbone
    ``dsod_ds64_256_64_1``, whose layers per block (3, 4, 4, 4) are reconstructed from that parameter count."""
    model_args = dict(backbone="dsod_ds64_256_64_1", backbone_indices=(1, 2))
    return _create_dsod("dsod300_lite", pretrained, **dict(model_args, **kwargs))


@register_model(task="detection", model_cls=DSOD)
def dsod_bc121_k32(pretrained: bool = False, **kwargs: Any) -> DSOD:
    """The DSOD head on ImageNet DenseNet-121 features (its last two levels, strides 16 and 32)."""
    model_args = dict(backbone="densenet_bc121_k32")
    return _create_dsod("dsod_bc121_k32", pretrained, **dict(model_args, **kwargs))
