"""Caffe networks for the tests: an independent float64 forward pass of a ``NetParameter`` by Caffe's layer
semantics (what Caffe computes, written from its layer definitions: ceil-mode pooling windows clipped to the padded
input, ``BatchNorm`` statistics over a scale factor, ``Scale``, SSD's ``Normalize``/``Permute``/``Flatten``), which
fills the layers that hold weights with random blobs when asked, so that a ``.caffemodel`` in the real binary format
can be written from any prototxt; and the official DSOD300 as ``DSOD300_V3_Body`` and ``CreateMultiBoxHead``
(szq0214/DSOD, ``model_libs.py``) build it with pycaffe's ``NetSpec``, whose layer order (depth first from each named
blob, in the order of naming) and automatic names (``Convolution12``) the released files have."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from densebackbones.models.caffe import caffe_messages

_STOP = {"PriorBox", "DetectionOutput", "Softmax", "Reshape", "Silence"}  # not needed to compare the heads


def _set_blobs(layer: Any, arrays: list[np.ndarray]) -> None:
    del layer.blobs[:]
    for array in arrays:
        blob = layer.blobs.add()
        blob.shape.dim.extend(array.shape)
        blob.data.extend(array.astype(np.float32).reshape(-1).tolist())


def _blob(layer: Any, i: int) -> Tensor:
    blob = layer.blobs[i]
    return torch.tensor(list(blob.data), dtype=torch.float64).reshape(tuple(blob.shape.dim))


def _pool(x: Tensor, p: Any) -> Tensor:
    """Caffe's pooling: output size ceil((H + 2 pad - k) / s) + 1, less one if the last window starts in the
    padding; average windows divide by their size clipped to the padded input."""
    if p.global_pooling:
        return x.amax((2, 3), keepdim=True) if p.pool == 0 else x.mean((2, 3), keepdim=True)
    k, s, pad = p.kernel_size, p.stride or 1, p.pad
    h, w = x.shape[-2:]
    out = [math.ceil((n + 2 * pad - k) / s) + 1 for n in (h, w)]
    out = [o - 1 if pad and (o - 1) * s >= n + pad else o for o, n in zip(out, (h, w))]
    extra = [(o - 1) * s + k - (n + pad) for o, n in zip(out, (h, w))]  # beyond the right/bottom padding
    inside = F.pad(torch.ones_like(x[:1, :1]), (pad, pad, pad, pad), value=1.0)  # the padded input counts
    inside = F.pad(inside, (0, max(extra[1] - pad, 0), 0, max(extra[0] - pad, 0)), value=0.0)
    if p.pool == 0:
        padded = F.pad(x, (pad, max(extra[1], pad), pad, max(extra[0], pad)), value=-math.inf)
        return F.max_pool2d(padded, k, s)[..., : out[0], : out[1]]
    padded = F.pad(x, (pad, max(extra[1], pad), pad, max(extra[0], pad)), value=0.0)
    sums = F.avg_pool2d(padded, k, s)[..., : out[0], : out[1]] * k * k
    return sums / (F.avg_pool2d(inside, k, s)[..., : out[0], : out[1]] * k * k)


def run_net(net: Any, inputs: dict[str, Tensor], *, fill: bool = False, seed: int = 0) -> dict[str, Tensor]:
    """Every blob of ``net`` computed in float64 from ``inputs``; with ``fill``, layers that hold weights get random
    blobs first (BN statistics stored times a scale factor of 2, as Caffe keeps them), written into ``net``."""
    rng = np.random.default_rng(seed)
    blobs = {k: v.double() for k, v in inputs.items()}
    for layer in net.layer:
        if layer.type in _STOP or layer.type == "Input" or any(b not in blobs for b in layer.bottom):
            continue  # (and what only they feed)
        x = [blobs[b] for b in layer.bottom]
        if layer.type == "Convolution":
            p = layer.convolution_param
            k, s, pad = p.kernel_size[0], (p.stride[0] if p.stride else 1), (p.pad[0] if p.pad else 0)
            groups, bias = p.group or 1, (p.bias_term if p.HasField("bias_term") else True)
            if fill:
                shape = (p.num_output, x[0].shape[1] // groups, k, k)
                arrays = [rng.normal(0, math.sqrt(2 / (k * k * shape[1])), shape)]
                _set_blobs(layer, arrays + ([rng.normal(0, 0.1, p.num_output)] if bias else []))
            y = F.conv2d(x[0], _blob(layer, 0), _blob(layer, 1) if bias else None, s, pad, 1, groups)
        elif layer.type == "BatchNorm":
            c = x[0].shape[1]
            if fill:
                _set_blobs(layer, [2 * rng.normal(0, 0.2, c), 2 * rng.uniform(0.5, 1.5, c), np.array([2.0])])
            factor = _blob(layer, 2)[0]
            mean, var = _blob(layer, 0) / factor, _blob(layer, 1) / factor
            eps = layer.batch_norm_param.eps if layer.batch_norm_param.HasField("eps") else 1e-5
            y = (x[0] - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + eps)
        elif layer.type == "Scale":
            c = x[0].shape[1]
            if fill:
                _set_blobs(layer, [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c)])
            y = x[0] * _blob(layer, 0).view(1, -1, 1, 1) + _blob(layer, 1).view(1, -1, 1, 1)
        elif layer.type == "ReLU":
            y = x[0].clamp_min(0)
        elif layer.type == "Pooling":
            y = _pool(x[0], layer.pooling_param)
        elif layer.type == "Concat":
            y = torch.cat(x, 1)
        elif layer.type == "Eltwise":
            y = sum(x[1:], x[0])
        elif layer.type == "Dropout":
            y = x[0]
        elif layer.type == "InnerProduct":
            if fill:
                n = layer.inner_product_param.num_output
                _set_blobs(layer, [rng.normal(0, 0.05, (n, x[0][0].numel())), rng.normal(0, 0.1, n)])
            y = x[0].flatten(1) @ _blob(layer, 0).T + _blob(layer, 1)
        elif layer.type == "Normalize":
            if fill:
                _set_blobs(layer, [rng.uniform(10, 30, x[0].shape[1])])
            norm = torch.sqrt((x[0] ** 2).sum(1, keepdim=True) + 1e-10)  # across channels, per position
            y = x[0] / norm * _blob(layer, 0).view(1, -1, 1, 1)
        elif layer.type == "Permute":
            y = x[0].permute(*layer.permute_param.order)
        elif layer.type == "Flatten":
            y = x[0].flatten(1)
        else:
            raise NotImplementedError(f"{layer.type} ({layer.name})")
        blobs[layer.top[0]] = y
    return blobs


def write_caffemodel(net: Any, path: Path) -> Path:
    path.write_bytes(net.SerializeToString())
    return path


# ------------------------------------------------------------------------------------------------ NetSpec, DSOD300
class Top:
    """A blob of a NetSpec net: the layer that produces it (type, params, bottoms) and its name once named."""

    def __init__(self, kind: str, bottoms: list[Top], **params: Any) -> None:
        self.kind, self.bottoms, self.params, self.in_place = kind, bottoms, params, params.pop("in_place", False)


class NetSpec:
    """pycaffe's NetSpec: ``net[name] = top`` names blobs; :meth:`to_proto` writes the layers depth first from each
    named top in the order of naming, bottoms before the layer, automatic names ``<Type><count>``."""

    def __init__(self) -> None:
        self.tops: dict[str, Top] = {}

    def __setitem__(self, name: str, top: Top) -> None:
        self.tops[name] = top

    def to_proto(self) -> Any:
        net = caffe_messages()["NetParameter"]()
        names = {id(top): name for name, top in self.tops.items()}
        auto: Counter[str] = Counter()
        blob_names: dict[int, str] = {}
        done: set[int] = set()

        def visit(top: Top) -> None:
            if id(top) in done:
                return
            for bottom in top.bottoms:
                visit(bottom)
            done.add(id(top))
            if top.kind == "Input":
                blob_names[id(top)] = names.get(id(top), "data")
                net.input.append(blob_names[id(top)])
                return
            auto[top.kind] += 1
            name = names.get(id(top), f"{top.kind}{auto[top.kind]}")
            layer = net.layer.add(name=name, type=top.kind)
            layer.bottom.extend(blob_names[id(b)] for b in top.bottoms)
            blob_names[id(top)] = blob_names[id(top.bottoms[0])] if top.in_place else name
            layer.top.append(blob_names[id(top)])
            for field, values in top.params.items():
                message = getattr(layer, field)
                for key, value in values.items():
                    if isinstance(value, list):
                        getattr(message, key).extend(value)
                    else:
                        setattr(message, key, value)

        for top in self.tops.values():
            visit(top)
        return net


def _conv(bottom: Top, ks: int, nout: int, stride: int, pad: int, bias: bool = False) -> Top:
    params = dict(num_output=nout, kernel_size=[ks], stride=[stride], pad=[pad], bias_term=bias)
    return Top("Convolution", [bottom], convolution_param=params)


def _bn_scale(bottom: Top, eps: float | None = None, in_place: bool = False) -> Top:
    bn = Top("BatchNorm", [bottom], in_place=in_place, **({"batch_norm_param": {"eps": eps}} if eps else {}))
    return Top("Scale", [bn], in_place=True, scale_param={"bias_term": True})


def _pool2(bottom: Top) -> Top:
    return Top("Pooling", [bottom], pooling_param={"pool": 0, "kernel_size": 2, "stride": 2})


def dsod300(growth: int, blocks: tuple[int, int, int, int], num_classes: int, boxes: tuple[int, ...],
            halves: tuple[int, ...] = (256, 128, 128, 128), second: int = 256) -> Any:  # fmt: skip
    """The net of DSOD300_pascal.py: ``DSOD300_V3_Body`` (stem 64-64-128, bottleneck layers of 4k, transitions
    keeping the width, the learned/re-used second source, ``add_bl_layer2`` scales) and ``CreateMultiBoxHead`` with
    ``normalizations`` 20 and ``use_batchnorm=True`` (3x3 conv, BatchNorm eps 0.001 and Scale per prediction)."""
    net = NetSpec()

    def bn_relu_conv(bottom: Top, ks: int, nout: int, stride: int, pad: int) -> Top:
        relu = Top("ReLU", [_bn_scale(bottom)], in_place=True)
        return _conv(relu, ks, nout, stride, pad)

    def add_bl_layer(bottom: Top) -> Top:
        conv = bn_relu_conv(bn_relu_conv(bottom, 1, 4 * growth, 1, 0), 3, growth, 1, 1)
        return Top("Concat", [bottom, conv])

    def add_bl_layer2(bottom: Top, n: int) -> Top:
        conv = bn_relu_conv(bn_relu_conv(bottom, 1, n, 1, 0), 3, n, 2, 1)
        conv2 = bn_relu_conv(_pool2(bottom), 1, n, 1, 0)
        return Top("Concat", [conv2, conv])

    model = net.tops.setdefault("data", Top("Input", []))
    for nout, stride in ((64, 2), (64, 1), (128, 1)):
        model = Top("ReLU", [_bn_scale(_conv(model, 3, nout, stride, 1))], in_place=True)
    model = _pool2(model)
    chs = 128
    for _ in range(blocks[0]):
        model, chs = add_bl_layer(model), chs + growth
    model = _pool2(bn_relu_conv(model, 1, chs, 1, 0))
    for _ in range(blocks[1]):
        model, chs = add_bl_layer(model), chs + growth
    net["First"] = first = bn_relu_conv(model, 1, chs, 1, 0)
    model1 = _pool2(first)
    for _ in range(blocks[2]):
        model1, chs = add_bl_layer(model1), chs + growth
    model1 = bn_relu_conv(model1, 1, chs, 1, 0)
    for _ in range(blocks[3]):
        model1 = add_bl_layer(model1)
    model1 = bn_relu_conv(model1, 1, second, 1, 0)
    f_first = bn_relu_conv(_pool2(first), 1, second, 1, 0)
    net["Second"] = source = Top("Concat", [model1, f_first])
    sources = ["First", "Second"]
    for i, half in enumerate(halves):
        sources.append(("Third", "Fourth", "Fifth", "Sixth")[i])
        net[sources[-1]] = source = add_bl_layer2(source, half)
    locs, confs = [], []
    for name, n in zip(sources, boxes):
        net[f"{name}_norm"] = norm = Top(
            "Normalize", [net.tops[name]], norm_param={"across_spatial": False, "channel_shared": False}
        )
        for kind, width, out in (("loc", 4, locs), ("conf", num_classes, confs)):
            net[f"{name}_norm_mbox_{kind}"] = conv = _conv(norm, 3, n * width, 1, 1)
            net[f"{name}_norm_mbox_{kind}_bn"] = bn = Top(
                "BatchNorm", [conv], in_place=True, batch_norm_param={"eps": 0.001}
            )
            net[f"{name}_norm_mbox_{kind}_scale"] = scale = Top(
                "Scale", [bn], in_place=True, scale_param={"bias_term": True}
            )
            perm = Top("Permute", [scale], permute_param={"order": [0, 2, 3, 1]})
            net[f"{name}_norm_mbox_{kind}_flat"] = flat = Top("Flatten", [perm], flatten_param={"axis": 1})
            out.append(flat)
    net["mbox_loc"] = Top("Concat", locs)
    net["mbox_conf"] = Top("Concat", confs)
    return net.to_proto()
