"""What the task adapters share: the registered model a config names, checked against the task, and built with
the data set's classes and optional fine-tuning weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..registry import create_model, list_models, model_arg_names, model_task

__all__ = ["build_config_model", "config_model_args", "is_backbone_checkpoint"]

_logger = logging.getLogger(__name__)


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
    """The keys a config's ``model`` section may hold: ``type`` (a registered model of ``task``), ``pretrained``
    (the model's published weights, downloaded; ``--pretrained FILE`` replaces them) and its constructor and builder
    arguments, less ``exclude`` (arguments the task sets itself)."""
    names = [a for a in model_arg_names(_checked_type(raw_cfg, task)) if a not in exclude]
    return ["type", "pretrained", *names]


def is_backbone_checkpoint(path: str | Path) -> bool:
    """Whether a weights file holds a classification backbone (torchvision's, timm's or ours: ``features.*`` keys
    at the top level, beside at most a classifier) rather than a whole segmentation or detection model (DenseASPP's
    and DeepLabV3's have ``features.*`` keys too, and a ``head``)."""
    from timm.models import load_state_dict

    try:
        keys = list(load_state_dict(str(path), weights_only=True))
    except Exception:  # unreadable: the model's own loader names the problem
        return False
    return any(k.startswith("features.") for k in keys) and not any(k.startswith(("head.", "decoder.")) for k in keys)


def build_config_model(
    cfg: dict[str, Any],
    task: str,
    pretrained: str | Path | None = None,
    backbone_arg: str | None = None,
    **defaults: Any,
) -> nn.Module:
    """``create_model(cfg['model']['type'], ...)`` with the config's arguments over ``defaults`` (the data set's
    classes...). ``pretrained`` fine-tunes from a weights file: everything that fits is loaded, and a classifier of
    another size is replaced by a fresh one (the official code's ``-resetClassifier``). For a model over a backbone
    (``backbone_arg``: the argument holding the backbone's ``create_model`` keywords), a classification checkpoint
    (torchvision's DenseNet-121...) initialises the backbone alone and the head starts fresh. ``model.pretrained=True``
    in the config loads the model's published weights (a download), unless a file is given."""
    name = _checked_type(cfg, task)
    model_cfg = {k: v for k, v in cfg["model"].items() if k not in ("type", "pretrained")}
    published = bool(cfg["model"].get("pretrained", False))
    for key, value in defaults.items():
        model_cfg.setdefault(key, value)
    if pretrained and backbone_arg and is_backbone_checkpoint(pretrained):
        backbone = dict(model_cfg.get(backbone_arg) or {})
        overlay = dict(backbone.get("pretrained_cfg_overlay") or {}, file=str(pretrained))
        model_cfg[backbone_arg] = dict(backbone, pretrained=True, pretrained_cfg_overlay=overlay)
        _logger.info("%s holds a classification backbone: it initialises the model's %s", pretrained, backbone_arg)
        return _with_model_args(create_model(name, pretrained=False, **model_cfg), model_cfg)
    if pretrained and backbone_arg and (model_cfg.get(backbone_arg) or {}).get("pretrained"):
        # the file holds the whole model: the backbone's published weights would be downloaded only to be replaced
        model_cfg[backbone_arg] = {
            k: v for k, v in model_cfg[backbone_arg].items() if k not in ("pretrained", "pretrained_cfg_overlay")
        }
    arguments = dict(model_cfg)
    if pretrained:
        model_cfg["pretrained_cfg_overlay"] = dict(model_cfg.get("pretrained_cfg_overlay") or {}, file=str(pretrained))
    return _with_model_args(create_model(name, pretrained=bool(pretrained) or published, **model_cfg), arguments)


def _with_model_args(model: nn.Module, arguments: dict[str, Any]) -> nn.Module:
    """``model`` with the constructor arguments that rebuild it (without any weight loading) as ``_model_args``,
    where timm keeps them (``timm.models.get_model_args``, ``save_for_hf``): they travel into ``final.json``
    (engine/checkpoint.py) and a published Hub folder (densebackbones/hub.py)."""

    def rebuild(value: Any) -> Any:
        if isinstance(value, dict):
            skip = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay")
            return {k: rebuild(v) for k, v in value.items() if k not in skip}
        return list(value) if isinstance(value, tuple) else value

    model._model_args = json.loads(json.dumps(rebuild(arguments), default=str))
    return model
