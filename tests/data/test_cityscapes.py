"""Cityscapes in its released layout (issue 37, item 2): fixtures written as the real files (leftImg8bit PNGs,
gtFine labelId PNGs in city folders), label ids mapped by the official table, and mIoU equal to the official
pixel-level evaluation (``cityscapesscripts``' ``evaluateImgLists``, which we did not write) on the same
predictions, including an image without any evaluated pixel and classes absent from the split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
from cityscapesscripts.helpers.labels import labels as LABELS
from PIL import Image

from densebackbones.data.cityscapes import CITYSCAPES, TRAIN_ID_TO_LABEL_ID, CityscapesFolder
from densebackbones.tasks.metrics import SegmentationMetric
from densebackbones.tasks.segmentation import SegmentationTask, split_dataset

IDS = [label.id for label in LABELS if label.id >= 0]


def write_cityscapes(root: Path, split: str = "val", seed: int = 0) -> list[tuple[Path, np.ndarray]]:
    """Five 32x48 images in two cities; label maps drawn from all 34 ids but few evaluated classes (so that most of
    the 19 are absent), and one image whose pixels are all ignored ids."""
    rng = np.random.default_rng(seed)
    written = []
    for i, city in enumerate(["aachen", "aachen", "bremen", "bremen", "bremen"]):
        stem = f"{city}_{i:06d}_000019"
        (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(
            root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
        )
        if i == 4:
            ids = rng.choice([0, 1, 2, 3, 4, 5, 6], (32, 48))  # void only: no evaluated pixel
        else:
            ids = rng.choice([0, 7, 8, 11, 26, 24, 5, 33], (32, 48))  # a few classes and some ignored ids
        label_path = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
        Image.fromarray(ids.astype(np.uint8)).save(label_path)
        written.append((label_path, ids))
    return written


def test_the_layout_and_the_official_label_table(tmp_path):
    written = write_cityscapes(tmp_path)
    data = CityscapesFolder(tmp_path, "val")
    assert len(data) == 5 and CITYSCAPES.num_classes == 19 and CITYSCAPES.classes[0] == "road"
    image, mask = data[0]
    assert image.shape == (3, 32, 48) and mask.shape == (32, 48)
    ids = written[0][1]
    expected = np.full(ids.shape, 255)
    for label in LABELS:
        if 0 <= label.trainId < 255 and not label.ignoreInEval and label.id >= 0:
            expected[ids == label.id] = label.trainId
    np.testing.assert_array_equal(mask.numpy(), expected)
    assert set(np.unique(data[4][1].numpy())) == {255}
    cfg = {"data": dict(dataset="cityscapes", root=str(tmp_path)), "model": dict(type="dense_aspp121")}
    assert len(split_dataset(cfg, "val")) == 5 and SegmentationTask().metric(cfg).num_classes == 19


def test_miou_equals_the_official_evaluation(tmp_path):
    write_cityscapes(tmp_path)
    data = CityscapesFolder(tmp_path, "val")
    metric = SegmentationMetric(19, 255, CITYSCAPES.classes)
    rng = np.random.default_rng(1)
    predictions, truths = [], []
    for index in range(len(data)):
        _, mask = data[index]
        pred = rng.choice([0, 1, 2, 13, 11, 5], mask.shape)  # also classes the labels do not have
        pred[:16] = np.where(mask[:16].numpy() < 255, mask[:16].numpy(), pred[:16])  # partly right
        metric.update(
            torch.nn.functional.one_hot(torch.from_numpy(pred), 19).permute(2, 0, 1)[None].float(), mask[None]
        )
        path = tmp_path / "pred" / f"{index}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(TRAIN_ID_TO_LABEL_ID[pred]).save(path)  # the official evaluation reads label ids
        predictions.append(str(path))
        truths.append(str(data.pairs[index][1]))
    ours = metric.compute()
    args = official.args
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    result = official.evaluateImgLists(predictions, truths, args)
    assert ours["mIoU"] == pytest.approx(100 * result["averageScoreClasses"], abs=1e-9)
    for name, score in result["classScores"].items():
        if name in CITYSCAPES.classes and not np.isnan(score):
            assert ours[f"IoU_{name}"] == pytest.approx(100 * score, abs=1e-9), name


def test_files_that_do_not_pair_or_hold_other_ids(tmp_path):
    write_cityscapes(tmp_path)
    (tmp_path / "gtFine" / "val" / "bremen" / "bremen_000099_000019_gtFine_labelIds.png").write_bytes(
        (tmp_path / "gtFine" / "val" / "bremen" / "bremen_000002_000019_gtFine_labelIds.png").read_bytes()
    )
    with pytest.raises(FileNotFoundError, match=r"bremen_000099_000019_gtFine_labelIds\.png has no image"):
        CityscapesFolder(tmp_path, "val")
    (tmp_path / "gtFine" / "val" / "bremen" / "bremen_000099_000019_gtFine_labelIds.png").unlink()
    Image.fromarray(np.full((32, 48), 40, dtype=np.uint8)).save(
        tmp_path / "gtFine" / "val" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    )
    with pytest.raises(ValueError, match=r"aachen_000000_000019_gtFine_labelIds\.png has label ids \[40\] outside"):
        CityscapesFolder(tmp_path, "val")[0]
    with pytest.raises(FileNotFoundError, match="Expected Cityscapes' layout"):
        CityscapesFolder(tmp_path, "train")
