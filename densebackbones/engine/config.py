"""Run configuration: mmengine ``Config`` files checked against a schema, so that no key is silently ignored.

A config has the top-level sections below plus ``data``, whose keys and defaults each task supplies
(``densebackbones.tasks``); every key of every section is read, and a key that nothing reads is an error naming the
closest valid keys (OpenMMLab's configs silently ignore such typos).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "check_config",
    "check_values",
    "config_changes",
    "declare_data_keys",
    "eval_batch_size",
    "load_config",
    "merge_defaults",
    "micro_batch_size",
]


class ConfigError(ValueError):
    """A config value of the wrong type, or a section that is not a dict."""


_NUMBER = (int, float)
_SEQUENCE = (list, tuple)
# Types of the keys whose default is None (None stays allowed for them), and of keys that also take None.
_NULLABLE_TYPES: dict[str, tuple[type, ...]] = {
    "type": (str,),
    "dataset": (str,),
    "root": (str,),
    "amp": (str,),
    "clip_grad": _NUMBER,
    "ema_decay": _NUMBER,
    "max_iters": (int,),
    "max_iters_per_epoch": (int,),
    "early_stop_patience": (int,),
    "eval_batch_size": (int,),
    "image_size": (int,),
    "crop_size": (int, list, tuple),
    "class_weights": _SEQUENCE,
    "scale_range": _SEQUENCE,
    "auto_augment": (str,),
    "test_image_size": (int,),
    "test_crop_pct": _NUMBER,
    "classes": _SEQUENCE,
}
# Counts: whole numbers only, whatever their default looks like.
_INTEGER_KEYS = {
    "batch_size", "base_batch_size", "epochs", "seed", "accum_steps", "log_interval", "eval_interval",
    "save_interval", "checkpoint_interval_steps", "num_workers", "shapes_train", "shapes_val", "warmup_epochs",
    "repeated_aug", "cutout", "re_count",
}  # fmt: skip


_TYPE_NAMES = {(int,): "a whole number", _NUMBER: "a number", (str,): "a string", (bool,): "True or False"}
_TYPE_NAMES[_SEQUENCE] = "a list"


def _expected_types(key: str, default: Any) -> tuple[tuple[type, ...], bool] | None:
    """(accepted types, None allowed) for a config key, from its default; None where anything goes."""
    if key in _NULLABLE_TYPES:
        return _NULLABLE_TYPES[key], True
    if default is None:
        return None
    if isinstance(default, bool):
        return (bool,), False
    if isinstance(default, _NUMBER):
        return ((int,) if key in _INTEGER_KEYS else _NUMBER), False
    if isinstance(default, _SEQUENCE):
        return _SEQUENCE, False
    return (type(default),), False


def _check_type(section: str, key: str, value: Any, default: Any) -> None:
    expected = _expected_types(key, default)
    if expected is None:
        return
    types, nullable = expected
    if value is None and nullable:
        return
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        return
    names = _TYPE_NAMES.get(types, " or ".join(t.__name__ for t in types))
    raise ConfigError(
        f"config key {section}.{key} must be {names}{' or None' if nullable else ''}, got {value!r} "
        f"({type(value).__name__}); e.g. --cfg-options {section}.{key}={default!r}"
    )


# Defaults of every section; the keys here are the only valid ones (the model section takes model arguments).
DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"type": None},  # registered model name; other keys are model constructor arguments
    "optimizer": {
        "type": "SGD",  # SGD, RMSprop, Adam, AdamW; timm's RMSpropTF, LAMB
        "lr": 0.1,  # learning rate per base_batch_size images; scaled linearly to data.batch_size
        "base_batch_size": 64,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-4,
        "alpha": 0.99,  # RMSprop
        "eps": 1e-8,  # RMSprop, Adam, AdamW
        "betas": (0.9, 0.999),  # Adam, AdamW, LAMB
        "decay_norm_and_bias": True,  # False: no weight decay on biases and norm weights (timm's recipes)
    },
    "schedule": {
        "type": "multistep",  # multistep, cosine, poly, exponential, step, constant
        "epochs": 300,
        "milestones": (150, 225),  # multistep: epochs where lr *= gamma (paper: 50% and 75% of training)
        "gamma": 0.1,  # multistep factor, or exponential per-epoch factor
        "power": 0.9,  # poly: lr0 * (1 - t / T) ** power
        "decay_epochs": 2.4,  # step: lr *= gamma every decay_epochs (timm's RandAugment recipes: 2.4, gamma 0.97)
        "warmup_epochs": 0,
        "max_iters": None,  # train this many optimiser steps (milestones then in iterations), e.g. DSOD's 100k
    },
    "train": {
        "seed": 0,
        "device": "auto",
        "amp": None,  # None, 'bf16' or 'fp16'
        "channels_last": False,
        "compile": False,
        "accum_steps": 1,
        "clip_grad": None,  # max gradient norm
        "ema_decay": None,  # e.g. 0.9998 (timm ModelEmaV3)
        "sync_bn": False,
        "label_smoothing": 0.0,
        "repeated_aug": 1,  # each image this many times in a row per epoch (repeated augmentation, DeiT); 1: off
        "log_interval": 50,  # iterations between progress/CSV rows
        "eval_interval": 1,  # epochs
        "save_interval": 0,  # also keep epoch_N.pth every N epochs (0: only last and best)
        "checkpoint_interval_steps": 0,  # also write last.pth every N optimiser steps, mid-epoch (0: off)
        "max_iters_per_epoch": None,  # cap on iterations per epoch (quick tests and smoke runs)
        "plot": True,  # write curves.png at each epoch end
        "early_stop_patience": None,  # stop after this many evaluations without a better best metric
        "hooks": (),  # step events of one's own, 'package.module:ClassName' (engine/events.py)
    },
}


# data key -> the tasks whose data section has it (declare_data_keys), for a key given to another task
_DATA_KEY_TASKS: dict[str, list[str]] = {}


def declare_data_keys(task: str, keys: Sequence[str]) -> None:
    """Record ``task``'s data keys, so that another task's config naming one (``data.mixup_alpha`` in a
    segmentation config) is refused with what the key belongs to."""
    for key in keys:
        if task not in _DATA_KEY_TASKS.setdefault(key, []):
            _DATA_KEY_TASKS[key].append(task)


def _closest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else f" Valid keys: {', '.join(valid)}."


def _defaults(data_defaults: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"model": DEFAULTS["model"], "data": data_defaults, **{k: v for k, v in DEFAULTS.items() if k != "model"}}


def check_config(
    cfg: dict[str, Any],
    model_arg_names: list[str] | None,
    data_defaults: dict[str, Any],
    data_choices: dict[str, Sequence[Any]] | None = None,
) -> None:
    """Raise ``KeyError`` for any key that nothing reads, naming the closest valid keys, and :class:`ConfigError`
    for a value of the wrong type (``optimizer.lr='abc'``, ``schedule.epochs='three'``, ``train=5``) or out of range
    (:func:`check_values`; ``data_choices``: the task's names for data keys such as ``dataset``)."""
    sections = [*_defaults(data_defaults), "work_dir"]
    for section in cfg:
        if section.startswith("_") or section in ("custom_imports", "default_scope"):
            continue
        if section not in sections:
            raise KeyError(f"config section {section!r} is not used.{_closest(section, sections)}")
    for section, defaults in _defaults(data_defaults).items():
        values = cfg.get(section) or {}
        if not isinstance(values, dict):
            raise ConfigError(
                f"config section {section!r} must be a dict of keys, got {values!r} ({type(values).__name__}); "
                f"set its keys, e.g. --cfg-options {section}.{next(iter(defaults))}=..."
            )
        valid = list(defaults) + (list(model_arg_names) if section == "model" and model_arg_names else [])
        for key in values:
            if section == "model" and model_arg_names is None:
                continue
            if key not in valid:
                owner = _DATA_KEY_TASKS.get(key) if section == "data" and key not in data_defaults else None
                if owner:
                    raise KeyError(
                        f"config key data.{key} is not used: it is a {' and '.join(owner)} option, and this task "
                        f"takes no such key; remove it.{_closest(key, valid)}"
                    )
                raise KeyError(f"config key {section}.{key} is not used.{_closest(key, valid)}")
            if section != "model":
                _check_type(section, key, values[key], defaults[key])
    check_values(merge_defaults(cfg, data_defaults), data_choices)


# Whole numbers: the smallest allowed value and what the key means (None stays allowed where the default is None).
_MINIMUM: dict[str, tuple[int, str]] = {
    "optimizer.base_batch_size": (1, "the batch size optimizer.lr is given for"),
    "schedule.epochs": (1, "epochs of training"),
    "schedule.max_iters": (1, "optimiser steps of training, or None to count epochs"),
    "schedule.warmup_epochs": (0, "epochs of linear warm-up; 0 for none"),
    "train.seed": (0, "the random seed"),
    "train.accum_steps": (1, "micro-batches per optimiser step"),
    "train.repeated_aug": (1, "copies of each drawn image per epoch; 1 for none"),
    "train.log_interval": (1, "iterations between log rows"),
    "train.eval_interval": (1, "epochs between evaluations"),
    "train.save_interval": (0, "epochs between kept epoch_N.pth; 0 keeps only last and best"),
    "train.max_iters_per_epoch": (1, "a cap on iterations per epoch, or None"),
    "train.early_stop_patience": (1, "evaluations without a better metric before stopping, or None"),
    "data.batch_size": (1, "the global batch per optimiser step"),
    "data.eval_batch_size": (1, "the evaluation batch, or None for data.batch_size"),
    "data.num_workers": (0, "data loader processes; 0 loads in the main process"),
    "data.image_size": (1, "the side of the images the model sees, or None for the data set's"),
    "data.cutout": (0, "the side of Cutout's square in pixels; 0 for none"),
    "data.re_count": (1, "random erasing's largest count of boxes"),
    "data.test_image_size": (1, "the evaluation side in pixels, or None for data.image_size"),
    "data.crop_size": (1, "the side of the training crops, (height, width), or None for full images"),
    "data.holdout": (0, "training images held out; 0 for none"),
    "data.shapes_train": (1, "images in the generated training split"),
    "data.shapes_val": (1, "images in the generated validation split"),
}
# Real numbers: (low, high, low open, high open, meaning).
_RANGES: dict[str, tuple[float, float, bool, bool, str]] = {
    "optimizer.lr": (0.0, math.inf, False, True, "the learning rate per optimizer.base_batch_size images"),
    "optimizer.momentum": (0.0, 1.0, False, True, "SGD/RMSprop momentum, e.g. 0.9"),
    "optimizer.weight_decay": (0.0, math.inf, False, True, "L2 weight decay, e.g. 1e-4"),
    "optimizer.alpha": (0.0, 1.0, True, False, "RMSprop's smoothing constant, e.g. 0.99"),
    "optimizer.eps": (0.0, math.inf, True, True, "RMSprop's or Adam's epsilon, e.g. 1e-8"),
    "schedule.gamma": (0.0, math.inf, True, True, "the learning-rate factor, e.g. 0.1"),
    "schedule.power": (0.0, math.inf, True, True, "the poly schedule's exponent, e.g. 0.9"),
    "schedule.decay_epochs": (0.0, math.inf, True, True, "epochs between the step schedule's decays, e.g. 2.4"),
    "schedule.warmup_epochs": (0.0, math.inf, False, True, "epochs of linear warm-up; 0 for none"),
    "train.clip_grad": (0.0, math.inf, True, True, "the largest gradient norm, or None"),
    "train.ema_decay": (0.0, 1.0, True, True, "the EMA decay, e.g. 0.9998, or None"),
    "train.label_smoothing": (0.0, 1.0, False, True, "0 for none, e.g. 0.1"),
    "data.max_expand": (1.0, math.inf, False, True, "SSD's zoom-out factor; 1 turns it off"),
    "data.color_jitter": (0.0, math.inf, False, True, "colour jitter strength; 0 for none"),
    "data.re_prob": (0.0, 1.0, False, False, "random erasing's probability; 0 for none"),
    "data.mixup_alpha": (0.0, math.inf, False, True, "mixup's Beta parameter, e.g. 0.2; 0 for none"),
    "data.cutmix_alpha": (0.0, math.inf, False, True, "CutMix's Beta parameter, e.g. 1.0; 0 for none"),
    "data.mixup_prob": (0.0, 1.0, False, False, "the probability of mixing a batch"),
    "data.mixup_switch_prob": (0.0, 1.0, False, False, "the probability of CutMix instead of mixup"),
    "data.test_crop_pct": (0.0, 1.0, True, False, "the centre crop's fraction of the resized image, e.g. 0.95"),
    "data.brightness_shift": (0.0, 255.0, False, False, "the largest brightness shift in grey levels; 0 for none"),
}
_CHOICES: dict[str, tuple[Any, ...]] = {
    "optimizer.type": ("SGD", "RMSprop", "Adam", "AdamW", "RMSpropTF", "LAMB"),
    "schedule.type": ("multistep", "cosine", "poly", "exponential", "step", "constant"),
    "train.amp": (None, "bf16", "fp16"),
}


def _bad(key: str, value: Any, allowed: str, fix: str) -> ConfigError:
    return ConfigError(f"config key {key}={value!r}: {allowed}; {fix}")


def _check_milestones(schedule: dict[str, Any]) -> None:
    milestones = schedule["milestones"]
    by_iteration = bool(schedule.get("max_iters"))
    limit = schedule["max_iters"] if by_iteration else schedule["epochs"]
    unit, length_key = ("iterations", "max_iters") if by_iteration else ("epochs", "epochs")
    if any(isinstance(m, bool) or not isinstance(m, int) for m in milestones):
        raise _bad("schedule.milestones", milestones, f"must be whole numbers of {unit}", "e.g. (150, 225)")
    if list(milestones) != sorted(set(milestones)):
        raise _bad("schedule.milestones", milestones, "must increase", f"e.g. {tuple(sorted(set(milestones)))}")
    warmup = 0 if by_iteration else schedule["warmup_epochs"]
    low = math.floor(warmup) + 1
    if milestones and (milestones[0] < low or milestones[-1] >= limit):
        where = f"{low}..{limit - 1}" if low < limit else "nowhere (the schedule is too short for a decay)"
        example = tuple(sorted({max(low, limit // 2), max(low, limit * 3 // 4)})) if low < limit else ()
        fix = f"pass schedule.milestones={example}" + (", " if example else " (no decay), ")
        fix += f"raise schedule.{length_key}, or use schedule.type='cosine'"
        warm = f" after the warm-up (schedule.warmup_epochs={warmup})" if warmup else ""
        raise ConfigError(
            f"config key schedule.milestones={tuple(milestones)} must lie inside the schedule{warm}: {unit} {where} "
            f"with schedule.{length_key}={limit}; {fix}"
        )


def check_values(cfg: dict[str, Any], data_choices: dict[str, Sequence[Any]] | None = None) -> None:
    """Raise :class:`ConfigError` naming the key, the value and the fix for a config value out of range in a merged
    config (:func:`merge_defaults`): counts below their minimum, negative rates, unknown names (``train.amp``,
    ``optimizer.type``, ``schedule.type``, and the task's ``data_choices`` such as ``data.dataset``), milestones
    outside the schedule, a warm-up as long as the schedule, batches that do not split into accumulation steps."""
    for dotted, (minimum, meaning) in _MINIMUM.items():
        section, key = dotted.split(".")
        value = (cfg.get(section) or {}).get(key)
        if key not in (cfg.get(section) or {}) or value is None or isinstance(value, (float, *_SEQUENCE)):
            continue  # absent, None where allowed (types are checked before), a float range or a pair: below
        if value < minimum:
            raise _bad(dotted, value, f"must be at least {minimum} ({meaning})", f"e.g. --cfg-options {dotted}=...")
    for dotted, (low, high, low_open, high_open, meaning) in _RANGES.items():
        section, key = dotted.split(".")
        value = (cfg.get(section) or {}).get(key)
        if key not in (cfg.get(section) or {}) or value is None:
            continue
        number = float(value)
        ok = math.isfinite(number) and (number > low if low_open else number >= low)
        ok = ok and (number < high if high_open else number <= high)
        if not ok:
            interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            raise _bad(dotted, value, f"must be in {interval} ({meaning})", f"e.g. --cfg-options {dotted}=...")
    choices = dict(_CHOICES, **{f"data.{k}": tuple(v) for k, v in (data_choices or {}).items()})
    for dotted, options in choices.items():
        section, key = dotted.split(".")
        value = (cfg.get(section) or {}).get(key)
        if key in (cfg.get(section) or {}) and value not in options and not (value is None and key == "dataset"):
            names = ", ".join(repr(o) for o in options)
            raise _bad(dotted, value, f"is not one of {names}", f"e.g. --cfg-options {dotted}={options[0]!r}")
    schedule, train, optim = cfg["schedule"], cfg["train"], cfg["optimizer"]
    if schedule["type"] == "multistep":
        _check_milestones(schedule)
    if not schedule.get("max_iters") and schedule["warmup_epochs"] >= schedule["epochs"] > 0:
        raise _bad(
            "schedule.warmup_epochs",
            schedule["warmup_epochs"],
            f"the warm-up must end before the schedule does (schedule.epochs={schedule['epochs']})",
            f"pass schedule.warmup_epochs below {schedule['epochs']} or raise schedule.epochs",
        )
    crop = (cfg.get("data") or {}).get("crop_size")
    if isinstance(crop, _SEQUENCE) and (
        len(crop) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in crop)
    ):
        raise _bad("data.crop_size", crop, "must be a side or (height, width) in whole pixels", "e.g. (512, 1024)")
    scales = (cfg.get("data") or {}).get("scale_range")
    if scales is not None and (
        len(scales) != 2
        or not all(isinstance(v, _NUMBER) and not isinstance(v, bool) and math.isfinite(v) for v in scales)
        or not 0 < scales[0] <= scales[1]
    ):
        raise _bad("data.scale_range", scales, "must be (low, high) factors with 0 < low <= high", "e.g. (0.5, 2.0)")
    betas = optim["betas"]
    if len(betas) != 2 or not all(isinstance(b, _NUMBER) and not isinstance(b, bool) and 0 <= b < 1 for b in betas):
        raise _bad("optimizer.betas", betas, "must be two numbers in [0, 1) (Adam's averaging)", "e.g. (0.9, 0.999)")
    if optim["type"] == "SGD" and optim["nesterov"] and optim["momentum"] == 0:
        raise _bad(
            "optimizer.nesterov",
            True,
            "Nesterov SGD needs momentum (optimizer.momentum=0)",
            "pass optimizer.nesterov=False",
        )
    batch, accum = (cfg.get("data") or {}).get("batch_size"), train["accum_steps"]
    if isinstance(batch, int) and batch % accum:
        raise _bad(
            "data.batch_size",
            batch,
            f"the global batch must split into train.accum_steps={accum} equal micro-batches",
            f"pass a multiple of {accum}, e.g. data.batch_size={batch // accum * accum or accum}",
        )


def merge_defaults(cfg: dict[str, Any], data_defaults: dict[str, Any]) -> dict[str, Any]:
    """A plain dict with every section filled from the defaults."""
    out = {
        section: dict(deepcopy(defaults), **(cfg.get(section) or {}))
        for section, defaults in _defaults(data_defaults).items()
    }
    out["work_dir"] = cfg.get("work_dir")
    return out


def load_config(path: str | Path, cfg_options: dict[str, Any] | None = None):
    """Load an mmengine config file and apply ``--cfg-options key=value`` overrides."""
    from mmengine.config import Config

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    cfg = Config.fromfile(str(path))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _flatten(cfg: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for section, values in cfg.items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
    return flat


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, _SEQUENCE) and isinstance(b, _SEQUENCE):  # a tuple in the file is a list after a checkpoint
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{"section.key": (saved value, current value)}`` for every key that differs between two resolved configs
    (``work_dir`` aside: a copied run resumes elsewhere); a key only one of them has counts as changed from or to
    None."""
    old, new = _flatten(saved), _flatten(current)
    return {
        key: (old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if not _same(old.get(key), new.get(key))
    }


def micro_batch_size(cfg: dict[str, Any], world_size: int) -> int:
    """The images one process sees per forward: ``data.batch_size`` (global) over the processes and
    ``train.accum_steps``."""
    return cfg["data"]["batch_size"] // (world_size * cfg["train"]["accum_steps"])


def eval_batch_size(cfg: dict[str, Any], world_size: int) -> int:
    """The evaluation batch per process: ``data.eval_batch_size``, else the training batch's share."""
    return cfg["data"].get("eval_batch_size") or max(cfg["data"]["batch_size"] // world_size, 1)
