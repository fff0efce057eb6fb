"""Evaluation equals the official tools (issue 24, kind B; docs/evaluation.md).

COCO: every one of the 12 numbers equals ``pycocotools.cocoeval.COCOeval`` run on the annotation json itself (crowd
regions, annotated areas, images without annotations, non-contiguous category ids), hand-made files and a
property test. VOC: the devkit's AP (VOC2007 11-point, VOC2010+ area) with difficult objects, against a plain
float64 transcription of ``VOCevaldet``/``VOCap`` written here. Segmentation: the ignore label counts nowhere and
no loss or metric is NaN. Detection: a batch without boxes has a finite loss.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from densebackbones.tasks.detection_eval import (
    COCO_KEYS,
    coco_evaluate,
    coco_evaluate_annotations,
    coco_ground_truth,
    voc07_map,
    voc_map,
)

QUIET = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------------------- helpers
def _coco(path: Path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _write(path: Path, images, annotations, categories) -> Path:
    for i, a in enumerate(annotations):
        a.setdefault("id", i + 1)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2] * a["bbox"][3]))
    path.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return path


def _official(path: Path, results: list[dict]) -> dict[str, float]:
    """pycocotools on the json file and a results json file, as its README runs it (percent)."""
    from pycocotools.cocoeval import COCOeval

    results_file = path.with_name(path.stem + "_results.json")
    results_file.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = _coco(path)
        evaluator = COCOeval(gt, gt.loadRes(str(results_file)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {k: 100.0 * float(v) for k, v in zip(COCO_KEYS, evaluator.stats)}


def _ours(path: Path, results: list[dict], cat_ids=None) -> dict[str, float]:
    """The same results as the detector reports them: x1 y1 x2 y2, labels 1..C in the file's category order."""
    coco = _coco(path)
    cat_ids = cat_ids or [c["id"] for c in coco.dataset["categories"]]
    label = {c: i + 1 for i, c in enumerate(cat_ids)}
    per_image: dict[int, dict] = {}
    for r in results:
        p = per_image.setdefault(r["image_id"], dict(image_id=r["image_id"], boxes=[], scores=[], labels=[]))
        x, y, w, h = r["bbox"]
        p["boxes"].append([x, y, x + w, y + h])
        p["scores"].append(r["score"])
        p["labels"].append(label[r["category_id"]])
    predictions = [dict(p, boxes=np.array(p["boxes"], np.float64).reshape(-1, 4)) for p in per_image.values()]
    return coco_evaluate_annotations(coco, predictions, cat_ids)


def _assert_equal(ours: dict[str, float], official: dict[str, float]) -> None:
    assert set(COCO_KEYS) <= set(ours)
    for key in COCO_KEYS:
        assert math.isfinite(ours[key])
        assert ours[key] == pytest.approx(official[key], abs=1e-7), key  # 1e-9 of the tool's fraction


# ------------------------------------------------------------------------------------------- COCO, hand-made files
IMAGES2 = [dict(id=1, width=100, height=100, file_name="a.png"), dict(id=2, width=100, height=100, file_name="b.png")]


def test_crowd_region_is_ignored_not_a_false_positive(tmp_path):
    # image 2 holds only a crowd region; a detection on it must count neither way (pycocotools: AP 100)
    path = _write(
        tmp_path / "a.json",
        IMAGES2,
        [
            dict(image_id=1, category_id=1, bbox=[10, 10, 40, 40]),
            dict(image_id=2, category_id=1, bbox=[0, 0, 60, 60], iscrowd=1),
        ],
        [dict(id=1, name="a")],
    )
    results = [
        dict(image_id=1, category_id=1, bbox=[10, 10, 40, 40], score=0.5),
        dict(image_id=2, category_id=1, bbox=[5, 5, 50, 50], score=0.9),
    ]
    official = _official(path, results)
    assert official["AP"] == pytest.approx(100)
    _assert_equal(_ours(path, results), official)


def test_annotated_area_sorts_objects_by_size(tmp_path):
    # box areas 400 (small) and 1600 (medium); the annotations say 2000 and 500: the file's areas decide
    path = _write(
        tmp_path / "a.json",
        IMAGES2,
        [
            dict(image_id=1, category_id=1, bbox=[0, 0, 20, 20], area=2000.0),
            dict(image_id=2, category_id=1, bbox=[10, 10, 40, 40], area=500.0),
        ],
        [dict(id=1, name="a")],
    )
    results = [dict(image_id=2, category_id=1, bbox=[10, 10, 40, 40], score=0.9)]
    official = _official(path, results)
    assert official["AP_small"] == pytest.approx(100) and official["AP_medium"] == pytest.approx(0)
    _assert_equal(_ours(path, results), official)


def test_images_without_annotations_and_noncontiguous_category_ids(tmp_path):
    images = [dict(id=i, width=120, height=90, file_name=f"{i}.png") for i in (3, 7, 11, 12)]
    categories = [dict(id=90, name="z"), dict(id=1, name="a"), dict(id=5, name="e")]  # file order != id order
    annotations = [
        dict(image_id=3, category_id=1, bbox=[5, 5, 30, 30]),
        dict(image_id=3, category_id=90, bbox=[50, 10, 60, 70]),
        dict(image_id=7, category_id=5, bbox=[0, 0, 119, 89]),
        dict(image_id=7, category_id=90, bbox=[10, 10, 5, 5], iscrowd=1),
        dict(image_id=11, category_id=5, bbox=[20, 20, 10, 12], area=90.0),
    ]  # image 12 has no annotation
    path = _write(tmp_path / "a.json", images, annotations, categories)
    results = [
        dict(image_id=3, category_id=1, bbox=[6, 5, 30, 30], score=0.8),
        dict(image_id=3, category_id=90, bbox=[50, 10, 60, 70], score=0.7),
        dict(image_id=3, category_id=5, bbox=[50, 10, 60, 70], score=0.6),  # wrong class
        dict(image_id=7, category_id=5, bbox=[2, 1, 110, 85], score=0.95),
        dict(image_id=7, category_id=90, bbox=[10, 10, 6, 5], score=0.99),  # on the crowd region
        dict(image_id=12, category_id=1, bbox=[0, 0, 30, 30], score=0.85),  # on an empty image: FP
        dict(image_id=11, category_id=5, bbox=[21, 20, 10, 12], score=0.3),
    ]
    _assert_equal(_ours(path, results), _official(path, results))
    # ids given explicitly in another order map labels accordingly
    reordered = [1, 5, 90]
    _assert_equal(_ours(path, results, cat_ids=reordered), _official(path, results))


def test_no_detections_gives_zero_where_defined_and_minus_100_where_undefined(tmp_path):
    path = _write(tmp_path / "a.json", IMAGES2, [dict(image_id=1, category_id=1, bbox=[0, 0, 20, 20])],
                  [dict(id=1, name="a")])  # fmt: skip
    out = coco_evaluate_annotations(_coco(path), [])
    # pycocotools cannot load an empty result list; COCOeval on an empty result set gives precision 0 for the
    # small objects there are and -1 (here -100) for the size ranges without ground truth
    assert out["AP"] == out["AP_small"] == out["AR100"] == 0.0
    assert out["AP_medium"] == out["AP_large"] == out["AR_large"] == -100.0


def test_in_memory_ground_truth_carries_crowd_area_and_empty_images(tmp_path):
    """coco_evaluate (VOC and other data without a json) equals pycocotools on a json written from the same
    annotations: crowd (or difficult) regions, annotated areas, images without objects."""
    gt = [
        dict(image_id=1, size=(100, 100), boxes=np.array([[10, 10, 50, 50], [60, 60, 90, 95]]),
             labels=np.array([1, 2]), iscrowd=np.array([0, 1]), area=np.array([500.0, 1200.0])),
        dict(image_id=2, size=(100, 100), boxes=np.zeros((0, 4)), labels=np.zeros(0, np.int64)),
        dict(image_id=3, size=(80, 60), boxes=np.array([[0, 0, 20, 30]]), labels=np.array([2]),
             difficult=np.array([True])),
    ]  # fmt: skip
    predictions = [
        dict(image_id=1, boxes=np.array([[10, 10, 50, 50], [61, 60, 90, 95]]), scores=[0.9, 0.8], labels=[1, 2]),
        dict(image_id=2, boxes=np.array([[0, 0, 10, 10]]), scores=[0.7], labels=[1]),
        dict(image_id=3, boxes=np.array([[0, 0, 20, 30]]), scores=[0.6], labels=[2]),
    ]
    annotations = []
    for g in gt:
        n = len(g["labels"])
        crowd = g.get("iscrowd", g.get("difficult", np.zeros(n)))
        for k, (box, label) in enumerate(zip(g["boxes"], g["labels"])):
            x1, y1, x2, y2 = box.tolist()
            ann = dict(image_id=g["image_id"], category_id=int(label), bbox=[x1, y1, x2 - x1, y2 - y1])
            ann["iscrowd"] = int(crowd[k])
            if "area" in g:
                ann["area"] = float(g["area"][k])
            annotations.append(ann)
    images = [dict(id=g["image_id"], height=g["size"][0], width=g["size"][1]) for g in gt]
    path = _write(tmp_path / "a.json", images, annotations, [dict(id=1, name="a"), dict(id=2, name="b")])
    results = [
        dict(image_id=p["image_id"], category_id=int(lbl), bbox=[b[0], b[1], b[2] - b[0], b[3] - b[1]], score=s)
        for p in predictions
        for b, s, lbl in zip(p["boxes"].tolist(), p["scores"], p["labels"])
    ]
    _assert_equal(coco_evaluate(gt, predictions, ["a", "b"]), _official(path, results))


# ------------------------------------------------------------------------------------------ COCO, property test
@st.composite
def coco_cases(draw):
    """A small annotation file (crowd regions, areas that are not the box area, empty images, category ids out
    of order with gaps) and detections on it (at least one)."""
    cat_ids = draw(st.lists(st.sampled_from([1, 2, 5, 17, 90]), min_size=1, max_size=3, unique=True))
    num_images = draw(st.integers(1, 4))
    images = [dict(id=10 + 3 * i, width=64, height=48) for i in range(num_images)]
    coord = st.integers(0, 40)
    size = st.integers(1, 40)
    annotations, results = [], []
    for image in images:
        for _ in range(draw(st.integers(0, 3))):
            x, y, w, h = draw(coord), draw(coord), draw(size), draw(size)
            area = draw(st.one_of(st.none(), st.sampled_from([10.0, 500.0, 1100.0, 9300.0])))
            annotations.append(
                dict(
                    image_id=image["id"],
                    category_id=draw(st.sampled_from(cat_ids)),
                    bbox=[x, y, w, h],
                    iscrowd=int(draw(st.integers(0, 4)) == 0),
                    area=float(w * h) if area is None else area,
                )
            )
            if draw(st.booleans()):  # a detection near this object
                dx, dy = draw(st.integers(-4, 4)), draw(st.integers(-4, 4))
                results.append(dict(image_id=image["id"], category_id=annotations[-1]["category_id"],
                                    bbox=[x + dx, y + dy, w, h], score=draw(st.integers(1, 9)) / 10))  # fmt: skip
        for _ in range(draw(st.integers(0, 2))):  # detections anywhere, any class
            results.append(dict(image_id=image["id"], category_id=draw(st.sampled_from(cat_ids)),
                                bbox=[draw(coord), draw(coord), draw(size), draw(size)],
                                score=draw(st.integers(1, 9)) / 10))  # fmt: skip
    if not results:
        results.append(dict(image_id=images[0]["id"], category_id=cat_ids[0], bbox=[1, 1, 10, 10], score=0.5))
    return images, annotations, [dict(id=c, name=str(c)) for c in cat_ids], results


@settings(max_examples=40, **QUIET)
@given(case=coco_cases())
def test_property_every_coco_metric_equals_pycocotools_on_the_json(tmp_path_factory, case):
    images, annotations, categories, results = case
    path = _write(tmp_path_factory.mktemp("coco") / "a.json", images, annotations, categories)
    _assert_equal(_ours(path, results), _official(path, results))


# ---------------------------------------------------------------------------------- the task's metric, DDP parts
def _metric(coco=None, cat_ids=None):
    from densebackbones.tasks.detection import DetectionMetric

    return DetectionMetric(torch.zeros(1, 4), (0.1, 0.2), ("a", "b", "c"), coco_gt=coco, cat_ids=cat_ids)


def _as_predictions(results, cat_ids):
    label = {c: i + 1 for i, c in enumerate(cat_ids)}
    out = {}
    for r in results:
        x, y, w, h = r["bbox"]
        p = out.setdefault(r["image_id"], dict(image_id=r["image_id"], boxes=[], scores=[], labels=[]))
        p["boxes"].append([x, y, x + w, y + h])
        p["scores"].append(r["score"])
        p["labels"].append(label[r["category_id"]])
    return [dict(image_id=i, **{k: torch.tensor(v) for k, v in p.items() if k != "image_id"}) for i, p in out.items()]


def test_detection_metric_scores_against_the_annotation_file_across_processes(tmp_path, monkeypatch):
    """DetectionMetric with the file's COCO: the two halves of the split evaluated on two "processes" and
    gathered give pycocotools' numbers on the json; images without detections still count."""
    import densebackbones.tasks.detection as detection

    images = [dict(id=i, width=100, height=80) for i in (4, 8, 15, 16)]
    cats = [dict(id=90, name="a"), dict(id=1, name="b"), dict(id=5, name="c")]
    path = _write(
        tmp_path / "a.json",
        images,
        [
            dict(image_id=4, category_id=90, bbox=[10, 10, 30, 30]),
            dict(image_id=4, category_id=1, bbox=[50, 20, 40, 40], iscrowd=1),
            dict(image_id=8, category_id=5, bbox=[0, 0, 50, 60], area=900.0),
            dict(image_id=15, category_id=1, bbox=[20, 20, 20, 20]),
        ],
        cats,
    )
    results = [
        dict(image_id=4, category_id=90, bbox=[11, 10, 30, 30], score=0.9),
        dict(image_id=4, category_id=1, bbox=[55, 25, 20, 20], score=0.8),
        dict(image_id=8, category_id=5, bbox=[0, 0, 50, 60], score=0.7),
        dict(image_id=16, category_id=1, bbox=[0, 0, 10, 10], score=0.6),
    ]
    coco, cat_ids = _coco(path), [90, 1, 5]
    nothing = dict(image_id=15, boxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long))
    predictions = _as_predictions(results, cat_ids) + [nothing]
    ranks = [_metric(coco, cat_ids), _metric(coco, cat_ids)]
    for i, p in enumerate(predictions):
        ranks[i % 2].predictions.append(p)
        ranks[i % 2].count += 1
    parts = [(m.predictions, m.ground_truth, m.loss_sum, m.count) for m in ranks]
    monkeypatch.setattr(detection, "all_gather_objects", lambda obj: parts)
    out = ranks[0].compute()
    _assert_equal(out, _official(path, results))
    voc = voc_map(coco_ground_truth(coco, [4, 8, 15, 16], cat_ids), predictions, 3)
    assert out["mAP_voc07"] == voc["mAP_voc07"] and out["mAP_voc"] == voc["mAP_voc"]
    assert {"mAP_voc07", "mAP_voc", "loss"} <= set(out) and all(math.isfinite(v) for v in out.values())


def test_detection_metric_counts_images_it_never_saw_as_pycocotools_does(tmp_path):
    path = _write(
        tmp_path / "a.json",
        IMAGES2,
        [dict(image_id=1, category_id=1, bbox=[10, 10, 40, 40]), dict(image_id=2, category_id=1, bbox=[0, 0, 30, 30])],
        [dict(id=1, name="a")],
    )
    results = [dict(image_id=1, category_id=1, bbox=[10, 10, 40, 40], score=0.9)]  # image 2 not evaluated
    metric = _metric(_coco(path), [1])
    metric.predictions = _as_predictions(results, [1])
    official = _official(path, results)
    assert official["AP"] == pytest.approx(50.0, abs=1.0)  # the object of image 2 is missed
    _assert_equal(metric.compute(), official)


def test_detection_task_metric_uses_the_validation_annotation_file(tmp_path):
    from types import SimpleNamespace

    from densebackbones.tasks.detection import DET_DATA, DetectionTask

    model = SimpleNamespace(priors=torch.zeros(1, 4), prior_config=SimpleNamespace(variances=(0.1, 0.2)))
    cfg = {"data": dict(DET_DATA, dataset="shapes", root=str(tmp_path), shapes_train=2, shapes_val=2, image_size=64)}
    metric = DetectionTask().metric(cfg, model)
    assert metric.coco_gt is not None and metric.cat_ids == [1, 2]
    assert sorted(metric.coco_gt.imgs) == [1, 2]


# ---------------------------------------------------------------------------------------------------------- VOC
def _devkit(ground_truth, predictions, num_classes, use_07):
    """VOCevaldet + VOCap (VOC2010+) / the 11-point loop (VOC2007), transcribed in float64 without shortcuts."""
    aps = []
    for c in range(1, num_classes + 1):
        gt = {}
        npos = 0
        for g in ground_truth:
            m = np.asarray(g["labels"]) == c
            diff = np.asarray(g.get("difficult", np.zeros(m.size, bool)), bool)[m]
            gt[g["image_id"]] = dict(bb=np.asarray(g["boxes"], np.float64).reshape(-1, 4)[m], diff=diff,
                                     det=np.zeros(int(m.sum()), bool))  # fmt: skip
            npos += int((~diff).sum())
        ids, conf, bbs = [], [], []
        for p in predictions:
            for b, s, lbl in zip(np.asarray(p["boxes"], np.float64).reshape(-1, 4), p["scores"], p["labels"]):
                if int(lbl) == c:
                    ids.append(p["image_id"]), conf.append(float(s)), bbs.append(b)
        if npos == 0:
            continue
        order = sorted(range(len(conf)), key=lambda i: -conf[i])  # stable, as MATLAB's sort
        nd = len(order)
        tp, fp = np.zeros(nd), np.zeros(nd)
        for d in range(nd):
            i = order[d]
            bb = bbs[i]
            g = gt.get(ids[i])
            ovmax, jmax = -np.inf, -1
            for j in range(0 if g is None else len(g["bb"])):
                bbgt = g["bb"][j]
                bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
                iw, ih = bi[2] - bi[0], bi[3] - bi[1]
                if iw > 0 and ih > 0:
                    ua = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (bbgt[2] - bbgt[0]) * (bbgt[3] - bbgt[1]) - iw * ih
                    ov = iw * ih / ua
                    if ov > ovmax:
                        ovmax, jmax = ov, j
            if ovmax >= 0.5:
                if not g["diff"][jmax]:
                    if not g["det"][jmax]:
                        tp[d] = 1
                        g["det"][jmax] = True
                    else:
                        fp[d] = 1
            else:
                fp[d] = 1
        fp, tp = np.cumsum(fp), np.cumsum(tp)
        rec = tp / npos
        with np.errstate(invalid="ignore"):
            prec = tp / (fp + tp)  # NaN for leading ignored detections; MATLAB's max skips NaN
        if use_07:
            ap = 0.0
            for t in [k / 10 for k in range(11)]:
                p = prec[(rec >= t) & ~np.isnan(prec)]
                ap += (p.max() if p.size else 0.0) / 11
        else:
            mrec = np.concatenate([[0], rec, [1]])
            mpre = np.concatenate([[0], prec, [0]])
            for i in range(len(mpre) - 2, -1, -1):
                mpre[i] = np.fmax(mpre[i], mpre[i + 1])
            idx = [i for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]]
            ap = sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in idx)
        aps.append(100 * ap)
    return float(np.mean(aps)) if aps else 0.0


def test_voc_difficult_objects_are_neither_tp_nor_fp():
    gt = [
        dict(image_id=1, boxes=np.array([[0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 90, 90]]),
             labels=np.array([1, 1, 1]), difficult=np.array([False, True, False])),
        dict(image_id=2, boxes=np.zeros((0, 4)), labels=np.zeros(0, np.int64)),
    ]  # fmt: skip
    preds = [
        dict(image_id=1, boxes=np.array([[50, 50, 60, 60], [0, 0, 10, 10], [50, 51, 60, 60], [20, 20, 30, 30]]),
             scores=np.array([0.99, 0.9, 0.85, 0.8]), labels=np.array([1, 1, 1, 1])),
        dict(image_id=2, boxes=np.array([[0, 0, 5, 5]]), scores=np.array([0.95]), labels=np.array([1])),
    ]  # fmt: skip
    out = voc_map(gt, preds, 1)
    # order: difficult (ignored), FP on image 2, TP, difficult again (ignored), FP; recall 1/2 at most
    # 11-point: precision 1/2 at recall <= 0.5 -> 6 points of 0.5; area: 0.5 * 0.5
    assert out["mAP_voc07"] == pytest.approx(100 * 6 * 0.5 / 11) == _devkit(gt, preds, 1, True)
    assert out["mAP_voc"] == pytest.approx(25.0) == _devkit(gt, preds, 1, False)
    assert voc07_map(gt, preds, 1) == {"mAP_voc07": out["mAP_voc07"], "AP_voc07_1": out["AP_voc07_1"]}


def test_voc07_threshold_at_exactly_three_tenths():
    # recall reaches exactly 3/10; np.arange(0, 1.1, 0.1)[3] is 0.30000000000000004 and would lose that point
    gt = [dict(image_id=1, boxes=np.array([[10 * i, 0, 10 * i + 5, 5] for i in range(10)]), labels=np.ones(10, int))]
    preds = [dict(image_id=1, boxes=np.array([[10 * i, 0, 10 * i + 5, 5] for i in range(3)]), scores=[0.9, 0.8, 0.7],
                  labels=[1, 1, 1])]  # fmt: skip
    assert voc_map(gt, preds, 1)["mAP_voc07"] == pytest.approx(100 * 4 / 11)


@st.composite
def voc_cases(draw):
    num_classes = draw(st.integers(1, 3))
    coord, size = st.integers(0, 30), st.integers(2, 20)
    gt, preds = [], []
    for image_id in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 4))
        boxes = [[x, y, x + w, y + h] for x, y, w, h in
                 (draw(st.tuples(coord, coord, size, size)) for _ in range(n))]  # fmt: skip
        labels = [draw(st.integers(1, num_classes)) for _ in range(n)]
        difficult = np.array([draw(st.integers(0, 3)) == 0 for _ in range(n)], bool)
        boxes_array = np.array(boxes, np.float64).reshape(-1, 4)
        gt.append(dict(image_id=image_id, boxes=boxes_array, labels=np.array(labels, int), difficult=difficult))
        m = draw(st.integers(0, 5))
        det = [[b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy] for b, dx, dy in
               ((draw(st.sampled_from(boxes)) if boxes and draw(st.booleans()) else [5, 5, 15, 15],
                 draw(st.integers(-3, 3)), draw(st.integers(-3, 3))) for _ in range(m))]  # fmt: skip
        preds.append(dict(image_id=image_id, boxes=np.array(det, np.float64).reshape(-1, 4),
                          scores=[draw(st.integers(1, 5)) / 5 for _ in range(m)],
                          labels=[draw(st.integers(1, num_classes)) for _ in range(m)]))  # fmt: skip
    return gt, preds, num_classes


@settings(max_examples=80, **QUIET)
@given(case=voc_cases())
def test_property_voc_ap_equals_the_devkit(case):
    gt, preds, num_classes = case
    out = voc_map(gt, preds, num_classes)
    assert out["mAP_voc07"] == pytest.approx(_devkit(gt, preds, num_classes, True), abs=1e-9)
    assert out["mAP_voc"] == pytest.approx(_devkit(gt, preds, num_classes, False), abs=1e-9)


# ------------------------------------------------------------------------------------------------- segmentation
def test_segmentation_loss_of_an_all_ignored_batch_is_zero_with_zero_gradient():
    from densebackbones.tasks.segmentation import SegmentationLoss

    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    ignored = torch.full((2, 4, 5), 7)
    for weight in (None, torch.tensor([1.0, 2.0, 0.5])):
        loss = SegmentationLoss(weight=weight, ignore_index=7)(logits, ignored)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.equal(grad, torch.zeros_like(grad))
        # with labelled pixels it is nn.CrossEntropyLoss's weighted mean
        labels = torch.randint(0, 3, (2, 4, 5))
        labels[0, 0] = 7
        expected = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=7)(logits, labels)
        assert SegmentationLoss(weight=weight, ignore_index=7)(logits, labels).item() == pytest.approx(expected.item())


def test_segmentation_task_loss_is_the_ignore_aware_loss():
    from densebackbones.tasks.segmentation import SEG_DATA, SegmentationLoss, SegmentationTask

    loss = SegmentationTask().loss_fn({"data": dict(SEG_DATA, dataset="camvid")})
    assert isinstance(loss, SegmentationLoss) and loss.ignore_index == 11
    assert loss(torch.randn(1, 11, 3, 3), torch.full((1, 3, 3), 11)).item() == 0.0


def test_segmentation_metric_of_only_ignored_labels_has_no_nan():
    from densebackbones.tasks.metrics import SegmentationMetric

    metric = SegmentationMetric(11, ignore_index=11)  # CamVid: void is 11, just past the classes
    metric.update(torch.randn(2, 11, 4, 4), torch.full((2, 4, 4), 11), loss_sum=torch.tensor(0.0))
    out = metric.compute()
    assert all(math.isfinite(v) for v in out.values())
    assert out["loss"] == 0.0 and out["mIoU"] == -100.0 and out["global_acc"] == -100.0
    assert metric.confusion.sum() == 0  # void counted nowhere
    with pytest.raises(ValueError, match=r"outside 0..10"):
        metric.update(torch.zeros(1, 11, 1, 1), torch.tensor([[[12]]]))


@settings(max_examples=60, **QUIET)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_classes=st.integers(1, 5),
    ignore_at_end=st.booleans(),
    batches=st.integers(1, 3),
)
def test_property_segmentation_metric_is_mmseg_iou_without_the_ignore_label(seed, num_classes, ignore_at_end, batches):
    from densebackbones.tasks.metrics import SegmentationMetric

    rng = np.random.default_rng(seed)
    ignore = num_classes if ignore_at_end else 255
    metric = SegmentationMetric(num_classes, ignore_index=ignore)
    labels, preds = [], []
    for _ in range(batches):
        label = rng.integers(0, num_classes, (2, 3, 4))
        label[rng.random(label.shape) < rng.random()] = ignore  # sometimes everything
        pred = rng.integers(0, max(1, num_classes - int(rng.integers(0, 2))), (2, 3, 4))  # some classes never predicted
        metric.update(torch.as_tensor(pred), torch.as_tensor(label))
        labels.append(label), preds.append(pred)
    out = metric.compute()
    label, pred = np.concatenate(labels).ravel(), np.concatenate(preds).ravel()
    keep = label != ignore
    # mmseg's intersect_and_union / total_area_to_metrics: histograms over labelled pixels, nanmean over classes
    inter = np.bincount(label[keep][label[keep] == pred[keep]], minlength=num_classes).astype(float)
    area_label = np.bincount(label[keep], minlength=num_classes).astype(float)
    area_pred = np.bincount(pred[keep], minlength=num_classes).astype(float)
    union = area_label + area_pred - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    assert all(math.isfinite(v) for v in out.values())
    for c in range(num_classes):
        assert out[f"IoU_{c}"] == (pytest.approx(100 * iou[c]) if union[c] > 0 else -100.0)
    if keep.any():
        assert out["mIoU"] == pytest.approx(100 * np.nanmean(iou))
        assert out["global_acc"] == pytest.approx(100 * inter.sum() / keep.sum())
    else:
        assert out["mIoU"] == out["global_acc"] == -100.0


# -------------------------------------------------------------------------------------------------------- detection
def test_detection_loss_of_a_batch_without_boxes_is_finite():
    from densebackbones.tasks.detection import DetectionLoss

    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.3, 0.3], [0.5, 0.5, 1.0, 1.0]])
    loss_fn = DetectionLoss(priors, (0.1, 0.2))
    loc = torch.randn(2, 3, 4, requires_grad=True)
    conf = torch.randn(2, 3, 4, requires_grad=True)
    empty = [dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long)) for _ in range(2)]
    loss = loss_fn((loc, conf), empty)
    assert torch.isfinite(loss) and loss.item() == 0.0
    grads = torch.autograd.grad(loss, (loc, conf), allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    # one image with a box, one without: finite and positive
    mixed = [dict(boxes=torch.tensor([[0.1, 0.1, 0.4, 0.4]]), labels=torch.tensor([2])), empty[0]]
    assert torch.isfinite(loss_fn((loc, conf), mixed)) and loss_fn((loc, conf), mixed).item() > 0
