"""Own-data fixtures in exactly the layouts README's "Fine-tune on your own data" documents: class folders, a
multi-label CSV with images/, image/mask folders with classes.txt, and a COCO-format json; grey images included."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

FOLDER_CLASSES = {"cat": 4, "dog": 4, "owl": 1}  # owl: a class with a single image
MULTILABEL_TRAIN = [
    ("00000001_000.png", "Effusion|Mass"),
    ("00000002_000.png", "No Finding"),
    ("00000003_000.png", "Atelectasis"),
    ("00000004_000.png", "Effusion"),
    ("00000005_000.png", "Atelectasis|Effusion"),
    ("00000006_000.png", "Mass"),
    ("00000007_000.png", "No Finding"),
    ("00000008_000.png", "Atelectasis|Mass"),
]
MULTILABEL_VAL = [  # Mass has no positive in val: named and left out of the means
    ("00000009_000.png", "Effusion"),
    ("00000010_000.png", "No Finding"),
    ("00000011_000.png", "Atelectasis|Effusion"),
    ("00000012_000.png", "Atelectasis"),
]
SEG_CLASSES = ["background", "road", "car"]


def _image(rng: np.random.Generator, size: tuple[int, int], grey: bool) -> Image.Image:
    h, w = size
    if grey:
        return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L")
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def write_class_folders(root: Path, classes: dict[str, int] = FOLDER_CLASSES, val: bool = True) -> Path:
    """``root/train/<class>/*`` (JPEG and grey PNG) and, with ``val``, ``root/val/<class>/*`` (one image each)."""
    rng = np.random.default_rng(0)
    for split, counts in (("train", classes), ("val", {c: 1 for c in classes} if val else {})):
        for name, count in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                grey = i % 2 == 1
                _image(rng, (36, 44), grey).save(folder / f"{name}_{i}.{'png' if grey else 'jpg'}")
    return root


def write_multilabel_csv(root: Path, train=MULTILABEL_TRAIN, val=MULTILABEL_VAL) -> Path:
    """ChestX-ray14's layout: ``root/images/*.png`` (grey), ``root/train.csv`` and ``root/val.csv`` with its columns."""
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", train), ("val.csv", val)):
        with open(root / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Image Index", "Finding Labels", "Follow-up #", "Patient ID"])
            for i, (file, labels) in enumerate(rows):
                writer.writerow([file, labels, 0, i])
                _image(rng, (40, 40), grey=True).save(root / "images" / file)
    return root


def write_mask_folders(root: Path, counts=(("train", 4), ("val", 2)), size=(40, 48)) -> Path:
    """``root/{train,val}/images/*`` (RGB JPEG and grey PNG), ``root/{train,val}/masks/*.png`` (index PNGs with
    255 = ignore) and ``root/classes.txt``."""
    rng = np.random.default_rng(2)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(SEG_CLASSES) + "\n")
    h, w = size
    for split, count in counts:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            mask = np.zeros((h, w), dtype=np.uint8)
            mask[h // 2 :, :] = 1
            top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
            mask[top : top + 10, left : left + 12] = 2
            mask[0, :] = 255  # ignored
            grey = i % 2 == 1
            image = np.where(mask[..., None] == 2, 200, np.where(mask[..., None] == 1, 90, 30)).astype(np.uint8)
            image = np.repeat(image, 3, axis=2) + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
            picture = Image.fromarray(image[..., 0] if grey else image, mode="L" if grey else "RGB")
            picture.save(root / split / "images" / f"frame_{i}.{'png' if grey else 'jpg'}")
            Image.fromarray(mask, mode="L").save(root / split / "masks" / f"frame_{i}.png")
    return root


def write_coco_folder(root: Path, counts=(("train", 6), ("val", 3)), size=(96, 96)) -> Path:
    """COCO's layout: ``root/annotations/instances_<split>.json`` and ``root/<split>/*.jpg``; two categories with
    non-contiguous ids (3 'bolt', 7 'nut'), names from the json."""
    rng = np.random.default_rng(3)
    h, w = size
    for split, count in counts:
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            pixels = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            for category in (3, 7):
                x, y = int(rng.integers(0, w - 32)), int(rng.integers(0, h - 32))
                pixels[y : y + 28, x : x + 28] = 220 if category == 3 else 120
                annotations.append(
                    dict(id=len(annotations) + 1, image_id=i + 1, category_id=category, bbox=[x, y, 28, 28],
                         area=28 * 28, iscrowd=0)
                )  # fmt: skip
            Image.fromarray(pixels).save(root / split / f"part_{i}.jpg")
            images.append(dict(id=i + 1, file_name=f"part_{i}.jpg", height=h, width=w))
        categories = [dict(id=3, name="bolt"), dict(id=7, name="nut")]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        content = dict(images=images, annotations=annotations, categories=categories)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))
    return root
