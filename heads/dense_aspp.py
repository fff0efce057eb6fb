"""DenseASPP: densely connected atrous spatial pyramid pooling for street scenes (Yang et al., CVPR 2018), exact to
the official code (DeepMotionAIResearch/DenseASPP, ``models/DenseASPP.py`` and ``cfgs/DenseASPP*.py``).

* Backbone (Sec. 3.2): an ImageNet DenseNet at output stride 8: transitions 2 and 3 keep the resolution, blocks 3
  and 4 are dilated by 2 and 4 (the registered DenseNets' ``output_stride=8``), then one more transition after the
  last block (BN-ReLU-1x1 conv halving the width, no pooling) and a batch norm, whose output the official code
  passes through the first branch's in-place ReLU, so every branch and the classifier see it rectified.
* Five atrous branches (Sec. 3.1, Fig. 2), dilations 3, 6, 12, 18, 24, each ``[BN]``-ReLU-1x1 conv (``d_feature0``,
  bias)-BN-ReLU-3x3 dilated conv (``d_feature1``, bias)-Dropout2d(0.1); the first branch has no leading BN; each
  branch reads the concatenation of the later branches' outputs and the features, new maps first.
* Classifier: Dropout2d(0.1), 1x1 conv with bias, bilinear upsampling by 8 to the input size (``align_corners=True``:
  the official models were trained with PyTorch 0.3.1, whose bilinear ``Upsample`` aligned corners).
* Widths (``d_feature0``, ``d_feature1``) per depth as the official configs: 121 (128, 64), 161 (512, 128),
  169 (336, 168), 201 (480, 240).

:class:`DenseASPP` takes any registered DenseNet by name (its layers up to the last dense block, module names and
memory modes kept), or any other registered pyramid backbone (its deepest ``features_only`` level at output stride 8,
followed by the same transition, norm and branches; MSDNet, whose scales start at the stem, has no output stride 8).
The official checkpoint (``ASPP_3.conv.1``, ``features.transition4``, ``classification.1``, legacy ``norm.1`` keys,
DataParallel's ``module.``) loads through ``pretrained_cfg_overlay=dict(file=...)``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import generate_default_cfgs
from torch import Tensor

from densebackbones.layers import set_memory_mode
from densebackbones.models import checks
from densebackbones.models.densenet import DenseNet
from densebackbones.models.helpers import InputSizeCheck, build_task_model, load_checkpoint_into, task_cfg
from densebackbones.models.published import with_published
from densebackbones.registry import create_model, model_class, register_model

from .fc_densenet import _MemoryModes

__all__ = ["DenseASPP", "DenseASPPHead", "dense_aspp121", "dense_aspp161", "dense_aspp169", "dense_aspp201"]

DILATIONS = (3, 6, 12, 18, 24)


class _AtrousBranch(nn.Sequential):
    """[BN]-ReLU-1x1 conv-BN-ReLU-3x3 atrous conv, then Dropout2d (``_DenseAsppBlock``; BN momentum 0.0003 as
    the official code's, which PyTorch reads as the weight of the new batch)."""

    def __init__(self, in_chs: int, mid: int, out: int, dilation: int, drop_rate: float, norm_first: bool) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if norm_first:
            layers["norm1"] = nn.BatchNorm2d(in_chs, momentum=0.0003)
        layers["act1"] = nn.ReLU(inplace=False)
        layers["conv1"] = nn.Conv2d(in_chs, mid, 1)
        layers["norm2"] = nn.BatchNorm2d(mid, momentum=0.0003)
        layers["act2"] = nn.ReLU(inplace=True)
        layers["conv2"] = nn.Conv2d(mid, out, 3, padding=dilation, dilation=dilation)
        layers["drop"] = nn.Dropout2d(drop_rate)
        super().__init__(layers)


class DenseASPPHead(nn.Module):
    """The layers after the backbone's last dense block: the extra transition and norm, the five densely connected
    atrous branches and the classifier (logits at the features' resolution; the model upsamples them).

    Args:
        in_chs: channels of the last dense block's output.
        num_classes: output classes (Cityscapes: 19).
        d_feature0, d_feature1: widths of each branch's 1x1 and 3x3 convolutions.
        dilations: of the branches (3, 6, 12, 18, 24).
        drop_rate: Dropout2d after each branch (0.1); ``classifier_drop_rate`` before the classifier (0.1).
    """

    def __init__(
        self,
        in_chs: int,
        num_classes: int,
        d_feature0: int,
        d_feature1: int,
        dilations: Sequence[int] = DILATIONS,
        drop_rate: float = 0.1,
        classifier_drop_rate: float = 0.1,
    ) -> None:
        super().__init__()
        chs = in_chs // 2
        self.transition = nn.Sequential(
            OrderedDict(
                norm=nn.BatchNorm2d(in_chs), act=nn.ReLU(inplace=True), conv=nn.Conv2d(in_chs, chs, 1, bias=False)
            )
        )
        self.norm = nn.BatchNorm2d(chs)
        self.branches = nn.ModuleList()
        for i, dilation in enumerate(dilations):
            self.branches.append(_AtrousBranch(chs, d_feature0, d_feature1, dilation, drop_rate, norm_first=i > 0))
            chs += d_feature1
        self.drop = nn.Dropout2d(classifier_drop_rate)
        self.classifier = nn.Conv2d(chs, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm(self.transition(x)))  # the first branch's in-place ReLU rectifies the shared map
        for branch in self.branches:
            x = torch.cat([branch(x), x], 1)
        return self.classifier(self.drop(x))


def _official_key(key: str) -> str:
    """A key of the official checkpoint as ours (legacy ``norm.1`` names, the head's modules)."""
    key = key.removeprefix("module.")
    key = re.sub(r"\.(norm|relu|conv)\.([12])\.", r".\1\2.", key)
    key = key.replace("features.transition4.", "head.transition.").replace("features.norm5.", "head.norm.")
    key = key.replace("classification.1.", "head.classifier.")
    match = re.match(r"ASPP_(\d+)\.(.*)", key)
    if match:
        key = f"head.branches.{DILATIONS.index(int(match.group(1)))}.{match.group(2)}"
    return key


def dense_aspp_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """The official checkpoint's keys as ours (ours pass unchanged); its batch norms, from PyTorch 0.3.1, count no
    batches (``num_batches_tracked`` 0)."""
    state = {_official_key(k): v for k, v in state_dict.items()}
    for key, value in model.state_dict().items():
        if (
            key.endswith("num_batches_tracked")
            and key not in state
            and key.replace("num_batches_tracked", "weight") in state
        ):
            state[key] = torch.zeros_like(value)
    return state


def backbone_arguments(
    model: str, num_classes: Any, backbone: Any, backbone_kwargs: Any, reserved: Sequence[str], why: str
) -> dict[str, Any]:
    """The checked arguments of a segmentation model over a registered backbone: ``num_classes``, the backbone's
    name, and its ``create_model`` keywords, of which ``reserved`` are the model's own to set (``why`` says how)."""
    checks.check_int("num_classes", num_classes, 1, "output classes, e.g. Cityscapes: 19")
    checks.check_backbone_name("backbone", backbone)
    kwargs = dict(checks.check_optional_dict("backbone_kwargs", backbone_kwargs))
    for key in reserved:
        if key in kwargs:
            raise ValueError(f"backbone_kwargs: {key} is {model}'s to set ({why})")
    return kwargs


class DeepestLevel(nn.Module):
    """A backbone's feature extractor (``features_only``, one level) returning that level's map."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: Tensor) -> Tensor:
        return self.extractor(x)[-1]


class DenseASPP(_MemoryModes, InputSizeCheck, nn.Module):
    """DenseASPP on a registered backbone at output stride 8 (see the module docstring).

    Args:
        num_classes: output classes (Cityscapes: 19).
        backbone: a registered DenseNet (``'densenet_bc161_k48'``...: the official network), or any other registered
            pyramid backbone (``'peleenet'``, ``'condensenet74_c4_g4'``...), whose deepest level at output stride 8
            the head reads.
        backbone_kwargs: passed to ``create_model`` (``pretrained=True``, ``memory_mode``, ``drop_path_rate``...).
        d_feature0, d_feature1, dilations, drop_rate, classifier_drop_rate: of :class:`DenseASPPHead`.
        memory_mode: ``'plain'``, ``'buffer'`` or ``'efficient'`` for the backbone's dense blocks.

    Shape:
        Input: (N, 3, H, W), H and W at least 16. Output: (N, num_classes, H, W) logits.
    """

    pretrained_cfg = {"classifier": "head.classifier", "first_conv": "features.conv0"}

    def __init__(
        self,
        num_classes: int = 19,
        *,
        backbone: str = "densenet_bc161_k48",
        backbone_kwargs: dict[str, Any] | None = None,
        d_feature0: int = 512,
        d_feature1: int = 128,
        dilations: Sequence[int] = DILATIONS,
        drop_rate: float = 0.1,
        classifier_drop_rate: float = 0.1,
        memory_mode: str | None = None,
    ) -> None:
        super().__init__()
        reserved = ("output_stride", "num_classes", "features_only")
        kwargs = backbone_arguments("DenseASPP", num_classes, backbone, backbone_kwargs, reserved, "output stride 8")
        checks.check_int("d_feature0", d_feature0, 1, "width of each branch's 1x1 conv (DenseASPP-161: 512)")
        checks.check_int("d_feature1", d_feature1, 1, "width of each branch's 3x3 conv (DenseASPP-161: 128)")
        checks.check_ints("dilations", dilations, 1, hint="the branches' dilations, (3, 6, 12, 18, 24)")
        checks.check_rate("drop_rate", drop_rate)
        checks.check_rate("classifier_drop_rate", classifier_drop_rate)
        if issubclass(model_class(backbone), DenseNet):
            net = create_model(backbone, output_stride=8, num_classes=0, **kwargs)
            # The official network: the DenseNet's layers up to its last dense block (names kept); the head brings
            # the extra transition and norm in place of DenseNet's final norm.
            last = [name for name in net.features._modules if name.startswith("denseblock")][-1]
            names = list(net.features._modules)
            self.features = nn.Sequential(
                OrderedDict((n, net.features._modules[n]) for n in names[: names.index(last) + 1])
            )
            chs, smallest = net.features._modules[last].out_chs, net.min_input_size
        else:
            # Any other pyramid backbone (PeleeNet, CondenseNet, DSOD's stems...): its deepest level at output stride
            # 8 through its feature extractor; the head's transition and norm follow as on a DenseNet.
            extractor = create_model(backbone, features_only=True, out_indices=(-1,), output_stride=8, **kwargs)
            self.features = DeepestLevel(extractor)
            net, chs, smallest = extractor, extractor.feature_info.channels()[-1], extractor.model.min_input_size
        self.head = DenseASPPHead(chs, num_classes, d_feature0, d_feature1, dilations, drop_rate, classifier_drop_rate)
        for m in self.head.modules():  # the official initialisation of the new layers
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight)
        self.num_classes = num_classes
        # 16 px: the features (stride 8) have two pixels, between which the aligned-corner upsampling interpolates
        # (on one pixel it degenerates to a copy, a case torch.export guards against with dynamic sizes)
        self.in_chans, self.min_input_size = net.in_chans, max(16, smallest)
        self.input_size_reason = "two pixels at output stride 8 for the aligned-corner upsampling"
        if memory_mode is not None:
            set_memory_mode(self, memory_mode)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        logits = self.head(self.features(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)

    @torch.jit.unused
    def load_pretrained(self, checkpoint_path: str, adapt_in_chans: bool = True) -> None:
        load_checkpoint_into(self, checkpoint_path, dense_aspp_filter_fn, None, adapt_in_chans)


# ------------------------------------------------------------------------------------------------ registered models
# The official configs: backbone and branch widths per depth. Cityscapes: 19 train classes, 1024x2048 images.
ARCHS = {
    "dense_aspp121": dict(backbone="densenet_bc121_k32", d_feature0=128, d_feature1=64),
    "dense_aspp161": dict(backbone="densenet_bc161_k48", d_feature0=512, d_feature1=128),
    "dense_aspp169": dict(backbone="densenet_bc169_k32", d_feature0=336, d_feature1=168),
    "dense_aspp201": dict(backbone="densenet_bc201_k32", d_feature0=480, d_feature1=240),
}


def _cfg() -> dict[str, Any]:
    return task_cfg(19, (3, 1024, 2048), "head.classifier", "CVPR 2018 (Yang et al.)", first_conv="features.conv0")


default_cfgs = generate_default_cfgs(with_published({name: _cfg() for name in ARCHS}))


def _create(variant: str, pretrained: bool, **kwargs: Any) -> DenseASPP:
    return build_task_model(DenseASPP, variant, pretrained, default_cfgs, **dict(ARCHS[variant], **kwargs))


@register_model(task="segmentation", model_cls=DenseASPP)
def dense_aspp121(pretrained: bool = False, **kwargs: Any) -> DenseASPP:
    """DenseASPP on DenseNet-121 (official config: branch widths 128, 64)."""
    return _create("dense_aspp121", pretrained, **kwargs)


@register_model(task="segmentation", model_cls=DenseASPP)
def dense_aspp161(pretrained: bool = False, **kwargs: Any) -> DenseASPP:
    """DenseASPP on DenseNet-161 (branch widths 512, 128): 79.9 mIoU on Cityscapes val, 80.6 multi-scale."""
    return _create("dense_aspp161", pretrained, **kwargs)


@register_model(task="segmentation", model_cls=DenseASPP)
def dense_aspp169(pretrained: bool = False, **kwargs: Any) -> DenseASPP:
    """DenseASPP on DenseNet-169 (branch widths 336, 168)."""
    return _create("dense_aspp169", pretrained, **kwargs)


@register_model(task="segmentation", model_cls=DenseASPP)
def dense_aspp201(pretrained: bool = False, **kwargs: Any) -> DenseASPP:
    """DenseASPP on DenseNet-201 (branch widths 480, 240)."""
    return _create("dense_aspp201", pretrained, **kwargs)
