"""Classification task for the shared trainer: model, data sets, loss, ten-crop evaluation and weight export."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from ..data import DATASETS, build_classification_dataset, build_eval_transform, build_train_transform
from ..models import DenseNet
from ..registry import create_model, is_model
from .config import CLS_DATA
from .metrics import TopKAccuracy

__all__ = [
    "ClassificationTask",
    "model_arg_names",
    "build_model",
    "build_datasets",
    "ten_crop_forward",
    "export_weights",
]

_BUILDER_ARGS = ("pretrained_cfg", "pretrained_cfg_overlay")


def model_arg_names() -> list[str]:
    """Keys a config's ``model`` section may hold besides ``type``."""
    params = inspect.signature(DenseNet.__init__).parameters
    return ["type", *[p for p in params if p != "self"], *_BUILDER_ARGS]


def build_model(cfg: dict[str, Any], pretrained: str | Path | None = None) -> nn.Module:
    """Create ``cfg['model']['type']`` with the data set's classes and channels unless the config sets them.

    ``pretrained`` fine-tunes from a weights file: everything that fits is loaded, and a classifier of another
    size is replaced by a fresh one (the official code's ``-resetClassifier``).
    """
    model_cfg = dict(cfg["model"])
    name = model_cfg.pop("type")
    if not name or not is_model(name):
        create_model(name or "<missing model.type>")  # raises with the closest registered names
    info = DATASETS[cfg["data"]["dataset"]]
    model_cfg.setdefault("num_classes", info.num_classes)
    model_cfg.setdefault("in_chans", info.in_chans)
    if pretrained:
        model_cfg["pretrained_cfg_overlay"] = dict(model_cfg.get("pretrained_cfg_overlay") or {}, file=str(pretrained))
    return create_model(name, pretrained=bool(pretrained), **model_cfg)


def build_datasets(cfg: dict[str, Any], ten_crop: bool | None = None):
    """Train and evaluation splits with the recipe's transforms."""
    data = cfg["data"]
    name = data["dataset"]
    if name not in DATASETS:
        raise ValueError(f"unknown data.dataset {name!r}; use one of {sorted(DATASETS)}")
    info = DATASETS[name]
    size = data["image_size"] or info.image_size
    ten_crop = data["ten_crop"] if ten_crop is None else ten_crop
    train_tf = build_train_transform(data["augment"], size, info.mean, info.std)
    eval_tf = build_eval_transform(data["augment"], size, info.mean, info.std, ten_crop=ten_crop)
    common = dict(download=data["download"], skip_corrupt=data["skip_corrupt"])
    train_set = build_classification_dataset(name, data["root"], True, train_tf, **common)
    eval_set = build_classification_dataset(name, data["root"], False, eval_tf, **common)
    return train_set, eval_set


def ten_crop_forward(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Plain forward, or for (N, 10, C, H, W) ten-crop batches the log of the crops' mean softmax."""
    if inputs.ndim != 5:
        return model(inputs)
    batch, crops = inputs.shape[:2]
    probs = F.softmax(model(inputs.flatten(0, 1)).float(), dim=1).view(batch, crops, -1).mean(1)
    return probs.clamp_min(1e-12).log()  # cross-entropy of log-probabilities is their NLL


def export_weights(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Save weights as safetensors with the pretrained config (JSON) as metadata, plus ``<path>.json``.

    Load them back with ``create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    cfg.update({"num_classes": getattr(model, "num_classes", None), **(metadata or {})})
    cfg = {k: v for k, v in cfg.items() if k not in ("file", "state_dict")}
    text = json.dumps(cfg, default=str)
    save_file(state, str(path), metadata={"pretrained_cfg": text})
    path.with_suffix(".json").write_text(json.dumps(json.loads(text), indent=2))
    return path


class ClassificationTask:
    """Classification for the shared trainer and tools (``engine.cli``)."""

    data_defaults = CLS_DATA
    best_key, best_mode = "top1", "max"

    def model_arg_names(self, raw_cfg: dict[str, Any]) -> list[str]:
        return model_arg_names()

    def build_model(self, cfg: dict[str, Any], pretrained: str | None = None) -> nn.Module:
        return build_model(cfg, pretrained)

    def build_datasets(self, cfg: dict[str, Any], ten_crop: bool | None = None):
        return build_datasets(cfg, ten_crop)

    def loss_fn(self, cfg: dict[str, Any]) -> nn.Module:
        return nn.CrossEntropyLoss(label_smoothing=cfg["train"]["label_smoothing"])

    def metric(self, cfg: dict[str, Any]) -> TopKAccuracy:
        return TopKAccuracy((1, 5))

    def eval_forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return ten_crop_forward(model, inputs)

    def finish(self, trainer, metrics: dict[str, float], datasets) -> None:
        weights = export_weights(trainer.eval_model, trainer.work_dir / "final.safetensors", {"eval": metrics})
        print(f"weights: {weights}", flush=True)
        for split, dataset in zip(("train", "eval"), datasets):
            if getattr(dataset, "num_skipped", 0):
                print(f"skipped {dataset.num_skipped} unreadable {split} images (data.skip_corrupt=True)", flush=True)
