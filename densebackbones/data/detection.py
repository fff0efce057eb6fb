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

from .files import read_image
from .transforms import TorchSeeded

__all__ = [
    "VOC_CLASSES",
    "VOCDetection",
    "COCODetection",
    "SSDTransform",
    "detection_collate",
    "expand",
    "min_iou_random_crop",
    "sanitize_boxes",
    "write_shapes_coco",
]

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
        _check_files_exist(
            [folder / "JPEGImages" / f"{i}.jpg" for folder, i in self.ids], "listed by ImageSets/Main", root
        )
        _check_files_exist(
            [folder / "Annotations" / f"{i}.xml" for folder, i in self.ids], "listed by ImageSets/Main", root
        )
        self.class_to_label = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}
        self.keep_difficult = keep_difficult
        self.transform = transform
        self._init_accounting(f"VOC {', '.join('/'.join(s) for s in image_sets)}")

    def __len__(self) -> int:
        return len(self.ids)

    def parse(self, index: int) -> dict:
        folder, image_id = self.ids[index]
        xml = folder / "Annotations" / f"{image_id}.xml"
        try:
            tree = ET.parse(xml).getroot()
        except ET.ParseError as err:
            raise ValueError(f"{xml} is not well-formed XML ({err}); replace it with the image's annotation") from None
        width, height = _xml_number(xml, tree, "size/width", int), _xml_number(xml, tree, "size/height", int)
        if width <= 0 or height <= 0:
            raise ValueError(f"{xml}: <size> gives {width}x{height}; width and height must be positive")
        boxes, labels, difficult = [], [], []
        for number, obj in enumerate(tree.iter("object"), start=1):
            name = (obj.findtext("name") or "").strip().lower()
            if name not in self.class_to_label:
                raise ValueError(f"{xml}: object {number} has class {name!r}; VOC classes are {', '.join(VOC_CLASSES)}")
            is_difficult = obj.find("difficult") is not None and _xml_number(xml, obj, "difficult", int) == 1
            if is_difficult and not self.keep_difficult:
                continue
            # VOC coordinates are 1-based pixel indices; subtract 1 from the corner that starts the box
            boxes.append(
                [
                    _xml_number(xml, obj, f"bndbox/{k}", float, number) - (1 if k in ("xmin", "ymin") else 0)
                    for k in ("xmin", "ymin", "xmax", "ymax")
                ]
            )
            labels.append(self.class_to_label[name])
            difficult.append(is_difficult)
        boxes, keep, clipped, dropped = sanitize_boxes(np.array(boxes).reshape(-1, 4), width, height)
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
        path = folder / "JPEGImages" / f"{image_id}.jpg"
        image = read_image(path, f"image {image_id}")
        target = self.parse(index)
        if image.shape[:2] != target["size"]:  # the boxes are in the annotation's pixels
            height, width = target["size"]
            raise ValueError(
                f"{path} is {image.shape[1]}x{image.shape[0]} but {folder / 'Annotations' / f'{image_id}.xml'} "
                f"says {width}x{height}; the image or its annotation is another image's"
            )
        return self.transform(image, target) if self.transform else (image, target)


def _check_files_exist(paths: Sequence[Path], listed_where: str, root: Path) -> None:
    """One ``stat`` per file when the data set is built, so that a missing image is found now, not after an epoch."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} files {listed_where} do not exist under {root}: {shown}; restore them "
            f"or remove their entries"
        )


def _xml_number(xml: Path, node: ET.Element, tag: str, kind: type, number: int | None = None):
    """The number in ``node``'s ``tag`` of a VOC annotation, or an error naming the file, the object and the tag."""
    text = node.findtext(tag)
    try:
        return kind(float(text)) if kind is int else kind(text)
    except (TypeError, ValueError):
        where = f"object {number}: " if number is not None else ""
        found = "is missing" if text is None else f"is {text!r}, not a number"
        raise ValueError(f"{xml}: {where}<{tag}> {found}; fix or remove the annotation") from None


def check_coco_annotations(dataset: dict, ann_file: Path) -> tuple[list, list]:
    """Check a COCO json's structure where it is read, each problem named with the file, the image id and the
    annotation id: an image without a positive width and height, an annotation of an image id the file does not
    have, a bbox that is not four numbers. Returns the annotation ids of the boxes that reach outside their image
    (clipped when read) and of those with zero or negative width or height (dropped)."""
    images = {}
    for image in dataset.get("images", []):
        for key in ("width", "height"):
            value = image.get(key)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(
                    f"{ann_file}: image id {image.get('id')} ({image.get('file_name')}) has no positive {key!r} "
                    f"(got {value!r}); COCO images need width and height"
                )
        images[image.get("id")] = image
    clipped, dropped = [], []
    for ann in dataset.get("annotations", []):
        where = f"{ann_file}: annotation id {ann.get('id')} (image id {ann.get('image_id')})"
        image = images.get(ann.get("image_id"))
        if image is None:
            raise ValueError(f"{where} belongs to an image id that is not in 'images'")
        box = ann.get("bbox")
        if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
            raise ValueError(f"{where} has bbox {box!r}; COCO boxes are four numbers [x, y, width, height]")
        x, y, w, h = box
        if w <= 0 or h <= 0:
            dropped.append(ann.get("id"))
        elif x < 0 or y < 0 or x + w > image["width"] or y + h > image["height"]:
            clipped.append(ann.get("id"))
    return clipped, dropped


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

        with open(ann_file, encoding="utf-8") as handle:
            try:
                dataset = json.load(handle)
            except json.JSONDecodeError as err:
                raise ValueError(f"{ann_file} is not valid JSON ({err})") from err
        clipped, dropped = check_coco_annotations(dataset, ann_file)
        if clipped or dropped:
            warnings.warn(
                f"{ann_file}: {len(clipped)} boxes reach outside their image and are clipped (annotation ids "
                f"{clipped[:3]}), {len(dropped)} have zero or negative width or height and are dropped (annotation ids "
                f"{dropped[:3]})",
                stacklevel=2,
            )
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = COCO()
            self.coco.dataset = dataset
            self.coco.createIndex()
        self.cat_ids = [c["id"] for c in self.coco.dataset.get("categories", [])]
        self.classes = tuple(c["name"] for c in self.coco.dataset.get("categories", []))
        self.cat_to_label = {cat: i + 1 for i, cat in enumerate(self.cat_ids)}
        unknown = sorted({a["category_id"] for a in self.coco.dataset.get("annotations", [])} - set(self.cat_ids))
        if unknown:
            raise ValueError(f"{ann_file}: annotations use category ids {unknown} that are not in 'categories'")
        self.ids = sorted(self.coco.imgs)
        _check_files_exist([self.image_dir / self.coco.imgs[i]["file_name"] for i in self.ids], f"named in {ann_file}",
                           self.image_dir)  # fmt: skip
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
        image = read_image(self.image_dir / info["file_name"], f"image id {info['id']}")
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


# ------------------------------------------------------------------------------------------- SSD augmentation
def _box_iou_np(boxes: np.ndarray, rect: np.ndarray) -> np.ndarray:
    lt = np.maximum(boxes[:, :2], rect[:2])
    rb = np.minimum(boxes[:, 2:], rect[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) + np.prod(rect[2:] - rect[:2])
    return inter / np.maximum(area - inter, 1e-12)


def expand(image: np.ndarray, boxes: np.ndarray, fill: Sequence[float], max_ratio: float, rng: np.random.Generator):
    """Zoom out (SSD Sec. 3.6): place the image at a random spot of a canvas up to ``max_ratio`` times larger,
    filled with the mean colour; boxes move with it."""
    h, w = image.shape[:2]
    ratio = rng.uniform(1.0, max_ratio)
    canvas_h, canvas_w = int(h * ratio), int(w * ratio)
    top, left = int(rng.uniform(0, canvas_h - h)), int(rng.uniform(0, canvas_w - w))
    canvas = np.empty((canvas_h, canvas_w, 3), dtype=image.dtype)
    canvas[:] = np.asarray(fill, dtype=image.dtype)
    canvas[top : top + h, left : left + w] = image
    return canvas, boxes + np.array([left, top, left, top], dtype=boxes.dtype)


def min_iou_random_crop(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    min_ious: Sequence[float | None] = (None, 0.1, 0.3, 0.5, 0.7, 0.9),
    trials: int = 50,
):
    """SSD's random crop (Sec. 3.6): pick a minimum IoU (or none: keep the image), then try patches of 0.3-1 of
    each side with aspect 1/2-2 until every box overlaps the patch at least that much and some box centre lies
    inside; keep the boxes whose centres are inside, clipped to the patch. Returns the input if no patch fits."""
    h, w = image.shape[:2]
    min_iou = min_ious[int(rng.integers(len(min_ious)))]
    if min_iou is None or len(boxes) == 0:
        return image, boxes, labels, np.ones(len(boxes), dtype=bool)
    for _ in range(trials):
        cw, ch = rng.uniform(0.3 * w, w), rng.uniform(0.3 * h, h)
        if not 0.5 <= ch / cw <= 2:
            continue
        left, top = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
        rect = np.array([int(left), int(top), int(left + cw), int(top + ch)], dtype=np.float32)
        if _box_iou_np(boxes, rect).min() < min_iou:
            continue
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        keep = np.all((centres > rect[:2]) & (centres < rect[2:]), axis=1)
        if not keep.any():
            continue
        crop = image[int(rect[1]) : int(rect[3]), int(rect[0]) : int(rect[2])]
        kept = boxes[keep].copy()
        kept[:, :2] = np.maximum(kept[:, :2], rect[:2]) - rect[:2]
        kept[:, 2:] = np.minimum(kept[:, 2:], rect[2:]) - rect[:2]
        return crop, kept, labels[keep], keep
    return image, boxes, labels, np.ones(len(boxes), dtype=bool)


class SSDTransform:
    """SSD/DSOD training augmentation, or the evaluation resize, for ``(image, target)`` samples.

    Training: photometric distortion (albumentations: brightness/contrast, hue/saturation; ``photometric=False``
    leaves it out), expand up to ``max_expand`` (p=0.5; 1 leaves it out), min-IoU random crop, horizontal flip,
    resize to ``size``; evaluation: resize only.
    Output: a normalised float tensor (3, size, size) and the target with ``boxes`` in [0, 1] (x1, y1, x2, y2)
    for the loss, ``abs_boxes`` in the original image's pixels for the metrics, labels and ``difficult`` kept in
    step with the boxes.
    """

    def __init__(
        self,
        train: bool,
        size: int = 300,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        max_expand: float = 4.0,
        seed: int | None = None,
        photometric: bool = True,
    ) -> None:
        import albumentations as A
        from albumentations.pytorch import ToTensorV2

        if max_expand < 1:
            raise ValueError(f"max_expand={max_expand}: the zoom-out ratio is at least 1 (1 turns expansion off)")
        self.train, self.size, self.max_expand = train, size, max_expand
        self.fill = [255 * m for m in mean]
        # Without a seed, each call draws a fresh generator from torch's RNG, which PyTorch seeds per loader
        # worker and the trainer saves and restores: augmentations differ across workers and resume exactly.
        self.rng = np.random.default_rng(seed) if seed is not None else None
        photometric = (
            [
                A.RandomBrightnessContrast(brightness_limit=32 / 255, contrast_limit=0.5, p=0.5),
                A.HueSaturationValue(hue_shift_limit=18, sat_shift_limit=30, val_shift_limit=0, p=0.5),
            ]
            if train and photometric
            else []
        )
        geometric = [A.HorizontalFlip(p=0.5)] if train else []
        pipeline = A.Compose(
            [*photometric, *geometric, A.Resize(size, size), A.Normalize(mean=mean, std=std), ToTensorV2()],
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["indices"]),
        )
        self.pipeline = TorchSeeded(pipeline, generator=self.rng) if train else pipeline  # evaluation draws nothing

    def __call__(self, image: np.ndarray, target: dict):
        import torch

        boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(target["labels"], dtype=np.int64)
        difficult = np.asarray(target.get("difficult", np.zeros(len(labels), bool)))
        if self.train:
            rng = self.rng or np.random.default_rng(int(torch.randint(2**31, ())))
            if self.max_expand > 1 and rng.random() < 0.5:
                image, boxes = expand(image, boxes, self.fill, self.max_expand, rng)
            image, boxes, labels, keep = min_iou_random_crop(image, boxes, labels, rng)
            difficult = difficult[keep]
        h, w = image.shape[:2]
        out = self.pipeline(image=np.ascontiguousarray(image), bboxes=boxes, indices=np.arange(len(boxes)))
        index = np.asarray(out["indices"], dtype=np.int64)
        resized = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4) / self.size
        new_target = dict(
            target,
            boxes=torch.as_tensor(resized.clip(0, 1)),
            labels=torch.as_tensor(labels[index]),
            difficult=torch.as_tensor(difficult[index]),
        )
        if not self.train:  # the original boxes, for metrics in the original image's pixels
            original = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)
            new_target["abs_boxes"] = torch.as_tensor(original)
            new_target["abs_labels"] = torch.as_tensor(np.asarray(target["labels"], dtype=np.int64))
            new_target["abs_difficult"] = torch.as_tensor(
                np.asarray(target.get("difficult", np.zeros(len(original), bool)), dtype=bool)
            )
        new_target["input_size"] = (h, w)
        return out["image"], new_target


def detection_collate(batch):
    """Stack images; keep the per-image targets (variable numbers of boxes) as a list."""
    import torch

    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
