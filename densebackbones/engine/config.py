"""Run configuration: mmengine ``Config`` files checked against a schema, so that no key is silently ignored.

A config has the top-level sections below plus ``data``, whose keys and defaults each task supplies
(``densebackbones.tasks``); every key of every section is read, and a key that nothing reads is an error naming the
closest valid keys (OpenMMLab's configs silently ignore such typos).
"""

from __future__ import annotations

import difflib
from copy import deepcopy
from pathlib import Path
from typing import Any

__all__ = ["DEFAULTS", "ConfigError", "check_config", "load_config", "merge_defaults"]


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
    "crop_size": (int,),
    "class_weights": _SEQUENCE,
    "classes": _SEQUENCE,
}
# Counts: whole numbers only, whatever their default looks like.
_INTEGER_KEYS = {
    "batch_size", "base_batch_size", "epochs", "seed", "accum_steps", "log_interval", "eval_interval",
    "save_interval", "checkpoint_interval_steps", "num_workers", "shapes_train", "shapes_val", "warmup_epochs",
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
        "type": "SGD",  # SGD or RMSprop
        "lr": 0.1,  # learning rate per base_batch_size images; scaled linearly to data.batch_size
        "base_batch_size": 64,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-4,
        "alpha": 0.99,  # RMSprop
        "eps": 1e-8,  # RMSprop
    },
    "schedule": {
        "type": "multistep",  # multistep, cosine, exponential, constant
        "epochs": 300,
        "milestones": (150, 225),  # multistep: epochs where lr *= gamma (paper: 50% and 75% of training)
        "gamma": 0.1,  # multistep factor, or exponential per-epoch factor
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
        "log_interval": 50,  # iterations between progress/CSV rows
        "eval_interval": 1,  # epochs
        "save_interval": 0,  # also keep epoch_N.pth every N epochs (0: only last and best)
        "checkpoint_interval_steps": 0,  # also write last.pth every N optimiser steps, mid-epoch (0: off)
        "max_iters_per_epoch": None,  # cap on iterations per epoch (quick tests and smoke runs)
        "plot": True,  # write curves.png at each epoch end
        "early_stop_patience": None,  # stop after this many evaluations without a better best metric
    },
}


def _closest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else f" Valid keys: {', '.join(valid)}."


def _defaults(data_defaults: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"model": DEFAULTS["model"], "data": data_defaults, **{k: v for k, v in DEFAULTS.items() if k != "model"}}


def check_config(cfg: dict[str, Any], model_arg_names: list[str] | None, data_defaults: dict[str, Any]) -> None:
    """Raise ``KeyError`` for any key that nothing reads, naming the closest valid keys, and :class:`ConfigError`
    for a value of the wrong type (``optimizer.lr='abc'``, ``schedule.epochs='three'``, ``train=5``)."""
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
                raise KeyError(f"config key {section}.{key} is not used.{_closest(key, valid)}")
            if section != "model":
                _check_type(section, key, values[key], defaults[key])


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
