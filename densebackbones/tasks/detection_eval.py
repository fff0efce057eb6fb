"""Detection metrics that equal the official tools: COCO's 12 numbers from ``pycocotools.cocoeval.COCOeval``, and
Pascal VOC's AP as the VOC devkit computes it (VOC2007 11-point and VOC2010+ area under the curve).

COCO data: :func:`coco_evaluate_annotations` runs ``COCOeval`` against the annotation file's own ``COCO`` object,
so that crowd regions, the annotated ``area`` (small/medium/large), images without annotations and the file's
category ids are exactly what pycocotools sees when it is run on the json; the model's contiguous labels 1..C are
mapped back to the file's category ids and its boxes (absolute x1 y1 x2 y2 in the original image's pixels) to
COCO's x y w h.

Other data (VOC): :func:`coco_evaluate` builds the COCO ground truth in memory from per-image dicts
``dict(image_id, size=(H, W), boxes (N, 4) absolute x1 y1 x2 y2, labels (N,) 1-based)`` with optional ``iscrowd``
(N,) and ``area`` (N,) (default: the box area) and ``difficult`` (N,) (VOC's difficult objects are passed as crowd
regions, so that detections on them count neither way). Predictions per image: ``dict(image_id, boxes, scores,
labels)`` in the same units.

:func:`voc_map` follows the devkit (``VOCevaldet``, ``VOCap``): difficult objects are neither true nor false
positives and leave the recall denominator. docs/evaluation.md describes every reported number and the tests that
guard it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "COCO_KEYS",
    "coco_evaluate",
    "coco_evaluate_annotations",
    "coco_ground_truth",
    "voc07_map",
    "voc_map",
]

# The names of COCOeval.stats[0..11], in its order (percent in our reports).
COCO_KEYS = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)  # fmt: skip


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _unique_by_image(items: Sequence[dict]) -> list[dict]:
    """The first entry per ``image_id`` (an image evaluated twice must not count twice)."""
    seen, out = set(), []
    for item in items:
        image_id = int(item["image_id"])
        if image_id not in seen:
            seen.add(image_id)
            out.append(item)
    return out


def _results(predictions: Sequence[dict], label_to_cat) -> list[dict]:
    """Predictions as COCO results: x y w h in the original pixels, the file's category ids."""
    out = []
    for p in _unique_by_image(predictions):
        boxes = _as_numpy(p["boxes"]).astype(np.float64).reshape(-1, 4)
        for box, score, label in zip(boxes, _as_numpy(p["scores"]), _as_numpy(p["labels"])):
            x1, y1, x2, y2 = (float(v) for v in box)
            out.append(
                dict(
                    image_id=int(p["image_id"]),
                    category_id=int(label_to_cat(int(label))),
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    score=float(score),
                )
            )
    return out


def _run_cocoeval(coco_gt, results: list[dict], image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """``COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")`` summarised: the 12 stats in percent.

    pycocotools' -1 ("no ground truth in this range", e.g. AP_large without large objects) is kept as -100: it is
    not a zero. Without any detection ``loadRes`` cannot run; an empty result set gives what COCOeval gives for
    it (0 where there is ground truth).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and tables
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            coco_dt = COCO()
            coco_dt.dataset = dict(images=list(coco_gt.dataset.get("images", [])), annotations=[])
            coco_dt.dataset["categories"] = list(coco_gt.dataset.get("categories", []))
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted({int(i) for i in image_ids})
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {k: 100.0 * float(v) for k, v in zip(COCO_KEYS, evaluator.stats)}


def coco_evaluate_annotations(
    coco_gt,
    predictions: Sequence[dict],
    cat_ids: Sequence[int] | None = None,
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """The 12 COCO metrics (percent) of ``predictions`` against an annotation file's ``pycocotools.coco.COCO``.

    Args:
        coco_gt: the annotation file's ``COCO`` object (e.g. ``COCODetection.coco``).
        predictions: per image ``dict(image_id, boxes (x1 y1 x2 y2, original pixels), scores, labels 1..C)``.
        cat_ids: the file's category id of each label (label ``l`` is ``cat_ids[l - 1]``); default: the order of
            the file's ``categories``, as :class:`~densebackbones.data.detection.COCODetection` numbers them.
        image_ids: the images evaluated (default: every image of the file, as pycocotools does).

    Equals ``COCOeval`` run on the json and the same detections, including crowd regions, the annotated areas,
    images without annotations and non-contiguous category ids.
    """
    if cat_ids is None:
        cat_ids = [c["id"] for c in coco_gt.dataset.get("categories", [])]
    cat_ids = list(cat_ids)

    def label_to_cat(label: int) -> int:
        if not 1 <= label <= len(cat_ids):
            raise ValueError(f"label {label} is outside 1..{len(cat_ids)} (the annotation file's categories)")
        return cat_ids[label - 1]

    return _run_cocoeval(coco_gt, _results(predictions, label_to_cat), image_ids)


def coco_ground_truth(coco_gt, image_ids: Sequence[int], cat_ids: Sequence[int] | None = None) -> list[dict]:
    """Per-image ground-truth dicts (absolute x1 y1 x2 y2, labels 1..C) straight from an annotation file, for
    :func:`voc_map`: crowd regions are marked ``difficult`` (detections on them count neither way)."""
    if cat_ids is None:
        cat_ids = [c["id"] for c in coco_gt.dataset.get("categories", [])]
    cat_to_label = {int(c): i + 1 for i, c in enumerate(cat_ids)}
    out = []
    for image_id in dict.fromkeys(int(i) for i in image_ids):
        anns = [a for a in coco_gt.imgToAnns.get(image_id, []) if int(a["category_id"]) in cat_to_label]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float64)
        info = coco_gt.imgs.get(image_id, {})
        out.append(
            dict(
                image_id=image_id,
                size=(info.get("height", 0), info.get("width", 0)),
                boxes=boxes.reshape(-1, 4),
                labels=np.array([cat_to_label[int(a["category_id"])] for a in anns], np.int64),
                difficult=np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
            )
        )
    return out


def coco_evaluate(
    ground_truth: Sequence[dict], predictions: Sequence[dict], class_names: Sequence[str]
) -> dict[str, float]:
    """The 12 COCO metrics (percent; see :data:`COCO_KEYS`) via ``pycocotools.COCOeval`` on a ground truth built
    in memory from per-image dicts: every image listed is evaluated (also those without objects), ``iscrowd`` or
    ``difficult`` objects are crowd regions, ``area`` (default: the box area) sorts objects into small/medium/large,
    labels 1..C are the category ids. Equals pycocotools run on a json written from the same annotations.
    """
    from pycocotools.coco import COCO

    images, annotations = [], []
    for gt in _unique_by_image(ground_truth):
        h, w = gt["size"]
        image_id = int(gt["image_id"])
        images.append(dict(id=image_id, height=int(h), width=int(w)))
        boxes = _as_numpy(gt["boxes"]).astype(np.float64).reshape(-1, 4)
        labels = _as_numpy(gt["labels"]).reshape(-1)
        n = len(labels)
        crowd = _as_numpy(gt.get("iscrowd", gt.get("difficult", np.zeros(n, bool)))).reshape(-1).astype(bool)
        area = gt.get("area")
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) if area is None else _as_numpy(area)
        for box, label, is_crowd, a in zip(boxes, labels, crowd, np.asarray(area, np.float64).reshape(-1)):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=int(label),
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    area=float(a),
                    iscrowd=int(is_crowd),
                )
            )
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(class_names)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dict(images=images, annotations=annotations, categories=categories)
        coco_gt.createIndex()
    return _run_cocoeval(coco_gt, _results(predictions, lambda label: label))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU (float64) of one box with (N, 4) boxes, x1 y1 x2 y2 in continuous coordinates (the devkit's +1 on
    1-based pixel indices is the same thing: VOCDetection moves xmin/ymin by -1); no overlap gives 0."""
    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(inter > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 11-point AP: the mean over t = 0, 0.1, ..., 1 of the best precision at recall >= t (0 if none).
    The thresholds are k / 10 (the devkit's ``0:0.1:1``; ``np.arange(0, 1.1, 0.1)`` would make 0.3 a hair larger
    than 3/10 and drop that point)."""
    ap = 0.0
    for k in range(11):
        reached = recall >= k / 10
        ap += (float(precision[reached].max()) if reached.any() else 0.0) / 11
    return ap


def _voc_area_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+ AP (devkit ``VOCap``): area under the precision envelope (precision made monotone from the right)
    at the recall steps."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def voc_map(
    ground_truth: Sequence[dict], predictions: Sequence[dict], num_classes: int, iou_threshold: float = 0.5
) -> dict[str, float]:
    """Pascal VOC detection AP per class and their means (percent), as the devkit computes them.

    ``mAP_voc07``/``AP_voc07_<label>``: VOC2007 11-point interpolated AP; ``mAP_voc``/``AP_voc_<label>``:
    VOC2010+ area under the interpolated precision-recall curve.

    Detections of a class are taken in descending score (stable: ties keep their input order, as MATLAB's
    ``sort``); each takes the ground truth of that class in its image with the highest IoU (difficult and already
    matched ones included); IoU >= ``iou_threshold`` on a difficult object: ignored (neither TP nor FP); on an
    unmatched object: TP; on a matched one, below the threshold, or in an image without objects of the class: FP.
    Difficult objects are not in the recall denominator. A class without non-difficult ground truth has no AP and
    is left out of the means (the devkit would divide by zero).
    """
    by_image = {int(gt["image_id"]): gt for gt in _unique_by_image(ground_truth)}
    unique_predictions = _unique_by_image(predictions)
    ap07, ap_area = {}, {}
    for label in range(1, num_classes + 1):
        gts, positives = {}, 0
        for image_id, gt in by_image.items():
            labels = _as_numpy(gt["labels"]).reshape(-1)
            mask = labels == label
            difficult = _as_numpy(gt.get("difficult", np.zeros(labels.size, bool))).reshape(-1).astype(bool)[mask]
            boxes = _as_numpy(gt["boxes"]).astype(np.float64).reshape(-1, 4)[mask]
            gts[image_id] = (boxes, difficult, np.zeros(len(boxes), dtype=bool))
            positives += int((~difficult).sum())
        if positives == 0:
            continue
        image_of, scores, det_boxes = [], [], []
        for p in unique_predictions:
            keep = _as_numpy(p["labels"]).reshape(-1) == label
            scores.append(_as_numpy(p["scores"]).astype(np.float64).reshape(-1)[keep])
            det_boxes.append(_as_numpy(p["boxes"]).astype(np.float64).reshape(-1, 4)[keep])
            image_of += [int(p["image_id"])] * int(keep.sum())
        scores = np.concatenate(scores) if scores else np.zeros(0)
        det_boxes = np.concatenate(det_boxes) if det_boxes else np.zeros((0, 4))
        order = np.argsort(-scores, kind="stable")
        tp, fp = np.zeros(len(order)), np.zeros(len(order))
        empty = (np.zeros((0, 4)), np.zeros(0, bool), np.zeros(0, bool))
        for d, index in enumerate(order):
            boxes, difficult, used = gts.get(image_of[index], empty)
            if len(boxes) == 0:
                fp[d] = 1
                continue
            iou = _iou(det_boxes[index], boxes)
            best = int(iou.argmax())
            if iou[best] < iou_threshold:
                fp[d] = 1
            elif difficult[best]:
                pass  # neither way
            elif not used[best]:
                used[best], tp[d] = True, 1
            else:
                fp[d] = 1
        ignored = (tp == 0) & (fp == 0)  # rows of ignored detections change nothing in either AP
        tp_cum, fp_cum = np.cumsum(tp)[~ignored], np.cumsum(fp)[~ignored]
        recall = tp_cum / positives
        precision = tp_cum / np.maximum(tp_cum + fp_cum, 1)
        ap07[label] = 100.0 * _voc07_ap(recall, precision)
        ap_area[label] = 100.0 * _voc_area_ap(recall, precision)
    out = {
        "mAP_voc07": float(np.mean(list(ap07.values()))) if ap07 else 0.0,
        "mAP_voc": float(np.mean(list(ap_area.values()))) if ap_area else 0.0,
    }
    out.update({f"AP_voc07_{label}": value for label, value in ap07.items()})
    out.update({f"AP_voc_{label}": value for label, value in ap_area.items()})
    return out


def voc07_map(
    ground_truth: Sequence[dict], predictions: Sequence[dict], num_classes: int, iou_threshold: float = 0.5
) -> dict[str, float]:
    """VOC2007 11-point AP per class and their mean (``mAP_voc07``, ``AP_voc07_<label>``); see :func:`voc_map`."""
    out = voc_map(ground_truth, predictions, num_classes, iou_threshold)
    return {k: v for k, v in out.items() if k.startswith(("mAP_voc07", "AP_voc07_"))}
