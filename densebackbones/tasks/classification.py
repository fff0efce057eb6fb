"""Classification task for the shared trainer: model, data sets, loss, ten-crop evaluation and weight export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Subset

from ..data import AUGMENTATIONS, DATASETS, build_classification_dataset, build_eval_transform, build_train_transform
from ..engine.checkpoint import export_weights
from .common import build_config_model, config_model_args
from .metrics import TopKAccuracy

__all__ = [
    "CLS_DATA",
    "ClassificationTask",
    "ExitsCrossEntropy",
    "build_datasets",
    "build_model",
    "image_size",
    "ten_crop_forward",
]

# The data section of a classification config (the other sections: densebackbones.engine.config.DEFAULTS).
CLS_DATA: dict[str, Any] = {
    "dataset": None,  # digits, cifar10, cifar100, svhn, fashion_mnist, imagenet
    "root": None,
    "download": False,  # fetch the official files if missing (never by default)
    "augment": "plus",  # plus (CIFAR "+"), none, imagenet, shift
    "image_size": None,  # default: the data set's
    "batch_size": 64,  # global batch per optimiser step, over all GPUs and accumulation steps
    "eval_batch_size": None,  # default: batch_size
    "num_workers": 4,
    "ten_crop": False,
    "skip_corrupt": False,
    "holdout": 0,  # N training images (a fixed random draw) left out of training; MSDNet fits its exit thresholds there
}


def build_model(cfg: dict[str, Any], pretrained: str | Path | None = None) -> nn.Module:
    """The config's backbone with the data set's classes and channels unless the config sets them; ``pretrained``
    fine-tunes from a weights file (see :func:`~densebackbones.tasks.common.build_config_model`). An image size
    below the model's smallest input fails here, naming ``data.image_size``."""
    if cfg["data"]["dataset"] not in DATASETS:
        raise ValueError(f"unknown data.dataset {cfg['data']['dataset']!r}; use one of {sorted(DATASETS)}")
    info = DATASETS[cfg["data"]["dataset"]]
    model = build_config_model(cfg, "classification", pretrained, num_classes=info.num_classes, in_chans=info.in_chans)
    minimum, size = getattr(model, "min_input_size", 1), image_size(cfg)
    if size < minimum:
        raise ValueError(
            f"config key data.image_size={size} is below {cfg['model']['type']}'s smallest input, {minimum} px; pass "
            f"data.image_size={minimum} or more"
        )
    return model


# The names a classification config's data keys take (engine.config.check_values).
CLS_DATA_CHOICES = {"dataset": tuple(DATASETS), "augment": tuple(AUGMENTATIONS)}


def image_size(cfg: dict[str, Any]) -> int:
    """The side of the images the config's model sees: ``data.image_size``, or the data set's own size."""
    return cfg["data"]["image_size"] or DATASETS[cfg["data"]["dataset"]].image_size


def _holdout_split(train_set, holdout: int) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices): ``holdout`` training images drawn at random with a fixed seed, the same
    in every run and tool (ImageFolder trees are ordered by class, so the last images would be a few classes)."""
    if not 0 <= holdout < len(train_set):
        raise ValueError(
            f"data.holdout={holdout} must be in 0..{len(train_set) - 1} (the training split has {len(train_set)} "
            f"images)"
        )
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))
    return sorted(order[holdout:].tolist()), sorted(order[:holdout].tolist())


def build_datasets(cfg: dict[str, Any], ten_crop: bool | None = None, holdout_split: bool = False):
    """Train and evaluation splits with the recipe's transforms. With ``data.holdout`` a fixed random draw of
    training split are left out of training; ``holdout_split=True`` returns them (evaluation transforms) instead of
    the training images, e.g. to fit MSDNet's exit thresholds (Sec. 5.2)."""
    data = cfg["data"]
    name = data["dataset"]
    if name not in DATASETS:
        raise ValueError(f"unknown data.dataset {name!r}; use one of {sorted(DATASETS)}")
    info = DATASETS[name]
    size = image_size(cfg)
    ten_crop = data["ten_crop"] if ten_crop is None else ten_crop
    train_tf = build_train_transform(data["augment"], size, info.mean, info.std, native_size=info.image_size)
    eval_tf = build_eval_transform(
        data["augment"], size, info.mean, info.std, ten_crop=ten_crop, native_size=info.image_size
    )
    common = dict(download=data["download"], skip_corrupt=data["skip_corrupt"])
    train_set = build_classification_dataset(name, data["root"], True, eval_tf if holdout_split else train_tf, **common)
    train_indices, held_out = _holdout_split(train_set, data["holdout"])
    if holdout_split:
        train_set = Subset(train_set, held_out)
    elif data["holdout"]:
        train_set = Subset(train_set, train_indices)
    eval_set = build_classification_dataset(name, data["root"], False, eval_tf, **common)
    return train_set, eval_set


def ten_crop_forward(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
    """Plain forward, or for (N, 10, C, H, W) ten-crop batches the log of the crops' mean softmax (per exit for a
    model with several exits)."""
    if inputs.ndim != 5:
        return model(inputs)
    batch, crops = inputs.shape[:2]
    outputs = model(inputs.flatten(0, 1))

    def average(logits: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(logits.float(), dim=1).view(batch, crops, -1).mean(1)
        return probs.clamp_min(1e-12).log()  # cross-entropy of log-probabilities is their NLL

    return [average(o) for o in outputs] if isinstance(outputs, (list, tuple)) else average(outputs)


class ExitsCrossEntropy(nn.Module):
    """Cross-entropy of a classifier's logits, or for a model with several exits (MSDNet: a list of logits) the
    weighted sum of every exit's cross-entropy (MSDNet, Sec. 4: unweighted by default)."""

    def __init__(self, exit_weights: tuple[float, ...] | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.exit_weights = exit_weights
        self.label_smoothing = label_smoothing

    def forward(self, outputs: torch.Tensor | list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return F.cross_entropy(outputs, targets, label_smoothing=self.label_smoothing)
        weights = self.exit_weights or (1.0,) * len(outputs)
        if len(weights) != len(outputs):
            raise ValueError(f"{len(weights)} exit weights for a model with {len(outputs)} exits")
        losses = [F.cross_entropy(o, targets, label_smoothing=self.label_smoothing) for o in outputs]
        return sum(w * loss for w, loss in zip(weights, losses))


class ClassificationTask:
    """Classification for the shared trainer and tools (``engine.cli``)."""

    data_defaults = CLS_DATA
    data_choices = CLS_DATA_CHOICES
    best_key, best_mode = "top1", "max"

    def model_arg_names(self, raw_cfg: dict[str, Any]) -> list[str]:
        return config_model_args(raw_cfg, "classification")

    def build_model(self, cfg: dict[str, Any], pretrained: str | None = None) -> nn.Module:
        self.model = build_model(cfg, pretrained)
        return self.model

    def build_datasets(self, cfg: dict[str, Any], ten_crop: bool | None = None, holdout_split: bool = False):
        return build_datasets(cfg, ten_crop, holdout_split)

    def loss_fn(self, cfg: dict[str, Any]) -> nn.Module:
        exit_weights = getattr(getattr(self, "model", None), "exit_weights", None)
        return ExitsCrossEntropy(exit_weights, label_smoothing=cfg["train"]["label_smoothing"])

    def metric(self, cfg: dict[str, Any]) -> TopKAccuracy:
        return TopKAccuracy((1, 5))

    def eval_forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return ten_crop_forward(model, inputs)

    def finish(self, trainer, metrics: dict[str, float], datasets) -> None:
        weights = export_weights(trainer.eval_model, trainer.work_dir / "final.safetensors", {"eval": metrics})
        print(f"weights: {weights}", flush=True)
        for split, dataset in zip(("train", "eval"), datasets):
            source = dataset.dataset if isinstance(dataset, Subset) else dataset  # data.holdout leaves a subset
            if getattr(source, "num_skipped", 0):
                print(f"skipped {source.num_skipped} unreadable {split} images (data.skip_corrupt=True)", flush=True)
