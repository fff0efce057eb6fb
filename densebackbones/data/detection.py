"""Detection data: Pascal VOC (VOCdevkit XML), COCO (json through pycocotools), and the generated shapes set.

Samples are ``(image uint8 (H, W, 3), target)`` with ``target = dict(boxes=(N, 4) float32 absolute x1, y1, x2,
y2, labels=(N,) int64 1-based (0 is background), difficult=(N,) bool, image_id=int)``.

Boxes that extend past the image are clipped; boxes with zero or negative size after clipping are dropped. Both
are counted per data set and reported once (``box_report``), never silently.
"""

from __future__ import annotations

import json
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

__all__ = ["VOC_CLASSES", "VOCDetection", "COCODetection", "sanitize_boxes", "write_shapes_coco"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def sanitize_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Clip boxes (N, 4) to the image; returns (clipped boxes, keep mask, number clipped, number dropped)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = (np.abs(clipped - boxes).sum(1) > 0) & keep
    return clipped, keep, int(changed.sum()), int((~keep).sum())


class _BoxAccounting:
    """Counts clipped and dropped boxes and warns once per data set."""

    def _init_accounting(self, name: str) -> None:
        self._name, self.num_clipped, self.num_dropped, self._warned = name, 0, 0, False

    def _account(self, clipped: int, dropped: int) -> None:
        self.num_clipped += clipped
        self.num_dropped += dropped
        if (clipped or dropped) and not self._warned:
            self._warned = True
            warnings.warn(
                f"{self._name}: boxes outside the image are clipped and boxes of zero or negative size dropped "
                f"(see box_report() for the counts; first seen: {clipped} clipped, {dropped} dropped)",
                stacklevel=3,
            )

    def box_report(self) -> str:
        return f"{self._name}: {self.num_clipped} boxes clipped to the image, {self.num_dropped} boxes dropped"


class VOCDetection(_BoxAccounting, Dataset):
    """Pascal VOC in its VOCdevkit layout: ``root/VOC2007/{Annotations,ImageSets/Main,JPEGImages}``.

    Args:
        root: the VOCdevkit folder.
        image_sets: ``(year, set)`` pairs, e.g. ``[("2007", "trainval"), ("2012", "trainval")]`` (07+12) or
            ``[("2007", "test")]``.
        keep_difficult: keep objects marked difficult (the VOC protocol ignores them in evaluation; SSD and DSOD
            train without them).
        transform: ``transform(image, target) -> (image, target)``.
    """

    def __init__(
        self,
        root: str | Path,
        image_sets: Sequence[tuple[str, str]] = (("2007", "trainval"), ("2012", "trainval")),
        keep_difficult: bool = False,
        transform=None,
    ) -> None:
        root = Path(root)
        self.ids: list[tuple[Path, str]] = []
        for year, name in image_sets:
            listing = root / f"VOC{year}" / "ImageSets" / "Main" / f"{name}.txt"
            if not listing.exists():
                raise FileNotFoundError(
                    f"{listing} does not exist. Expected layout: {root}/VOC<year>/Annotations/<id>.xml, "
                    f"ImageSets/Main/<set>.txt and JPEGImages/<id>.jpg"
                )
            ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
            if not ids:
                raise ValueError(f"{listing} lists no images")
            self.ids += [(root / f"VOC{year}", i) for i in ids]
        self.class_to_label = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}
        self.keep_difficult = keep_difficult
        self.transform = transform
        self._init_accounting(f"VOC {', '.join('/'.join(s) for s in image_sets)}")

    def __len__(self) -> int:
        return len(self.ids)

    def parse(self, index: int) -> dict:
        folder, image_id = self.ids[index]
        xml = folder / "Annotations" / f"{image_id}.xml"
        tree = ET.parse(xml).getroot()
        size = tree.find("size")
        width, height = int(size.find("width").text), int(size.find("height").text)
        boxes, labels, difficult = [], [], []
        for obj in tree.iter("object"):
            name = obj.find("name").text.strip().lower()
            if name not in self.class_to_label:
                raise ValueError(f"{xml}: unknown class {name!r}; VOC classes are {', '.join(VOC_CLASSES)}")
            is_difficult = obj.find("difficult") is not None and int(obj.find("difficult").text) == 1
            if is_difficult and not self.keep_difficult:
                continue
            box = obj.find("bndbox")
            # VOC coordinates are 1-based pixel indices; subtract 1 from the corner that starts the box
            boxes.append(
                [
                    float(box.find(k).text) - (1 if k in ("xmin", "ymin") else 0)
                    for k in ("xmin", "ymin", "xmax", "ymax")
                ]
            )
            labels.append(self.class_to_label[name])
            difficult.append(is_difficult)
        boxes, keep, clipped, dropped = sanitize_boxes(np.array(boxes), width, height)
        self._account(clipped, dropped)
        return dict(
            boxes=boxes[keep],
            labels=np.array(labels, dtype=np.int64)[keep],
            difficult=np.array(difficult, dtype=bool)[keep],
            image_id=index,
            size=(height, width),
        )

    def __getitem__(self, index: int):
        folder, image_id = self.ids[index]
        image = np.array(Image.open(folder / "JPEGImages" / f"{image_id}.jpg").convert("RGB"))
        target = self.parse(index)
        return self.transform(image, target) if self.transform else (image, target)


class COCODetection(_BoxAccounting, Dataset):
    """COCO-format detection (``instances_*.json`` through pycocotools). Category ids map to contiguous labels
    1..C in the file's category order; crowd boxes are left out of the training targets.

    Args:
        ann_file: annotation json.
        image_dir: folder holding the images named by ``file_name``.
        transform: ``transform(image, target) -> (image, target)``.
        skip_empty: leave out images without any (non-crowd) box.
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, transform=None, skip_empty: bool = False) -> None:
        from pycocotools.coco import COCO

        ann_file, self.image_dir = Path(ann_file), Path(image_dir)
        if not ann_file.exists():
            raise FileNotFoundError(
                f"annotation file {ann_file} does not exist (COCO json, e.g. instances_val2017.json)"
            )
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder {self.image_dir} does not exist")
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = COCO(str(ann_file))
        self.cat_ids = [c["id"] for c in self.coco.dataset.get("categories", [])]
        self.classes = tuple(c["name"] for c in self.coco.dataset.get("categories", []))
        self.cat_to_label = {cat: i + 1 for i, cat in enumerate(self.cat_ids)}
        unknown = sorted({a["category_id"] for a in self.coco.dataset.get("annotations", [])} - set(self.cat_ids))
        if unknown:
            raise ValueError(f"{ann_file}: annotations use category ids {unknown} that are not in 'categories'")
        self.ids = sorted(self.coco.imgs)
        if skip_empty:
            self.ids = [i for i in self.ids if any(not a.get("iscrowd", 0) for a in self.coco.imgToAnns[i])]
        self.transform = transform
        self._init_accounting(str(ann_file))

    def __len__(self) -> int:
        return len(self.ids)

    def parse(self, index: int) -> dict:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        anns = [a for a in self.coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32)
        boxes, keep, clipped, dropped = sanitize_boxes(boxes, info["width"], info["height"])
        self._account(clipped, dropped)
        labels = np.array([self.cat_to_label[a["category_id"]] for a in anns], dtype=np.int64)
        return dict(
            boxes=boxes[keep],
            labels=labels[keep],
            difficult=np.zeros(int(keep.sum()), dtype=bool),
            image_id=image_id,
            size=(info["height"], info["width"]),
        )

    def __getitem__(self, index: int):
        info = self.coco.imgs[self.ids[index]]
        image = np.array(Image.open(self.image_dir / info["file_name"]).convert("RGB"))
        target = self.parse(index)
        return self.transform(image, target) if self.transform else (image, target)


def write_shapes_coco(
    root: str | Path, num_images: int = 32, size: tuple[int, int] = (96, 96), seed: int = 0, split: str = "train"
) -> Path:
    """Write the "shapes" detection set as COCO json (``root/<split>.json``, images in ``root/<split>/``):
    squares and discs on noisy backgrounds, categories ``square`` (id 1) and ``disc`` (id 2)."""
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    images, annotations = [], []
    for i in range(num_images):
        image = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(40, 120, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 4))):
            category = int(rng.integers(1, 3))
            r = int(rng.integers(8, min(h, w) // 4))
            cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
            colour = (230, 25, 75) if category == 1 else (60, 180, 75)
            (draw.rectangle if category == 1 else draw.ellipse)((cx - r, cy - r, cx + r, cy + r), fill=colour)
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=i + 1,
                    category_id=category,
                    bbox=[cx - r, cy - r, 2 * r, 2 * r],
                    area=float(4 * r * r),
                    iscrowd=0,
                )
            )
        name = f"{split}_{i:04d}.png"
        image.save(root / split / name)
        images.append(dict(id=i + 1, file_name=name, width=w, height=h))
    categories = [dict(id=1, name="square"), dict(id=2, name="disc")]
    path = root / f"{split}.json"
    path.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return path
