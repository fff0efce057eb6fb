"""Semantic segmentation task for the shared trainer: FC-DenseNet models, CamVid-layout data, mIoU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data.segmentation import (
    SEGMENTATION_DATASETS,
    SegmentationFolder,
    build_segmentation_transform,
    write_shapes_dataset,
)
from ..engine.checkpoint import export_weights
from .common import build_config_model, config_model_args
from .metrics import SegmentationMetric

__all__ = ["SEG_DATA", "SegmentationTask", "dataset_info"]

# The data section of a segmentation config.
SEG_DATA: dict[str, Any] = {
    "dataset": None,  # camvid, shapes
    "root": None,
    "crop_size": 224,  # random training crops (FC-DenseNet: 224); None trains on full images
    "hflip": True,
    "color_jitter": 0.0,
    "batch_size": 3,  # global batch per optimiser step
    "eval_batch_size": 1,
    "num_workers": 4,
    "class_weights": None,  # per-class loss weights (e.g. median-frequency balancing)
}


def dataset_info(cfg: dict[str, Any]):
    name = cfg["data"]["dataset"]
    if name not in SEGMENTATION_DATASETS:
        raise ValueError(f"unknown data.dataset {name!r}; use one of {sorted(SEGMENTATION_DATASETS)}")
    return SEGMENTATION_DATASETS[name]


class SegmentationTask:
    """FC-DenseNet training (Jegou et al. 2017): cross-entropy with void ignored, mIoU selects the best model."""

    data_defaults = SEG_DATA
    data_choices = {"dataset": tuple(SEGMENTATION_DATASETS)}
    best_key, best_mode = "mIoU", "max"

    def model_arg_names(self, raw_cfg: dict[str, Any]) -> list[str]:
        return config_model_args(raw_cfg, "segmentation")

    def build_model(self, cfg: dict[str, Any], pretrained: str | None = None) -> nn.Module:
        """The registered model with the data set's classes; ``pretrained`` loads a checkpoint of it completely
        (a classifier of another size is replaced by a fresh one, with a warning)."""
        return build_config_model(cfg, "segmentation", pretrained, num_classes=dataset_info(cfg).num_classes)

    def build_datasets(self, cfg: dict[str, Any]):
        data, info = cfg["data"], dataset_info(cfg)
        if data["root"] is None:
            raise ValueError("data.root (or --data-root) must name the data set folder")
        root = Path(data["root"])
        if data["dataset"] == "shapes" and not root.exists():
            write_shapes_dataset(root)  # generated, not downloaded
        train_tf = build_segmentation_transform(info, True, data["crop_size"], data["hflip"], data["color_jitter"])
        eval_tf = build_segmentation_transform(info, False)
        return SegmentationFolder(root, "train", info, train_tf), SegmentationFolder(root, "val", info, eval_tf)

    def loss_fn(self, cfg: dict[str, Any]) -> nn.Module:
        info = dataset_info(cfg)
        weights = cfg["data"]["class_weights"]
        if weights is not None and len(weights) != info.num_classes:
            raise ValueError(f"data.class_weights has {len(weights)} entries for {info.num_classes} classes")
        weight = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
        return nn.CrossEntropyLoss(weight=weight, ignore_index=info.ignore_index)

    def metric(self, cfg: dict[str, Any]) -> SegmentationMetric:
        info = dataset_info(cfg)
        return SegmentationMetric(info.num_classes, info.ignore_index, info.classes)

    def eval_forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs)

    def finish(self, trainer, metrics: dict[str, float], datasets) -> None:
        weights = export_weights(trainer.eval_model, trainer.work_dir / "final.safetensors", {"eval": metrics})
        print(f"weights: {weights}", flush=True)
        print(format_iou_table(metrics), flush=True)


def format_iou_table(metrics: dict[str, float]) -> str:
    rows = [f"| {k[4:]} | {v:.2f} |" for k, v in metrics.items() if k.startswith("IoU_")]
    rows += [f"| **mIoU** | {metrics['mIoU']:.2f} |", f"| global accuracy | {metrics['global_acc']:.2f} |"]
    return "\n".join(["| class | IoU |", "|---|---|", *rows])
