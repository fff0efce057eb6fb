"""The official DenseNet release's Lua Torch 7 files (``.t7``) as our state_dicts.

The official code (liuzhuang13/DenseNet, ``models/densenet.lua`` and ``models/DenseConnectLayer.lua``) builds a flat
``nn.Sequential``: the stem, then per dense layer a container (``DenseConnectLayerStandard``: ``nn.Concat`` of an
``nn.Identity`` and the layer; ``nn.DenseConnectLayerCustom`` of the memory-efficient runs, ``-optMemory 3`` as the
ImageNet models were trained: ``modules = {net1, net2}``), transitions (``JoinTable``, BN, ReLU, 1x1 conv, average
pool), the final BN-ReLU-pool and ``nn.Linear``. Whatever the containers, the layers that hold weights come in the
order of the forward pass, as in our :class:`~densebackbones.models.densenet.DenseNet` (``conv0``, ``norm0``, then
``norm1``, ``conv1``, ``norm2``, ``conv2`` per layer, ``norm``, ``conv`` per transition, ``norm5``, ``classifier``).
The reader (the ``torchfile`` package) gives the object tree; :func:`t7_state_dict` walks it depth first, collects the
convolutions, batch norms and linear layers in order and assigns them to the model's, every shape checked.
Convolutions without bias (cuDNN >= 4) are what the model has; a batch norm of old Torch with ``running_std`` (the
inverse standard deviation) is converted to ``running_var``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchfile
from torch import Tensor, nn

from ..registry import create_model
from .layer_order import as_entry, assign_fields

__all__ = ["T7Layer", "read_t7_layers", "t7_state_dict"]

_CONV = ("SpatialConvolution", "SpatialConvolutionMM")
_NORM = ("SpatialBatchNormalization", "BatchNormalization")
_LINEAR = ("Linear",)


class T7Layer:
    """A layer of the file that holds weights: ``kind`` (``'conv'``, ``'norm'`` or ``'linear'``), its Torch type and
    its arrays by field name."""

    def __init__(self, kind: str, typename: str, arrays: dict[str, np.ndarray], eps: float | None = None) -> None:
        self.kind, self.typename, self.arrays, self.eps = kind, typename, arrays, eps

    def describe(self) -> str:
        shape = tuple(self.arrays["weight"].shape) if "weight" in self.arrays else ()
        return f"{self.typename} {shape}"


def _typename(obj: Any) -> str:
    name = obj.torch_typename() if hasattr(obj, "torch_typename") else b""
    return (name.decode() if isinstance(name, bytes) else str(name)).rsplit(".", 1)[-1]


def _field(obj: Any, name: str) -> Any:
    """A field of a torch object (torchfile keeps the keys as bytes, or str when decoding)."""
    fields = getattr(obj, "_obj", None)
    if not isinstance(fields, dict):
        return None
    return fields[name] if name in fields else fields.get(name.encode())


def _walk(obj: Any, layers: list[T7Layer]) -> None:
    kind = _typename(obj)
    if kind in _CONV + _NORM + _LINEAR:
        names = ("weight", "bias", "running_mean", "running_var", "running_std")
        arrays = {n: np.asarray(_field(obj, n)) for n in names if isinstance(_field(obj, n), np.ndarray)}
        arrays = {n: a for n, a in arrays.items() if a.size}  # cuDNN's absent bias is an empty tensor
        label = "conv" if kind in _CONV else "norm" if kind in _NORM else "linear"
        layers.append(T7Layer(label, kind, arrays, _field(obj, "eps")))
        return
    children = _field(obj, "modules") if hasattr(obj, "torch_typename") else None
    if kind == "DataParallelTable" and children:
        children = children[:1]  # the replicas share one set of weights
    for child in children or []:
        _walk(child, layers)


def read_t7_layers(path: str | Path) -> list[T7Layer]:
    """The layers of a ``.t7`` model file that hold weights, in the order of the forward pass."""
    path = Path(path)
    try:
        root = torchfile.load(str(path))
    except Exception as err:  # truncated or not a Torch 7 file: torchfile raises whatever its parser meets
        raise ValueError(
            f"{path} is not a readable Torch 7 file ({type(err).__name__}: {err}); pass a .t7 model of the official "
            f"DenseNet release"
        ) from None
    if isinstance(root, dict) and (root.get(b"model") is not None or root.get("model") is not None):
        root = root.get(b"model") or root.get("model")  # a checkpoint table holding the model
    layers: list[T7Layer] = []
    _walk(root, layers)
    if not layers:
        raise ValueError(f"{path} holds no convolution, batch norm or linear layer: it is not a Torch 7 model file")
    return layers


def _model_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
    return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]


def _kind(module: nn.Module) -> str:
    return "conv" if isinstance(module, nn.Conv2d) else "norm" if isinstance(module, nn.BatchNorm2d) else "linear"


def _assign(layer: T7Layer, name: str, module: nn.Module, state: dict[str, Tensor]) -> None:
    own = module.state_dict()
    if layer.kind == "linear":  # the classifier as the file has it: a size of its own is replaced by the loader
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(layer.arrays["weight"], dtype=np.float32))
        state[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(layer.arrays["bias"], dtype=np.float32))
        return
    assign_fields(layer.arrays, own, name, layer.typename, state, ("weight", "bias"))
    if layer.kind == "norm":
        state[f"{name}.running_mean"] = as_entry(layer.arrays["running_mean"], own["running_mean"], name)
        if "running_var" in layer.arrays:
            var = layer.arrays["running_var"]
        else:  # old Torch kept the inverse standard deviation: 1 / sqrt(var + eps)
            var = 1.0 / np.square(layer.arrays["running_std"].astype(np.float64)) - (layer.eps or module.eps)
        state[f"{name}.running_var"] = as_entry(var, own["running_var"], name)
        state[f"{name}.num_batches_tracked"] = torch.zeros_like(own["num_batches_tracked"])


def t7_state_dict(path: str | Path, model: nn.Module, candidates: Sequence[str] = ()) -> dict[str, Tensor]:
    """``model``'s state_dict with the weights of an official ``.t7`` DenseNet (see the module docstring). A file of
    another network: a ``ValueError`` naming the first layer that does not fit and which of the registered
    ``candidates`` the file fits (built on the meta device), nothing returned."""
    path = Path(path)
    theirs = read_t7_layers(path)
    try:
        return _assigned(theirs, model, path)
    except ValueError as err:  # the file was read: another network
        fits = _fitting(theirs, candidates)
        hint = f"it fits {', '.join(fits)}" if fits else "it fits no registered model of this family"
        raise ValueError(f"{err}; {hint}") from None


def _assigned(theirs: list[T7Layer], model: nn.Module, path: Path) -> dict[str, Tensor]:
    ours = _model_layers(model)
    layout = f"{len(theirs)} layers with weights in the file, {len(ours)} in the model"
    state: dict[str, Tensor] = {}
    for i, (layer, (name, module)) in enumerate(zip(theirs, ours)):
        if layer.kind != _kind(module):
            raise ValueError(
                f"{path} is not this model ({layout}): its layer {i + 1} is a {layer.describe()} where the model has "
                f"{name} ({type(module).__name__})"
            )
        try:
            _assign(layer, name, module, state)
        except ValueError as err:
            raise ValueError(f"{path} is not this model ({layout}): {err}") from None
    if len(theirs) != len(ours):
        raise ValueError(f"{path} is not this model: {layout}")
    return state


def _fitting(theirs: list[T7Layer], names: Sequence[str]) -> list[str]:
    """Which of the registered ``names`` the file's layers fit, classifier aside (built on the meta device)."""
    signature = [(layer.kind, layer.arrays["weight"].size) for layer in theirs if layer.kind != "linear"]
    fits = []
    for name in names:
        with torch.device("meta"):
            model = create_model(name)
        ours = [(_kind(m), m.weight.numel()) for _, m in _model_layers(model) if not isinstance(m, nn.Linear)]
        if ours == signature:
            fits.append(name)
    return fits
