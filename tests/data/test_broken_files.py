"""Every reader names the file it cannot use (the reliability issue: "every message naming the file"): each data
set's reader, fed each kind of broken file (a truncated image, a file that is no image, a truncated label map or
mask, malformed or incomplete annotations, an image whose size is not its annotation's), raises an error whose
message holds that file's path. A loader worker's traceback shows only the message, so the path must be in it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from densebackbones.data.classification import ImageFolderDataset
from densebackbones.data.detection import COCODetection, VOCDetection
from densebackbones.data.own import ImageMaskFolder, MultiLabelCSVDataset, mask_folder_info, read_classes_txt
from densebackbones.data.segmentation import SEGMENTATION_DATASETS, SegmentationFolder, write_shapes_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from helpers.data_fixtures import write_image_folder  # noqa: E402
from helpers.finetune_fixtures import write_coco_folder, write_mask_folders, write_multilabel_csv  # noqa: E402
from test_detection_data import _voc_object, write_voc  # noqa: E402


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def not_an_image(path: Path) -> None:
    path.write_bytes(b"this is no image\n" * 8)


DAMAGE = {"truncated": truncate, "not an image": not_an_image}


# --- each reader: (build the fixture, the file to damage, read the item that uses it) ----------------------------
def voc_image(tmp_path):
    root = write_voc(tmp_path / "VOCdevkit", {"000001": [_voc_object("dog", (11, 6, 40, 30))]})
    data = VOCDetection(root, [("2007", "trainval")])
    return root / "VOC2007" / "JPEGImages" / "000001.jpg", lambda: data[0]


def voc_xml(tmp_path):
    root = write_voc(tmp_path / "VOCdevkit", {"000001": [_voc_object("dog", (11, 6, 40, 30))]})
    data = VOCDetection(root, [("2007", "trainval")])
    return root / "VOC2007" / "Annotations" / "000001.xml", lambda: data[0]


def coco_image(tmp_path):
    root = write_coco_folder(tmp_path / "coco")
    data = COCODetection(root / "annotations" / "instances_train.json", root / "train")
    return root / "train" / "part_0.jpg", lambda: data[0]


def camvid_image(tmp_path):
    root = write_shapes_dataset(tmp_path / "shapes", num_train=2, num_val=1)
    data = SegmentationFolder(root, "train", SEGMENTATION_DATASETS["shapes"])
    return data.pairs[0][0], lambda: data[0]


def camvid_label(tmp_path):
    root = write_shapes_dataset(tmp_path / "shapes", num_train=2, num_val=1)
    data = SegmentationFolder(root, "train", SEGMENTATION_DATASETS["shapes"])
    return data.pairs[0][1], lambda: data[0]


def mask_folder_image(tmp_path):
    root = write_mask_folders(tmp_path / "masks")
    info = mask_folder_info(root, (0.5,) * 3, (0.25,) * 3)
    path = sorted((root / "train" / "images").iterdir())[0]
    return path, lambda: ImageMaskFolder(root, "train", info)[0]  # the header is read when the set is built


def mask_folder_mask(tmp_path):
    root = write_mask_folders(tmp_path / "masks")
    info = mask_folder_info(root, (0.5,) * 3, (0.25,) * 3)
    path = sorted((root / "train" / "masks").iterdir())[0]
    return path, lambda: ImageMaskFolder(root, "train", info)[0]


def image_folder(tmp_path):
    root = write_image_folder(tmp_path / "tree", classes=2)
    data = ImageFolderDataset(root / "train")
    return Path(data.samples[0][0]), lambda: data[0]


def multilabel_csv(tmp_path):
    root = write_multilabel_csv(tmp_path / "xray")
    data = MultiLabelCSVDataset(root / "train.csv", root / "images")
    return Path(data.samples[0][0]), lambda: data[0]


READERS = [voc_image, coco_image, camvid_image, camvid_label, mask_folder_image, mask_folder_mask, image_folder,
           multilabel_csv]  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
def test_a_broken_image_file_is_named(tmp_path, reader, damage):
    path, read = reader(tmp_path)
    DAMAGE[damage](path)
    with pytest.raises((OSError, ValueError)) as info:
        read()
    assert str(path) in str(info.value), str(info.value)


VOC_XML_FAULTS = {
    "malformed": lambda text: text[: len(text) // 2],
    "no size": lambda text: text.replace("<width>64</width>", ""),
    "size not a number": lambda text: text.replace("<height>48</height>", "<height>tall</height>"),
    "box not a number": lambda text: text.replace("<xmin>11</xmin>", "<xmin>left</xmin>"),
    "box corner missing": lambda text: text.replace("<ymax>30</ymax>", ""),
    "no class name": lambda text: text.replace("<name>dog</name>", ""),
    "size of another image": lambda text: text.replace("<width>64</width>", "<width>80</width>"),
}


@pytest.mark.parametrize("fault", VOC_XML_FAULTS)
def test_a_broken_voc_annotation_is_named(tmp_path, fault):
    xml, read = voc_xml(tmp_path)
    xml.write_text(VOC_XML_FAULTS[fault](xml.read_text()))
    with pytest.raises(ValueError) as info:
        read()
    assert str(xml) in str(info.value) or "000001.xml" in str(info.value), str(info.value)
    if fault.startswith("box"):
        assert "object 1" in str(info.value)


def test_a_broken_classes_txt_is_named(tmp_path):
    root = write_mask_folders(tmp_path / "masks")
    (root / "classes.txt").write_text("road\n\ncar\n")
    with pytest.raises(ValueError, match=str(root / "classes.txt")):
        read_classes_txt(root)


def test_a_coco_json_that_is_not_json_is_named(tmp_path):
    root = write_coco_folder(tmp_path / "coco")
    ann = root / "annotations" / "instances_train.json"
    ann.write_text(json.dumps(json.loads(ann.read_text()))[:100])
    with pytest.raises((ValueError, OSError)) as info:
        COCODetection(ann, root / "train")
    assert str(ann) in str(info.value), str(info.value)


def test_an_image_of_another_size_than_its_label_map_is_named(tmp_path):
    path, read = camvid_image(tmp_path)
    Image.new("RGB", (17, 13)).save(path)
    with pytest.raises(ValueError, match=str(path)):
        read()
