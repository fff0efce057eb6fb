"""int8 post-training quantization of exported files, calibrated on the user's images.

Two well-kept tools, one per runtime (docs/deployment.md has the measurements that chose the default):

- OpenVINO: NNCF's ``nncf.quantize`` on the OpenVINO model (symmetric int8 activations, per-channel int8
  weights, BatchNorm folded by OpenVINO's transformations, and the inputs of each concatenation given one shared
  scale by NNCF's CPU hardware config, so that a dense block's concatenation does not requantize its inputs). On
  this machine it runs DenseNet-121 about 6x faster than eager float32, which is why ``tools/export.py --int8``
  defaults to it.
- onnxruntime: its static QDQ quantization (``quantize_static``, per-channel weights); it leaves the
  pre-activation BatchNorms of dense layers in float (onnxruntime has no int8 BatchNormalization), so each dense
  layer dequantizes and requantizes, and it gains little over float32 on DenseNets.

The calibration images are read from a folder (``calibration_images``) or taken from a run's training split.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor
from torchvision import transforms
from torchvision.datasets.folder import IMG_EXTENSIONS

from .export import ExportInfo

__all__ = ["QUANTIZERS", "calibration_images", "image_paths", "image_transform", "quantize_file"]


def image_transform(
    size: Sequence[int], in_chans: int, mean: Sequence[float], std: Sequence[float]
) -> transforms.Compose:
    """Resize the shorter side, centre-crop to ``size`` (height, width), normalise: images as the exported model
    takes them (``in_chans`` 1: greyscale)."""
    steps = [transforms.Grayscale(1)] if in_chans == 1 else [transforms.Lambda(lambda image: image.convert("RGB"))]
    steps += [transforms.Resize(min(size)), transforms.CenterCrop(tuple(size)), transforms.ToTensor()]
    if mean and std:
        steps.append(transforms.Normalize(list(mean)[:in_chans], list(std)[:in_chans]))
    return transforms.Compose(steps)


def image_paths(folder: str | Path, option: str = "--calib") -> list[Path]:
    """The image files under ``folder`` (sorted, searched recursively); a missing folder or one without images is
    an error naming ``option`` and the folder (checked before any export work)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{option} {folder}: not a folder; pass a folder of images like the ones you deploy on")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS))
    if not paths:
        raise ValueError(
            f"{option} {folder} holds no images ({', '.join(IMG_EXTENSIONS[:4])}...): int8 is measured on images like "
            f"the ones you deploy on; point {option} at a folder of them"
        )
    return paths


def calibration_images(
    folder: str | Path, count: int, transform: transforms.Compose, option: str = "--calib"
) -> list[Tensor]:
    """The first ``count`` images (:func:`image_paths`) of ``folder`` through ``transform``, each a (1, C, H, W)
    tensor. A folder without images, or unreadable images, are errors naming the folder or file."""
    if count < 1:
        raise ValueError(f"{option}-images {count}: use at least 1 image (a few hundred is typical)")
    paths = image_paths(folder, option)
    images = []
    for path in paths[:count]:
        try:
            with Image.open(path) as image:
                images.append(transform(image).unsqueeze(0))
        except OSError as err:
            raise OSError(f"calibration image {path} cannot be read: {err}") from err
    return images


def _quantize_openvino(source: Path, target: Path, images: Sequence[Tensor]) -> None:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(source))
    dataset = nncf.Dataset([image.numpy() for image in images])
    quantized = nncf.quantize(model, dataset, subset_size=len(images), preset=nncf.QuantizationPreset.PERFORMANCE)
    ov.save_model(quantized, str(target), compress_to_fp16=False)


def _quantize_onnx(source: Path, target: Path, images: Sequence[Tensor]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # onnxruntime's calibration protocol over the images
        def __init__(self) -> None:
            self.items = iter([{"images": image.numpy().astype(np.float32)} for image in images])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)  # constant folding, shapes
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


QUANTIZERS = {"openvino": _quantize_openvino, "onnx": _quantize_onnx}


def quantize_file(source: str | Path, target: str | Path, images: Sequence[Tensor]) -> ExportInfo | None:
    """Quantize the exported float file ``source`` (``.xml`` or ``.onnx``) to int8 at ``target`` (same suffix),
    calibrated on ``images`` ((1, C, H, W) tensors as the model takes them); the description beside ``source`` is
    copied with ``int8`` set. Returns it (None for a file exported elsewhere)."""
    source, target = Path(source), Path(target)
    info = ExportInfo.load(source)
    fmt = {".xml": "openvino", ".onnx": "onnx"}.get(source.suffix)
    if fmt is None:
        raise ValueError(
            f"{source.name}: int8 quantization takes OpenVINO (.xml) or ONNX (.onnx) files; for ExecuTorch export "
            f"with --format openvino or onnx, or quantize with ExecuTorch's XNNPACK quantizer yourself"
        )
    if target.suffix != source.suffix:
        raise ValueError(f"the int8 file {target.name} must be a {source.suffix} file like {source.name}")
    if not images:
        raise ValueError("no calibration images: pass --calib DIR with images like the ones you deploy on")
    if info is not None:
        for image in images:
            info.check_input(tuple(image.shape), f"calibration image for {source.name}")
    QUANTIZERS[fmt](source, target, images)
    if info is not None:
        info.int8 = True
        info.save(target)
    return info
