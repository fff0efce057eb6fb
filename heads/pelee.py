"""The Pelee detector (Wang, Li, Ling, "Pelee: A Real-Time Object Detection System on Mobile Devices", NeurIPS
2018, Sec. 4.1), exact to the official Caffe code (Robert-JunWang/Pelee: ``feature_extractor.py``,
``layer_utils.py``, ``train_voc.py``, ``train_coco.py``).

* Backbone: PeleeNet at 304 px (``peleenet`` with ``transition_ceil=True``, so that stage 3's pool rounds 19 -> 10 px
  as Caffe does); its stage-3 output (19x19, 512) and stage-4 output (10x10, 704) are the first two sources.
* Extra layers (``fe1``-``fe3``: 1x1 then 3x3 convolutions with bias and ReLU, no BN) take the 10 px map down to
  5, 3 and 1 px.
* A residual prediction block (:class:`ResBlock`, "ResBlock" in Fig. 4) on each of the five maps, then six heads
  (the 19 px map feeds two, with different box sizes) of 1x1 localisation and confidence convolutions with bias over
  6 default boxes per cell (ratios 2 and 3 with flips); variances 0.1/0.1/0.2/0.2 (``heads/ssd.py``).
* 5,425,892 trainable parameters for VOC's 21 classes, 5,981,012 for COCO's 81 (docs/reference.md).

:class:`PeleeHead` needs only the channels of two backbone maps, the deeper one at half the other's resolution, so
it sits on any registered dense backbone (``pelee_bc121_k32``: DenseNet-121's strides 16 and 32).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs
from torch import Tensor

from densebackbones.layers import ConvNormAct, LayerFn, conv2d
from densebackbones.models import checks
from densebackbones.models.helpers import build_task_model
from densebackbones.models.published import with_published
from densebackbones.registry import register_model

from .ssd import PELEE_COCO_PRIORS, PELEE_VOC_PRIORS, PriorConfig, SingleShotDetector, voc_detector_cfg

__all__ = ["Pelee", "PeleeHead", "ResBlock", "pelee", "pelee_bc121_k32"]


class ResBlock(nn.Module):
    """Pelee's residual prediction block (``res_block`` with stride 1): a 1x1 conv-BN shortcut beside a 1x1-3x3-1x1
    bottleneck (conv-BN-ReLU, conv-BN-ReLU, conv-BN) of half the width, summed and passed through a ReLU."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int = 256,
        *,
        bottleneck_ratio: float = 0.5,
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
    ) -> None:
        super().__init__()
        mid = int(out_chs * bottleneck_ratio)
        unit = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.branch1 = ConvNormAct(in_chs, out_chs, 1, act=False, **unit)
        self.branch2a = ConvNormAct(in_chs, mid, 1, **unit)
        self.branch2b = ConvNormAct(mid, mid, 3, padding=1, **unit)
        self.branch2c = ConvNormAct(mid, out_chs, 1, act=False, **unit)
        self.act = act_layer(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.branch1(x) + self.branch2c(self.branch2b(self.branch2a(x))))


def _conv_relu(in_chs: int, out_chs: int, kernel: int, stride: int, padding: int, act_layer: LayerFn) -> nn.Sequential:
    # The extra layers have biases and no BN (ConvBNLayer with use_batchnorm=False).
    return nn.Sequential(
        OrderedDict(conv=conv2d(in_chs, out_chs, kernel, stride, padding), act=act_layer(inplace=True))
    )


class PeleeHead(nn.Module):
    """Extra layers, residual prediction blocks and the 1x1 localisation / confidence layers.

    Args:
        mid_chs: channels of the finer source map (PeleeNet stage 3: 512).
        deep_chs: channels of the deeper map at half its resolution (stage 4: 704), where the extra layers start.
        num_classes: classes including background (VOC: 21).
        boxes: default boxes per cell for each head (6 each).
        extra_chs: (1x1, 3x3) widths of the extra layers fe1, fe2, fe3; fe1's 3x3 has stride 2 and padding 1, the
            others no padding (5 -> 3 -> 1 px at 304 px input).
        res_chs: width of the residual prediction blocks (256).
        head_maps: which of the five maps each head reads (the first map feeds two).
    """

    def __init__(
        self,
        mid_chs: int,
        deep_chs: int,
        num_classes: int,
        boxes: Sequence[int] = (6, 6, 6, 6, 6, 6),
        *,
        extra_chs: Sequence[tuple[int, int]] = ((256, 256), (128, 256), (128, 256)),
        res_chs: int = 256,
        head_maps: Sequence[int] = (0, 0, 1, 2, 3, 4),
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
    ) -> None:
        super().__init__()
        checks.check_int("mid_chs", mid_chs, 1)
        checks.check_int("deep_chs", deep_chs, 1)
        checks.check_int("num_classes", num_classes, 2, "classes including background: VOC 21, COCO 81")
        checks.check_ints("boxes", boxes, 1, hint="default boxes per cell of each head, (6, 6, 6, 6, 6, 6)")
        if not isinstance(extra_chs, (list, tuple)):
            raise TypeError(f"extra_chs must be a tuple of (1x1, 3x3) width pairs, got {extra_chs!r}")
        for pair in extra_chs:
            checks.check_ints("extra_chs", pair, 1, 2, "(1x1, 3x3) widths per extra layer", "convolution")
        checks.check_int("res_chs", res_chs, 1, "width of the residual prediction blocks (256)")
        checks.check_ints("head_maps", head_maps, 0, hint="which of the five maps each head reads")
        checks.check_layer_fn("norm_layer", norm_layer, "nn.BatchNorm2d")
        checks.check_layer_fn("act_layer", act_layer, "nn.ReLU")
        num_maps = 2 + len(extra_chs)
        if len(boxes) != len(head_maps) or not all(0 <= m < num_maps for m in head_maps):
            raise ValueError(
                f"{len(boxes)} box counts for {len(head_maps)} heads, whose maps {tuple(head_maps)} must lie in "
                f"0..{num_maps - 1} (two backbone maps and {len(extra_chs)} extra layers)"
            )
        self.num_classes = num_classes
        self.head_maps = tuple(head_maps)
        self.extras = nn.ModuleList()
        chs = [mid_chs, deep_chs]
        for i, (reduce_chs, out_chs) in enumerate(extra_chs):
            stride, padding = (2, 1) if i == 0 else (1, 0)
            self.extras.append(
                nn.Sequential(
                    _conv_relu(chs[-1], reduce_chs, 1, 1, 0, act_layer),
                    _conv_relu(reduce_chs, out_chs, 3, stride, padding, act_layer),
                )
            )
            chs.append(out_chs)
        unit = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.res_blocks = nn.ModuleList(ResBlock(c, res_chs, **unit) for c in chs)
        self.loc = nn.ModuleList(nn.Conv2d(res_chs, n * 4, 1) for n in boxes)
        self.conf = nn.ModuleList(nn.Conv2d(res_chs, n * num_classes, 1) for n in boxes)
        self.min_deep_size = self._min_deep_size()
        self._init_weights()

    def _init_weights(self) -> None:
        # Caffe's "xavier" filler (uniform, variance 1 / fan_in), zero biases, BN 1 / 0 (ConvBNLayer).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _extra_sizes(self, size: int) -> list[int]:
        sizes = []
        for block in self.extras:
            conv = block[1].conv
            size = (size + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
            sizes.append(size)
        return sizes

    def _min_deep_size(self) -> int:
        size = 1
        while min(self._extra_sizes(size)) < 1:
            size += 1
        return size

    # A stub in TorchScript, which never calls it (see sources); unannotated, as TorchScript cannot resolve this
    # module's postponed annotations on an unused method.
    @torch.jit.unused
    def _is_fx_proxy(self, x):
        return isinstance(x, torch.fx.Proxy)

    def sources(self, mid: Tensor, deep: Tensor) -> list[Tensor]:
        """The five maps after their residual prediction blocks."""
        # Not under torch.fx: a symbolic trace knows no sizes (the traced graph runs on inputs the model checked).
        checked = torch.jit.is_scripting() or not self._is_fx_proxy(deep)
        if checked and min(deep.shape[-2], deep.shape[-1]) < self.min_deep_size:
            raise ValueError(
                f"the deepest backbone map is ({deep.shape[-2]}, {deep.shape[-1]}) px, and the extra layers need at "
                f"least {self.min_deep_size}x{self.min_deep_size} there to reach their 1x1 map; use larger inputs"
            )
        maps = [mid, deep]
        for block in self.extras:
            maps.append(block(maps[-1]))
        return [res(maps[i]) for i, res in enumerate(self.res_blocks)]

    def forward(self, mid: Tensor, deep: Tensor) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
        """Returns loc (N, P, 4), conf (N, P, num_classes) and the heads' spatial sizes."""
        maps = self.sources(mid, deep)
        batch = mid.shape[0]
        loc: list[Tensor] = []
        conf: list[Tensor] = []
        sizes: list[tuple[int, int]] = []
        for i, (loc_layer, conf_layer) in enumerate(zip(self.loc, self.conf)):
            x = maps[self.head_maps[i]]
            loc.append(loc_layer(x).permute(0, 2, 3, 1).reshape(batch, -1, 4))
            conf.append(conf_layer(x).permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes))
            sizes.append((x.shape[-2], x.shape[-1]))
        return torch.cat(loc, 1), torch.cat(conf, 1), sizes


class Pelee(SingleShotDetector):
    """The Pelee detector: two backbone maps, extra layers, residual prediction blocks, six 1x1 heads.

    Args:
        num_classes: classes including background (VOC: 21, COCO: 81).
        backbone: a registered backbone name (``'peleenet'`` for Pelee, ``'densenet_bc121_k32'``...).
        backbone_indices: the two feature levels the head reads, the second at half the first's resolution (by
            default the last two: PeleeNet's stages 3 and 4, strides 16 and 32).
        backbone_kwargs: passed to ``create_model`` (Pelee: ``transition_ceil=True``; ``pretrained``...).
        priors: default-box settings (``PELEE_VOC_PRIORS`` or ``PELEE_COCO_PRIORS``); feature sizes and steps are
            taken from the backbone's actual maps at ``priors.image_size``.
        head_kwargs: passed to :class:`PeleeHead`.
    """

    prior_presets: ClassVar[dict[str, PriorConfig]] = {"voc": PELEE_VOC_PRIORS, "coco": PELEE_COCO_PRIORS}
    head_cls = PeleeHead

    def __init__(
        self,
        num_classes: int = 21,
        *,
        backbone: str = "peleenet",
        backbone_indices: tuple[int, int] = (-2, -1),
        backbone_kwargs: dict[str, Any] | None = None,
        priors: PriorConfig = PELEE_VOC_PRIORS,
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
# Pascal VOC as Pelee trains on it: 20 classes + background, 304x304 inputs. The official Caffe input is BGR minus
# (103.94, 116.78, 123.68) times 0.017, i.e. ImageNet's mean and a std of about 58.8 (0.23 of 255).
default_cfgs = generate_default_cfgs(
    with_published({name: voc_detector_cfg(304, "arXiv:1804.06882") for name in ("pelee", "pelee_bc121_k32")})
)


def _create_pelee(variant: str, pretrained: bool, backbone_defaults: dict[str, Any], **kwargs: Any) -> Pelee:
    # The backbone's defaults (PeleeNet's Caffe-style ceil pools) stay under any backbone_kwargs a config adds.
    backbone_kwargs = checks.check_optional_dict("backbone_kwargs", kwargs.get("backbone_kwargs"))
    kwargs["backbone_kwargs"] = dict(backbone_defaults, **backbone_kwargs)
    return build_task_model(Pelee, variant, pretrained, default_cfgs, **kwargs)


@register_model(task="detection", model_cls=Pelee)
def pelee(pretrained: bool = False, **kwargs: Any) -> Pelee:
    """Pelee (Sec. 4.1, Table 5): PeleeNet at 304 px, extra layers, ResBlocks, six 1x1 heads; 5,425,892
    parameters with VOC's 21 classes."""
    model_args = dict(backbone="peleenet", backbone_indices=(3, 4))
    return _create_pelee("pelee", pretrained, dict(transition_ceil=True), **dict(model_args, **kwargs))


@register_model(task="detection", model_cls=Pelee)
def pelee_bc121_k32(pretrained: bool = False, **kwargs: Any) -> Pelee:
    """The Pelee head on ImageNet DenseNet-121 features (its last two levels, strides 16 and 32)."""
    model_args = dict(backbone="densenet_bc121_k32")
    return _create_pelee("pelee_bc121_k32", pretrained, {}, **dict(model_args, **kwargs))
