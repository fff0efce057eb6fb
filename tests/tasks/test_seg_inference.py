"""Test-time segmentation inference (issue 37, item 3): sliding windows, multi-scale and flip, in the library
(densebackbones/tasks/seg_inference.py), the task's config and tools/predict_seg.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import densebackbones as db
from densebackbones.data.segmentation import write_shapes_dataset
from densebackbones.tasks.seg_inference import SegInference, segment, slide_logits
from densebackbones.tasks.segmentation import SegmentationTask

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import predict_seg  # noqa: E402
import train_seg  # noqa: E402


def _tiny(name: str = "fc_densenet56") -> nn.Module:
    torch.manual_seed(0)
    return db.create_model(name, num_classes=3, growth_rate=4, layers_per_block=1).double().eval()


def test_one_window_over_the_whole_image_is_the_whole_image_result():
    model, x = _tiny(), torch.randn(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        whole = model(x)
        assert torch.equal(slide_logits(model, x, (64, 96), (32, 48)), whole)
        assert torch.equal(segment(model, x, SegInference("slide", (64, 96), (64, 96))), whole)
        assert torch.equal(slide_logits(model, x, (128, 128), (64, 64)), whole)  # a window larger than the image


def test_overlapping_windows_average_a_pointwise_model_exactly():
    # A 1x1 convolution sees no context: every window gives the pixel the whole image's logit, and averaging the
    # overlaps (counted per pixel, last windows shifted to the border) must give it back.
    model = nn.Conv2d(3, 5, 1).double()
    x = torch.randn(1, 3, 70, 101, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(slide_logits(model, x, (32, 48), (20, 30)), model(x))


def test_flip_of_a_symmetric_input_is_symmetric_and_one_scale_is_single_scale():
    model, x = _tiny(), torch.randn(1, 3, 64, 64, dtype=torch.float64)
    x = torch.cat([x[..., :32], x[..., :32].flip(-1)], -1)  # mirror-symmetric image
    with torch.no_grad():
        flipped = segment(model, x, SegInference(flip=True))
        torch.testing.assert_close(flipped, flipped.flip(-1))
        assert torch.equal(segment(model, x, SegInference(scales=(1.0,))), model(x))
        probs = (model(x).softmax(1) + model(x.flip(-1)).flip(-1).softmax(1)) / 2
        torch.testing.assert_close(flipped, probs.log())
        multi = segment(model, x, SegInference(scales=(0.5, 1.0, 1.5), flip=True))
    assert multi.shape == (1, 3, 64, 64) and torch.allclose(multi.exp().sum(1), torch.ones(1, 64, 64, dtype=x.dtype))


@pytest.mark.parametrize(
    ("inference", "message"),
    [
        (dict(mode="slide", crop=32, stride=48), r"test_stride=\(48, 48\) is larger than the window"),
        (dict(mode="slide", crop=32), "needs test_crop and test_stride"),
        (dict(mode="tiles"), "'whole' or 'slide'"),
        (dict(scales=(1.0, 0.0)), "positive factors"),
        (dict(mode="slide", crop=(32, 0), stride=16), "a positive int or"),
    ],
)
def test_bad_inference_settings_are_refused_in_one_line(inference, message):
    with pytest.raises(ValueError, match=message):
        SegInference(**inference)


def test_the_task_and_predict_seg_follow_the_config(tmp_path):
    data = write_shapes_dataset(tmp_path / "shapes", num_train=8, num_val=2)
    cfg_path = str(REPO / "configs" / "seg" / "fc_densenet_shapes.py")
    common = ["--data-root", str(data), "--cfg-options", "model.growth_rate=4", "model.layers_per_block=1"]
    train_seg.main(train_seg.get_args_parser().parse_args(
        [cfg_path, "--work-dir", str(tmp_path / "run"), *common, "schedule.epochs=1", "train.max_iters_per_epoch=1"]
    ))  # fmt: skip
    checkpoint = str(tmp_path / "run" / "last.pth")
    whole = predict_seg.main(predict_seg.get_args_parser().parse_args([cfg_path, checkpoint, "--split", "val", "--eval",
                                                                        *common]))  # fmt: skip
    one_window = predict_seg.main(predict_seg.get_args_parser().parse_args(
        [cfg_path, checkpoint, "--split", "val", "--eval", "--mode", "slide", "--crop", "64", "80", "--stride", "32",
         "40", *common]
    ))  # fmt: skip
    assert one_window["mIoU"] == whole["mIoU"]  # the shapes images are 64x80: one window is the whole image
    multi = predict_seg.main(predict_seg.get_args_parser().parse_args(
        [cfg_path, checkpoint, "--split", "val", "--eval", "--scales", "0.75", "1.0", "--flip", *common]
    ))  # fmt: skip
    assert 0.0 <= multi["mIoU"] <= 100.0
    with pytest.raises(ValueError, match="larger than the window"):
        SegmentationTask().eval_forward_for({"data": dict(test_mode="slide", test_crop=16, test_stride=32)})
