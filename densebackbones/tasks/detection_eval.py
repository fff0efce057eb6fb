"""Detection metrics: COCO mAP through pycocotools (for any data set, built in memory) and VOC07 11-point mAP.

Ground truth per image: ``dict(image_id, size=(H, W), boxes (N, 4) absolute x1 y1 x2 y2, labels (N,) 1-based,
difficult (N,) bool)``. Predictions per image: ``dict(image_id, boxes, scores, labels)`` in the same units.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = ["coco_evaluate", "voc07_map"]

_COCO_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def coco_evaluate(
    ground_truth: Sequence[dict], predictions: Sequence[dict], class_names: Sequence[str]
) -> dict[str, float]:
    """COCO AP, AP50, AP75 and AP for small/medium/large objects (percent) via ``pycocotools.COCOeval``.

    VOC's difficult objects are passed as crowd regions, so that detections on them count neither way; the VOC07
    metric (:func:`voc07_map`) follows the VOC protocol exactly.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations = [], []
    for gt in ground_truth:
        h, w = gt["size"]
        images.append(dict(id=int(gt["image_id"]), height=int(h), width=int(w)))
        difficult = _as_numpy(gt.get("difficult", np.zeros(len(gt["labels"]), dtype=bool)))
        for box, label, hard in zip(_as_numpy(gt["boxes"]), _as_numpy(gt["labels"]), difficult):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=int(gt["image_id"]),
                    category_id=int(label),
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    area=(x2 - x1) * (y2 - y1),
                    iscrowd=int(bool(hard)),
                )
            )
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(class_names)]
    results = [
        dict(
            image_id=int(p["image_id"]),
            category_id=int(label),
            bbox=[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            score=float(score),
        )
        for p in predictions
        for b, score, label in zip(_as_numpy(p["boxes"]), _as_numpy(p["scores"]), _as_numpy(p["labels"]))
    ]
    if not results:
        return dict.fromkeys(_COCO_KEYS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        coco_gt = COCO()
        coco_gt.dataset = dict(images=images, annotations=annotations, categories=categories)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # -1 marks "no ground truth in this size range"; report it as 0 with the rest in percent
    return {k: 100.0 * max(float(v), 0.0) for k, v in zip(_COCO_KEYS, evaluator.stats[:6])}


def voc07_map(
    ground_truth: Sequence[dict], predictions: Sequence[dict], num_classes: int, iou_threshold: float = 0.5
) -> dict[str, float]:
    """VOC2007 11-point interpolated AP per class and their mean (percent), difficult objects ignored.

    Detections of a class are taken in descending score; each matches the unmatched ground truth of highest IoU
    (>= ``iou_threshold``) in its image, else it is a false positive; a detection matching a difficult object
    counts neither way, and difficult objects are not in the recall denominator (VOC devkit).
    """
    by_image = {int(gt["image_id"]): gt for gt in ground_truth}
    per_class = {}
    for label in range(1, num_classes + 1):
        gts, positives = {}, 0
        for image_id, gt in by_image.items():
            mask = _as_numpy(gt["labels"]) == label
            difficult = _as_numpy(gt.get("difficult", np.zeros(mask.size, dtype=bool)))[mask]
            gts[image_id] = (
                torch.as_tensor(_as_numpy(gt["boxes"])[mask], dtype=torch.float32),
                difficult,
                np.zeros(int(mask.sum()), dtype=bool),
            )
            positives += int((~difficult).sum())
        dets = [
            (float(score), int(p["image_id"]), torch.as_tensor(box, dtype=torch.float32))
            for p in predictions
            for box, score, lbl in zip(_as_numpy(p["boxes"]), _as_numpy(p["scores"]), _as_numpy(p["labels"]))
            if int(lbl) == label
        ]
        if positives == 0:
            continue  # the class has no (non-difficult) ground truth: no AP
        dets.sort(key=lambda d: -d[0])
        tp, fp = [], []
        for _, image_id, box in dets:
            boxes, difficult, used = gts.get(image_id, (torch.zeros(0, 4), np.zeros(0, bool), np.zeros(0, bool)))
            if len(boxes) == 0:
                tp.append(0), fp.append(1)
                continue
            iou = box_iou(box[None], boxes)[0].numpy()
            best = int(iou.argmax())
            if iou[best] < iou_threshold:
                tp.append(0), fp.append(1)
            elif difficult[best]:
                continue
            elif not used[best]:
                used[best] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
        recall = tp_cum / positives
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            ap += (precision[recall >= t].max() if (recall >= t).any() else 0.0) / 11.0
        per_class[label] = 100.0 * ap
    out = {"mAP_voc07": float(np.mean(list(per_class.values()))) if per_class else 0.0}
    out.update({f"AP_voc07_{label}": value for label, value in per_class.items()})
    return out
