"""DeepLabV3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017) on a registered
dense backbone, in the library's own engine: the "DeepLab-style" setting of ``configs/mmseg/`` for users who cannot
install mmcv.

* Backbone: the registered backbone's deepest ``features_only`` level at output stride 8 (or 16): for a DenseNet,
  transitions 2 and 3 keep the resolution and blocks 3 and 4 are dilated by 2 and 4, as DenseASPP's (Sec. 3.2).
* Head: torchvision's ``DeepLabHead`` (``torchvision.models.segmentation.deeplabv3``), the paper's Sec. 3.3: ASPP with
  a 1x1 branch, three 3x3 atrous branches and image-level pooling (256 channels each, BN-ReLU), their 1x1 projection
  (Dropout 0.5), a 3x3 conv-BN-ReLU and the 1x1 classifier. Rates (6, 12, 18) at output stride 16 and doubled at
  output stride 8 (Sec. 4.1), which is torchvision's default (12, 24, 36).
* Logits are upsampled bilinearly to the input size (``align_corners=False``, as torchvision's DeepLabV3).

mmsegmentation's ``ASPPHead`` differs in widths (512 channels, rate-1 branch counted among the dilations) and adds
an auxiliary FCN head; ``configs/mmseg/deeplabv3_densenet121_os8_cityscapes.py`` keeps that form for mmseg users.
The image-pooling branch normalises a 1x1 map, so training needs batches of two or more images (as torchvision's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn as nn
import torch.nn.functional as F
from timm.models import generate_default_cfgs
from torch import Tensor
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from densebackbones.layers import set_memory_mode
from densebackbones.models import checks
from densebackbones.models.helpers import InputSizeCheck, build_task_model, task_cfg
from densebackbones.models.published import with_published
from densebackbones.registry import create_model, register_model

from .dense_aspp import DeepestLevel, backbone_arguments
from .fc_densenet import _MemoryModes

__all__ = ["DeepLabV3", "deeplabv3_densenet121"]

RATES = {8: (12, 24, 36), 16: (6, 12, 18)}  # DeepLabV3 Sec. 4.1


class DeepLabV3(_MemoryModes, InputSizeCheck, nn.Module):
    """DeepLabV3 on a registered pyramid backbone (see the module docstring).

    Args:
        num_classes: output classes (Cityscapes: 19).
        backbone: a registered backbone with an output stride option (DenseNets, PeleeNet, CondenseNet, DSOD's).
        backbone_kwargs: passed to ``create_model`` (``pretrained=True``, ``memory_mode``, ``drop_path_rate``...).
        output_stride: 8 or 16.
        atrous_rates: the ASPP's three rates; None: (12, 24, 36) at output stride 8, (6, 12, 18) at 16.
        memory_mode: ``'plain'``, ``'buffer'`` or ``'efficient'`` for the backbone's dense blocks.

    Shape:
        Input: (N, 3, H, W), H and W at least the backbone's smallest input. Output: (N, num_classes, H, W) logits.
    """

    pretrained_cfg = {"classifier": "head.4"}
    min_train_batch = 2  # the image-pooling branch's BatchNorm over a 1x1 map needs two images in training

    def __init__(
        self,
        num_classes: int = 19,
        *,
        backbone: str = "densenet_bc121_k32",
        backbone_kwargs: dict[str, Any] | None = None,
        output_stride: int = 8,
        atrous_rates: Sequence[int] | None = None,
        memory_mode: str | None = None,
    ) -> None:
        super().__init__()
        reserved = ("output_stride", "num_classes", "features_only", "out_indices")
        kwargs = backbone_arguments("DeepLabV3", num_classes, backbone, backbone_kwargs, reserved, "pass output_stride")
        if output_stride not in RATES:
            raise ValueError(f"output_stride={output_stride!r} is not one of 8, 16 (DeepLabV3's settings)")
        rates = RATES[output_stride] if atrous_rates is None else atrous_rates
        checks.check_ints("atrous_rates", rates, 1, hint="three rates, e.g. (12, 24, 36) at output stride 8")
        if len(rates) != 3:
            raise ValueError(f"atrous_rates={tuple(rates)} must be three rates, e.g. {RATES[output_stride]}")
        extractor = create_model(backbone, features_only=True, out_indices=(-1,), output_stride=output_stride, **kwargs)
        self.features = DeepestLevel(extractor)
        self.head = DeepLabHead(extractor.feature_info.channels()[-1], num_classes, tuple(rates))
        self.num_classes, self.output_stride, self.in_chans = num_classes, output_stride, extractor.model.in_chans
        self.min_input_size = extractor.model.min_input_size
        self.input_size_reason = f"{backbone}'s smallest input at output stride {output_stride}"
        if memory_mode is not None:
            set_memory_mode(self, memory_mode)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        logits = self.head(self.features(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------------------ registered models
ARCHS = {"deeplabv3_densenet121": dict(backbone="densenet_bc121_k32")}


def _cfg() -> dict[str, Any]:
    return task_cfg(19, (3, 1024, 2048), "head.4", "arXiv:1706.05587 (Chen et al.)")


default_cfgs = generate_default_cfgs(with_published({name: _cfg() for name in ARCHS}))


@register_model(task="segmentation", model_cls=DeepLabV3)
def deeplabv3_densenet121(pretrained: bool = False, **kwargs: Any) -> DeepLabV3:
    """DeepLabV3 (torchvision's head) on DenseNet-121 at output stride 8: the own-engine form of
    ``configs/mmseg/deeplabv3_densenet121_os8_cityscapes.py``."""
    arch = ARCHS["deeplabv3_densenet121"]
    return build_task_model(DeepLabV3, "deeplabv3_densenet121", pretrained, default_cfgs, **dict(arch, **kwargs))
