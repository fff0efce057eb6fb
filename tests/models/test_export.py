"""Inference export: BatchNorm folding keeps outputs, ONNX files run in onnxruntime with PyTorch's outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import tiny_densenet

import densebackbones as db
from densebackbones.export import assert_close_to_scale, check_onnx, export_onnx, fuse_batchnorm
from densebackbones.layers import DenseBlock, Transition

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import export as export_tool  # noqa: E402


def _trained_statistics(model, x):
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x + torch.randn_like(x))
    return model.eval()


def test_fuse_batchnorm_folds_what_follows_a_convolution_and_keeps_outputs():
    model = _trained_statistics(tiny_densenet(stem_type="imagenet").double(), torch.randn(4, 3, 32, 32).double())
    fused = fuse_batchnorm(model)
    # imagenet stem conv0 -> norm0, and conv1 -> norm2 in each of the four bottleneck layers
    assert fused.num_folded == 5
    assert isinstance(fused.features.norm0, nn.Identity)
    assert isinstance(fused.features.denseblock1.denselayer1.norm2, nn.Identity)
    assert isinstance(model.features.norm0, nn.BatchNorm2d)  # the original is untouched
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x))


def test_fuse_batchnorm_post_activation_layers():
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        DenseBlock(2, 6, 4, preact=False),
        Transition(14, 7, preact=False),
    ).double()
    model = _trained_statistics(model, torch.randn(4, 3, 8, 8).double())
    fused = fuse_batchnorm(model)
    assert fused.num_folded == 5  # conv1/norm1 and conv2/norm2 per layer, and the transition
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x))


@pytest.mark.parametrize("fuse", [False, True], ids=["plain", "fused"])
@pytest.mark.integration
def test_onnx_round_trip_with_dynamic_batch(tmp_path, fuse):
    model = _trained_statistics(tiny_densenet(), torch.randn(4, 3, 8, 8))
    if fuse:
        model = fuse_batchnorm(model)
    path = export_onnx(model, tmp_path / "tiny.onnx", torch.randn(2, 3, 8, 8))
    for batch in (2, 5):  # the export batch and another one: the batch dimension is dynamic
        diff, peak = check_onnx(model, path, torch.randn(batch, 3, 8, 8))
        assert diff < 1e-4 * max(peak, 1.0)


@pytest.mark.integration
def test_check_onnx_reports_a_mismatch(tmp_path):
    model = tiny_densenet().eval()
    path = export_onnx(model, tmp_path / "tiny.onnx", torch.randn(2, 3, 8, 8))
    with torch.no_grad():
        model.classifier.bias.add_(1.0)  # the file no longer matches the model
    with pytest.raises(AssertionError, match="ONNX output differs"):
        check_onnx(model, path, torch.randn(2, 3, 8, 8))


@pytest.mark.integration
def test_export_tool_on_a_registered_model_and_checkpoint(tmp_path):
    model = db.create_model("densenet_bc100_k12_cifar", num_classes=10)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "weights.pth")
    argv = ["densenet_bc100_k12_cifar", "--format", "onnx", "--output", str(tmp_path / "m.onnx"), "--img-size", "16"]
    argv += ["--checkpoint", str(tmp_path / "weights.pth"), "--num-classes", "10", "--max-size", "64"]
    result = export_tool.main(export_tool.get_args_parser().parse_args(argv))  # raises when outside tolerance
    assert [c["shape"] for c in result["checks"]] == [[1, 3, 4, 4], [2, 3, 23, 11], [1, 3, 16, 16]]
    assert all(c["max_rel_error"] < 1e-4 for c in result["checks"])
    assert (tmp_path / "m.onnx").stat().st_size > 3_000_000  # 0.77M float32 weights are in the file
    with pytest.raises(ValueError, match="the checkpoint .* classifier|size mismatch|classes"):  # the head must fit
        export_tool.main(export_tool.get_args_parser().parse_args([*argv[:-4], "--num-classes", "7", *argv[-2:]]))


def test_onnx_comparison_is_relative_to_the_output_scale():
    """float32 rounding of an element near zero is relative to the outputs' magnitude: with a largest logit of 1000
    a 1e-3 difference at a logit near 0 is 1e-6 of the scale (a fixed 1e-4 called such a model "different"), while
    a difference of 1 still is one."""
    expected = torch.tensor([1000.0, 0.0, -3.0])
    assert_close_to_scale(torch.tensor([1000.0, 1e-3, -3.0]), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(AssertionError, match="ONNX output differs"):
        assert_close_to_scale(torch.tensor([1000.0, 1.0, -3.0]), expected, rtol=1e-4, atol=1e-4, what="ONNX output")


@pytest.mark.integration
def test_fc_densenet_exports_with_a_dynamic_height_and_width(tmp_path):
    # FC-DenseNet's skip connections crop the upsampled maps to the skip's size: with branches on sizes, torch.export
    # pinned height and width to the example's. One file, then odd, non-square sizes and CamVid's 360x480 through it.
    model = db.create_model("fc_densenet56", num_classes=5, growth_rate=4, layers_per_block=(1,) * 7).eval()
    path = export_onnx(model, tmp_path / "fc.onnx", torch.randn(2, 3, 64, 80), dynamic_size=True)
    for size in [(64, 80), (45, 67), (33, 96), (360, 480)]:
        check_onnx(model, path, torch.randn(1, 3, *size))


@pytest.mark.parametrize("delta", range(-5, 6))
@pytest.mark.parametrize("size", [7, 8])
def test_match_size_crops_and_pads_around_the_centre(delta, size):
    from densebackbones.heads.fc_densenet import match_size

    x = torch.arange(size * size, dtype=torch.float32).reshape(1, 1, size, size)
    out = match_size(x, [size + delta, size])
    assert out.shape[-2:] == (size + delta, size)
    if delta <= 0:  # a crop keeps rows start .. start + target, start = (size - target) // 2
        start = (-delta) // 2
        assert torch.equal(out, x[:, :, start : start + size + delta])
    else:  # a pad puts delta // 2 zero rows before, the rest after
        assert torch.equal(out[:, :, delta // 2 : delta // 2 + size], x)
        assert out.sum() == x.sum()


@pytest.mark.integration
def test_export_errors_are_the_models_own_messages(tmp_path):
    # torch.export wrapped the model's input check in its own error types: a 132-line traceback, not one line
    model = db.create_model("fc_densenet56", num_classes=5, growth_rate=4, layers_per_block=(1,) * 7).eval()
    with pytest.raises(ValueError, match="takes heights and widths of 32 to 8192 px; the example is 16x16"):
        export_onnx(model, tmp_path / "a.onnx", torch.randn(2, 3, 16, 16), dynamic_size=True)
    with pytest.raises(ValueError, match="takes inputs of at least 8x8 px"):  # three poolings in this tiny one
        export_onnx(model, tmp_path / "b.onnx", torch.randn(2, 3, 7, 7))


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2), (2, 1), (3, 1), (3, 3)])
def test_explicit_ceil_max_pool_equals_pytorchs_ceil_mode(kernel, stride):
    # What export writes instead of a ceil-mode MaxPool (OpenVINO read ONNX's differently): the same windows and
    # values at every size PyTorch pools, odd and even, down to maps smaller than the kernel.
    from densebackbones.export import ExplicitCeilMaxPool2d

    pool = nn.MaxPool2d(kernel, stride, ceil_mode=True)
    explicit = ExplicitCeilMaxPool2d(pool)
    assert ExplicitCeilMaxPool2d.convertible(pool)
    assert not ExplicitCeilMaxPool2d.convertible(nn.MaxPool2d(kernel, stride, padding=1, ceil_mode=True))
    for height in range(1, 14):
        for width in (1, 4, 7, 10):
            x = torch.randn(2, 3, height, width)
            try:
                expected = pool(x)
            except RuntimeError:  # PyTorch refuses maps smaller than the kernel here: so does the rewrite's user
                continue
            assert torch.equal(explicit(x), expected), (height, width)
