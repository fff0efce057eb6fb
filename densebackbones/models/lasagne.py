"""The official FC-DenseNet release's Lasagne weights (``.npz``) as our state_dicts.

SimJeg/FC-DenseNet (Theano/Lasagne) publishes FC-DenseNet103 trained on CamVid as
``weights/FC-DenseNet103_weights.npz``: ``np.savez(path, *lasagne.layers.get_all_param_values(output))``, the
parameters ``arr_0``, ``arr_1``... of every layer in Lasagne's topological order, which for FC-DenseNet is the order
the network computes: the first convolution, each dense layer's ``BatchNormLayer`` (``beta``, ``gamma``, ``mean``,
``inv_std``) and ``Conv2DLayer`` (``W``, ``b``), the transitions down, the bottleneck, each transition up's
``Deconv2DLayer`` (``W``, ``b``) and the final 1x1 convolution. They are assigned to the model's layers in the
order it calls them (:func:`~.layer_order.execution_order`), every shape checked. Conversions: the running variance is
``1 / inv_std**2 - eps`` with the model's eps (Lasagne's 1e-4 is inside ``inv_std``), and a ``Deconv2DLayer``'s
kernel is flipped in both spatial axes: Lasagne computes it as the input gradient of a true convolution
(``AbstractConv2d_gradInputs(filter_flip=not flip_filters)``, ``flip_filters=False``), where PyTorch's
``ConvTranspose2d`` is that of a correlation. The ``Conv2DLayer``s of FC-DenseNet pass ``flip_filters=False``
(correlations, as PyTorch's).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .layer_order import execution_order, layer_kind

__all__ = ["lasagne_state_dict", "read_npz_params"]

# parameters per layer kind, in Lasagne's get_params() order
_PARAMS = {"conv": ("weight", "bias"), "deconv": ("weight", "bias"), "norm": ("bias", "weight", "mean", "inv_std")}


def read_npz_params(path: str | Path) -> list[np.ndarray]:
    """``arr_0``, ``arr_1``... of an ``np.savez`` parameter file, in order; anything else: one line saying why."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            names = list(f.files)
            expected = [f"arr_{i}" for i in range(len(names))]
            if sorted(names, key=lambda n: (len(n), n)) != expected:
                raise ValueError(
                    f"its arrays are {names[:4]}..., not arr_0, arr_1, ... of lasagne's get_all_param_values"
                )
            return [f[name] for name in expected]
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path} is not a readable .npz file ({type(err).__name__}: {err})") from None
    except ValueError as err:
        if "pickle" in str(err):  # numpy's allow_pickle refusal: garbage or object arrays, not np.savez of arrays
            err = ValueError("it is not an np.savez archive of numeric arrays")
        raise ValueError(f"{path} is not a Lasagne parameter file: {err}") from None


def _fields(module: nn.Module) -> list[str]:
    """The module's entries that the file holds, in Lasagne's order (a convolution without bias has no ``b``)."""
    own = module.state_dict()
    kind = layer_kind(module) or ""
    return [f for f in _PARAMS.get(kind, ()) if f in own or kind == "norm"]


def lasagne_state_dict(
    path: str | Path, model: nn.Module, input_size: Sequence[int] | None = None, classifier: str | None = None
) -> dict[str, Tensor]:
    """``model``'s state_dict with the parameters of an official Lasagne ``.npz`` (see the module docstring). A file of
    another network: a ``ValueError`` naming the file and the first array that does not fit; nothing is returned.
    The ``classifier`` module's arrays are taken whatever their size (the loader replaces a classifier of other
    classes, as for any checkpoint)."""
    path = Path(path)
    arrays = read_npz_params(path)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = tuple(input_size or cfg.get("input_size") or (3, 224, 224))
    ours = execution_order(model, size)
    for name, module in ours:
        if layer_kind(module) not in _PARAMS:
            raise ValueError(f"{path}: the model's {name} ({type(module).__name__}) has no Lasagne counterpart")
    layout = f"{len(arrays)} arrays in the file, {sum(len(_fields(m)) for _, m in ours)} parameters in the model"
    state: dict[str, Tensor] = {}
    i = 0
    for name, module in ours:
        kind, own, fields = layer_kind(module), module.state_dict(), _fields(module)
        taken = arrays[i : i + len(fields)]
        if len(taken) < len(fields):
            raise ValueError(f"{path} is not this model ({layout}): the file ends before {name}")
        lenient = classifier is not None and (name == classifier or name.startswith(f"{classifier}."))
        for k, (field, value) in enumerate(zip(fields, taken)):
            key = {"mean": "running_mean", "inv_std": "running_var"}.get(field, field)
            if field == "inv_std":
                value = 1.0 / np.square(value.astype(np.float64)) - module.eps
            if value.size != own[key].numel() and not lenient:
                raise ValueError(
                    f"{path} is not this model ({layout}): arr_{i + k} has shape {tuple(value.shape)} where the "
                    f"model's {name}.{key} has {tuple(own[key].shape)}"
                )
            shape = own[key].shape if value.size == own[key].numel() else value.shape
            tensor = torch.from_numpy(np.ascontiguousarray(value)).reshape(shape).to(own[key].dtype)
            state[f"{name}.{key}"] = tensor.flip(-1, -2) if kind == "deconv" and key == "weight" else tensor
        if kind == "norm":
            state[f"{name}.num_batches_tracked"] = torch.zeros_like(own["num_batches_tracked"])
        i += len(fields)
    if i != len(arrays):
        raise ValueError(f"{path} is not this model ({layout}): arr_{i} and later are left over")
    return state
