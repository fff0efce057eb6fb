"""torchvision as a client: FX feature extraction (``create_feature_extractor``) on each family, and a detection model
(Faster R-CNN) on a ``features_only`` backbone with torchvision's FPN, in train mode with targets and in eval mode."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import timm
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

import densebackbones  # noqa: F401  (registers the backbones with timm)

# One small model per family (the registered layout with fewer layers); MSDNet at its CIFAR layout.
TINY = {
    "densenet_bc121_k32": dict(growth_rate=4, block_config=(1, 2, 1, 1), stem_width=8),
    "dsod_ds64_192_48_1": dict(growth_rate=4, block_config=(1, 1, 2, 1), stem_chs=(8, 8, 8)),
    "peleenet": dict(growth_rate=8, block_config=(1, 1, 2, 1), stem_width=8, bottleneck_width=(1, 1, 1, 1)),
    "condensenet74_c4_g4": dict(growth_rate=(4, 4, 4, 4, 4), block_config=(1, 1, 1, 2, 1)),
    "msdnet_anytime_cifar": dict(),
}


def _input(name: str) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32) if name.endswith("_cifar") else torch.randn(2, 3, 64, 64)


@pytest.mark.parametrize("name", list(TINY))
def test_create_feature_extractor(name):
    """torchvision's FX feature extraction as a user calls it (no tracer arguments): the feature levels of
    ``feature_info`` by module name, equal to ``forward_intermediates``, in eval and train mode."""
    model = timm.create_model(name, **TINY[name]).eval()
    train_nodes, eval_nodes = get_graph_node_names(model)
    assert train_nodes and eval_nodes
    return_nodes = {info["module"]: f"level{i}" for i, info in enumerate(model.feature_info)}
    extractor = create_feature_extractor(model, return_nodes=return_nodes)
    x = _input(name)
    with torch.no_grad():
        got = list(extractor.eval()(x).values())
        expected = model.forward_intermediates(x, intermediates_only=True)
    assert len(got) == len(expected)
    for level, (g, e) in enumerate(zip(got, expected, strict=True)):
        torch.testing.assert_close(g, e, msg=f"level {level}")
    extractor.train()
    sum(f.mean() for f in extractor(x).values()).backward()


class DenseFPNBackbone(nn.Module):
    """torchvision's ``BackboneWithFPN`` for a timm ``features_only`` model: its last four levels into an FPN (plus
    max-pool level), an ``OrderedDict`` of five maps and ``out_channels``, as Faster R-CNN's defaults expect."""

    def __init__(self, name: str, out_channels: int = 16, **kwargs):
        super().__init__()
        with torch.device("meta"):
            levels = len(timm.create_model(name, features_only=True, **kwargs).feature_info)
        self.body = timm.create_model(name, features_only=True, out_indices=tuple(range(levels - 4, levels)), **kwargs)
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), out_channels, LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


@pytest.mark.parametrize("name", [n for n in TINY if not n.endswith("_cifar")])
def test_faster_rcnn_with_fpn_backbone(name):
    backbone = DenseFPNBackbone(name, **TINY[name])
    model = FasterRCNN(
        backbone, num_classes=3, min_size=64, max_size=64, rpn_batch_size_per_image=16, box_batch_size_per_image=16
    )
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 60.0], [0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([2, 1])},
    ]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in backbone.body.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2 and all(set(d) == {"boxes", "labels", "scores"} for d in detections)
