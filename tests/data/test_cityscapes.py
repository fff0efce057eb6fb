"""Cityscapes in its released layout (issue 37, item 2): fixtures written as the real files (leftImg8bit PNGs,
gtFine labelId PNGs in city folders), label ids mapped by the official table, and mIoU equal to the official
pixel-level evaluation (``cityscapesscripts``' ``evaluateImgLists``, which we did not write) on the same
predictions, including an image without any evaluated pixel and classes absent from the split."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
from cityscapesscripts.helpers.labels import labels as LABELS
from helpers import run_training_tool
from PIL import Image

from densebackbones.data.cityscapes import CITYSCAPES, TRAIN_ID_TO_LABEL_ID, CityscapesFolder
from densebackbones.data.segmentation import SegmentationInfo, build_segmentation_transform
from densebackbones.engine import load_checkpoint
from densebackbones.tasks.metrics import SegmentationMetric
from densebackbones.tasks.segmentation import SegmentationTask, split_dataset

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import eval_seg  # noqa: E402
import train_seg  # noqa: E402

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


def test_the_training_augmentation_rescales_crops_and_shifts_images_and_labels_together():
    # DenseASPP's augmentation: scale in [0.5, 2], crop, flip, one brightness shift in [-10, 10] grey levels per
    # image. An image whose colour encodes its label shows that every transform moves pixels and labels together.
    info = SegmentationInfo(("a", "b"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)), 255, (0.0,) * 3, (1 / 255,) * 3)
    rng = np.random.default_rng(0)
    label = np.repeat(np.repeat(rng.integers(0, 2, (8, 12), dtype=np.uint8), 8, 0), 8, 1)  # 64x96, 8-px cells
    image = np.repeat((100 + 50 * label)[..., None], 3, 2).astype(np.uint8)
    rescale = build_segmentation_transform(info, True, None, True, scale_range=(0.5, 2.0), brightness_shift=10)
    sides = []
    torch.manual_seed(0)
    for _ in range(40):
        out = rescale(image=image, mask=label)
        pixels, labels = out["image"], torch.as_tensor(out["mask"])
        sides.append(labels.shape[0])
        shift = pixels[0, 0, 0] - (100 + 50 * labels[0, 0])  # normalised with std 1/255: grey levels
        assert -10 <= shift <= 10
        assert set(labels.unique().tolist()) <= {0, 1}  # nearest-neighbour labels
        cells = labels[None].float()  # pixels two or more from a cell border (bilinear blends nearer)
        inside = (F.max_pool2d(cells, 5, 1, 2) == -F.max_pool2d(-cells, 5, 1, 2))[0]
        torch.testing.assert_close(pixels[0][inside], (100 + 50 * labels[inside]).float() + shift)
    assert 32 <= min(sides) < 40 and 100 < max(sides) <= 128  # 64 px scaled by 0.5-2
    crop = build_segmentation_transform(info, True, (48, 80), True, scale_range=(0.5, 2.0))
    torch.manual_seed(1)
    first = crop(image=image, mask=label)
    torch.manual_seed(1)
    again = crop(image=image, mask=label)
    assert first["image"].shape == (3, 48, 80) and torch.equal(first["image"], again["image"])  # seeded by torch


TINY_BACKBONE = ("model.backbone_kwargs.pretrained=False", "model.backbone_kwargs.growth_rate=4",
                 "model.backbone_kwargs.block_config=(1,1,1,1)")  # fmt: skip
EPOCH = ("schedule.epochs=1", "train.max_iters_per_epoch=2")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("config", "tiny"),
    [
        ("dense_aspp121_cityscapes.py", (*EPOCH, *TINY_BACKBONE, "model.d_feature0=8", "model.d_feature1=4")),
        ("deeplabv3_densenet121_cityscapes.py", ("schedule.max_iters=2", "data.crop_size=(32,48)", *TINY_BACKBONE)),
        ("fc_densenet103_cityscapes.py", (*EPOCH, "model.growth_rate=4", "model.layers_per_block=1",
                                          "data.test_crop=32", "data.test_stride=24")),
    ],
)  # fmt: skip
def test_the_cityscapes_configs_train_and_evaluate_on_files_in_the_released_layout(tmp_path, config, tiny):
    write_cityscapes(tmp_path / "cityscapes", "train")
    write_cityscapes(tmp_path / "cityscapes", "val", seed=1)
    options = ("data.batch_size=2", "data.num_workers=0", "data.crop_size=32", "train.eval_interval=1", *tiny)
    metrics = run_training_tool(train_seg, str(REPO / "configs" / "seg" / config), tmp_path / "run", *options,
                                data_root=tmp_path / "cityscapes")  # fmt: skip
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    assert state["step"] == 2 and 0 <= metrics["mIoU"] <= 100 and "IoU_road" in metrics
    assert state["optimizer"]["param_groups"][0]["lr"] < state["config"]["optimizer"]["lr"]  # poly or decay stepped
    # the evaluation tool scores the same weights with the same inference as the trainer's last evaluation
    argv = [str(REPO / "configs" / "seg" / config), str(tmp_path / "run" / "last.pth"), "--data-root",
            str(tmp_path / "cityscapes"), "--cfg-options", *options]  # fmt: skip
    evaluated = eval_seg.main(eval_seg.get_args_parser().parse_args(argv))
    assert evaluated["mIoU"] == pytest.approx(metrics["mIoU"], abs=1e-9)
