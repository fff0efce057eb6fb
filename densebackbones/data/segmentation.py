"""Semantic segmentation data in the CamVid folder layout, and the generated "shapes" data set in the same layout.

Layout (SegNet's CamVid release, the one FC-DenseNet used): ``root/{train,val,test}/<name>.png`` images and
``root/{train,val,test}annot/<name>.png`` single-channel label maps with class indices; CamVid has 11 classes
and index 11 for void, which is ignored in the loss and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from .files import read_image
from .transforms import TorchSeeded

__all__ = [
    "SegmentationInfo",
    "SEGMENTATION_DATASETS",
    "SegmentationFolder",
    "build_segmentation_transform",
    "write_shapes_dataset",
    "colorize",
]


@dataclass(frozen=True)
class SegmentationInfo:
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]  # one per class, then the void colour
    ignore_index: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


SEGMENTATION_DATASETS = {
    # The 11 classes and colours of SegNet's CamVid release; index 11 (black) is void.
    "camvid": SegmentationInfo(
        classes=(
            "sky",
            "building",
            "pole",
            "road",
            "sidewalk",
            "tree",
            "sign",
            "fence",
            "car",
            "pedestrian",
            "bicyclist",
        ),
        colors=(
            (128, 128, 128),
            (128, 0, 0),
            (192, 192, 128),
            (128, 64, 128),
            (60, 40, 222),
            (128, 128, 0),
            (192, 128, 128),
            (64, 64, 128),
            (64, 0, 128),
            (64, 64, 0),
            (0, 128, 192),
            (0, 0, 0),
        ),
        ignore_index=11,
        mean=(0.4112, 0.4252, 0.4329),
        std=(0.3070, 0.3118, 0.3057),
    ),
    # Generated: background, squares and discs, with a void outline around every shape.
    "shapes": SegmentationInfo(
        classes=("background", "square", "disc"),
        colors=((0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 255, 255)),
        ignore_index=3,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    ),
}


class SegmentationFolder(Dataset):
    """Images and label maps of one split, paired by file name.

    Args:
        root: data set root with ``<split>/`` and ``<split>annot/`` folders.
        split: ``'train'``, ``'val'`` or ``'test'``.
        info: classes and void index; labels outside ``0..num_classes-1`` other than void raise an error.
        transform: albumentations transform called as ``transform(image=..., mask=...)``.

    Items are ``(image float tensor (3, H, W), mask int64 tensor (H, W))``.
    """

    def __init__(self, root: str | Path, split: str, info: SegmentationInfo, transform=None) -> None:
        root = Path(root)
        self.image_dir, self.label_dir = root / split, root / f"{split}annot"
        for folder in (self.image_dir, self.label_dir):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"{folder} does not exist. Expected layout: {root}/{{train,val,test}}/<name>.png images and "
                    f"{root}/{{train,val,test}}annot/<name>.png label maps"
                )
        images = sorted(p for p in self.image_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not images:
            raise ValueError(f"split {split!r} is empty: no .png/.jpg images in {self.image_dir}")
        self.pairs = []
        for image in images:
            label = self.label_dir / f"{image.stem}.png"
            if not label.exists():
                raise FileNotFoundError(f"no label map {label} for image {image}")
            self.pairs.append((image, label))
        self.info = info
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw image (H, W, 3) uint8 and label map (H, W) uint8, checked."""
        image_path, label_path = self.pairs[index]
        image = read_image(image_path)
        label = read_image(label_path, f"the label map of {image_path.name}", mode=None)
        if label.ndim != 2:
            raise ValueError(f"{label_path} must be a single-channel label map of class indices, got {label.shape}")
        if image.shape[:2] != label.shape:
            raise ValueError(f"image {image_path} is {image.shape[:2]} but its labels {label_path} are {label.shape}")
        return image, self.class_indices(label, label_path)

    def class_indices(self, label: np.ndarray, label_path: Path) -> np.ndarray:
        """The label map as class indices (void: ``info.ignore_index``), checked: here the file holds them."""
        values = np.unique(label)
        bad = [int(v) for v in values if v >= self.info.num_classes and v != self.info.ignore_index]
        if bad:
            raise ValueError(
                f"{label_path} has label values {bad} outside 0..{self.info.num_classes - 1} and the void index "
                f"{self.info.ignore_index}"
            )
        return label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=label)
            image, label = out["image"], out["mask"]
        else:
            image = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        return image, torch.as_tensor(np.asarray(label), dtype=torch.int64)


def build_segmentation_transform(
    info: SegmentationInfo,
    train: bool,
    crop_size: int | tuple[int, int] | None = None,
    hflip: bool = True,
    color_jitter: float = 0.0,
    scale_range: tuple[float, float] | None = None,
    brightness_shift: float = 0.0,
):
    """Albumentations pipeline: random rescaling, (pad and) random crop, horizontal flip, colour jitter or a
    brightness shift, normalise.

    ``scale_range=(0.5, 2.0)`` rescales each training image and its labels (nearest) by a factor drawn uniformly from
    the range before cropping (DenseASPP's and DeepLab's augmentation); ``brightness_shift=10`` adds one value drawn
    from [-10, 10] grey levels to every pixel (DenseASPP). Evaluation uses the full image (no crop). Padding uses
    zeros for the image and void for the labels.
    """
    import albumentations as A
    import cv2
    from albumentations.pytorch import ToTensorV2

    ops = []
    if train:
        if scale_range is not None:
            low, high = scale_range  # albumentations draws 1 + U(limit): a factor in [low, high]
            ops.append(A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR, p=1.0))
        if crop_size:
            height, width = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
            ops += [
                A.PadIfNeeded(height, width, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=info.ignore_index),
                A.RandomCrop(height, width),
            ]
        if hflip:
            ops.append(A.HorizontalFlip(p=0.5))
        if color_jitter:
            ops.append(A.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, hue=0.0))
        if brightness_shift:
            shift = brightness_shift / 255  # albumentations shifts by a fraction of the largest value, 255
            ops.append(A.RandomBrightnessContrast(brightness_limit=(-shift, shift), contrast_limit=0.0, p=1.0))
    ops += [A.Normalize(mean=info.mean, std=info.std, max_pixel_value=255.0), ToTensorV2()]
    return TorchSeeded(A.Compose(ops)) if train else A.Compose(ops)  # evaluation draws nothing


def colorize(labels: np.ndarray, info: SegmentationInfo) -> np.ndarray:
    """Class-index map (H, W) -> RGB image with the data set's colours (void in its own colour)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: info.num_classes] = info.colors[: info.num_classes]
    palette[info.ignore_index] = info.colors[-1]
    return palette[labels.astype(np.uint8)]


def write_shapes_dataset(
    root: str | Path, num_train: int = 64, num_val: int = 16, size: tuple[int, int] = (64, 80), seed: int = 0
) -> Path:
    """Write the "shapes" data set in the CamVid layout: noisy images with squares and discs, void outlines.

    Deterministic for a seed; used by the demos and tests.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    info = SEGMENTATION_DATASETS["shapes"]
    h, w = size
    for split, count in (("train", num_train), ("val", num_val), ("test", num_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            background = rng.integers(40, 120, 3)
            image = Image.new("RGB", (w, h), tuple(int(c) for c in background))
            label = Image.new("L", (w, h), 0)
            draw_image, draw_label = ImageDraw.Draw(image), ImageDraw.Draw(label)
            for _ in range(int(rng.integers(1, 4))):
                cls = int(rng.integers(1, 3))
                r = int(rng.integers(6, min(h, w) // 4))
                cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
                box = (cx - r, cy - r, cx + r, cy + r)
                colour = tuple(int(c) for c in np.clip(np.array(info.colors[cls]) + rng.integers(-30, 30, 3), 0, 255))
                shape = draw_image.rectangle if cls == 1 else draw_image.ellipse
                shape_label = draw_label.rectangle if cls == 1 else draw_label.ellipse
                shape(box, fill=colour)
                shape_label(box, fill=info.ignore_index)  # void outline, then the class inside
                shape_label((box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1), fill=cls)
            pixels = np.asarray(image).astype(np.int16) + rng.integers(-20, 20, (h, w, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / split / f"shape_{i:04d}.png")
            label.save(root / f"{split}annot" / f"shape_{i:04d}.png")
    return root
