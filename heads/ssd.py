"""SSD box machinery used by the DSOD detectors (Liu et al., "SSD", ECCV 2016; Shen et al., "DSOD", ICCV 2017).

Default boxes, their encoding with variances, ground-truth matching, the multibox loss with hard-negative mining
and the post-processing. Everything is vectorised over priors and the batch; boxes are ``(x1, y1, x2, y2)``
normalised to [0, 1] unless a function says otherwise.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

from densebackbones.models import checks
from densebackbones.models.helpers import InputSizeCheck, task_cfg
from densebackbones.registry import create_model

__all__ = [
    "PriorConfig",
    "VOC_PRIORS",
    "COCO_PRIORS",
    "PELEE_VOC_PRIORS",
    "PELEE_COCO_PRIORS",
    "SingleShotDetector",
    "voc_detector_cfg",
    "script_prior_sizes",
    "make_priors",
    "NAMED_PRIORS",
    "check_prediction_count",
    "encode",
    "decode",
    "match",
    "MultiBoxLoss",
    "postprocess",
    "boxes_per_cell",
]


@dataclass(frozen=True)
class PriorConfig:
    """Default boxes of an SSD300-style detector (SSD Sec. 2.2; DSOD uses SSD's settings)."""

    image_size: int = 300
    feature_sizes: tuple[int, ...] = (38, 19, 10, 5, 3, 2)
    steps: tuple[float, ...] = (8, 16, 32, 64, 100, 300)
    min_sizes: tuple[float, ...] = (30, 60, 111, 162, 213, 264)
    max_sizes: tuple[float, ...] = (60, 111, 162, 213, 264, 315)
    aspect_ratios: tuple[tuple[float, ...], ...] = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    variances: tuple[float, float] = (0.1, 0.2)
    clip: bool = True


VOC_PRIORS = PriorConfig()
COCO_PRIORS = PriorConfig(min_sizes=(21, 45, 99, 153, 207, 261), max_sizes=(45, 99, 153, 207, 261, 315))


def script_prior_sizes(
    image_size: float, num_sources: int, min_ratio: int, max_ratio: int, first_ratios: tuple[int, int] = (10, 20)
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Min and max box sizes as SSD's Caffe training scripts compute them (``ssd_pascal.py``, and Pelee's
    ``train_voc.py`` / ``train_coco.py``): ratios from ``min_ratio`` to ``max_ratio`` percent of the image in steps of
    ``floor((max - min) / (sources - 2))`` for every source but the first, which gets ``first_ratios``; each max size
    is the next ratio's size."""
    step = (max_ratio - min_ratio) // (num_sources - 2)
    ratios = range(min_ratio, max_ratio + 1, step)
    min_sizes = [image_size * first_ratios[0] / 100] + [image_size * r / 100 for r in ratios]
    max_sizes = [image_size * first_ratios[1] / 100] + [image_size * (r + step) / 100 for r in ratios]
    return tuple(min_sizes), tuple(max_sizes)


def _pelee_priors(min_ratio: int, first_ratios: tuple[int, int]) -> PriorConfig:
    # Pelee (Wang et al. 2018, Sec. 4.1; train_voc.py / train_coco.py): 304 px input, six heads on maps of 19, 19, 10,
    # 5, 3 and 1 px (the 19 px map feeds two), ratios 2 and 3 with flips everywhere, no clipping. The steps are
    # Caffe's default, image size over map size.
    sizes = (19, 19, 10, 5, 3, 1)
    min_sizes, max_sizes = script_prior_sizes(304, len(sizes), min_ratio, 90, first_ratios)
    return PriorConfig(
        image_size=304,
        feature_sizes=sizes,
        steps=tuple(304 / s for s in sizes),
        min_sizes=min_sizes,
        max_sizes=max_sizes,
        aspect_ratios=((2, 3),) * len(sizes),
        clip=False,
    )


PELEE_VOC_PRIORS = _pelee_priors(min_ratio=20, first_ratios=(10, 20))  # 30.4, 60.8, 112.48, ... (train_voc.py)
PELEE_COCO_PRIORS = _pelee_priors(
    min_ratio=15, first_ratios=(7, 15)
)  # 21.28, 45.6, 100.32, ... (train_coco.py, the VOC+COCO model)


def boxes_per_cell(config: PriorConfig) -> list[int]:
    """Boxes per location and scale: 1 (min size) + 1 (sqrt(min * max)) + 2 per aspect ratio (r and 1/r)."""
    return [2 + 2 * len(ratios) for ratios in config.aspect_ratios]


def _step(config: PriorConfig, k: int, length: int, cells: int) -> Tensor:
    # Normalised centre spacing of source k along an axis of ``length`` px with ``cells`` cells: the preset's step
    # where the axis has the configured size (its maps are then the configured ones: convolutions and pools act on
    # each axis alone), Caffe's default (axis / cells) elsewhere, so the centres tile the actual map. A float64
    # tensor chosen by torch.where, not a Python branch: under torch.export ``length`` and ``cells`` are symbolic, and
    # an exported detector (densebackbones.export) then computes the boxes of whatever size it is given.
    length_t = torch.ones((), dtype=torch.float64) * length
    cells_t = torch.ones((), dtype=torch.float64) * cells
    preset = (length_t == config.image_size) & (cells_t == config.feature_sizes[k])
    return torch.where(preset, torch.tensor(config.steps[k] / config.image_size, dtype=torch.float64), 1.0 / cells_t)


# The default boxes by name (``priors="coco"``), for configs, JSON (tools/convert_weights.py --model-kwargs) and the
# official weight tags (models/published.py).
NAMED_PRIORS = {"voc": VOC_PRIORS, "coco": COCO_PRIORS, "pelee_voc": PELEE_VOC_PRIORS, "pelee_coco": PELEE_COCO_PRIORS}


def make_priors(
    config: PriorConfig = VOC_PRIORS,
    image_size: tuple[int, int] | None = None,
    feature_sizes: Sequence[tuple[int, int]] | None = None,
) -> Tensor:
    """Default boxes as (num_priors, 4) ``(cx, cy, w, h)`` in [0, 1], scale by scale, row-major, SSD's order:
    per location the min-size box, the sqrt(min * max) box, then each aspect ratio r and 1/r.

    Args:
        config: the boxes' settings at its square ``image_size``.
        image_size: the input's (height, width); default the config's square size.
        feature_sizes: each source's (height, width) at that input; default the config's (square) sizes.

    At the configured size these are exactly the preset's boxes (DSOD300's 8,744 with SSD300's settings,
    Pelee's 5,142). At any other size the centres follow the actual maps, per axis (step: axis over map size), and
    the box sizes stay the same fractions of the image along each axis: SSD (Liu et al. 2016, Sec. 2.2, "Choosing
    scales and aspect ratios for default boxes") gives each scale as a fraction s_k of the image side, with width
    s_k * sqrt(a) and height s_k / sqrt(a) in normalised coordinates, so ``min_sizes``/``max_sizes`` (pixels of
    the configured square) become ``min_sizes / image_size`` of the input's width and of its height. A non-square
    input therefore gets the boxes its image would get if squashed to the configured square (the SSD training
    warp), not square boxes in pixels.
    """
    height, width = image_size if image_size is not None else (config.image_size, config.image_size)
    sizes = list(feature_sizes) if feature_sizes is not None else [(s, s) for s in config.feature_sizes]
    if len(sizes) != len(config.feature_sizes):
        raise ValueError(f"{len(sizes)} map sizes for the {len(config.feature_sizes)} sources of the default boxes")
    boxes = []
    for k, (rows, cols) in enumerate(sizes):
        s_min = config.min_sizes[k] / config.image_size
        s_max = math.sqrt(config.min_sizes[k] * config.max_sizes[k]) / config.image_size
        shapes = [(s_min, s_min), (s_max, s_max)]
        for ratio in config.aspect_ratios[k]:
            r = math.sqrt(ratio)
            shapes += [(s_min * r, s_min / r), (s_min / r, s_min * r)]
        # float64 products, one rounding each: the same numbers as Python's floats, then one cast to float32
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * _step(config, k, height, rows)
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * _step(config, k, width, cols)
        centres = torch.stack(torch.meshgrid(cx, cy, indexing="xy"), -1).reshape(-1, 1, 2)  # row-major (i, j)
        wh = torch.tensor(shapes, dtype=torch.float64).expand(centres.shape[0], -1, -1)
        boxes.append(torch.cat([centres.expand(-1, len(shapes), -1), wh], -1).reshape(-1, 4))
    priors = torch.cat(boxes).float()
    return priors.clamp_(0, 1) if config.clip else priors


def _corners(cxcywh: Tensor) -> Tensor:
    return torch.cat([cxcywh[..., :2] - cxcywh[..., 2:] / 2, cxcywh[..., :2] + cxcywh[..., 2:] / 2], -1)


def encode(boxes: Tensor, priors: Tensor, variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """Regression targets of corner boxes (..., 4) with respect to ``priors`` (cx, cy, w, h) (SSD eq. 2)."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    size = (boxes[..., 2:] - boxes[..., :2]).clamp_min(1e-6)
    offset = (centre - priors[..., :2]) / (variances[0] * priors[..., 2:])
    scale = torch.log(size / priors[..., 2:]) / variances[1]
    return torch.cat([offset, scale], -1)


def decode(deltas: Tensor, priors: Tensor, variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """Inverse of :func:`encode`: corner boxes from regression outputs."""
    centre = priors[..., :2] + deltas[..., :2] * variances[0] * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(deltas[..., 2:] * variances[1])
    return torch.cat([centre - size / 2, centre + size / 2], -1)


def match(gt_boxes: Tensor, gt_labels: Tensor, priors: Tensor, iou_threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Assign every prior a ground truth (SSD Sec. 2.2, "Matching strategy").

    Each ground truth first takes its best prior (so that none is left unmatched), then every prior whose best
    IoU is at least ``iou_threshold`` takes that ground truth. Labels are 1-based; 0 is background.

    Returns:
        matched boxes (num_priors, 4) in corners, and labels (num_priors,) with 0 for background.
    """
    num_priors = priors.shape[0]
    if gt_boxes.numel() == 0:
        return priors.new_zeros(num_priors, 4), torch.zeros(num_priors, dtype=torch.long, device=priors.device)
    iou = box_iou(gt_boxes, _corners(priors))  # (num_gt, num_priors)
    best_gt_iou, best_gt = iou.max(0)
    best_prior = iou.argmax(1)
    # Force each ground truth onto its best prior; later ground truths win a shared prior, as in SSD's loop.
    best_gt[best_prior] = torch.arange(len(gt_boxes), device=priors.device)
    best_gt_iou[best_prior] = 2.0
    labels = gt_labels[best_gt].clone()
    labels[best_gt_iou < iou_threshold] = 0
    return gt_boxes[best_gt], labels


class MultiBoxLoss(torch.nn.Module):
    """SSD's loss: smooth-L1 on matched priors plus cross-entropy on positives and the hardest negatives
    (``neg_pos_ratio`` negatives per positive, ranked by their background loss), both divided by the number of
    positives in the batch (SSD eq. 1).

    Args:
        priors: (num_priors, 4) ``(cx, cy, w, h)``.
        variances: encoding variances.
        iou_threshold: matching threshold.
        neg_pos_ratio: hard negatives per positive (3).
    """

    def __init__(
        self,
        priors: Tensor,
        variances: Sequence[float] = (0.1, 0.2),
        iou_threshold: float = 0.5,
        neg_pos_ratio: int = 3,
    ) -> None:
        super().__init__()
        self.register_buffer("priors", priors, persistent=False)
        self.variances = tuple(variances)
        self.iou_threshold = iou_threshold
        self.neg_pos_ratio = neg_pos_ratio

    def targets(
        self, gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor], priors: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Regression targets (B, P, 4) and labels (B, P) for a batch of ground truths (``priors``: those of the
        batch's input size, default the ones given at construction)."""
        priors = self.priors if priors is None else priors
        matched = [match(b, lbl, priors, self.iou_threshold) for b, lbl in zip(gt_boxes, gt_labels)]
        boxes = torch.stack([m[0] for m in matched])
        labels = torch.stack([m[1] for m in matched])
        return encode(boxes, priors, self.variances), labels

    def forward(
        self,
        loc: Tensor,
        conf: Tensor,
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        priors: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Returns (localisation loss, confidence loss), each normalised by the number of positives. ``priors``:
        the default boxes of the batch's input size (a detector's :meth:`SingleShotDetector.priors_for`); default
        the ones given at construction."""
        priors = self.priors if priors is None else priors
        check_prediction_count(loc, priors)
        with torch.no_grad():
            loc_targets, labels = self.targets(gt_boxes, gt_labels, priors)
        positive = labels > 0
        num_pos = positive.sum()
        loc_loss = F.smooth_l1_loss(loc[positive], loc_targets[positive], reduction="sum")
        ce = F.cross_entropy(conf.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
        with torch.no_grad():  # hard negative mining on the background loss of the negatives
            mining = ce.clone()
            mining[positive] = 0
            rank = mining.argsort(1, descending=True).argsort(1)
            num_neg = (self.neg_pos_ratio * positive.sum(1, keepdim=True)).clamp(max=labels.shape[1] - 1)
            negative = rank < num_neg
        conf_loss = ce[positive | negative].sum()
        denominator = num_pos.clamp_min(1).to(loc.dtype)
        return loc_loss / denominator, conf_loss / denominator


def check_prediction_count(loc: Tensor, priors: Tensor) -> None:
    """One prediction per default box, or a ``ValueError`` saying so (predictions of one input size scored against
    the boxes of another)."""
    if loc.shape[-2] != priors.shape[0]:
        raise ValueError(
            f"{loc.shape[-2]} predictions for {priors.shape[0]} default boxes: use the boxes of the input's size "
            "(detector.priors_for(height, width), or its output with set_output('loc_conf_priors'))"
        )


def postprocess(
    loc: Tensor,
    conf: Tensor,
    priors: Tensor,
    variances: Sequence[float] = (0.1, 0.2),
    score_threshold: float = 0.01,
    nms_threshold: float = 0.45,
    top_k: int = 400,
    keep_top_k: int = 200,
) -> list[dict[str, Tensor]]:
    """Detections per image: softmax scores, per-class NMS (``torchvision.ops.batched_nms``) over the ``top_k``
    highest-scoring boxes of each class above ``score_threshold``, then the ``keep_top_k`` best overall
    (SSD/DSOD: 0.01, 0.45, 400, 200). Labels are 1-based (0 is background and never returned)."""
    check_prediction_count(loc, priors)
    scores = F.softmax(conf, dim=-1)
    boxes = decode(loc, priors, variances).clamp(0, 1)
    results = []
    num_classes = conf.shape[-1]
    for image_boxes, image_scores in zip(boxes, scores):
        cls_scores = image_scores[:, 1:]  # (P, C-1)
        candidates = cls_scores > score_threshold
        # top_k per class, vectorised: rank scores within each class column
        ranked = cls_scores.masked_fill(~candidates, -1).argsort(0, descending=True).argsort(0)
        keep_mask = candidates & (ranked < top_k)
        prior_idx, class_idx = keep_mask.nonzero(as_tuple=True)
        sel_boxes, sel_scores = image_boxes[prior_idx], cls_scores[prior_idx, class_idx]
        keep = batched_nms(sel_boxes, sel_scores, class_idx, nms_threshold)[:keep_top_k]
        results.append(
            {"boxes": sel_boxes[keep], "scores": sel_scores[keep], "labels": class_idx[keep] + 1}
            if num_classes > 1
            else {"boxes": image_boxes[:0], "scores": image_scores[:0, 0], "labels": prior_idx[:0]}
        )
    return results


def voc_detector_cfg(image_size: int, paper_ids: str) -> dict[str, Any]:
    """timm-style default config of a detector as its paper trains it on Pascal VOC: 20 classes + background,
    square ``image_size`` inputs, ImageNet normalisation, no weights; the per-level class layers (``head.conf``) are
    replaced when a checkpoint has other classes (fine-tuning) and refused by the evaluation and prediction tools."""
    return task_cfg(21, (3, image_size, image_size), "head.conf", paper_ids)


class SingleShotDetector(InputSizeCheck, nn.Module):
    """A single-shot detector: a registered backbone's feature levels, a head over them, and default boxes.

    What DSOD and Pelee share. A subclass names its ``head_cls`` (built as ``head_cls(*level_channels, num_classes,
    boxes=..., **head_kwargs)``; its ``forward(*maps)`` returns ``(loc, conf, source sizes)``) and its
    ``prior_presets``, the default boxes of its paper per data set (``'voc'``, ``'coco'``), which the detection task
    scales to the configured image size.

    Args:
        num_classes: classes including background (VOC: 21, COCO: 81).
        backbone: a registered backbone name.
        backbone_indices: the feature levels the head reads.
        backbone_kwargs: passed to ``create_model`` (``memory_efficient``, ``pretrained``...).
        priors: default-box settings; feature sizes and steps are taken from the backbone's actual maps at
            ``priors.image_size``.
        head_kwargs: passed to ``head_cls`` (``boxes`` defaults to the priors' boxes per cell).

    Any input of at least ``min_input_size`` px a side runs, square or not: the default boxes of an input size come
    from its actual prediction maps (:meth:`priors_for`, computed once per size and cached) and are exactly the
    preset's at ``priors.image_size`` (``self.priors``). ``forward`` returns ``(loc, conf)`` for the loss, or
    ``(loc, conf, priors)`` after ``set_output('loc_conf_priors')`` (what the detection task trains with);
    :meth:`detect` returns post-processed boxes per image.
    """

    prior_presets: ClassVar[dict[str, PriorConfig]] = {"voc": VOC_PRIORS, "coco": COCO_PRIORS}
    head_cls: ClassVar[type[nn.Module]]
    outputs: ClassVar[tuple[str, ...]] = ("loc_conf", "loc_conf_priors")

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str,
        backbone_indices: Sequence[int],
        backbone_kwargs: dict[str, Any] | None,
        priors: PriorConfig,
        head_kwargs: dict[str, Any] | None,
    ) -> None:
        super().__init__()
        checks.check_int("num_classes", num_classes, 2, "classes including background: VOC 21, COCO 81")
        checks.check_backbone_name("backbone", backbone)
        checks.check_ints("backbone_indices", backbone_indices, -100, 2, "the two feature levels the head reads", "map")
        kwargs = dict(checks.check_optional_dict("backbone_kwargs", backbone_kwargs))
        if isinstance(priors, str) and priors in NAMED_PRIORS:  # a name: what configs and JSON can hold
            priors = NAMED_PRIORS[priors]
        if not isinstance(priors, PriorConfig):
            raise TypeError(
                f"priors must be a PriorConfig (e.g. heads.ssd.VOC_PRIORS or dataclasses.replace(VOC_PRIORS, "
                f"image_size=...)) or one of the names {sorted(NAMED_PRIORS)}, got {priors!r} ({type(priors).__name__})"
            )
        checks.check_optional_dict("head_kwargs", head_kwargs)
        self.backbone = create_model(backbone, features_only=True, out_indices=tuple(backbone_indices), **kwargs)
        inner = getattr(self.backbone, "model", self.backbone)  # timm's features_only wrapper keeps it as .model
        self.in_chans = getattr(inner, "in_chans", 3)
        self.num_classes = num_classes
        head_kwargs = dict(head_kwargs or {})
        head_kwargs.setdefault("boxes", boxes_per_cell(priors))
        self.head = self.head_cls(*self.backbone.feature_info.channels(), num_classes, **head_kwargs)
        self.prior_config = self._fit_priors(priors)
        self.register_buffer("priors", make_priors(self.prior_config), persistent=False)
        self._prior_cache: dict[tuple[int, int], Tensor] = {}  # (H, W) -> default boxes of that input size
        self.output = "loc_conf"
        backbone_min = getattr(inner, "min_input_size", 1)
        self.min_input_size = self._smallest_input(backbone_min, priors.image_size)
        self.input_size_reason = (
            f"the minimum of its backbone {backbone}"
            if self.min_input_size == backbone_min
            else f"the smallest at which all {len(self.prior_config.feature_sizes)} prediction maps exist"
        )

    # ------------------------------------------------------------------------------------------ geometry
    def _meta_call(self, module: nn.Module, *args: Tensor) -> Any:
        # The module's own forward on meta tensors: shapes without arithmetic, and without touching its weights.
        tensors = itertools.chain(module.named_parameters(), module.named_buffers())
        return torch.func.functional_call(module, {n: torch.empty_like(t, device="meta") for n, t in tensors}, args)

    @torch.no_grad()
    def source_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Each prediction map's (height, width) for an input of ``height`` x ``width`` px, from a forward of the
        backbone and head on the meta device (no computation); the head or backbone raises if the input is too
        small for them."""
        modes = [(m, m.training) for m in self.modules()]  # restored module by module (frozen BN stays frozen)
        self.eval()
        try:
            x = torch.empty(1, self.in_chans, height, width, device="meta")
            sizes = self._meta_call(self.head, *self._meta_call(self.backbone, x))[2]
        finally:
            for module, training in modes:
                module.training = training
        return [(int(h), int(w)) for h, w in sizes]

    def _fit_priors(self, config: PriorConfig) -> PriorConfig:
        """Feature sizes (and, where they differ from the preset's, steps) of the sources at the configured image
        size."""
        try:
            sizes = [h for h, _ in self.source_sizes(config.image_size, config.image_size)]
        except (ValueError, RuntimeError) as err:  # the head names the map that is too small; say which images fit
            strides = self.backbone.feature_info.reduction()
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(
                f"{config.image_size}x{config.image_size} inputs (data.image_size): {reason} (the head reads "
                f"backbone levels of strides {strides})"
            ) from None
        if len(sizes) != len(config.feature_sizes):
            raise ValueError(
                f"the head predicts from {len(sizes)} sources, the default boxes describe {len(config.feature_sizes)}"
            )
        if tuple(sizes) == tuple(config.feature_sizes):
            return config
        steps = tuple(config.image_size / s for s in sizes)
        return dataclasses.replace(config, feature_sizes=tuple(sizes), steps=steps)

    def _smallest_input(self, start: int, fits_at: int) -> int:
        """The smallest side from ``start`` (the backbone's minimum) on at which backbone and head run, by bisection
        up to the configured size, which fits (map sizes grow with the input)."""

        def fits(size: int) -> bool:
            try:
                self.source_sizes(size, size)
            except (ValueError, RuntimeError):
                return False
            return True

        if start >= fits_at or fits(start):
            return min(start, fits_at)
        low, high = start, fits_at  # low refused, high fits
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if fits(mid) else (mid, high)
        return high

    def priors_for(self, height: int, width: int, source_sizes: Sequence[tuple[int, int]] | None = None) -> Tensor:
        """Default boxes (P, 4) ``(cx, cy, w, h)`` of an input of ``height`` x ``width`` px, with the device and
        dtype of ``self.priors``: ``self.priors`` at the configured size, elsewhere built from the actual map sizes
        (:func:`make_priors`) once per size and cached. ``source_sizes`` (the head's, when a forward has them) saves
        a meta forward."""
        key = (int(height), int(width))
        if key == (self.prior_config.image_size, self.prior_config.image_size):
            return self.priors
        cached = self._prior_cache.get(key)
        if cached is None or (cached.device, cached.dtype) != (self.priors.device, self.priors.dtype):
            sizes = source_sizes if source_sizes is not None else self.source_sizes(*key)
            cached = make_priors(self.prior_config, key, sizes).to(self.priors)  # the model's device and dtype
            self._prior_cache[key] = cached
        return cached

    def set_output(self, output: str) -> None:
        """``'loc_conf'`` (default): ``forward`` returns ``(loc, conf)``; ``'loc_conf_priors'``: also the default
        boxes of the input's size, which a loss needs when input sizes vary."""
        if output not in self.outputs:
            raise ValueError(f"unknown output {output!r}; use one of {self.outputs}")
        self.output = output

    # ------------------------------------------------------------------------------------------ forward
    def _predict(self, x: Tensor) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
        self._check_input(x)
        return self.head(*self.backbone(x))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        if torch.jit.is_scripting():
            return self._scripted_forward(x)
        return self._eager_forward(x)

    def _scripted_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(loc, conf)``: a scripted detector has no default-box cache (Python), so no ``'loc_conf_priors'``."""
        if self.output != "loc_conf":
            raise RuntimeError(
                f"a scripted detector returns (loc, conf) only, not output='{self.output}'; take the default boxes "
                f"from model.priors_for(height, width), or use torch.export or torch.jit.trace"
            )
        self._check_input(x)
        maps = self.backbone(x)
        loc, conf, _ = self.head(maps[0], maps[1])
        return loc, conf

    @torch.jit.unused
    def _eager_forward(self, x: Tensor) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        loc, conf, sizes = self._predict(x)
        if self.output == "loc_conf_priors":
            if torch.compiler.is_exporting():  # symbolic sizes: the boxes as part of the graph, no cache
                return loc, conf, make_priors(self.prior_config, x.shape[-2:], sizes).to(loc)
            return loc, conf, self.priors_for(x.shape[-2], x.shape[-1], sizes)
        return loc, conf

    @torch.no_grad()
    def detect(self, x: Tensor, **postprocess_kwargs: Any) -> list[dict[str, Tensor]]:
        """Boxes (normalised x1, y1, x2, y2), scores and 1-based labels per image (see :func:`postprocess`)."""
        loc, conf, sizes = self._predict(x)
        priors = self.priors_for(x.shape[-2], x.shape[-1], sizes)
        return postprocess(loc, conf, priors, self.prior_config.variances, **postprocess_kwargs)
