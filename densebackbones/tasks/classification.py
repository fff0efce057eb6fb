"""Classification task for the shared trainer: model, data sets, loss, ten-crop evaluation and weight export.

Besides the registered data sets (``densebackbones.data.DATASETS``) it fine-tunes on one's own data
(``OWN_DATASETS``): ``data.dataset='folder'`` (ImageFolder trees, single-label) and ``'multilabel_csv'`` (a CSV per
split with several labels per image: sigmoid outputs, BCE-with-logits, per-class AUROC and AP). Their class list
comes from the training split, is stored as ``data.classes`` in the resolved config (so in every checkpoint), and
travels into ``meta.json`` and the exported safetensors (``label_names``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Subset, default_collate

from ..data import (
    AUGMENTATIONS,
    DATASETS,
    AugmentOptions,
    ImageFolderDataset,
    build_classification_dataset,
    build_eval_transform,
    build_train_transform,
)
from ..data.classification import IMAGENET_MEAN, IMAGENET_STD
from ..data.own import MultiLabelCSVDataset, folder_classes, read_multilabel_csv, stratified_holdout
from ..engine.checkpoint import export_weights
from ..engine.config import declare_data_keys, micro_batch_size
from ..engine.elastic import last_sample_seed, seeded_generators
from ..engine.task import TaskRecord
from .common import build_config_model, config_model_args
from .metrics import MultiLabelMetric, TopKAccuracy

_logger = logging.getLogger(__name__)

__all__ = [
    "CLS_DATA",
    "OWN_DATASETS",
    "ClassificationTask",
    "ExitsCrossEntropy",
    "build_datasets",
    "build_model",
    "image_size",
    "ten_crop_forward",
]

# The data section of a classification config (the other sections: densebackbones.engine.config.DEFAULTS).
CLS_DATA: dict[str, Any] = {
    "dataset": None,  # digits, cifar10, cifar100, svhn, fashion_mnist, imagenet; own data: folder, multilabel_csv
    "root": None,
    "download": False,  # fetch the official files if missing (never by default)
    "augment": "plus",  # plus (CIFAR "+"), none, imagenet, imagenet_crop_flip, shift, resize_flip, timm
    "image_size": None,  # default: the data set's
    # modern recipes (data/transforms.py): auto-augmentation, cutout, random erasing, mixup/CutMix, BCE, test size
    "auto_augment": None,  # timm's 'rand-m9-mstd0.5-inc1', 'original', 'augmix-m5-w4-d2'; 'cifar10', 'ta_wide'
    "cutout": 0,  # side of the zeroed square (CIFAR: 16)
    "re_prob": 0.0,  # timm's RandomErasing probability
    "re_mode": "pixel",  # const, rand or pixel
    "re_count": 1,
    "interpolation": "bilinear",  # or bicubic (timm's recipes)
    "mixup_alpha": 0.0,  # timm's Mixup: Beta(alpha, alpha) mixing of image pairs; 0 off
    "cutmix_alpha": 0.0,  # CutMix's alpha; 0 off
    "mixup_prob": 1.0,  # probability of mixing a batch
    "mixup_switch_prob": 0.5,  # probability of CutMix instead of mixup when both are on
    "loss": "ce",  # ce (soft targets taken), or bce (timm's BinaryCrossEntropy, per class)
    "test_image_size": None,  # evaluation side (timm's test_input_size), None: image_size
    "test_crop_pct": None,  # ImageNet recipes: centre-crop fraction at evaluation (None: 224/256)
    "batch_size": 64,  # global batch per optimiser step, over all GPUs and accumulation steps
    "eval_batch_size": None,  # default: batch_size
    "num_workers": 4,
    "ten_crop": False,
    "skip_corrupt": False,
    "holdout": 0,  # N training images (a fixed random draw) left out of training; MSDNet fits its exit thresholds there
    # own data (folder, multilabel_csv)
    "classes": None,  # filled from the training split (class folders / train.csv's names, sorted); a contradiction errs
    "val_fraction": 0.1,  # folder without val/: this fraction of every class's training images is evaluated instead
    "image_column": "Image Index",  # multilabel_csv: the CSVs' image-file column (ChestX-ray14's names)
    "label_column": "Finding Labels",  # multilabel_csv: the column of label names
    "label_separator": "|",
    "pos_weight": None,  # multilabel_csv: BCE pos_weight, a list per class or 'balanced' (negatives / positives)
}
declare_data_keys("classification", CLS_DATA)
OWN_DATASETS = ("folder", "multilabel_csv")


def _root(cfg: dict[str, Any]) -> Path:
    if cfg["data"]["root"] is None:
        raise ValueError(f"data set {cfg['data']['dataset']!r} needs a root folder (data.root or --data-root)")
    return Path(cfg["data"]["root"]).expanduser()


def dataset_classes(cfg: dict[str, Any]) -> list[str] | None:
    """The class names of an own-data set (``OWN_DATASETS``; None for the others): train's class folders or the
    names train.csv uses, sorted. A ``data.classes`` that says otherwise is an error; without the data (a prediction
    from a checkpoint's config) ``data.classes`` is taken as it is. The result is stored in ``data.classes``."""
    data = cfg["data"]
    if data["dataset"] not in OWN_DATASETS:
        return None
    given = list(data["classes"]) if data["classes"] is not None else None
    root = Path(data["root"]).expanduser() if data["root"] is not None else None
    if given is not None and (root is None or not root.exists()):
        return given
    root = _root(cfg)
    if data["dataset"] == "folder":
        found, where = folder_classes(root / "train"), f"the class folders of {root / 'train'}"
    else:
        rows = read_multilabel_csv(
            root / "train.csv", data["image_column"], data["label_column"], data["label_separator"]
        )
        found, where = sorted({n for _, names in rows for n in names}), f"the labels of {root / 'train.csv'}"
        if not found:
            raise ValueError(f"{root / 'train.csv'} gives no image a label")
    if given is not None and given != found:
        raise ValueError(
            f"data.classes={given} contradicts {where}: {found}; leave data.classes unset (it is read from the data)"
        )
    data["classes"] = found
    return found


def _num_classes_error(cfg: dict[str, Any], count: int, where: str) -> ValueError:
    return ValueError(
        f"model.num_classes={cfg['model']['num_classes']} contradicts the {count} classes of {where}; leave "
        f"model.num_classes unset: it follows the data"
    )


def build_model(cfg: dict[str, Any], pretrained: str | Path | None = None) -> nn.Module:
    """The config's backbone with the data set's classes and channels unless the config sets them; ``pretrained``
    fine-tunes from a weights file (see :func:`~densebackbones.tasks.common.build_config_model`). For own data the
    classes are the data's (``model.num_classes`` must agree) and images are RGB (grey ones are converted). An
    image size below the model's smallest input fails here, naming ``data.image_size``."""
    classes = dataset_classes(cfg)
    if classes is not None:
        if cfg["model"].get("num_classes") not in (None, len(classes)):
            raise _num_classes_error(cfg, len(classes), cfg["data"]["root"])
        model = build_config_model(cfg, "classification", pretrained, num_classes=len(classes), in_chans=3)
    else:
        if cfg["data"]["dataset"] not in DATASETS:
            raise ValueError(f"unknown data.dataset {cfg['data']['dataset']!r}; use one of {sorted(DATASETS)}")
        info = DATASETS[cfg["data"]["dataset"]]
        if cfg["data"]["dataset"] == "imagenet" and cfg["model"].get("num_classes") is None and cfg["data"]["root"]:
            train = Path(cfg["data"]["root"]).expanduser() / "train"
            found = len(folder_classes(train)) if train.is_dir() else info.num_classes
            if found != info.num_classes:
                raise ValueError(
                    f"{train} has {found} class folders but data.dataset='imagenet' trains ImageNet-1k's "
                    f"{info.num_classes}-way classifier. For your own folders use configs/cls/finetune_folder.py "
                    f"(classes from the folders), or set model.num_classes={found}"
                )
        model = build_config_model(
            cfg, "classification", pretrained, num_classes=info.num_classes, in_chans=info.in_chans
        )
    minimum, size = getattr(model, "min_input_size", 1), image_size(cfg)
    if size < minimum:
        raise ValueError(
            f"config key data.image_size={size} is below {cfg['model']['type']}'s smallest input, {minimum} px; pass "
            f"data.image_size={minimum} or more"
        )
    return model


# The names a classification config's data keys take (engine.config.check_values).
CLS_DATA_CHOICES = {
    "dataset": (*DATASETS, *OWN_DATASETS),
    "augment": tuple(AUGMENTATIONS),
    "re_mode": ("const", "rand", "pixel"),
    "interpolation": ("bilinear", "bicubic"),
    "loss": ("ce", "bce"),
}


def _weights_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """The pretrained config of the config's model (input size, mean, std of its published weights)."""
    import timm

    found = timm.models.get_pretrained_cfg(cfg["model"]["type"])
    return found.to_dict() if found is not None else {}


def image_size(cfg: dict[str, Any]) -> int:
    """The side of the images the config's model sees: ``data.image_size``, or the data set's own size (own data:
    the input size of the model's pretrained weights)."""
    if cfg["data"]["image_size"]:
        return cfg["data"]["image_size"]
    if cfg["data"]["dataset"] in OWN_DATASETS:
        return int(_weights_cfg(cfg).get("input_size", (3, 224, 224))[-1])
    return DATASETS[cfg["data"]["dataset"]].image_size


def normalization(cfg: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the inputs are normalised with: the data set's, or for own data the pretrained weights' own."""
    if cfg["data"]["dataset"] in OWN_DATASETS:
        weights = _weights_cfg(cfg)
        return tuple(weights.get("mean", IMAGENET_MEAN)), tuple(weights.get("std", IMAGENET_STD))
    info = DATASETS[cfg["data"]["dataset"]]
    return info.mean, info.std


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
    if name not in DATASETS and name not in OWN_DATASETS:
        raise ValueError(f"unknown data.dataset {name!r}; use one of {sorted(DATASETS) + list(OWN_DATASETS)}")
    native = DATASETS[name].image_size if name in DATASETS else None
    size = image_size(cfg)
    mean, std = normalization(cfg)
    ten_crop = data["ten_crop"] if ten_crop is None else ten_crop
    if ten_crop and name == "multilabel_csv":
        raise ValueError("ten-crop evaluation averages softmax outputs; multi-label runs evaluate single crops")
    options = augment_options(cfg)
    train_tf = build_train_transform(data["augment"], size, mean, std, native_size=native, options=options)
    eval_tf = build_eval_transform(data["augment"], size, mean, std, ten_crop, native, options)
    if name in OWN_DATASETS:
        train_set, eval_set = _own_datasets(cfg, eval_tf if holdout_split else train_tf, eval_tf)
    else:
        common = dict(download=data["download"], skip_corrupt=data["skip_corrupt"])
        train_tf = eval_tf if holdout_split else train_tf
        train_set = build_classification_dataset(name, data["root"], True, train_tf, **common)
        eval_set = build_classification_dataset(name, data["root"], False, eval_tf, **common)
    train_indices, held_out = _holdout_split(train_set, data["holdout"])
    if holdout_split:
        train_set = Subset(train_set, held_out)
    elif data["holdout"]:
        train_set = Subset(train_set, train_indices)
    return train_set, eval_set


def augment_options(cfg: dict[str, Any]) -> AugmentOptions:
    """The config's modern recipe options (``data.auto_augment``, ``cutout``, ``re_*``, ``interpolation``,
    ``test_image_size``, ``test_crop_pct``); an unknown auto-augmentation is refused naming the key."""
    data = cfg["data"]
    try:
        return AugmentOptions(
            auto_augment=data["auto_augment"], re_prob=data["re_prob"], re_mode=data["re_mode"],
            re_count=data["re_count"], cutout=data["cutout"], interpolation=data["interpolation"],
            test_size=data["test_image_size"], test_crop_pct=data["test_crop_pct"],
        )  # fmt: skip
    except ValueError as err:
        raise ValueError(f"config key data.{err}") from None


class MixupCollate:
    """The training loader's collate function for mixup and CutMix (timm's ``Mixup``, Zhang et al. 2018; Yun et al.
    2019): the default collate, then each micro-batch is mixed with its own reverse and the targets become label
    distributions (rows summing to one, ``label_smoothing`` applied by ``Mixup``), which the soft-target
    cross-entropy and BCE take. ``Mixup`` draws from NumPy's generator, seeded here from the batch's last sample's
    augmentation seed (engine/elastic.py): a batch is mixed alike in a loader worker and in the main process, and
    in a resumed run as in the uninterrupted one."""

    def __init__(self, mixup) -> None:
        self.mixup = mixup

    def __call__(self, samples: list) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = default_collate(samples)
        if len(inputs) % 2:
            raise ValueError(
                f"mixup and CutMix mix a micro-batch with its reverse and need an even one, got {len(inputs)} images: "
                f"make data.batch_size / (processes x train.accum_steps) even"
            )
        seed = last_sample_seed()
        if seed is None:  # a loader without SampleSeeded: the process's own generators
            return self.mixup(inputs, targets)
        with seeded_generators(seed ^ 0x6D697875):  # another stream than the sample's own augmentation
            return self.mixup(inputs, targets)


def mixup_collate(cfg: dict[str, Any], num_classes: int) -> MixupCollate | None:
    """The training collate of a config with mixup or CutMix (``data.mixup_alpha``, ``cutmix_alpha``), label
    smoothing moved into the mixed targets; None without them. Multi-label data is refused (its targets are not
    one class per image)."""
    data = cfg["data"]
    if not (data["mixup_alpha"] or data["cutmix_alpha"]):
        return None
    if data["dataset"] == "multilabel_csv":
        raise ValueError(
            "data.mixup_alpha/cutmix_alpha mix one-class targets; multilabel_csv's images have several labels: set "
            "them to 0"
        )
    from timm.data import Mixup

    mixup = Mixup(
        mixup_alpha=data["mixup_alpha"], cutmix_alpha=data["cutmix_alpha"], prob=data["mixup_prob"],
        switch_prob=data["mixup_switch_prob"], label_smoothing=cfg["train"]["label_smoothing"],
        num_classes=num_classes,
    )  # fmt: skip
    return MixupCollate(mixup)


def _own_datasets(cfg: dict[str, Any], train_tf, eval_tf):
    """The splits of an own-data set (``OWN_DATASETS``), labelled by the training split's classes."""
    data, root = cfg["data"], _root(cfg)
    classes = dataset_classes(cfg)
    kind = "labels" if data["dataset"] == "multilabel_csv" else "classes"
    print(f"{len(classes)} {kind}: {', '.join(classes[:20])}{', ...' if len(classes) > 20 else ''}", flush=True)
    if data["dataset"] == "multilabel_csv":
        columns = dict(
            image_column=data["image_column"],
            label_column=data["label_column"],
            separator=data["label_separator"],
            skip_corrupt=data["skip_corrupt"],
        )
        train = MultiLabelCSVDataset(root / "train.csv", root / "images", classes, train_tf, **columns)
        return train, MultiLabelCSVDataset(root / "val.csv", root / "images", classes, eval_tf, **columns)
    train = ImageFolderDataset(root / "train", train_tf, skip_corrupt=data["skip_corrupt"], classes=classes)
    if (root / "val").is_dir():
        return train, ImageFolderDataset(root / "val", eval_tf, skip_corrupt=data["skip_corrupt"], classes=classes)
    held_from = ImageFolderDataset(root / "train", eval_tf, skip_corrupt=data["skip_corrupt"], classes=classes)
    kept, held = stratified_holdout([label for _, label in train.samples], data["val_fraction"])
    message = (
        f"no {root / 'val'}: evaluating on {len(held)} of the {len(train)} training images, held out "
        f"(data.val_fraction={data['val_fraction']} of every class, stratified, seed 0; a class keeps at least one "
        f"training image), and training on the other {len(kept)}"
    )
    print(message, flush=True)
    _logger.info(message)
    return Subset(train, kept), Subset(held_from, held)


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
    """Cross-entropy of a classifier's logits against class indices or soft targets (mixup's label distributions),
    or for a model with several exits (MSDNet: a list of logits) the weighted sum of every exit's (MSDNet, Sec. 4:
    unweighted by default). ``bce=True`` takes timm's ``BinaryCrossEntropy`` per class instead (ResNet Strikes Back's
    loss), with the same smoothing."""

    def __init__(
        self, exit_weights: tuple[float, ...] | None = None, label_smoothing: float = 0.0, bce: bool = False
    ) -> None:
        super().__init__()
        self.exit_weights = exit_weights
        self.label_smoothing = label_smoothing
        self.bce = None
        if bce:
            from timm.loss import BinaryCrossEntropy

            self.bce = BinaryCrossEntropy(smoothing=label_smoothing)

    def _one(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.bce is not None:
            return self.bce(logits, targets)
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    def forward(self, outputs: torch.Tensor | list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self._one(outputs, targets)
        weights = self.exit_weights or (1.0,) * len(outputs)
        if len(weights) != len(outputs):
            raise ValueError(f"{len(weights)} exit weights for a model with {len(outputs)} exits")
        return sum(w * self._one(o, targets) for w, o in zip(weights, outputs))


class MultiLabelBCE(nn.Module):
    """BCE-with-logits of a multi-label classifier's logits (N, C) against 0/1 targets (N, C), with an optional
    per-class ``pos_weight`` (torch's meaning: the weight of a positive relative to a negative)."""

    def __init__(self, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), pos_weight=self.pos_weight)


def pos_weight(setting: Any, classes: list[str], train_set) -> torch.Tensor | None:
    """``data.pos_weight``: None, a number or list per class, or ``'balanced'`` (each class's negatives / positives
    in the training split, as torch's documentation suggests)."""
    if setting is None:
        return None
    if setting == "balanced":
        source = train_set.dataset if isinstance(train_set, Subset) else train_set
        targets = source.targets() if not isinstance(train_set, Subset) else source.targets()[train_set.indices]
        positives = targets.sum(0)
        return (len(targets) - positives) / positives.clamp_min(1)
    if isinstance(setting, (int, float)):
        return torch.full((len(classes),), float(setting))
    if isinstance(setting, (list, tuple)) and len(setting) == len(classes):
        return torch.tensor([float(v) for v in setting])
    raise ValueError(
        f"data.pos_weight={setting!r} must be None, 'balanced', a number or a list of {len(classes)} numbers (one per "
        f"class: {classes})"
    )


class ClassificationTask:
    """Classification for the shared trainer and tools (``engine.cli``); for a multi-label data set the mean
    AUROC selects ``best.pth``."""

    data_defaults = CLS_DATA
    data_choices = CLS_DATA_CHOICES

    def model_arg_names(self, raw_cfg: dict[str, Any]) -> list[str]:
        return config_model_args(raw_cfg, "classification")

    def check(self, cfg: dict[str, Any], world_size: int) -> None:
        """Before the work dir is claimed: the transforms build (auto-augmentation strings, recipe and options), and
        mixup's micro-batches are even."""
        name = cfg["data"]["dataset"]
        if name in DATASETS or name in OWN_DATASETS:  # else refused by build_datasets, naming the choices
            native = DATASETS[name].image_size if name in DATASETS else None
            mean, std = normalization(cfg)
            build_train_transform(cfg["data"]["augment"], image_size(cfg), mean, std, native_size=native,
                                  options=augment_options(cfg))  # fmt: skip
        count = micro_batch_size(cfg, world_size)
        if (cfg["data"]["mixup_alpha"] or cfg["data"]["cutmix_alpha"]) and count % 2:
            raise ValueError(
                f"mixup and CutMix mix a micro-batch with its reverse and need an even one: data.batch_size="
                f"{cfg['data']['batch_size']} over {world_size} process(es) x train.accum_steps="
                f"{cfg['train']['accum_steps']} gives {count}; make it even"
            )

    def build(self, cfg: dict[str, Any], pretrained: str | None = None, training: bool = True) -> TaskRecord:
        """The run's record (engine/task.py): model, splits (``training=False``: the evaluation split only), loss,
        metric, the metric that decides ``best.pth`` (mean AUROC for multi-label data, top-1 otherwise),
        ten-crop evaluation, mixup's collate, the class names."""
        model = build_model(cfg, pretrained)
        train_set, eval_set = build_datasets(cfg)
        return TaskRecord(
            model=model,
            train_set=train_set if training else None,
            eval_set=eval_set,
            loss_fn=self.loss_fn(cfg, model, train_set),
            metric=self.metric(cfg),
            best_key="auroc" if cfg["data"]["dataset"] == "multilabel_csv" else "top1",
            eval_forward=ten_crop_forward,
            train_collate_fn=self.train_collate_fn(cfg) if training else None,
            meta=self.run_meta(cfg),
        )

    def build_model(self, cfg: dict[str, Any], pretrained: str | None = None) -> nn.Module:
        return build_model(cfg, pretrained)

    def build_datasets(self, cfg: dict[str, Any], ten_crop: bool | None = None, holdout_split: bool = False):
        return build_datasets(cfg, ten_crop, holdout_split)

    def loss_fn(self, cfg: dict[str, Any], model: nn.Module | None = None, train_set=None) -> nn.Module:
        """The loss: BCE-with-logits for multi-label data (``data.pos_weight='balanced'`` counts ``train_set``'s
        labels, built if not given), else cross-entropy (or BCE, ``data.loss``) over ``model``'s exits."""
        if cfg["data"]["loss"] == "bce" and cfg["data"]["dataset"] == "multilabel_csv":
            raise ValueError("multilabel_csv trains with BCE-with-logits already; leave data.loss='ce'")
        if cfg["data"]["dataset"] == "multilabel_csv":
            classes = dataset_classes(cfg)
            if cfg["data"]["pos_weight"] == "balanced" and train_set is None:
                train_set = build_datasets(cfg)[0]
            return MultiLabelBCE(pos_weight(cfg["data"]["pos_weight"], classes, train_set))
        exit_weights = getattr(model, "exit_weights", None)  # MSDNet's per-exit weights, None for one classifier
        mixed = bool(cfg["data"]["mixup_alpha"] or cfg["data"]["cutmix_alpha"])
        smoothing = 0.0 if mixed else cfg["train"]["label_smoothing"]  # mixup's targets carry the smoothing
        return ExitsCrossEntropy(exit_weights, label_smoothing=smoothing, bce=cfg["data"]["loss"] == "bce")

    def train_collate_fn(self, cfg: dict[str, Any]) -> MixupCollate | None:
        """Mixup and CutMix's collate (``data.mixup_alpha``, ``cutmix_alpha``), or None."""
        classes = dataset_classes(cfg)
        count = len(classes) if classes is not None else cfg["model"].get("num_classes")
        return mixup_collate(cfg, count or DATASETS[cfg["data"]["dataset"]].num_classes)

    def metric(self, cfg: dict[str, Any]) -> TopKAccuracy | MultiLabelMetric:
        classes = dataset_classes(cfg)
        if cfg["data"]["dataset"] == "multilabel_csv":
            return MultiLabelMetric(classes)
        if classes is not None and len(classes) <= 5:
            return TopKAccuracy((1,))  # top-5 of five classes or fewer is always 100
        return TopKAccuracy((1, 5))

    def run_meta(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """What ``meta.json`` and checkpoints record besides the engine's fields: own data's class names."""
        classes = dataset_classes(cfg)
        if classes is None:
            return {}
        return {"classes": classes, "multi_label": cfg["data"]["dataset"] == "multilabel_csv"}

    def finish(self, trainer, metrics: dict[str, float], datasets) -> None:
        extra = self.run_meta(trainer.cfg)
        if extra:
            extra = {"label_names": extra["classes"], "multi_label": extra["multi_label"]}  # timm's field name
        # The inputs the run's weights expect (timm's pretrained_cfg fields, which resolve_data_config reads): the data
        # set's size and normalisation, not the family's defaults.
        mean, std = normalization(trainer.cfg)
        size, in_chans = image_size(trainer.cfg), getattr(trainer.eval_model, "in_chans", len(mean))
        extra.update(mean=list(mean), std=list(std), input_size=[in_chans, size, size])
        path = trainer.work_dir / "final.safetensors"
        weights = export_weights(trainer.eval_model, path, {"eval": metrics, **extra})
        print(f"weights: {weights}", flush=True)
        for split, dataset in zip(("train", "eval"), datasets):
            source = dataset.dataset if isinstance(dataset, Subset) else dataset  # data.holdout leaves a subset
            if getattr(source, "num_skipped", 0):
                print(f"skipped {source.num_skipped} unreadable {split} images (data.skip_corrupt=True)", flush=True)
