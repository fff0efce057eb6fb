"""One's own data in three plain layouts, for fine-tuning (``configs/cls/finetune_*.py``, ``configs/seg/``).

* Image folders: ``root/train/<class>/*`` and ``root/val/<class>/*`` (torchvision's ImageFolder); the class list is
  train's folders, sorted. Without ``val/`` a stratified fraction of train is held out (:func:`stratified_holdout`).
* Multi-label CSVs: ``root/train.csv``, ``root/val.csv`` and ``root/images/``; each CSV has an image-file column and a
  column of ``|``-separated label names, as ChestX-ray14's ``Data_Entry_2017.csv`` (``Image Index``,
  ``Finding Labels``). The label set is every name train.csv uses, sorted.
* Image/mask folders: ``root/{train,val}/images/*``, ``root/{train,val}/masks/<image stem>.png`` (index PNGs, 255 =
  ignore) and ``root/classes.txt`` (one class name per line; the line number is the index).

Grey, palette and RGBA images are converted to RGB, so ImageNet weights apply to all of them.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from .classification import read_skipping_corrupt
from .files import read_image_size
from .segmentation import SegmentationFolder, SegmentationInfo

__all__ = [
    "IGNORE_INDEX",
    "ImageMaskFolder",
    "MultiLabelCSVDataset",
    "folder_classes",
    "image_files",
    "label_palette",
    "mask_folder_info",
    "read_classes_txt",
    "read_multilabel_csv",
    "stratified_holdout",
]

IGNORE_INDEX = 255  # mask value for pixels that count nowhere (mmsegmentation's and torchvision's convention)


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (torchvision's extensions, any case), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS))


def folder_classes(split_dir: str | Path) -> list[str]:
    """The class folders of an ImageFolder split, sorted; an error naming the folder when there are none."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"{split_dir} does not exist. Expected layout: {split_dir.parent}/train/<class name>/<image> (and "
            f"optionally {split_dir.parent}/val/<class name>/<image>)"
        )
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"{split_dir} has no class folders. Expected layout: {split_dir}/<class name>/<image>")
    return classes


def stratified_holdout(labels: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices): ``fraction`` of every class's images, rounded up (so that every class
    with two images or more is evaluated), drawn with a fixed seed; every class keeps at least one training image
    (a class with a single image is not evaluated)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.val_fraction={fraction} must be between 0 and 1 (exclusive)")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = min(math.ceil(len(members) * fraction - 1e-9), len(members) - 1)
        held.extend(members[:count].tolist())
        train.extend(members[count:].tolist())
    if not held:
        raise ValueError(
            f"no val/ split and data.val_fraction={fraction} holds out no image of {len(labels)}: add a val/ folder "
            f"or raise data.val_fraction"
        )
    return sorted(train), sorted(held)


def _load_rgb(path: str | Path) -> Image.Image:
    with open(path, "rb") as handle:
        return Image.open(handle).convert("RGB")


# ------------------------------------------------------------------------------------------------ multi-label CSV
def read_multilabel_csv(
    csv_path: str | Path, image_column: str, label_column: str, separator: str = "|"
) -> list[tuple[str, list[str]]]:
    """``(image file, [label names])`` rows of a multi-label CSV; an empty label cell means no label."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"{csv_path} does not exist. Expected layout: {csv_path.parent}/train.csv, {csv_path.parent}/val.csv and "
            f"{csv_path.parent}/images/, each CSV with the columns {image_column!r} and {label_column!r}"
        )
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in (image_column, label_column) if c not in columns]
        if missing:
            raise ValueError(
                f"{csv_path} has no column(s) {missing}; its columns are {columns}. Name yours with "
                f"data.image_column and data.label_column"
            )
        rows = []
        for row in reader:
            names = [n.strip() for n in (row[label_column] or "").split(separator) if n.strip()]
            rows.append((row[image_column].strip(), names))
    if not rows:
        raise ValueError(f"{csv_path} lists no images")
    return rows


class MultiLabelCSVDataset(Dataset):
    """Images named in a CSV with several labels each; items are ``(transform(image), target)`` with ``target`` a
    float tensor (num_classes,) of 0/1.

    Args:
        csv_path: the CSV; ``image_column`` names files under ``image_dir``, ``label_column`` holds label names
            separated by ``separator``.
        classes: the label set in index order (default: every name the CSV uses, sorted); a name outside it is an
            error naming the file, the row and the name.
        skip_corrupt: replace an unreadable image by the next readable one and count it (``num_skipped``).
    """

    def __init__(
        self,
        csv_path: str | Path,
        image_dir: str | Path,
        classes: Sequence[str] | None = None,
        transform: Callable | None = None,
        image_column: str = "Image Index",
        label_column: str = "Finding Labels",
        separator: str = "|",
        skip_corrupt: bool = False,
    ) -> None:
        csv_path, image_dir = Path(csv_path), Path(image_dir)
        rows = read_multilabel_csv(csv_path, image_column, label_column, separator)
        seen = sorted({n for _, names in rows for n in names})
        self.classes = list(seen if classes is None else classes)
        index = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, list[int]]] = []
        for line, (file, names) in enumerate(rows, start=2):  # line 1 is the header
            unknown = [n for n in names if n not in index]
            if unknown:
                raise ValueError(
                    f"{csv_path} line {line} ({file}): label {unknown[0]!r} is not in the training labels "
                    f"{self.classes}; every label must occur in train.csv"
                )
            self.samples.append((image_dir / file, [index[n] for n in names]))
        absent = [str(p) for p, _ in self.samples if not p.is_file()]
        if absent:
            raise FileNotFoundError(
                f"{len(absent)} image(s) listed in {csv_path} do not exist, e.g. {absent[0]}; images must be in "
                f"{image_dir}"
            )
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self._skipped = multiprocessing.Value("i", 0)

    @property
    def num_skipped(self) -> int:
        return self._skipped.value

    def targets(self) -> torch.Tensor:
        """The (N, num_classes) 0/1 label matrix."""
        out = torch.zeros(len(self.samples), len(self.classes))
        for i, (_, labels) in enumerate(self.samples):
            out[i, labels] = 1.0
        return out

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = read_skipping_corrupt(self, index, _load_rgb)
        target = torch.zeros(len(self.classes))
        target[labels] = 1.0
        return (self.transform(image) if self.transform else image), target


# --------------------------------------------------------------------------------------------- image/mask folders
def read_classes_txt(root: str | Path) -> list[str]:
    """``root/classes.txt``: one class name per line, the line number (from 0) its index in the masks."""
    path = Path(root) / "classes.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: write one class name per line (line 1 is index 0 in the masks; 255 is ignored)"
        )
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or "" in names:
        raise ValueError(f"{path} must hold one non-empty class name per line")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path} names {duplicates} more than once")
    if len(names) >= IGNORE_INDEX:
        raise ValueError(f"{path} lists {len(names)} classes; index masks hold at most {IGNORE_INDEX} (255 is ignore)")
    return names


def label_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Pascal VOC's colour map (bit-interleaved index): distinct colours for any number of classes."""
    colors = []
    for index in range(num_classes):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors.append((r, g, b))
    return colors


def mask_folder_info(root: str | Path, mean: Sequence[float], std: Sequence[float]) -> SegmentationInfo:
    """Classes from ``classes.txt``, VOC colours (white for ignore), ignore index 255, the weights' mean and std."""
    classes = read_classes_txt(root)
    colors = (*label_palette(len(classes)), (255, 255, 255))
    return SegmentationInfo(tuple(classes), colors, IGNORE_INDEX, tuple(mean), tuple(std))


class ImageMaskFolder(SegmentationFolder):
    """``root/<split>/images/*`` with ``root/<split>/masks/<image stem>.png``: every image has its mask of the same
    size (checked here, from the files' headers); class indices are checked as each mask is read."""

    def __init__(self, root: str | Path, split: str, info: SegmentationInfo, transform=None) -> None:
        root = Path(root)
        self.image_dir, self.label_dir = root / split / "images", root / split / "masks"
        for folder in (self.image_dir, self.label_dir):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"{folder} does not exist. Expected layout: {root}/{{train,val}}/images/<name>.<ext>, "
                    f"{root}/{{train,val}}/masks/<name>.png and {root}/classes.txt"
                )
        images = image_files(self.image_dir)
        if not images:
            raise ValueError(f"split {split!r} is empty: no images in {self.image_dir}")
        self.pairs = []
        for image in images:
            mask = self.label_dir / f"{image.stem}.png"
            if not mask.is_file():
                raise FileNotFoundError(f"image {image} has no mask {mask}")
            a, b = read_image_size(image, "an image"), read_image_size(mask, f"the mask of {image.name}")
            if a != b:
                raise ValueError(f"mask {mask} is {b[0]}x{b[1]} but its image {image} is {a[0]}x{a[1]}")
            self.pairs.append((image, mask))
        self.info = info
        self.transform = transform
