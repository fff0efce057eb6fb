"""Semantic segmentation task for the shared trainer: FC-DenseNet, DenseASPP and DeepLabV3 models, CamVid-layout and
Cityscapes data, mIoU.

``data.dataset='folder'`` fine-tunes on one's own image/mask folders (``densebackbones.data.own.ImageMaskFolder``):
classes from ``classes.txt`` (stored as ``data.classes``, so they travel with every checkpoint), 255 ignored, inputs
normalised with the encoder's pretrained statistics."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data.cityscapes import CITYSCAPES, CityscapesFolder
from ..data.classification import IMAGENET_MEAN, IMAGENET_STD
from ..data.own import IGNORE_INDEX, ImageMaskFolder, label_palette, read_classes_txt
from ..data.segmentation import (
    SEGMENTATION_DATASETS,
    SegmentationFolder,
    SegmentationInfo,
    build_segmentation_transform,
    write_shapes_dataset,
)
from ..engine.checkpoint import export_weights
from ..engine.config import declare_data_keys, micro_batch_size
from ..engine.task import TaskRecord
from ..registry import model_arg_names, model_class
from .common import build_config_model, config_model_args
from .metrics import SegmentationMetric
from .seg_inference import SegInference, segment

__all__ = ["SEG_DATA", "SegmentationLoss", "SegmentationTask", "dataset_info"]

# The data section of a segmentation config.
SEG_DATA: dict[str, Any] = {
    # camvid, cityscapes, shapes; own data: folder ({train,val}/images, {train,val}/masks, classes.txt)
    "dataset": None,
    "root": None,
    "crop_size": 224,  # random training crops, a side or (height, width) (FC-DenseNet: 224); None: full images
    "hflip": True,
    "color_jitter": 0.0,
    "scale_range": None,  # e.g. (0.5, 2.0): random rescaling before the crop (DenseASPP, DeepLab)
    "brightness_shift": 0.0,  # e.g. 10: one shift in [-10, 10] grey levels per image (DenseASPP)
    "batch_size": 3,  # global batch per optimiser step
    "eval_batch_size": 1,
    "num_workers": 4,
    "class_weights": None,  # per-class loss weights (e.g. median-frequency balancing)
    "classes": None,  # folder: filled from classes.txt (a contradicting list is an error)
    # test-time inference (tasks/seg_inference.py): whole image or sliding windows, scales, flip
    "test_mode": "whole",  # or "slide" (test_crop and test_stride: an int or (height, width))
    "test_crop": None,
    "test_stride": None,
    "test_scales": None,  # e.g. (0.75, 1.0, 1.25); None: the image's own size only
    "test_flip": False,
}
declare_data_keys("segmentation", SEG_DATA)


def _encoder_stats(cfg: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of the encoder's pretrained weights (its timm config: torchvision's ImageNet statistics for
    DenseNet-121); ImageNet's for a model without a registered encoder (FC-DenseNet56/67/103)."""
    import timm

    model = cfg["model"]["type"]
    encoder = cfg["model"].get("encoder") or (model[3:] if model.startswith("fc_densenet_bc") else None)
    try:
        found = timm.models.get_pretrained_cfg(encoder) if encoder else None
    except (RuntimeError, KeyError, ValueError):
        found = None
    if found is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(found.mean), tuple(found.std)


def dataset_info(cfg: dict[str, Any]) -> SegmentationInfo:
    """Classes, colours, ignore index and statistics of the config's data set. For ``folder`` the classes come
    from ``classes.txt`` (or, without the data, from ``data.classes``) and are stored in ``data.classes``."""
    name = cfg["data"]["dataset"]
    if name == "folder":
        given = list(cfg["data"]["classes"]) if cfg["data"]["classes"] is not None else None
        root = Path(cfg["data"]["root"]).expanduser() if cfg["data"]["root"] is not None else None
        if given is not None and (root is None or not root.exists()):
            classes = given
        else:
            if root is None:
                raise ValueError("data.root (or --data-root) must name the data set folder")
            classes = read_classes_txt(root)
            if given is not None and given != classes:
                raise ValueError(
                    f"data.classes={given} contradicts {root / 'classes.txt'}: {classes}; leave data.classes unset"
                )
        cfg["data"]["classes"] = classes
        colors = (*label_palette(len(classes)), (255, 255, 255))
        return SegmentationInfo(tuple(classes), colors, IGNORE_INDEX, *_encoder_stats(cfg))
    if name == "cityscapes":
        return CITYSCAPES
    if name not in SEGMENTATION_DATASETS:
        raise ValueError(
            f"unknown data.dataset {name!r}; use one of {sorted(SEGMENTATION_DATASETS)}, 'cityscapes' or 'folder'"
        )
    return SEGMENTATION_DATASETS[name]


def split_dataset(cfg: dict[str, Any], split: str, transform=None) -> SegmentationFolder:
    """One split of the config's data set (``train``, ``val`` or ``test``) in its layout."""
    info = dataset_info(cfg)
    if cfg["data"]["root"] is None:
        raise ValueError("data.root (or --data-root) must name the data set folder")
    layouts = {"folder": ImageMaskFolder, "cityscapes": CityscapesFolder}
    folder = layouts.get(cfg["data"]["dataset"], SegmentationFolder)
    return folder(Path(cfg["data"]["root"]).expanduser(), split, info, transform)


class SegmentationLoss(nn.CrossEntropyLoss):
    """Pixel cross-entropy with ``ignore_index`` pixels left out, averaged over the labelled pixels (weighted by
    ``weight`` as ``nn.CrossEntropyLoss`` does), and 0 (with a zero gradient) for a batch without any labelled
    pixel, where ``nn.CrossEntropyLoss`` gives NaN (0 / 0)."""

    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int = -100) -> None:
        super().__init__(weight=weight, ignore_index=ignore_index, reduction="sum")

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = super().forward(logits, targets)  # summed over labelled pixels, weighted
        valid = targets != self.ignore_index
        if self.weight is None:
            count = valid.sum().to(total.dtype)
        else:
            count = self.weight.to(total.dtype)[targets[valid]].sum()
        return total / count.clamp_min(torch.finfo(total.dtype).tiny)  # no labelled pixel: 0 / tiny = 0


class SegmentationTask:
    """FC-DenseNet training (Jegou et al. 2017): cross-entropy with void ignored, mIoU selects the best model."""

    data_defaults = SEG_DATA
    data_choices = {"dataset": (*SEGMENTATION_DATASETS, "cityscapes", "folder"), "test_mode": ("whole", "slide")}

    def check(self, cfg: dict[str, Any], world_size: int) -> None:
        """Before the work dir is claimed: a model that needs several images per forward in training (DeepLabV3's
        image pooling normalises a 1x1 map: ``min_train_batch``) gets them."""
        needed = getattr(model_class(cfg["model"]["type"]), "min_train_batch", 1)
        count = micro_batch_size(cfg, world_size)
        if count < needed:
            raise ValueError(
                f"{cfg['model']['type']} trains on {needed} or more images per forward; data.batch_size="
                f"{cfg['data']['batch_size']} over {world_size} process(es) x train.accum_steps="
                f"{cfg['train']['accum_steps']} gives {count}: raise data.batch_size or lower train.accum_steps"
            )

    def build(self, cfg: dict[str, Any], pretrained: str | None = None, training: bool = True) -> TaskRecord:
        """The run's record (engine/task.py): model, splits (``training=False``: the evaluation split only), the
        void-ignoring loss, the confusion-matrix metric (mIoU decides ``best.pth``), the config's test-time
        inference, the class names; the final line shows mIoU, global accuracy and loss (per-class IoU: the logs)."""
        model = self.build_model(cfg, pretrained)
        train_set, eval_set = self.build_datasets(cfg)
        return TaskRecord(
            model=model,
            train_set=train_set if training else None,
            eval_set=eval_set,
            loss_fn=self.loss_fn(cfg),
            metric=self.metric(cfg),
            best_key="mIoU",
            eval_forward=self.eval_forward_for(cfg),
            meta=self.run_meta(cfg),
            headline=("mIoU", "global_acc", "loss"),
        )

    def model_arg_names(self, raw_cfg: dict[str, Any]) -> list[str]:
        return config_model_args(raw_cfg, "segmentation")

    def build_model(self, cfg: dict[str, Any], pretrained: str | None = None) -> nn.Module:
        """The registered model with the data set's classes; ``pretrained`` loads a checkpoint of it completely
        (a classifier of another size is replaced by a fresh one, with a warning). For a decoder on a registered
        backbone (``encoder_kwargs``, ``backbone_kwargs``), a classification checkpoint (torchvision's DenseNet-121...)
        initialises the backbone and the decoder starts fresh."""
        info = dataset_info(cfg)
        if cfg["data"]["dataset"] == "folder" and cfg["model"].get("num_classes") not in (None, info.num_classes):
            raise ValueError(
                f"model.num_classes={cfg['model']['num_classes']} contradicts the {info.num_classes} classes of "
                f"classes.txt; leave model.num_classes unset"
            )
        names = model_arg_names(cfg["model"]["type"])
        backbone = next((arg for arg in ("encoder_kwargs", "backbone_kwargs") if arg in names), None)
        return build_config_model(cfg, "segmentation", pretrained, backbone, num_classes=info.num_classes)

    def build_datasets(self, cfg: dict[str, Any]):
        data, info = cfg["data"], dataset_info(cfg)
        if data["root"] is None:
            raise ValueError("data.root (or --data-root) must name the data set folder")
        root = Path(data["root"])
        if data["dataset"] == "shapes" and not root.exists():
            write_shapes_dataset(root)  # generated, not downloaded
        train_tf = build_segmentation_transform(
            info,
            True,
            data["crop_size"],
            data["hflip"],
            data["color_jitter"],
            data["scale_range"],
            data["brightness_shift"],
        )
        eval_tf = build_segmentation_transform(info, False)
        return split_dataset(cfg, "train", train_tf), split_dataset(cfg, "val", eval_tf)

    def loss_fn(self, cfg: dict[str, Any]) -> nn.Module:
        info = dataset_info(cfg)
        weights = cfg["data"]["class_weights"]
        if weights is not None and len(weights) != info.num_classes:
            raise ValueError(f"data.class_weights has {len(weights)} entries for {info.num_classes} classes")
        weight = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
        return SegmentationLoss(weight=weight, ignore_index=info.ignore_index)

    def metric(self, cfg: dict[str, Any]) -> SegmentationMetric:
        info = dataset_info(cfg)
        return SegmentationMetric(info.num_classes, info.ignore_index, info.classes)

    def eval_forward_for(self, cfg: dict[str, Any]) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
        """The config's test-time inference (``data.test_mode``, ``test_crop``, ``test_stride``, ``test_scales``,
        ``test_flip``) as an ``eval_forward``; a bad combination is refused here, before anything runs."""
        inference = SegInference.from_data_cfg(cfg["data"])
        return functools.partial(_segment_with, inference)

    def run_meta(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """What ``meta.json`` and checkpoints record besides the engine's fields: the class names."""
        return {"classes": list(dataset_info(cfg).classes)}

    def finish(self, trainer, metrics: dict[str, float], datasets) -> None:
        names = {"label_names": list(dataset_info(trainer.cfg).classes)}  # timm's pretrained_cfg field
        metrics_json = {k: (None if v != v else v) for k, v in metrics.items()}  # NaN IoU (class absent): null
        weights = export_weights(
            trainer.eval_model, trainer.work_dir / "final.safetensors", {"eval": metrics_json, **names}
        )
        print(f"weights: {weights}", flush=True)
        print(format_iou_table(metrics), flush=True)


def _segment_with(inference: SegInference, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    return segment(model, inputs, inference)


def format_iou_table(metrics: dict[str, float]) -> str:
    rows = [f"| {k[4:]} | {_shown(v)} |" for k, v in metrics.items() if k.startswith("IoU_")]
    rows += [f"| **mIoU** | {_shown(metrics['mIoU'])} |", f"| global accuracy | {_shown(metrics['global_acc'])} |"]
    return "\n".join(["| class | IoU |", "|---|---|", *rows])


def _shown(value: float) -> str:
    return "n/a (absent)" if value < 0 else f"{value:.2f}"  # negative: undefined (SegmentationMetric)
