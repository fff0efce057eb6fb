"""Inference export: fold BatchNorm into the convolution before it, and ONNX export checked with onnxruntime.

In a pre-activation dense layer (BN-ReLU-Conv, Sec. 3) a BN follows a ReLU, so it cannot be folded into the
convolution *before* it, and folding it into the convolution after it is wrong at the zero-padded borders of a 3x3
convolution. What can be folded is every BN that directly follows a convolution: the bottleneck's second BN
(``conv1 -> norm2``, dropout being the identity in eval), every BN of post-activation layers and transitions, and the
stems' ``conv -> norm`` pairs. :func:`fuse_batchnorm` folds exactly those and leaves the rest.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .layers import DenseLayer, PaddedConv2d, Transition

__all__ = ["fuse_batchnorm", "export_onnx", "check_onnx", "assert_close_to_scale"]


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        type(conv) in (nn.Conv2d, PaddedConv2d)
        and type(norm) is nn.BatchNorm2d
        and norm.track_running_stats
        and conv.out_channels == norm.num_features
    )


def _fold(owner: nn.Module, conv_name: str, norm_name: str) -> int:
    conv, norm = getattr(owner, conv_name), getattr(owner, norm_name)
    if not _foldable(conv, norm):
        return 0
    setattr(owner, conv_name, fuse_conv_bn_eval(conv, norm))
    setattr(owner, norm_name, nn.Identity())
    return 1


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BN that directly follows a convolution folded into it.

    Outputs equal the original's in eval mode (up to float rounding); the copy is for inference only (its state_dict
    lacks the folded BN layers). ``model`` itself is not changed. Returns the copy; ``copy.num_folded`` says how many
    BN layers were folded.
    """
    fused = copy.deepcopy(model).eval()
    folded = 0
    for module in list(fused.modules()):
        if isinstance(module, DenseLayer):
            if module.preact and module.conv2 is not None and isinstance(module.drop1, (nn.Identity, nn.Dropout)):
                folded += _fold(module, "conv1", "norm2")  # BN-ReLU-[conv1-BN]-ReLU-conv2
            elif not module.preact:
                folded += _fold(module, "conv1", "norm1")
                if module.conv2 is not None:
                    folded += _fold(module, "conv2", "norm2")
        elif isinstance(module, Transition) and not module.preact:
            folded += _fold(module, "conv", "norm")
        elif isinstance(module, nn.Sequential):  # stems: conv0 -> norm0 and the like
            names = list(module._modules)
            for conv_name, norm_name in zip(names, names[1:]):
                folded += _fold(module, conv_name, norm_name)
    fused.num_folded = folded
    return fused


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example: Tensor,
    *,
    dynamic_batch: bool = True,
    dynamic_size: bool = False,
    opset: int = 18,
) -> Path:
    """Export ``model`` in eval mode to ONNX (torch.export based exporter); dense blocks are exported as the plain
    concatenation graph, which ONNX runtimes execute without copies of their own. ``dynamic_size``: the file takes
    any height and width from 32 to 8192 (segmentation models: FC-DenseNet at CamVid's 360x480 and at its 224
    crops); the example's batch should then be above 1, or torch.export may take the batch for a constant."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dims = {}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1, max=4096)
    if dynamic_size:
        dims.update({2: torch.export.Dim("height", min=32, max=8192), 3: torch.export.Dim("width", min=32, max=8192)})
    dynamic_shapes = (dims,) if dims else None
    if dynamic_size and min(example.shape[-2:]) < 32:
        raise ValueError(
            f"a dynamic-size export takes heights and widths of 32 to 8192 px; the example is "
            f"{example.shape[-2]}x{example.shape[-1]}: pass an example (--img-size) of at least 32"
        )
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                input_names=["images"],
                output_names=["output"],
            )
    except Exception as err:  # the exporter wraps the model's own errors (an input too small) in its own types
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, ValueError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise ValueError(str(cause)) from err
        raise
    program.save(str(path))
    return path


def assert_close_to_scale(got: Tensor, expected: Tensor, rtol: float, atol: float, what: str = "output") -> None:
    """``got`` equals ``expected`` within ``atol * scale + rtol * |expected|`` elementwise, ``scale`` being the largest
    ``|expected|``; raises ``AssertionError`` starting "<what> differs"."""
    scale = max(float(expected.abs().max()), 1e-12)
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol * scale, msg=lambda m: f"{what} differs: {m}")


def check_onnx(
    model: nn.Module, path: str | Path, example: Tensor, rtol: float = 1e-4, atol: float = 1e-4
) -> tuple[float, float]:
    """Run the exported file with onnxruntime on ``example`` and compare with PyTorch in eval mode.

    Returns (largest absolute difference, largest absolute PyTorch output); raises ``AssertionError`` naming the
    difference when an element is outside ``atol * scale + rtol * |expected|``, ``scale`` being the largest absolute
    PyTorch output: float32 rounding differences grow with the outputs' magnitude, so a fixed absolute tolerance
    would call a random FC-DenseNet's logits "different" at 1.8e-6 of their largest value."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: example.cpu().numpy()})
    with torch.no_grad():
        expected = model.eval()(example)
    got = torch.from_numpy(got)
    assert_close_to_scale(got, expected.cpu(), rtol, atol, what="ONNX output")
    return float((got - expected.cpu()).abs().max()), float(expected.abs().max())
