"""What the task adapters share: the registered model a config names, checked against the task, and built with
the data set's classes and optional fine-tuning weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from ..registry import create_model, list_models, model_arg_names, model_task

__all__ = ["build_config_model", "config_model_args"]


def _checked_type(raw_cfg: dict[str, Any], task: str) -> str:
    name = (raw_cfg.get("model") or {}).get("type")
    if not name:
        raise KeyError(f"model.type is missing; name a registered {task} model: {', '.join(list_models(task=task))}")
    if model_task(name) != task:  # raises with the closest names for an unknown one
        raise ValueError(
            f"model.type={name!r} is a {model_task(name)} model; this tool trains {task} models: "
            f"{', '.join(list_models(task=task))}"
        )
    return name


def config_model_args(raw_cfg: dict[str, Any], task: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """The keys a config's ``model`` section may hold: ``type`` (a registered model of ``task``) and its
    constructor and builder arguments, less ``exclude`` (arguments the task sets itself)."""
    return ["type", *[a for a in model_arg_names(_checked_type(raw_cfg, task)) if a not in exclude]]


def build_config_model(
    cfg: dict[str, Any], task: str, pretrained: str | Path | None = None, **defaults: Any
) -> nn.Module:
    """``create_model(cfg['model']['type'], ...)`` with the config's arguments over ``defaults`` (the data set's
    classes...). ``pretrained`` fine-tunes from a weights file: everything that fits is loaded, and a classifier of
    another size is replaced by a fresh one (the official code's ``-resetClassifier``)."""
    name = _checked_type(cfg, task)
    model_cfg = {k: v for k, v in cfg["model"].items() if k != "type"}
    for key, value in defaults.items():
        model_cfg.setdefault(key, value)
    if pretrained:
        model_cfg["pretrained_cfg_overlay"] = dict(model_cfg.get("pretrained_cfg_overlay") or {}, file=str(pretrained))
    return create_model(name, pretrained=bool(pretrained), **model_cfg)
