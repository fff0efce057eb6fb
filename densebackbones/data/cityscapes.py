"""Cityscapes in its released layout, labels through the official definitions (the ``cityscapesscripts`` package).

Layout (leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip unpacked into one root):
``root/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
``root/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``. The 34 label ids map to the 19
training ids of ``cityscapesscripts.helpers.labels`` (``trainId``), every other id (and ``ignoreInEval``) to 255,
which the loss and the metric ignore, as the official evaluation (``evalPixelLevelSemanticLabeling``) does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS

from .segmentation import SegmentationFolder, SegmentationInfo

__all__ = ["CITYSCAPES", "CityscapesFolder", "TRAIN_ID_TO_LABEL_ID", "label_ids_to_train_ids"]

_TRAIN = sorted(
    ((label.trainId, label) for label in CITYSCAPES_LABELS if 0 <= label.trainId < 255 and not label.ignoreInEval),
    key=lambda pair: pair[0],
)
CITYSCAPES = SegmentationInfo(
    classes=tuple(label.name for _, label in _TRAIN),
    colors=(*(tuple(label.color) for _, label in _TRAIN), (0, 0, 0)),
    ignore_index=255,
    mean=(0.485, 0.456, 0.406),  # ImageNet's, as DenseASPP's ImageNet-initialised backbones expect
    std=(0.229, 0.224, 0.225),
)
# label id (0..33, and -1 for license plate) -> train id, 255 where it is not evaluated
_LOOKUP = np.full(256, 255, dtype=np.uint8)
for _label in CITYSCAPES_LABELS:
    if _label.id >= 0:
        _LOOKUP[_label.id] = _label.trainId if 0 <= _label.trainId < 255 and not _label.ignoreInEval else 255
_KNOWN_IDS = {label.id for label in CITYSCAPES_LABELS if label.id >= 0}
TRAIN_ID_TO_LABEL_ID = np.array([label.id for _, label in _TRAIN], dtype=np.uint8)


def label_ids_to_train_ids(label_ids: np.ndarray, path: Path | str = "label map") -> np.ndarray:
    """A ``*_gtFine_labelIds.png`` map as train ids (255: ignored); ids outside the official table: one line naming
    the file and the ids."""
    unknown = sorted(set(np.unique(label_ids).tolist()) - _KNOWN_IDS)
    if unknown:
        raise ValueError(
            f"{path} has label ids {unknown} outside Cityscapes' table (0..{max(_KNOWN_IDS)}); pass the "
            f"*_gtFine_labelIds.png maps, not *_color.png or *_instanceIds.png"
        )
    return _LOOKUP[label_ids]


class CityscapesFolder(SegmentationFolder):
    """One split of Cityscapes in its layout (see the module docstring); items as :class:`SegmentationFolder`'s:
    ``(image float tensor (3, H, W), train-id mask int64 (H, W))``."""

    def __init__(self, root: str | Path, split: str, info: SegmentationInfo = CITYSCAPES, transform=None) -> None:
        root = Path(root)
        image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"{folder} does not exist. Expected Cityscapes' layout: {root}/leftImg8bit/{split}/<city>/"
                    f"*_leftImg8bit.png and {root}/gtFine/{split}/<city>/*_gtFine_labelIds.png"
                )
        images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
        labels = {p.name.removesuffix("_gtFine_labelIds.png"): p for p in label_dir.glob("*/*_gtFine_labelIds.png")}
        if not images:
            raise ValueError(f"split {split!r} is empty: no <city>/*_leftImg8bit.png in {image_dir}")
        self.pairs = []
        for image in images:
            stem = image.name.removesuffix("_leftImg8bit.png")
            if stem not in labels:
                raise FileNotFoundError(
                    f"no label map {label_dir / image.parent.name / (stem + '_gtFine_labelIds.png')} for {image}"
                )
            self.pairs.append((image, labels.pop(stem)))
        if labels:
            extra = sorted(labels.values())[0]
            raise FileNotFoundError(f"{extra} has no image in {image_dir} ({len(labels)} label maps without one)")
        self.info, self.transform = info, transform

    def class_indices(self, label: np.ndarray, label_path: Path) -> np.ndarray:
        """The label-id map as train ids (255: not evaluated), through the official table."""
        return label_ids_to_train_ids(label, label_path)
