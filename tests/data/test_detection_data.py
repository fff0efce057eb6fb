"""VOC and COCO loaders on fixtures in their real formats, box sanitation, and the COCO / VOC07 metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densebackbones.data.detection import COCODetection, VOCDetection, write_shapes_coco
from densebackbones.tasks.detection_eval import coco_evaluate, voc07_map


def _voc_object(name, box, difficult=0):
    x1, y1, x2, y2 = box
    return (
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
        f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
    )


def write_voc(root: Path, objects: dict[str, list[str]], year: str = "2007", split: str = "trainval") -> Path:
    base = root / f"VOC{year}"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for image_id, objs in objects.items():
        Image.new("RGB", (64, 48), (90, 90, 90)).save(base / "JPEGImages" / f"{image_id}.jpg")
        xml = (
            f"<annotation><filename>{image_id}.jpg</filename><size><width>64</width><height>48</height>"
            f"<depth>3</depth></size>{''.join(objs)}</annotation>"
        )
        (base / "Annotations" / f"{image_id}.xml").write_text(xml)
    (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(objects) + "\n")
    return root


def test_voc_loader_difficult_clipping_and_dropping(tmp_path):
    root = write_voc(
        tmp_path / "VOCdevkit",
        {
            "000001": [_voc_object("dog", (11, 6, 40, 30)), _voc_object("cat", (2, 2, 20, 20), difficult=1)],
            "000002": [_voc_object("person", (30, 10, 90, 40)), _voc_object("car", (20, 20, 19, 30))],
        },
    )
    data = VOCDetection(root, [("2007", "trainval")])
    image, target = data[0]
    assert image.shape == (48, 64, 3)
    np.testing.assert_allclose(target["boxes"], [[10, 5, 40, 30]])  # 1-based corner made 0-based
    assert target["labels"].tolist() == [12]  # dog; the difficult cat is left out of training targets
    with pytest.warns(UserWarning, match="clipped"):
        _, second = data[1]
    np.testing.assert_allclose(second["boxes"], [[29, 9, 64, 40]])  # clipped to the 64-px width
    assert second["labels"].tolist() == [15]  # the zero-width car is dropped
    assert data.box_report().endswith("1 boxes clipped to the image, 1 boxes dropped")
    kept = VOCDetection(root, [("2007", "trainval")], keep_difficult=True).parse(0)
    assert kept["labels"].tolist() == [12, 8] and kept["difficult"].tolist() == [False, True]


def test_voc_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Expected layout: .*Annotations"):
        VOCDetection(tmp_path / "nowhere", [("2007", "test")])
    root = write_voc(tmp_path / "VOCdevkit", {"000003": [_voc_object("unicorn", (1, 1, 5, 5))]})
    with pytest.raises(ValueError, match="000003.xml: object 1 has class 'unicorn'"):
        VOCDetection(root, [("2007", "trainval")]).parse(0)


def test_coco_loader_on_shapes(tmp_path):
    ann = write_shapes_coco(tmp_path / "shapes", num_images=4)
    data = COCODetection(ann, tmp_path / "shapes" / "train")
    assert data.classes == ("square", "disc") and len(data) == 4
    image, target = data[0]
    assert image.shape == (96, 96, 3) and target["boxes"].shape[1] == 4
    assert set(target["labels"].tolist()) <= {1, 2}


def test_coco_crowd_unknown_category_and_bad_boxes(tmp_path):
    ann = write_shapes_coco(tmp_path / "shapes", num_images=2)
    content = json.loads(ann.read_text())
    content["annotations"] += [
        dict(id=100, image_id=1, category_id=1, bbox=[0, 0, 50, 50], area=2500, iscrowd=1),  # crowd: not a target
        dict(id=101, image_id=1, category_id=2, bbox=[80, 80, 40, 40], area=1600, iscrowd=0),  # clipped
        dict(id=102, image_id=1, category_id=2, bbox=[10, 10, 0, 5], area=0, iscrowd=0),  # dropped
    ]
    ann.write_text(json.dumps(content))
    data = COCODetection(ann, tmp_path / "shapes" / "train")
    plain = sum(1 for a in content["annotations"] if a["image_id"] == 1 and a["id"] < 100)
    with pytest.warns(UserWarning):
        target = data.parse(0)
    assert len(target["labels"]) == plain + 1 and data.num_clipped == 1 and data.num_dropped == 1
    assert target["boxes"][:, 2:].max() <= 96
    content["annotations"].append(dict(id=103, image_id=1, category_id=9, bbox=[1, 1, 5, 5], area=25, iscrowd=0))
    ann.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"category ids \[9\]"):
        COCODetection(ann, tmp_path / "shapes" / "train")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["annotations"].append(dict(id=200, image_id=77, category_id=1, bbox=[1, 1, 5, 5], iscrowd=0)),
            r"train.json: annotation id 200 \(image id 77\) belongs to an image id that is not in 'images'",
        ),
        (
            lambda c: c["annotations"].append(dict(id=201, image_id=1, category_id=1, bbox=[1, 1, 5], iscrowd=0)),
            r"annotation id 201 \(image id 1\) has bbox \[1, 1, 5\]; COCO boxes are four numbers",
        ),
        (
            lambda c: c["images"][0].pop("width"),
            r"train.json: image id 1 \(.*\) has no positive 'width' \(got None\)",
        ),
    ],
    ids=["unknown-image-id", "three-numbers", "no-width"],
)
def test_coco_annotation_errors_name_the_file_and_ids(tmp_path, change, message):
    ann = write_shapes_coco(tmp_path / "shapes", num_images=2)
    content = json.loads(ann.read_text())
    change(content)
    ann.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        COCODetection(ann, tmp_path / "shapes" / "train")


def test_coco_box_problems_are_counted_when_the_file_is_read_and_a_truncated_image_is_named(tmp_path):
    ann = write_shapes_coco(tmp_path / "shapes", num_images=2)
    content = json.loads(ann.read_text())
    content["annotations"] += [
        dict(id=301, image_id=1, category_id=2, bbox=[80, 80, 40, 40], area=1600, iscrowd=0),  # outside: clipped
        dict(id=302, image_id=2, category_id=2, bbox=[10, 10, -4, 5], area=0, iscrowd=0),  # negative width: dropped
    ]
    ann.write_text(json.dumps(content))
    with pytest.warns(UserWarning, match=r"1 boxes reach outside .*\[301\].* 1 have zero or negative .*\[302\]"):
        data = COCODetection(ann, tmp_path / "shapes" / "train")
    image = tmp_path / "shapes" / "train" / data.coco.imgs[data.ids[0]]["file_name"]
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 3])  # cut short, as an interrupted copy
    with pytest.raises(OSError, match=rf"cannot read {image} \(image id {data.ids[0]}\)"):
        data[0]


def _gt():
    return [
        dict(
            image_id=1,
            size=(100, 100),
            boxes=np.array([[10, 10, 50, 50], [60, 60, 90, 95]], np.float32),
            labels=np.array([1, 2]),
        ),
        dict(image_id=2, size=(100, 100), boxes=np.array([[20, 30, 70, 80]], np.float32), labels=np.array([1])),
    ]


def test_coco_metric_perfect_and_shifted():
    gt = _gt()
    perfect = [
        dict(image_id=g["image_id"], boxes=g["boxes"], scores=np.ones(len(g["labels"])), labels=g["labels"]) for g in gt
    ]
    assert coco_evaluate(gt, perfect, ["a", "b"])["AP"] == pytest.approx(100.0)
    shifted = [dict(p, boxes=p["boxes"] + 4) for p in perfect]  # IoU 0.62-0.73: inside AP50, outside AP75
    metrics = coco_evaluate(gt, shifted, ["a", "b"])
    assert 0 < metrics["AP"] < 100 and metrics["AP50"] == pytest.approx(100.0) and metrics["AP75"] < 100
    assert coco_evaluate(gt, [], ["a", "b"])["AP"] == 0.0


def test_voc07_by_hand():
    gt = [
        dict(
            image_id=1,
            size=(100, 100),
            boxes=np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32),
            labels=np.array([1, 1]),
            difficult=np.array([False, False]),
        )
    ]
    preds = [
        dict(
            image_id=1,
            boxes=np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
            scores=np.array([0.9, 0.8]),
            labels=np.array([1, 1]),
        )
    ]
    # one TP then one FP, half the objects found: precision 1 at recall <= 0.5 -> 6 of 11 points
    assert voc07_map(gt, preds, 1)["mAP_voc07"] == pytest.approx(100 * 6 / 11)
    # the missed object marked difficult leaves the denominator: recall reaches 1, AP 100
    gt[0]["difficult"] = np.array([False, True])
    assert voc07_map(
        gt,
        preds[:1]
        and [dict(preds[0], boxes=preds[0]["boxes"][:1], scores=preds[0]["scores"][:1], labels=preds[0]["labels"][:1])],
        1,
    )["mAP_voc07"] == pytest.approx(100)
    # a detection on the difficult object counts neither way
    on_difficult = [
        dict(
            image_id=1,
            boxes=np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32),
            scores=np.array([0.9, 0.95]),
            labels=np.array([1, 1]),
        )
    ]
    assert voc07_map(gt, on_difficult, 1)["mAP_voc07"] == pytest.approx(100)


def test_ssd_augmentation_keeps_boxes_inside_and_matched_to_labels():
    import torch

    from densebackbones.data.detection import SSDTransform

    # two non-overlapping boxes painted in their label's colour: 1 red, 2 green
    image = np.full((120, 160, 3), 128, np.uint8)
    boxes = np.array([[10, 20, 60, 90], [90, 30, 150, 100]], np.float32)
    image[20:90, 10:60] = (230, 20, 20)
    image[30:100, 90:150] = (20, 230, 20)
    target = dict(boxes=boxes, labels=np.array([1, 2]), difficult=np.array([False, True]), image_id=7)
    mean, std = torch.tensor((0.485, 0.456, 0.406)), torch.tensor((0.229, 0.224, 0.225))
    seen_changes = 0
    for seed in range(40):
        out, t = SSDTransform(True, size=96, seed=seed)(image, target)
        assert out.shape == (3, 96, 96) and t["image_id"] == 7
        assert len(t["boxes"]) == len(t["labels"]) == len(t["difficult"]) >= 1
        assert float(t["boxes"].min()) >= 0 and float(t["boxes"].max()) <= 1
        assert bool(((t["boxes"][:, 2:] - t["boxes"][:, :2]) > 0).all())
        pixels = (out * std[:, None, None] + mean[:, None, None]).clamp(0, 1)
        for box, label, hard in zip(t["boxes"], t["labels"], t["difficult"]):
            cx, cy = int((box[0] + box[2]) / 2 * 96), int((box[1] + box[3]) / 2 * 96)
            red, green = float(pixels[0, cy, cx]), float(pixels[1, cy, cx])
            assert (red > green) == (int(label) == 1), (seed, box, label)
            assert bool(hard) == (int(label) == 2)  # flags travel with their boxes
        seen_changes += not torch.allclose(t["boxes"], torch.as_tensor(boxes / np.float32([160, 120, 160, 120])))
    assert seen_changes > 20  # the geometry really was augmented


def test_ssd_eval_transform_keeps_original_boxes_for_metrics():
    from densebackbones.data.detection import SSDTransform

    image = np.zeros((50, 100, 3), np.uint8)
    target = dict(boxes=np.array([[10, 5, 60, 45]], np.float32), labels=np.array([3]), image_id=1)
    out, t = SSDTransform(False, size=300)(image, target)
    assert out.shape == (3, 300, 300)
    np.testing.assert_allclose(t["boxes"].numpy(), [[0.1, 0.1, 0.6, 0.9]], rtol=1e-5)
    np.testing.assert_allclose(t["abs_boxes"].numpy(), [[10, 5, 60, 45]])


def test_images_without_boxes_pass_through_augmentation_and_loss():
    import torch
    from densebackbones.heads.ssd import VOC_PRIORS, MultiBoxLoss, make_priors

    from densebackbones.data.detection import SSDTransform, detection_collate

    empty = dict(boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64), image_id=3)
    samples = [SSDTransform(True, size=300, seed=s)(np.zeros((40, 50, 3), np.uint8), empty) for s in range(3)]
    images, targets = detection_collate(samples)
    assert images.shape == (3, 3, 300, 300) and all(len(t["boxes"]) == 0 for t in targets)
    priors = make_priors(VOC_PRIORS)
    loc = torch.zeros(3, len(priors), 4, requires_grad=True)
    conf = torch.zeros(3, len(priors), 3, requires_grad=True)
    loc_loss, conf_loss = MultiBoxLoss(priors)(loc, conf, [t["boxes"] for t in targets], [t["labels"] for t in targets])
    (loc_loss + conf_loss).backward()  # no positives: no negatives mined either, zero loss, finite gradients
    assert loc_loss.item() == 0 and conf_loss.item() == 0 and torch.isfinite(conf.grad).all()


def test_ssd_transform_options_leave_out_distortion_and_zoom_out():
    # Pelee's VOC script trains without photometric distortion and zoom-out: data.photometric=False, max_expand=1.
    from densebackbones.data.detection import SSDTransform

    with pytest.raises(ValueError, match="max_expand=0.5"):
        SSDTransform(True, 32, max_expand=0.5)
    names = [type(t).__name__ for t in SSDTransform(True, 32, photometric=False).pipeline.transforms]
    assert "RandomBrightnessContrast" not in names and "HueSaturationValue" not in names
    assert "HueSaturationValue" in [type(t).__name__ for t in SSDTransform(True, 32).pipeline.transforms]
    # A box over the whole image stays the whole image under crops and flips; only zooming out shrinks it.
    image = np.full((40, 40, 3), 200, np.uint8)
    target = dict(boxes=np.array([[0, 0, 40, 40]], np.float32), labels=np.array([1]), image_id=1)

    def shrunk(max_expand: float) -> int:
        outs = [SSDTransform(True, 32, max_expand=max_expand, seed=s)(image, target)[1]["boxes"] for s in range(20)]
        return sum(bool((b[:, 2:] - b[:, :2] < 0.99).any()) for b in outs)

    assert shrunk(1.0) == 0 and shrunk(4.0) > 0
