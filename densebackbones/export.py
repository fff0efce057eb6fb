"""Inference export: fold BatchNorm into the convolution before it; ONNX, OpenVINO and ExecuTorch files with dynamic
batch, height and width, each described by a JSON file beside it (:class:`ExportInfo`) that the runtimes
(``densebackbones.runtimes``) read to refuse inputs outside the exported range.

In a pre-activation dense layer (BN-ReLU-Conv, Sec. 3) a BN follows a ReLU, so it cannot be folded into the
convolution *before* it, and folding it into the convolution after it is wrong at the zero-padded borders of a 3x3
convolution. What can be folded is every BN that directly follows a convolution: the bottleneck's second BN
(``conv1 -> norm2``, dropout being the identity in eval), every BN of post-activation layers and transitions, and the
stems' ``conv -> norm`` pairs. :func:`fuse_batchnorm` folds exactly those and leaves the rest.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.fx.experimental import _config as size_oblivious_shapes
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .layers import DenseLayer, PaddedConv2d, Transition

__all__ = [
    "FORMATS",
    "ExportInfo",
    "fuse_batchnorm",
    "prepare_for_export",
    "input_spec",
    "check_shapes",
    "export_model",
    "export_onnx",
    "export_openvino",
    "export_executorch",
    "check_onnx",
    "assert_close_to_scale",
]

FORMATS = {"onnx": ".onnx", "openvino": ".xml", "executorch": ".pte"}
# The largest height and width a file takes by default: ONNX and OpenVINO plan memory per call, ExecuTorch plans it
# once for the upper bound (XNNPACK's dynamic shapes), so its default bound is a phone camera's, not a satellite's.
DEFAULT_MAX_SIZE = {"onnx": 8192, "openvino": 8192, "executorch": 1024}
MAX_BATCH = 1024


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
                if _fold(module, "conv1", "norm2"):  # BN-ReLU-[conv1-BN]-ReLU-conv2
                    folded += 1
                    # the ReLU now acts on conv1's output itself, which the memory-efficient routes recompute as
                    # a leaf of their autograd graph: in place, it fails with gradients enabled
                    if getattr(module.act2, "inplace", False):
                        module.act2.inplace = False
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


@dataclass
class ExportInfo:
    """What an exported file takes and returns, written beside it as ``<file>.json`` (:meth:`save`)."""

    model: str
    format: str
    in_chans: int
    min_size: int
    max_size: int
    max_batch: int
    outputs: list[str]
    int8: bool = False
    source: str = ""
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def path_for(path: str | Path) -> Path:
        path = Path(path)
        return path.with_name(path.name + ".json")

    def save(self, path: str | Path) -> Path:
        target = self.path_for(path)
        target.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | Path) -> ExportInfo | None:
        """The description beside ``path``, or None for a file exported elsewhere."""
        info = cls.path_for(path)
        return cls(**json.loads(info.read_text(encoding="utf-8"))) if info.is_file() else None

    def check_input(self, shape: Sequence[int], where: str) -> None:
        """A ``ValueError`` naming the file, the shape and what to do when ``shape`` (N, C, H, W) is outside the
        exported range."""
        n, c, h, w = shape
        fixes = []
        if not 1 <= n <= self.max_batch:
            fixes.append(f"split the batch into calls of at most {self.max_batch} images")
        if c != self.in_chans:
            fixes.append(f"give {self.in_chans}-channel images")
        if not (self.min_size <= h <= self.max_size and self.min_size <= w <= self.max_size):
            fixes.append(f"resize the images, or export again with --min-size/--max-size covering {h}x{w}")
        if fixes:
            raise ValueError(
                f"{where}: input {n}x{c}x{h}x{w} is outside what the file takes ({self.model}, {self.format}: batch "
                f"1..{self.max_batch}, {self.in_chans} channels, height and width {self.min_size}..{self.max_size} "
                f"px); {'; '.join(fixes)}"
            )


def input_spec(model: nn.Module) -> tuple[int, int, tuple[int, int]]:
    """(input channels, smallest side, typical (height, width)) of a registered model or its ``features_only``
    wrapper: the smallest side is the model's ``min_input_size`` (at least 2: torch.export treats sizes 0 and 1 as
    constants), the typical size its ``pretrained_cfg['input_size']``."""
    inner = model if hasattr(model, "min_input_size") else getattr(model, "model", model)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(inner, "pretrained_cfg", None) or {}
    in_chans = int(getattr(inner, "in_chans", (cfg.get("input_size") or (3,))[0]))
    smallest = max(int(getattr(inner, "min_input_size", 2)), 2)
    typical = tuple(cfg.get("input_size") or (in_chans, 224, 224))[1:]
    return in_chans, smallest, (max(int(typical[0]), smallest), max(int(typical[1]), smallest))


def check_shapes(min_size: int, max_size: int, typical: tuple[int, int], in_chans: int) -> list[tuple[int, ...]]:
    """The three input shapes every export is checked at: one image of the smallest size, two of an odd,
    non-square size between the smallest and the typical one, and one of the typical size (all within range)."""
    h, w = (min(max(s, min_size), max_size) for s in typical)
    odd = (min(min_size + 13 + (h - min_size) // 2, max_size), min(min_size + 7, max_size))
    return [(1, in_chans, min_size, min_size), (2, in_chans, *odd), (1, in_chans, h, w)]


class ExplicitCeilMaxPool2d(nn.Module):
    """``nn.MaxPool2d(kernel, stride, ceil_mode=True)`` (no padding, kernel >= stride) as an explicit ``-inf`` pad
    of the right and bottom edges followed by a floor-mode pool: the same windows and values, in operators every
    runtime reads alike. OpenVINO's conversion of ONNX's ceil-mode MaxPool drops windows that PyTorch keeps at some
    sizes (DSOD's pools at 129 px: 12 default boxes fewer) and refuses maps smaller than the kernel."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.kernel = nn.modules.utils._pair(pool.kernel_size)
        self.stride = nn.modules.utils._pair(pool.stride or pool.kernel_size)

    @staticmethod
    def convertible(module: nn.Module) -> bool:
        if type(module) is not nn.MaxPool2d or not module.ceil_mode or module.return_indices:
            return False
        kernel, stride = nn.modules.utils._pair(module.kernel_size), nn.modules.utils._pair(module.stride or 0)
        padding, dilation = nn.modules.utils._pair(module.padding), nn.modules.utils._pair(module.dilation)
        return padding == (0, 0) and dilation == (1, 1) and all(k >= s > 0 for k, s in zip(kernel, stride))

    def forward(self, x: Tensor) -> Tensor:
        # With no padding and kernel >= stride, PyTorch's ceil mode keeps ceil((L - k) / s) + 1 windows (its "last
        # window starts inside the input" rule never removes one): pad so that floor mode gives as many.
        extra = [
            ((length - k + s - 1) // s) * s + k - length for length, k, s in zip(x.shape[-2:], self.kernel, self.stride)
        ]
        x = torch.nn.functional.pad(x, (0, extra[1], 0, extra[0]), value=float("-inf"))
        return torch.nn.functional.max_pool2d(x, self.kernel, self.stride)


def _explicit_ceil_pools(model: nn.Module) -> None:
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if ExplicitCeilMaxPool2d.convertible(child):
                setattr(module, name, ExplicitCeilMaxPool2d(child))


def prepare_for_export(model: nn.Module, fuse: bool = True) -> nn.Module:
    """An eval-mode copy for export: BatchNorm folded where it follows a convolution (``fuse``), ceil-mode max pools
    written out (:class:`ExplicitCeilMaxPool2d`), and a detector set
    to return its default boxes for the input's size besides its predictions (``'loc_conf_priors'``), so that the
    file holds everything post-processing needs at any size."""
    model = fuse_batchnorm(model) if fuse else copy.deepcopy(model).eval()
    _explicit_ceil_pools(model)
    if "loc_conf_priors" in getattr(model, "outputs", ()):
        model.set_output("loc_conf_priors")
    return model


def output_names(model: nn.Module, outputs: Any) -> list[str]:
    """Names of the exported outputs: ``loc``/``conf``/``priors`` for a detector, the feature levels' module names
    for a ``features_only`` backbone (``features_denseblock1``...), ``output`` for one tensor, else numbered."""
    flat = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    if getattr(model, "output", None) == "loc_conf_priors" and len(flat) == 3:
        return ["loc", "conf", "priors"]
    feature_info = getattr(model, "feature_info", None)
    if not isinstance(outputs, Tensor) and hasattr(feature_info, "module_name"):
        names = [name.replace(".", "_") for name in feature_info.module_name()]
        if len(names) == len(flat) and len(set(names)) == len(names):
            return names
    return ["output"] if len(flat) == 1 else [f"output_{i}" for i in range(len(flat))]


def _dynamic_shapes(dynamic_batch: bool, dynamic_size: bool, min_size: int, max_size: int) -> Any:
    dims: dict[int, Any] = {}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    if dynamic_size:
        dims.update(
            {
                2: torch.export.Dim("height", min=min_size, max=max_size),
                3: torch.export.Dim("width", min=min_size, max=max_size),
            }
        )
    return (dims,) if dims else None


def _check_example(example: Tensor, dynamic_size: bool, min_size: int, max_size: int) -> None:
    if dynamic_size and not (min_size <= min(example.shape[-2:]) and max(example.shape[-2:]) <= max_size):
        raise ValueError(
            f"a dynamic-size export takes heights and widths of {min_size} to {max_size} px; the example is "
            f"{example.shape[-2]}x{example.shape[-1]}: pass an example (--img-size) within that range"
        )


def _model_error(err: Exception) -> Exception:
    """The model's own ``ValueError`` (an input too small...) out of the exporter's wrappers, else ``err``."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, ValueError):
        cause = cause.__cause__ or cause.__context__
    return ValueError(str(cause)) if cause is not None else err


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example: Tensor,
    *,
    dynamic_batch: bool = True,
    dynamic_size: bool = False,
    min_size: int = 32,
    max_size: int = 8192,
    opset: int = 18,
) -> Path:
    """Export ``model`` in eval mode to ONNX (torch.export based exporter); dense blocks are exported as the plain
    concatenation graph, which ONNX runtimes execute without copies of their own. ``dynamic_size``: the file takes
    any height and width from ``min_size`` to ``max_size``; the example's batch should then be above 1, or
    torch.export may take the batch for a constant. Outputs are named by :func:`output_names`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    _check_example(example, dynamic_size, min_size, max_size)
    try:
        with torch.no_grad():
            names = output_names(model, model(example))
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=_dynamic_shapes(dynamic_batch, dynamic_size, min_size, max_size),
                input_names=["images"],
                output_names=names,
                verbose=False,
            )
    except Exception as err:  # the exporter wraps the model's own errors (an input too small) in its own types
        raise _model_error(err) from err
    program.save(str(path))
    return path


def export_openvino(onnx_path: str | Path, path: str | Path) -> Path:
    """Convert an exported ONNX file to OpenVINO's IR (``.xml`` and ``.bin``), weights kept in float32 (OpenVINO
    otherwise stores them in float16). Dynamic dimensions stay dynamic."""
    import openvino as ov

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)
    return path


def export_executorch(
    model: nn.Module,
    path: str | Path,
    example: Tensor,
    *,
    dynamic_size: bool = True,
    min_size: int = 32,
    max_size: int = 1024,
) -> Path:
    """An ExecuTorch program (``.pte``) lowered to its XNNPACK backend (CPU, float32): dynamic batch up to 8
    (``EXECUTORCH_MAX_BATCH``) and height and width up to ``max_size`` (XNNPACK plans memory for the upper bound)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_example(example, dynamic_size, min_size, max_size)
    try:
        # Size-oblivious shape reasoning: PyTorch's contiguity checks would otherwise guard "this map is not 1 px"
        # and refuse every range whose smallest input has a 1x1 map (DenseNet at 32 px, Pelee at 257).
        with size_oblivious_shapes.patch(backed_size_oblivious=True):
            with torch.no_grad():
                program = torch.export.export(
                    model.eval(),
                    (example,),
                    dynamic_shapes=executorch_dynamic_shapes(dynamic_size, min_size, max_size),
                    strict=False,
                    # ceil-mode pooling's "the last window starts inside the map" holds for every size, but sympy
                    # cannot prove it over a range: a run-time assert, as torch.onnx.export makes it
                    prefer_deferred_runtime_asserts_over_guards=True,
                )
            # The edge dialect's checker refuses the symbolic operators (sym_not) of the range's run-time asserts,
            # which to_executorch then turns into ExecuTorch's own scalar operators: the check is skipped, and every
            # file is compared with eager at three shapes instead (tools/export.py).
            config = EdgeCompileConfig(_check_ir_validity=False)
            lowered = to_edge_transform_and_lower(
                program, partitioner=[XnnpackPartitioner()], compile_config=config
            ).to_executorch()
    except Exception as err:
        raise _model_error(err) from err
    path.write_bytes(lowered.buffer)
    return path


# ExecuTorch 1.5's XNNPACK delegate fails (error 0x10, NotSupported) from batch 16 up on a file exported for batches up
# to 32, at any image size (PeleeNet, 64 to 640 px); batch 12 ran. Files take up to 8 images a call.
EXECUTORCH_MAX_BATCH = 8


def executorch_dynamic_shapes(dynamic_size: bool, min_size: int, max_size: int) -> Any:
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=EXECUTORCH_MAX_BATCH)}
    if dynamic_size:
        dims.update(
            {
                2: torch.export.Dim("height", min=min_size, max=max_size),
                3: torch.export.Dim("width", min=min_size, max=max_size),
            }
        )
    return (dims,)


def export_model(
    model: nn.Module,
    path: str | Path,
    fmt: str,
    *,
    name: str = "",
    img_size: tuple[int, int] | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    fuse: bool = True,
) -> tuple[nn.Module, ExportInfo]:
    """Export ``model`` (a registered model, head, detector or ``features_only`` backbone) to ``path`` in ``fmt``
    (:data:`FORMATS`) with a dynamic batch, height and width, from the model's ``min_input_size`` (or ``min_size``)
    to ``max_size`` (default :data:`DEFAULT_MAX_SIZE`); ``img_size`` is the example torch.export traces with.
    Returns the exported (BN-folded, eval) model, against which the file is checked, and the :class:`ExportInfo`
    written beside the file."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: use one of {sorted(FORMATS)}")
    path = Path(path)
    if path.suffix != FORMATS[fmt]:
        raise ValueError(f"a {fmt} file is named *{FORMATS[fmt]}; got {path.name} (pass --output NAME{FORMATS[fmt]})")
    in_chans, smallest, typical = input_spec(model)
    low = smallest if min_size is None else min_size
    if low < smallest:
        raise ValueError(f"--min-size {low}: {name or 'the model'} takes inputs of at least {smallest}x{smallest} px")
    high = DEFAULT_MAX_SIZE[fmt] if max_size is None else max_size
    if high < low:
        raise ValueError(f"--max-size {high} is below the smallest size {low}")
    # The traced example: the typical size, or twice the smallest if that is larger, so that no map is 1x1 in the
    # trace (torch.export would take a 1 for a constant: Pelee's last maps at its 304 px).
    size = tuple(img_size) if img_size is not None else tuple(min(max(s, 2 * low), high) for s in typical)
    example = torch.randn(2, in_chans, *size)
    exported = prepare_for_export(model, fuse)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    with torch.no_grad():
        outputs = output_names(exported, exported(example))
    if fmt == "onnx":
        export_onnx(exported, path, example, dynamic_size=True, min_size=low, max_size=high)
    elif fmt == "openvino":
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(
                exported, Path(tmp) / "model.onnx", example, dynamic_size=True, min_size=low, max_size=high
            )
            export_openvino(onnx_path, path)
    else:
        export_executorch(exported, path, example, dynamic_size=True, min_size=low, max_size=high)
    info = ExportInfo(
        model=name or type(model).__name__,
        format=fmt,
        in_chans=in_chans,
        min_size=low,
        max_size=high,
        max_batch=EXECUTORCH_MAX_BATCH if fmt == "executorch" else MAX_BATCH,
        outputs=outputs,
        mean=[float(v) for v in cfg.get("mean", ())],
        std=[float(v) for v in cfg.get("std", ())],
    )
    info.save(path)
    return exported, info


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
