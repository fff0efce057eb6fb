"""The order in which a model calls its layers that hold weights, and the assignment of a file's arrays to them: how
files without our key names (the official Lua Torch, Caffe and Lasagne releases, which list their layers in computing
order) are matched to a model."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["as_entry", "assign_fields", "execution_order", "layer_kind"]


def layer_kind(module: nn.Module) -> str | None:
    """``'conv'``, ``'deconv'``, ``'norm'``, ``'linear'``, a module's own ``caffe_type`` (heads/dsod.py's L2Norm:
    ``'l2norm'``), or None for a module that holds no weights of its own."""
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, nn.ConvTranspose2d):
        return "deconv"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "norm"
    if isinstance(module, nn.Linear):
        return "linear"
    return getattr(module, "caffe_type", None)


def execution_order(model: nn.Module, input_size: Sequence[int]) -> list[tuple[str, nn.Module]]:
    """The model's layers with weights (:func:`layer_kind`) in the order it calls them on one image of
    ``input_size`` (C, H, W); each once, at its first call. Recorded with forward hooks on a copy of the model on the
    meta device (eval mode: no memory, no computation, the memory modes' plain route)."""
    shadow = copy.deepcopy(model).to("meta").eval()
    shadow_names = {module: name for name, module in shadow.named_modules()}
    order: list[str] = []

    def record(module: nn.Module, args: Any, output: Any) -> None:
        if shadow_names[module] not in order:
            order.append(shadow_names[module])

    for module in shadow.modules():
        if layer_kind(module):
            module.register_forward_hook(record)
    with torch.no_grad():
        shadow(torch.zeros(1, *input_size, device="meta", dtype=next(shadow.parameters()).dtype))
    modules = dict(model.named_modules())
    return [(name, modules[name]) for name in order]


def as_entry(array: np.ndarray, like: Tensor, what: str) -> Tensor:
    """``array`` as a state_dict entry shaped and typed as ``like``; a size that differs: one line naming ``what``."""
    if array.size != like.numel():
        raise ValueError(f"{what}: {tuple(array.shape)} in the file, {tuple(like.shape)} in the model")
    return torch.from_numpy(np.ascontiguousarray(array)).reshape(like.shape).to(like.dtype)


def assign_fields(
    arrays: dict[str, np.ndarray], own: dict[str, Tensor], name: str, what: str, state: dict[str, Tensor],
    fields: Sequence[str],
) -> None:  # fmt: skip
    """``state[name.field] = arrays[field]`` for each of ``fields`` the module ``name`` has (its ``own`` state);
    a field the module has and the file's layer (``what``) lacks, or a non-zero one the module lacks: an error."""
    for field in fields:
        if field in own:
            if field not in arrays:
                raise ValueError(f"{name}.{field}: the file's {what} has no {field}")
            state[f"{name}.{field}"] = as_entry(arrays[field], own[field], f"{name}.{field}")
        elif field in arrays and np.any(arrays[field]):
            raise ValueError(f"{name}: the file's {what} has a {field}, the model's layer none")
