"""DeepLabV3 on dense backbones (heads/deeplab.py, issue 37's DeepLab-style setting in the library's engine): the
model computes what torchvision's own ``DeepLabV3`` computes with the same backbone and head, follows DeepLabV3's
rates per output stride, refuses bad arguments naming them, and a classification checkpoint initialises its backbone
in the segmentation task."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_DENSE, tiny_kwargs
from torchvision.models.segmentation.deeplabv3 import DeepLabV3 as TorchvisionDeepLabV3

import densebackbones as db
from densebackbones.tasks.segmentation import SegmentationTask


class _OutDict(torch.nn.Module):
    """Our backbone as torchvision's segmentation models expect it: ``{"out": deepest map}``."""

    def __init__(self, features: torch.nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x):
        return {"out": self.features(x)}


@pytest.mark.parametrize("output_stride", [8, 16])
def test_equals_torchvisions_deeplabv3_with_the_same_backbone_and_head(output_stride):
    torch.manual_seed(0)
    model = db.create_model("deeplabv3_densenet121", output_stride=output_stride, num_classes=5,
                            **tiny_kwargs("deeplabv3_densenet121")).double().eval()  # fmt: skip
    reference = TorchvisionDeepLabV3(_OutDict(model.features), model.head).eval()
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        assert model.features(x).shape[-2:] == (64 // output_stride, 96 // output_stride)
        torch.testing.assert_close(model(x), reference(x)["out"])
    rates = [branch[0].dilation[0] for branch in model.head[0].convs[1:4]]
    assert rates == ([12, 24, 36] if output_stride == 8 else [6, 12, 18])  # DeepLabV3, Sec. 4.1


def test_sits_on_other_pyramid_backbones():
    model = db.create_model("deeplabv3_densenet121", backbone="peleenet", backbone_kwargs=tiny_kwargs("peleenet"),
                            num_classes=3).train()  # fmt: skip
    out = model(torch.randn(2, 3, 48, 64))
    out.sum().backward()
    first_conv = next(model.features.parameters())
    assert out.shape == (2, 3, 48, 64) and first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match=r"output_stride=32 is not one of 8, 16"):
        db.create_model("deeplabv3_densenet121", output_stride=32)
    with pytest.raises(ValueError, match=r"atrous_rates=\(6, 12\) must be three rates, e.g. \(12, 24, 36\)"):
        db.create_model("deeplabv3_densenet121", atrous_rates=(6, 12))
    with pytest.raises(ValueError, match="backbone_kwargs: output_stride is DeepLabV3's to set"):
        db.create_model("deeplabv3_densenet121", backbone_kwargs=dict(output_stride=16))
    with pytest.raises(ValueError, match="msdnet_imagenet takes output_stride=32 only"):
        db.create_model("deeplabv3_densenet121", backbone="msdnet_imagenet")


def test_a_classification_checkpoint_initialises_the_backbone_in_the_segmentation_task(tmp_path):
    backbone = dict(TINY_DENSE, block_config=(1, 1, 1, 1))
    classifier = db.create_model("densenet_bc121_k32", num_classes=7, **backbone)
    torch.save(classifier.state_dict(), tmp_path / "classifier.pth")
    cfg = {"model": dict(type="deeplabv3_densenet121", backbone_kwargs=backbone), "data": dict(dataset="shapes")}
    model = SegmentationTask().build_model(cfg, pretrained=str(tmp_path / "classifier.pth"))
    loaded = model.features.extractor.model.features.denseblock4.denselayer1.conv1.weight
    torch.testing.assert_close(loaded, classifier.features.denseblock4.denselayer1.conv1.weight)
    assert model.head[-1].out_channels == 3  # the shapes set's classes: a fresh head


def test_one_image_per_training_forward_is_refused_before_anything_runs():
    task = SegmentationTask()
    cfg = {"model": {"type": "deeplabv3_densenet121"}, "data": {"batch_size": 2}, "train": {"accum_steps": 2}}
    with pytest.raises(
        ValueError, match=r"trains on 2 or more images per forward; data.batch_size=2 over 1 .* gives 1"
    ):
        task.check(cfg, world_size=1)
    task.check(dict(cfg, train={"accum_steps": 1}), world_size=1)
