"""Lua Torch 7 files for the tests: a writer of the ``.t7`` binary format (torch7's ``File.lua`` serialisation:
typed objects, tables, versioned torch classes, tensors over storages; read back by the ``torchfile`` package), the
official DenseNet's module tree as ``models/densenet.lua`` builds it (liuzhuang13/DenseNet), and an independent
float64 forward pass of such a tree, from its modules' own fields."""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F


class Module:
    """A torch class instance: its Lua type name and fields (tensors as numpy arrays, ``modules`` a list)."""

    def __init__(self, typename: str, **fields: Any) -> None:
        self.typename, self.fields = typename, fields


class T7Writer:
    """``torch.save(file, obj)`` of Lua Torch 7, binary mode (ints 4 bytes, longs 8, little-endian)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.next_index = handle, 0

    def _pack(self, fmt: str, *values: Any) -> None:
        self.handle.write(struct.pack("<" + fmt, *values))

    def _string(self, text: str) -> None:
        data = text.encode()
        self._pack("i", len(data))
        self.handle.write(data)

    def _new_index(self) -> int:
        self.next_index += 1
        return self.next_index

    def write(self, obj: Any) -> None:
        if obj is None:
            self._pack("i", 0)
        elif isinstance(obj, bool):
            self._pack("ii", 5, int(obj))
        elif isinstance(obj, (int, float)):
            self._pack("id", 1, float(obj))
        elif isinstance(obj, str):
            self._pack("i", 2)
            self._string(obj)
        elif isinstance(obj, np.ndarray):
            self._tensor(obj)
        elif isinstance(obj, Module):
            self._pack("ii", 4, self._new_index())
            self._string("V 1")
            self._string(obj.typename)
            self.write(obj.fields)
        elif isinstance(obj, (dict, list)):
            items = obj.items() if isinstance(obj, dict) else ((i + 1, v) for i, v in enumerate(obj))
            items = list(items)
            self._pack("iii", 3, self._new_index(), len(items))
            for key, value in items:
                self.write(key)
                self.write(value)
        else:
            raise TypeError(f"cannot write {type(obj).__name__}")

    def _tensor(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=np.float32)
        self._pack("ii", 4, self._new_index())
        self._string("V 1")
        self._string("torch.FloatTensor")
        self._pack("i", array.ndim)
        self._pack(f"{array.ndim}q", *array.shape)
        self._pack(f"{array.ndim}q", *(s // array.itemsize for s in array.strides))
        self._pack("q", 1)  # storage offset, 1-based
        self._pack("ii", 4, self._new_index())
        self._string("V 1")
        self._string("torch.FloatStorage")
        self._pack("q", array.size)
        self.handle.write(array.tobytes())


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def conv(m: torch.nn.Conv2d) -> Module:
    kh, kw = m.kernel_size
    return Module(
        "cudnn.SpatialConvolution", weight=_np(m.weight), nInputPlane=m.in_channels, nOutputPlane=m.out_channels,
        kW=kw, kH=kh, dW=m.stride[1], dH=m.stride[0], padW=m.padding[1], padH=m.padding[0],
    )  # fmt: skip


def norm(m: torch.nn.BatchNorm2d, legacy_std: bool = False) -> Module:
    stats = dict(running_mean=_np(m.running_mean))
    if legacy_std:  # old Torch: the inverse standard deviation
        stats["running_std"] = 1.0 / np.sqrt(_np(m.running_var) + m.eps)
    else:
        stats["running_var"] = _np(m.running_var)
    return Module("cudnn.SpatialBatchNormalization", weight=_np(m.weight), bias=_np(m.bias), eps=m.eps, **stats)


def relu() -> Module:
    return Module("cudnn.ReLU", inplace=True)


def official_densenet(model: torch.nn.Module, custom_layers: bool, pool_size: int, legacy_std: bool = False) -> Module:
    """The module tree ``densenet.lua`` builds for the same network as ``model`` (a torchvision-style DenseNet-BC, no
    dropout), with its weights: ``custom_layers`` for ``-optMemory 3`` (``nn.DenseConnectLayerCustom`` and a
    ``JoinTable`` before each transition), else ``DenseConnectLayerStandard``'s ``nn.Concat``; ``pool_size``: the
    final average pool's (7 at 224 px, 8 on CIFAR)."""
    f = model.features
    seq: list[Module] = [conv(f.conv0)]
    if hasattr(f, "norm0"):  # ImageNet stem
        seq += [
            norm(f.norm0, legacy_std),
            relu(),
            Module("nn.SpatialMaxPooling", kW=3, kH=3, dW=2, dH=2, padW=1, padH=1),
        ]
    blocks = [name for name, _ in f.named_children() if name.startswith("denseblock")]
    for b, block_name in enumerate(blocks):
        for layer in getattr(f, block_name).children():
            net1 = [norm(layer.norm1, legacy_std), relu()]
            net2 = [conv(layer.conv1)]
            if layer.conv2 is not None:  # bottleneck
                net2 += [norm(layer.norm2, legacy_std), relu(), conv(layer.conv2)]
            if custom_layers:
                seq.append(Module("nn.DenseConnectLayerCustom", modules=[
                    Module("nn.Sequential", modules=net1), Module("nn.Sequential", modules=net2)]))  # fmt: skip
            else:
                inner = Module("nn.Sequential", modules=net1 + net2)
                concat = Module("nn.Concat", dimension=2, modules=[Module("nn.Identity"), inner])
                seq.append(Module("nn.Sequential", modules=[concat]))
        if custom_layers:
            seq.append(Module("nn.JoinTable", dimension=2))
        if b < len(blocks) - 1:
            t = getattr(f, f"transition{b + 1}")
            pool = Module("cudnn.SpatialAveragePooling", kW=2, kH=2, dW=2, dH=2, padW=0, padH=0)
            seq += [norm(t.norm, legacy_std), relu(), conv(t.conv), pool]
        else:
            pool = Module("cudnn.SpatialAveragePooling", kW=pool_size, kH=pool_size, dW=1, dH=1, padW=0, padH=0)
            seq += [norm(f.norm5, legacy_std), relu(), pool, Module("nn.Reshape")]
    seq.append(Module("nn.Linear", weight=_np(model.classifier.weight), bias=_np(model.classifier.bias)))
    return Module("nn.Sequential", modules=seq)


def write_t7(path, obj: Any) -> None:
    with open(path, "wb") as handle:
        T7Writer(handle).write(obj)


def forward(module: Module, x: Any) -> Any:
    """The network as Lua Torch runs it (eval mode, float64), from each module's fields: an implementation of the
    official layers independent of densebackbones. A custom dense layer's input and output are tables of maps."""
    kind, fields = module.typename.rsplit(".", 1)[-1], module.fields
    t = lambda name: torch.from_numpy(np.asarray(fields[name], dtype=np.float64))  # noqa: E731
    if kind == "Sequential":
        for child in fields.get("modules", []):
            x = forward(child, x)
        return x
    if kind == "DenseConnectLayerCustom":  # a table of maps in, the same table plus the new map out
        maps = x if isinstance(x, list) else [x]
        new = forward(fields["modules"][1], forward(fields["modules"][0], torch.cat(maps, 1)))
        return [*maps, new]
    if kind == "JoinTable":
        return torch.cat(x, 1) if isinstance(x, list) else x
    if kind == "Concat":
        return torch.cat([forward(child, x) for child in fields["modules"]], 1)
    if kind == "Identity":
        return x
    if isinstance(x, list):
        x = torch.cat(x, 1)
    if kind == "SpatialConvolution":
        return F.conv2d(x, t("weight"), stride=(fields["dH"], fields["dW"]), padding=(fields["padH"], fields["padW"]))
    if kind == "SpatialBatchNormalization":
        var = t("running_var") if "running_var" in fields else 1.0 / t("running_std") ** 2 - fields["eps"]
        return F.batch_norm(x, t("running_mean"), var, t("weight"), t("bias"), False, 0.0, fields["eps"])
    if kind == "ReLU":
        return F.relu(x)
    if kind == "SpatialMaxPooling":
        return F.max_pool2d(x, fields["kH"], fields["dH"], fields["padH"])
    if kind == "SpatialAveragePooling":
        return F.avg_pool2d(x, fields["kH"], fields["dH"])
    if kind == "Reshape":
        return x.flatten(1)
    if kind == "Linear":
        return F.linear(x, t("weight"), t("bias"))
    raise AssertionError(f"no forward for {module.typename}")
