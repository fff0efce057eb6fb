"""The official Caffe releases (``.caffemodel``, ``.prototxt``) as our state_dicts: DSOD300 and DSOD300-lite
(szq0214/DSOD), Pelee and the Caffe PeleeNet (Robert-JunWang/Pelee, Robert-JunWang/PeleeNet).

No Caffe install is needed: :func:`caffe_messages` builds Caffe's protobuf messages (``NetParameter``,
``LayerParameter``, ``BlobProto`` and the parameters of the layers that hold weights, with the field numbers of
BVLC Caffe's ``src/caffe/proto/caffe.proto`` and, for SSD's ``Normalize``, of weiliu89/caffe's ``ssd`` branch) with the
``protobuf`` package; a binary ``.caffemodel`` parses with them, a text ``.prototxt`` too (fields we do not read --
fillers, learning rates, data layers -- are skipped).

The official nets are written by pycaffe's ``NetSpec``, which names most layers automatically (DSOD's
``Convolution12``), so layers are matched by the order in which data flows, not by name: the file lists its layers
in the order they compute, and :func:`~.layer_order.execution_order` records the order in which the model calls its
convolutions, batch norms, L2 norms and linear layers on an image of the model's input size. A Caffe ``BatchNorm``
and the ``Scale`` on its output are one batch norm; every kernel size, stride, padding, group count and shape is
checked. Caffe's conventions are converted: the statistics are stored times a scale factor (``blobs[2]``), a batch
norm's ``eps`` (0.001 in Pelee's layers) is folded into the running variance for the model's own, a merged file's
convolution bias (BN folded into the convolution, "Model Merged BN with Conv" of Pelee's README) becomes the bias of
an identity batch norm, and the first convolution's input channels are reversed when the file was trained on BGR
images (``input_order='bgr'``, OpenCV's order, which the official data layers use) so that the model takes RGB.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.message import DecodeError, Message
from torch import Tensor, nn

from ..registry import create_model
from .layer_order import as_entry, assign_fields, execution_order
from .layer_order import layer_kind as _kind

__all__ = ["CaffeUnit", "caffe_messages", "caffe_state_dict", "read_net", "weight_units"]

_F = descriptor_pb2.FieldDescriptorProto
# (message, [(field, number, type, label, message type name or None, packed)]) as in caffe.proto
_MESSAGES: list[tuple[str, list[tuple[str, int, int, int, str | None]]]] = [
    ("BlobShape", [("dim", 1, _F.TYPE_INT64, _F.LABEL_REPEATED, None)]),
    (
        "BlobProto",
        [
            ("num", 1, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),
            ("channels", 2, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),
            ("height", 3, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),
            ("width", 4, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),
            ("data", 5, _F.TYPE_FLOAT, _F.LABEL_REPEATED, None),
            ("shape", 7, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "BlobShape"),
            ("double_data", 8, _F.TYPE_DOUBLE, _F.LABEL_REPEATED, None),
        ],
    ),
    (
        "ConvolutionParameter",
        [
            ("num_output", 1, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None),
            ("bias_term", 2, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
            ("pad", 3, _F.TYPE_UINT32, _F.LABEL_REPEATED, None),
            ("kernel_size", 4, _F.TYPE_UINT32, _F.LABEL_REPEATED, None),
            ("group", 5, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None),
            ("stride", 6, _F.TYPE_UINT32, _F.LABEL_REPEATED, None),
            ("pad_h", 9, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None),
            ("pad_w", 10, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None),
            ("kernel_h", 11, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None),
            ("kernel_w", 12, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None),
            ("stride_h", 13, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None),
            ("stride_w", 14, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None),
            ("dilation", 18, _F.TYPE_UINT32, _F.LABEL_REPEATED, None),
        ],
    ),
    (
        "BatchNormParameter",
        [
            ("use_global_stats", 1, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
            ("moving_average_fraction", 2, _F.TYPE_FLOAT, _F.LABEL_OPTIONAL, None),
            ("eps", 3, _F.TYPE_FLOAT, _F.LABEL_OPTIONAL, None),
        ],
    ),
    (
        "ScaleParameter",
        [("axis", 1, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None), ("bias_term", 4, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None)],
    ),  # fmt: skip
    (
        "InnerProductParameter",
        [
            ("num_output", 1, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None),
            ("bias_term", 2, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
        ],
    ),  # fmt: skip
    (
        "NormalizeParameter",
        [
            ("across_spatial", 1, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
            ("channel_shared", 3, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
            ("eps", 4, _F.TYPE_FLOAT, _F.LABEL_OPTIONAL, None),
        ],
    ),  # fmt: skip
    (
        "ConcatParameter",
        [
            ("concat_dim", 1, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None),
            ("axis", 2, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None),
        ],
    ),  # fmt: skip
    (
        "PoolingParameter",
        [
            ("pool", 1, _F.TYPE_ENUM, _F.LABEL_OPTIONAL, "PoolingParameter.PoolMethod"),
            ("kernel_size", 2, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None),
            ("stride", 3, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None),
            ("pad", 4, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None),
            ("global_pooling", 12, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
        ],
    ),
    ("InputParameter", [("shape", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "BlobShape")]),
    ("PermuteParameter", [("order", 1, _F.TYPE_UINT32, _F.LABEL_REPEATED, None)]),
    ("FlattenParameter", [("axis", 1, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None)]),
    (
        "LayerParameter",
        [
            ("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
            ("type", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
            ("bottom", 3, _F.TYPE_STRING, _F.LABEL_REPEATED, None),
            ("top", 4, _F.TYPE_STRING, _F.LABEL_REPEATED, None),
            ("blobs", 7, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "BlobProto"),
            ("convolution_param", 106, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "ConvolutionParameter"),
            ("concat_param", 104, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "ConcatParameter"),
            ("inner_product_param", 117, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "InnerProductParameter"),
            ("pooling_param", 121, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "PoolingParameter"),
            ("flatten_param", 135, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "FlattenParameter"),
            ("batch_norm_param", 139, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "BatchNormParameter"),
            ("scale_param", 142, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "ScaleParameter"),
            ("input_param", 143, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "InputParameter"),
            ("permute_param", 202, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "PermuteParameter"),  # SSD's
            ("norm_param", 206, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "NormalizeParameter"),  # SSD's
        ],
    ),
    (
        "NetParameter",
        [
            ("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
            ("layers", 2, _F.TYPE_BYTES, _F.LABEL_REPEATED, None),  # V1LayerParameter: only detected, see read_net
            ("input", 3, _F.TYPE_STRING, _F.LABEL_REPEATED, None),
            ("input_dim", 4, _F.TYPE_INT32, _F.LABEL_REPEATED, None),
            ("input_shape", 8, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "BlobShape"),
            ("layer", 100, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "LayerParameter"),
        ],
    ),
]
_PACKED = {("BlobShape", "dim"), ("BlobProto", "data"), ("BlobProto", "double_data")}  # [packed = true] in caffe.proto


@functools.cache
def caffe_messages() -> dict[str, type[Message]]:
    """Caffe's message classes by name (``NetParameter``, ``LayerParameter``, ``BlobProto``...): the fields of
    caffe.proto that describe layers and their weights, built without ``protoc``."""
    proto = descriptor_pb2.FileDescriptorProto(name="densebackbones_caffe.proto", package="caffe", syntax="proto2")
    for message_name, fields in _MESSAGES:
        message = proto.message_type.add(name=message_name)
        if message_name == "PoolingParameter":
            pool = message.enum_type.add(name="PoolMethod")
            for number, value in enumerate(("MAX", "AVE", "STOCHASTIC")):
                pool.value.add(name=value, number=number)
        for name, number, kind, label, type_name in fields:
            f = message.field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = f".caffe.{type_name}"
            if (message_name, name) in _PACKED:
                f.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}")) for name, _ in _MESSAGES}


def read_net(path: str | Path) -> Message:
    """A ``NetParameter`` from a binary ``.caffemodel`` or a text ``.prototxt``; a file that is neither: one line
    naming it and why."""
    path = Path(path)
    net = caffe_messages()["NetParameter"]()
    data = path.read_bytes()
    try:
        if path.suffix in (".prototxt", ".pbtxt"):
            text_format.Parse(data.decode(), net, allow_unknown_field=True)
        else:
            net.ParseFromString(data)
    except (DecodeError, text_format.ParseError, UnicodeDecodeError) as err:
        kind = "Caffe prototxt" if path.suffix in (".prototxt", ".pbtxt") else "Caffe model (.caffemodel)"
        raise ValueError(f"{path} is not a readable {kind} ({type(err).__name__}: {err})") from None
    if net.layers and not net.layer:
        raise ValueError(
            f"{path} uses Caffe's V1 layer format (before 2015); upgrade it with Caffe's upgrade_net_proto_binary "
            f"tool, or pass a file of the official release (they use the current format)"
        )
    if not net.layer:
        raise ValueError(f"{path} holds no layers: it is not a Caffe network")
    return net


def _blob(blob: Message) -> np.ndarray:
    values = np.asarray(blob.double_data if len(blob.double_data) else blob.data, dtype=np.float64)
    shape = tuple(blob.shape.dim) if blob.HasField("shape") else (blob.num, blob.channels, blob.height, blob.width)
    if int(np.prod(shape)) != values.size:  # old 4-d blobs of a vector are (1, 1, 1, n)
        shape = (values.size,)
    return values.reshape(shape)


def _pair(repeated: Sequence[int], single_h: int, single_w: int, default: int) -> tuple[int, int]:
    if single_h or single_w:
        return single_h, single_w
    if not repeated:
        return default, default
    return (repeated[0], repeated[0]) if len(repeated) == 1 else (repeated[0], repeated[1])


@dataclass
class CaffeUnit:
    """A layer of the file that holds weights, as the model sees it: ``kind`` (``'conv'``, ``'norm'``,
    ``'l2norm'``, ``'linear'``), the Caffe layer names, its arrays (``weight``, ``bias``, ``running_mean``,
    ``running_var``; float64) and, for a convolution, its geometry (``kernel_size``, ``stride``, ``padding``,
    ``groups``, ``dilation``)."""

    kind: str
    names: tuple[str, ...]
    arrays: dict[str, np.ndarray]
    geometry: dict[str, Any] = field(default_factory=dict)
    eps: float = 1e-5

    def describe(self) -> str:
        shape = tuple(self.arrays["weight"].shape) if "weight" in self.arrays else ()
        return f"{'+'.join(self.names)} ({self.kind} {shape})"


def weight_units(net: Message) -> list[CaffeUnit]:
    """The layers of ``net`` that hold weights, in the file's (computing) order; a ``BatchNorm`` and the ``Scale``
    that follows it on the same blob are one ``norm`` unit. A prototxt's layers have no blobs: their units carry
    the geometry only."""
    units: list[CaffeUnit] = []
    open_norm: dict[str, CaffeUnit] = {}  # blob name -> a BatchNorm waiting for its Scale
    for layer in net.layer:
        blobs = [_blob(b) for b in layer.blobs]
        if layer.type == "Convolution":
            p = layer.convolution_param
            geometry = dict(
                kernel_size=_pair(p.kernel_size, p.kernel_h, p.kernel_w, 1),
                stride=_pair(p.stride, p.stride_h, p.stride_w, 1),
                padding=_pair(p.pad, p.pad_h, p.pad_w, 0),
                groups=p.group if p.HasField("group") else 1,
                dilation=_pair(p.dilation, 0, 0, 1),
                out_channels=p.num_output,
            )
            arrays = dict(zip(("weight", "bias"), blobs))
            units.append(CaffeUnit("conv", (layer.name,), arrays, geometry))
        elif layer.type == "BatchNorm":
            arrays = {}
            if blobs:
                factor = float(blobs[2].reshape(-1)[0]) if len(blobs) > 2 else 1.0
                factor = 1.0 / factor if factor else 0.0  # Caffe stores the statistics times a scale factor
                arrays = dict(running_mean=blobs[0] * factor, running_var=blobs[1] * factor)
            p = layer.batch_norm_param
            unit = CaffeUnit("norm", (layer.name,), arrays, eps=p.eps if p.HasField("eps") else 1e-5)
            units.append(unit)
            open_norm[layer.top[0] if layer.top else layer.name] = unit
        elif layer.type == "Scale" and layer.bottom and layer.bottom[0] in open_norm:
            unit = open_norm.pop(layer.bottom[0])
            unit.names += (layer.name,)
            unit.arrays.update(zip(("weight", "bias"), blobs))
        elif layer.type == "Normalize":
            units.append(CaffeUnit("l2norm", (layer.name,), dict(zip(("weight",), blobs))))
        elif layer.type == "InnerProduct":
            units.append(CaffeUnit("linear", (layer.name,), dict(zip(("weight", "bias"), blobs))))
        elif layer.type in ("Scale", "Bias", "Deconvolution", "PReLU", "Embed"):
            raise ValueError(f"layer {layer.name!r}: a {layer.type} layer with weights that no registered model has")
    return units


def _check_geometry(unit: CaffeUnit, name: str, conv: nn.Conv2d) -> None:
    ours = dict(kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding, groups=conv.groups,
                dilation=conv.dilation, out_channels=conv.out_channels)  # fmt: skip
    for key, value in ours.items():
        if key in unit.geometry and unit.geometry[key] != value:
            raise ValueError(f"{name} has {key} {value} where the file's {unit.describe()} has {unit.geometry[key]}")


def _assign(unit: CaffeUnit, name: str, module: nn.Module, state: dict[str, Tensor]) -> None:
    own = module.state_dict()
    if unit.kind == "linear":  # a classifier of another size is replaced by the loader, as for any checkpoint
        weight = unit.arrays["weight"]
        state[f"{name}.weight"] = torch.from_numpy(weight.reshape(weight.shape[0], -1)).float()
        state[f"{name}.bias"] = torch.from_numpy(unit.arrays["bias"].reshape(-1)).float()
        return
    assign_fields(unit.arrays, own, name, unit.describe(), state, ("weight", "bias", "running_mean", "running_var"))
    if unit.kind == "norm":
        # the file's eps folded into the variance: (var + eps_file) = (var' + eps_model)
        var = unit.arrays["running_var"] + unit.eps - module.eps
        state[f"{name}.running_var"] = as_entry(np.maximum(var, 0.0), own["running_var"], name)
        state[f"{name}.num_batches_tracked"] = torch.zeros_like(own["num_batches_tracked"])


def _identity_norm(bias: np.ndarray, name: str, module: nn.Module, state: dict[str, Tensor]) -> None:
    """A batch norm that adds ``bias``: the place of a merged file's convolution bias."""
    own = module.state_dict()
    state[f"{name}.weight"] = torch.ones_like(own["weight"])
    state[f"{name}.bias"] = as_entry(bias, own["bias"], f"{name}.bias")
    state[f"{name}.running_mean"] = torch.zeros_like(own["running_mean"])
    state[f"{name}.running_var"] = torch.full_like(own["running_var"], 1.0 - module.eps)
    state[f"{name}.num_batches_tracked"] = torch.zeros_like(own["num_batches_tracked"])


def _assigned(units: list[CaffeUnit], ours: list[tuple[str, nn.Module]], path: Path) -> dict[str, Tensor]:
    layout = f"{len(units)} layers with weights in the file, {len(ours)} in the model"
    state: dict[str, Tensor] = {}
    i = 0
    for k, unit in enumerate(units):
        if i >= len(ours):
            raise ValueError(f"{path} is not this model ({layout}): the file goes on with {unit.describe()}")
        name, module = ours[i]
        try:
            if unit.kind != _kind(module):
                raise ValueError(f"the file's layer {k + 1}, {unit.describe()}, is where the model has {name} "
                                 f"({type(module).__name__})")  # fmt: skip
            if unit.kind == "conv":
                _check_geometry(unit, name, module)
            merged = (
                unit.kind == "conv"
                and "bias" in unit.arrays
                and module.bias is None
                and i + 1 < len(ours)
                and _kind(ours[i + 1][1]) == "norm"
                and (k + 1 == len(units) or units[k + 1].kind != "norm")
            )
            if merged:  # BN folded into the convolution: its bias is the model's norm's
                _assign(CaffeUnit("conv", unit.names, {"weight": unit.arrays["weight"]}, unit.geometry), name,
                        module, state)  # fmt: skip
                _identity_norm(unit.arrays["bias"], *ours[i + 1], state)
                i += 2
                continue
            _assign(unit, name, module, state)
        except ValueError as err:
            raise ValueError(f"{path} is not this model ({layout}): {err}") from None
        i += 1
    if i != len(ours):
        raise ValueError(f"{path} is not this model ({layout}): the model goes on with {ours[i][0]}")
    return state


def _conv_signature(shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    return sorted(tuple(s) for s in shapes)


def _fitting(units: list[CaffeUnit], candidates: Sequence[str]) -> list[str]:
    """Which of the registered ``candidates`` have the file's convolutions (as a multiset of weight shapes; built
    on the meta device)."""
    theirs = _conv_signature([u.arrays["weight"].shape for u in units if u.kind == "conv" and "weight" in u.arrays])
    fits = []
    for name in candidates:
        with torch.device("meta"):
            model = create_model(name)
        ours = _conv_signature([m.weight.shape for m in model.modules() if isinstance(m, nn.Conv2d)])
        if ours == theirs:
            fits.append(name)
    return fits


def caffe_state_dict(
    path: str | Path,
    model: nn.Module,
    *,
    input_order: str = "bgr",
    candidates: Sequence[str] = (),
    input_size: Sequence[int] | None = None,
) -> dict[str, Tensor]:
    """``model``'s state_dict with the weights of an official ``.caffemodel`` (see the module docstring).

    Args:
        input_order: ``'bgr'`` (the official DSOD and Pelee files: the first convolution's input channels are
            reversed so that the model takes RGB) or ``'rgb'`` (kept).
        candidates: registered names to name in the error when the file is of another network.
        input_size: (C, H, W) of the image that records the model's order (default: its ``pretrained_cfg``'s).

    A file of another network: a ``ValueError`` naming the file, the first layer that does not fit and which
    candidates the file fits; nothing is returned.
    """
    if input_order not in ("bgr", "rgb"):
        raise ValueError(f"input_order={input_order!r}: 'bgr' (Caffe's OpenCV-read training images) or 'rgb'")
    path = Path(path)
    units = weight_units(read_net(path))
    if not any(unit.arrays for unit in units):
        raise ValueError(f"{path} holds no weights (a prototxt describes a network; its weights are the .caffemodel)")
    size = tuple(input_size or (getattr(model, "pretrained_cfg", None) or {}).get("input_size") or (3, 224, 224))
    ours = execution_order(model, size)
    try:
        state = _assigned(units, ours, path)
    except ValueError as err:
        fits = _fitting(units, candidates)
        hint = f"it fits {', '.join(fits)}" if fits else "it fits no registered model of this family"
        raise ValueError(f"{err}; {hint}") from None
    first_conv = next(f"{name}.weight" for name, module in ours if isinstance(module, nn.Conv2d))
    if input_order == "bgr" and state[first_conv].shape[1] == 3:
        state[first_conv] = state[first_conv].flip(1)
    return state
