"""Test-time inference of segmentation models: whole image, sliding window, multi-scale and flip.

* ``whole``: the model on the whole image (its logits).
* ``slide``: windows of ``crop`` (h, w) every ``stride`` (h, w), the last ones shifted to end at the image's border
  (mmsegmentation's ``slide_inference``); overlapping logits are averaged. Memory follows the window, not the image
  (a 2048x1024 Cityscapes image runs in 1024x1024 windows). A window larger than the image is cut to it.
* ``scales`` and ``flip`` (DenseASPP's and DeepLab's multi-scale test): the image resized by each scale (bilinear),
  and mirrored if ``flip``, each run as above and brought back to the image's size; their softmax probabilities are
  averaged and returned as log-probabilities, so that the loss (NLL of the averaged prediction) and argmax apply as
  to logits. One scale of 1.0 without flip returns the logits themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SegInference", "segment", "slide_logits"]


def _pair(name: str, value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"{name}={value!r}: a positive int or (height, width)")
    return pair  # type: ignore[return-value]


@dataclass(frozen=True)
class SegInference:
    """How a segmentation model is run at test time (see the module docstring)."""

    mode: str = "whole"
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"test_mode={self.mode!r}: 'whole' or 'slide'")
        crop, stride = _pair("test_crop", self.crop), _pair("test_stride", self.stride)
        if self.mode == "slide":
            if crop is None or stride is None:
                raise ValueError("test_mode='slide' needs test_crop and test_stride, e.g. 1024 and 768 for Cityscapes")
            if stride[0] > crop[0] or stride[1] > crop[1]:
                raise ValueError(
                    f"test_stride={stride} is larger than the window test_crop={crop}: pixels between windows would "
                    f"get no prediction; use a stride of at most the window"
                )
        object.__setattr__(self, "crop", crop)
        object.__setattr__(self, "stride", stride)
        scales = tuple(float(s) for s in (self.scales or (1.0,)))
        if not all(s > 0 for s in scales):
            raise ValueError(f"test_scales={self.scales!r}: positive factors, e.g. (0.75, 1.0, 1.25)")
        object.__setattr__(self, "scales", scales)

    @classmethod
    def from_data_cfg(cls, data: dict[str, Any]) -> SegInference:
        """From a config's ``data`` section (``test_mode``, ``test_crop``, ``test_stride``, ``test_scales``,
        ``test_flip``)."""
        return cls(data.get("test_mode") or "whole", data.get("test_crop"), data.get("test_stride"),
                   tuple(data.get("test_scales") or (1.0,)), bool(data.get("test_flip")))  # fmt: skip


def _starts(size: int, crop: int, stride: int) -> list[int]:
    """Window starts along one side: every ``stride``, the last window ending at the border."""
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop, stride)) + [size - crop]
    return sorted(set(starts))


def slide_logits(model: nn.Module, x: Tensor, crop: Sequence[int], stride: Sequence[int]) -> Tensor:
    """The model's logits over ``x`` from windows of ``crop`` every ``stride``, overlaps averaged."""
    height, width = x.shape[-2:]
    logits: Tensor | None = None
    count = x.new_zeros(1, 1, height, width)
    for top in _starts(height, crop[0], stride[0]):
        for left in _starts(width, crop[1], stride[1]):
            bottom, right = min(top + crop[0], height), min(left + crop[1], width)
            window = model(x[..., top:bottom, left:right])
            if logits is None:
                logits = x.new_zeros(x.shape[0], window.shape[1], height, width)
            logits[..., top:bottom, left:right] += window
            count[..., top:bottom, left:right] += 1
    assert logits is not None
    return logits / count


def _run(model: nn.Module, x: Tensor, inference: SegInference) -> Tensor:
    if inference.mode == "slide":
        return slide_logits(model, x, inference.crop, inference.stride)  # type: ignore[arg-type]
    return model(x)


def segment(model: nn.Module, x: Tensor, inference: SegInference | None = None) -> Tensor:
    """Logits of ``model`` over the image batch ``x`` as ``inference`` says (whole image by default), or, with
    several scales or flip, the log of the averaged softmax probabilities; (N, classes, H, W) either way."""
    inference = inference or SegInference()
    if inference.scales == (1.0,) and not inference.flip:
        return _run(model, x, inference)
    size = x.shape[-2:]
    total: Tensor | None = None
    for scale in inference.scales:
        scaled = x if scale == 1.0 else F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        for flipped in (False, True) if inference.flip else (False,):
            inputs = scaled.flip(-1) if flipped else scaled
            logits = _run(model, inputs, inference)
            logits = logits.flip(-1) if flipped else logits
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            probs = logits.softmax(1)
            total = probs if total is None else total + probs
    assert total is not None
    views = len(inference.scales) * (2 if inference.flip else 1)
    return (total / views).clamp_min(torch.finfo(total.dtype).tiny).log()
