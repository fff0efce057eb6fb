"""Detection task for the shared trainer: single-shot detectors (DSOD, Pelee), VOC / COCO / shapes data with SSD
augmentation, multibox loss, COCO and VOC metrics equal to the official tools (docs/evaluation.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data.detection import (
    VOC_CLASSES,
    COCODetection,
    SSDTransform,
    VOCDetection,
    detection_collate,
    write_shapes_coco,
)
from ..engine.checkpoint import export_weights
from ..engine.config import declare_data_keys
from ..engine.distributed import all_gather_objects
from ..engine.task import TaskRecord
from ..heads.ssd import MultiBoxLoss, PriorConfig, SingleShotDetector, postprocess
from ..registry import model_arg_names, model_class
from .common import build_config_model, config_model_args
from .detection_eval import coco_evaluate, coco_evaluate_annotations, coco_ground_truth, voc_map

__all__ = ["DET_DATA", "DetectionLoss", "DetectionMetric", "DetectionTask", "class_names", "prior_config"]

# The data section of a detection config.
DET_DATA: dict[str, Any] = {
    "dataset": None,  # voc, coco, shapes
    "root": None,  # VOCdevkit, the COCO folder (annotations/, train2017/, val2017/), or the shapes folder
    "train_sets": (("2007", "trainval"), ("2012", "trainval")),  # VOC 07+12
    "val_sets": (("2007", "test"),),
    "train_split": "train2017",  # COCO
    "val_split": "val2017",
    "classes": None,  # COCO: filled from the annotation file
    "image_size": 300,
    "photometric": True,  # SSD's photometric distortion (Pelee's VOC script leaves it out)
    "max_expand": 4.0,  # SSD's zoom-out up to 4x; 1 turns it off (Pelee's VOC script)
    "batch_size": 128,  # global batch per optimiser step (DSOD: 128 through accumulation)
    "eval_batch_size": 8,
    "num_workers": 4,
    "shapes_train": 64,  # images in the generated shapes splits
    "shapes_val": 16,
}
declare_data_keys("detection", DET_DATA)

SHAPES_CLASSES = ("square", "disc")


def class_names(cfg: dict[str, Any]) -> tuple[str, ...]:
    name = cfg["data"]["dataset"]
    if name == "voc":
        return VOC_CLASSES
    if name == "shapes":
        return SHAPES_CLASSES
    if name == "coco":
        return tuple(cfg["data"]["classes"] or ())  # filled from the annotation file by build_datasets
    raise ValueError(f"unknown data.dataset {name!r}; use 'voc', 'coco' or 'shapes'")


def prior_config(cfg: dict[str, Any]) -> PriorConfig:
    """The configured detector's default boxes for the data set (its paper's COCO sizes for COCO, VOC sizes
    otherwise: DSOD's are SSD300's, Pelee's its own), scaled to ``data.image_size``."""
    presets = getattr(model_class(cfg["model"]["type"]), "prior_presets", SingleShotDetector.prior_presets)
    base = presets["coco" if cfg["data"]["dataset"] == "coco" else "voc"]
    size = cfg["data"]["image_size"]
    if size == base.image_size:
        return base
    scale = size / base.image_size
    return dataclasses.replace(
        base,
        image_size=size,
        min_sizes=tuple(m * scale for m in base.min_sizes),
        max_sizes=tuple(m * scale for m in base.max_sizes),
        steps=tuple(s * scale for s in base.steps),
    )


def _split_outputs(outputs, priors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # A detector set to output="loc_conf_priors" (as build_model sets it) gives the default boxes of the batch's
    # input size with its predictions; a plain (loc, conf) is scored against the boxes given at construction.
    loc, conf, *rest = outputs
    return loc, conf, (rest[0] if rest else priors)


class DetectionLoss(nn.Module):
    """Localisation + confidence multibox loss of a detector's ``(loc, conf, priors)`` (or ``(loc, conf)``, then
    against ``priors``, the boxes of the configured size) against per-image targets."""

    def __init__(self, priors: torch.Tensor, variances) -> None:
        super().__init__()
        self.multibox = MultiBoxLoss(priors.detach().clone(), variances)

    def forward(self, outputs, targets) -> torch.Tensor:
        loc, conf, priors = _split_outputs(outputs, self.multibox.priors)
        boxes = [t["boxes"] for t in targets]
        labels = [t["labels"] for t in targets]
        loc_loss, conf_loss = self.multibox(loc.float(), conf.float(), boxes, labels, priors.float())
        return loc_loss + conf_loss


class DetectionMetric:
    """Post-processes every evaluation batch and scores the whole split (all processes) in the original images'
    pixels: COCO's 12 metrics (``COCO_KEYS``), ``mAP_voc07`` (VOC2007 11-point) and ``mAP_voc`` (VOC2010+ area).
    Outputs as for :class:`DetectionLoss`.

    With ``coco_gt`` (the annotation file's ``pycocotools.coco.COCO``; ``cat_ids`` maps labels 1..C to its category
    ids) the COCO metrics are pycocotools' on the file itself (crowd regions, annotated areas, images without
    annotations, the file's category ids) and the VOC metrics use the file's boxes with crowd regions ignored.
    Without it (VOC) the ground truth comes from the evaluation transform's ``abs_boxes``/``abs_labels``/
    ``abs_difficult`` (difficult objects ignored by both).
    """

    def __init__(self, priors: torch.Tensor, variances, names: tuple[str, ...], coco_gt=None, cat_ids=None) -> None:
        self.priors, self.variances, self.names = priors, variances, names
        self.coco_gt, self.cat_ids = coco_gt, cat_ids
        self.reset()

    def reset(self) -> None:
        self.predictions: list[dict] = []
        self.ground_truth: list[dict] = []
        self.loss_sum, self.count = 0.0, 0

    @torch.no_grad()
    def update(self, outputs, targets, loss_sum=None) -> None:
        loc, conf, priors = _split_outputs(outputs, self.priors)
        detections = postprocess(loc, conf, priors.to(loc.device), self.variances)
        for det, target in zip(detections, targets):
            h, w = target["input_size"]
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=det["boxes"].device)
            image_id = int(target["image_id"])
            self.predictions.append(
                dict(
                    image_id=image_id,
                    boxes=(det["boxes"] * scale).cpu(),
                    scores=det["scores"].cpu(),
                    labels=det["labels"].cpu(),
                )
            )
            if self.coco_gt is None:  # with an annotation file, the ground truth is the file's
                self.ground_truth.append(
                    dict(
                        image_id=image_id,
                        size=(h, w),
                        boxes=target["abs_boxes"].cpu(),
                        labels=target["abs_labels"].cpu(),
                        difficult=target["abs_difficult"].cpu(),
                    )
                )
        self.count += len(targets)
        if loss_sum is not None:
            self.loss_sum += float(loss_sum)

    def compute(self, device="cpu") -> dict[str, float]:
        gathered = all_gather_objects((self.predictions, self.ground_truth, self.loss_sum, self.count))
        predictions = [p for part in gathered for p in part[0]]
        if self.coco_gt is not None:  # every image of the file, as pycocotools on the json (unseen ones: misses)
            out = coco_evaluate_annotations(self.coco_gt, predictions, self.cat_ids)
            ground_truth = coco_ground_truth(self.coco_gt, sorted(self.coco_gt.getImgIds()), self.cat_ids)
        else:
            ground_truth = [g for part in gathered for g in part[1]]
            out = coco_evaluate(ground_truth, predictions, self.names)
        voc = voc_map(ground_truth, predictions, len(self.names))
        out["mAP_voc07"], out["mAP_voc"] = voc["mAP_voc07"], voc["mAP_voc"]
        out["loss"] = sum(part[2] for part in gathered) / max(sum(part[3] for part in gathered), 1)
        return out


class DetectionTask:
    """Single-shot detector training (DSOD, Shen et al. 2017; Pelee, Wang et al. 2018) on the shared trainer; AP50
    selects ``best.pth``."""

    data_defaults = DET_DATA
    data_choices = {"dataset": ("voc", "coco", "shapes")}

    def check(self, cfg: dict[str, Any], world_size: int) -> None:
        """Nothing to check before the work dir is claimed (the config's checks suffice)."""

    def build(self, cfg: dict[str, Any], pretrained: str | None = None, training: bool = True) -> TaskRecord:
        """The run's record (engine/task.py): the detector (its default boxes follow ``data.image_size``), splits
        (``training=False``: the evaluation split only), the multibox loss, COCO AP and VOC mAP (AP50 decides
        ``best.pth``), the detection collate, the class names."""
        model = self.build_model(cfg, pretrained)
        train_set, eval_set = self.build_datasets(cfg)
        return TaskRecord(
            model=model,
            train_set=train_set if training else None,
            eval_set=eval_set,
            loss_fn=self.loss_fn(cfg, model),
            metric=self.metric(cfg, model, eval_set),
            best_key="AP50",
            collate_fn=detection_collate,
            meta=self.run_meta(cfg),
        )

    def model_arg_names(self, raw_cfg: dict[str, Any]) -> list[str]:
        return config_model_args(raw_cfg, "detection", exclude=("priors",))  # priors follow data.image_size

    def build_model(self, cfg: dict[str, Any], pretrained: str | None = None) -> nn.Module:
        if cfg["data"]["dataset"] == "coco" and not cfg["data"]["classes"]:
            cfg["data"]["classes"] = list(self._coco(cfg, train=True).classes)
        num_classes = len(class_names(cfg)) + 1  # + background
        # a classification checkpoint (torchvision's DenseNet-121...) initialises the backbone; the head starts fresh
        backbone = "backbone_kwargs" if "backbone_kwargs" in model_arg_names(cfg["model"]["type"]) else None
        model = build_config_model(
            cfg, "detection", pretrained, backbone, num_classes=num_classes, priors=prior_config(cfg)
        )
        model.set_output("loc_conf_priors")  # the loss and metric take the default boxes of each batch's input size
        return model

    def _coco(self, cfg: dict[str, Any], train: bool, transform=None) -> COCODetection:
        data = cfg["data"]
        root = Path(data["root"])
        split = data["train_split"] if train else data["val_split"]
        return COCODetection(
            root / "annotations" / f"instances_{split}.json", root / split, transform, skip_empty=False
        )

    def build_datasets(self, cfg: dict[str, Any]):
        data = cfg["data"]
        if data["root"] is None:
            raise ValueError("data.root (or --data-root) must name the data set folder")
        size, root = data["image_size"], Path(data["root"])
        train_tf = SSDTransform(True, size, max_expand=data["max_expand"], photometric=data["photometric"])
        eval_tf = SSDTransform(False, size)
        if data["dataset"] == "voc":
            train = VOCDetection(root, [tuple(s) for s in data["train_sets"]], keep_difficult=False, transform=train_tf)
            val = VOCDetection(root, [tuple(s) for s in data["val_sets"]], keep_difficult=True, transform=eval_tf)
            return train, val
        if data["dataset"] == "shapes":
            for split, count, seed in (("train", data["shapes_train"], 0), ("val", data["shapes_val"], 1)):
                if not (root / f"{split}.json").exists():
                    write_shapes_coco(root, count, seed=seed, split=split)  # generated, not downloaded
            return COCODetection(root / "train.json", root / "train", train_tf), COCODetection(
                root / "val.json", root / "val", eval_tf
            )
        if data["dataset"] == "coco":
            return self._coco(cfg, True, train_tf), self._coco(cfg, False, eval_tf)
        raise ValueError(f"unknown data.dataset {data['dataset']!r}; use 'voc', 'coco' or 'shapes'")

    def loss_fn(self, cfg: dict[str, Any], model: nn.Module) -> nn.Module:
        return DetectionLoss(model.priors, model.prior_config.variances)

    def metric(self, cfg: dict[str, Any], model: nn.Module, eval_set=None) -> DetectionMetric:
        """COCO and shapes data are scored against the validation annotation file itself (its pycocotools
        ``COCO``, the one ``eval_set`` reads; built if not given); VOC against the evaluation targets."""
        coco_gt = cat_ids = None
        if cfg["data"]["dataset"] in ("coco", "shapes"):
            val = self.build_datasets(cfg)[1] if eval_set is None else eval_set
            coco_gt, cat_ids = val.coco, val.cat_ids
        return DetectionMetric(
            model.priors, model.prior_config.variances, class_names(cfg), coco_gt=coco_gt, cat_ids=cat_ids
        )

    def run_meta(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """What ``meta.json`` and checkpoints record besides the engine's fields: the class names (1-based labels)."""
        return {"classes": list(class_names(cfg))}

    def finish(self, trainer, metrics: dict[str, float], datasets) -> None:
        extra = {"eval": metrics, "label_names": list(class_names(trainer.cfg))}  # timm's pretrained_cfg field
        weights = export_weights(trainer.eval_model, trainer.work_dir / "final.safetensors", extra)
        print(f"weights: {weights}", flush=True)
        for split, dataset in zip(("train", "eval"), datasets):
            if getattr(dataset, "num_clipped", 0) or getattr(dataset, "num_dropped", 0):
                print(f"{split}: {dataset.box_report()}", flush=True)
