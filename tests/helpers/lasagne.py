"""FC-DenseNet as the official Lasagne code builds it (SimJeg/FC-DenseNet: ``FC-DenseNet.py``, ``layers.py``), for the
tests: its parameters in ``get_all_param_values`` order (what ``np.savez`` writes to the released ``.npz``) and an
independent float64 forward pass by Lasagne's layer semantics: ``BatchNormLayer`` ``(x - mean) * gamma * inv_std +
beta``, ``Conv2DLayer(pad='same', flip_filters=False)`` (a correlation), ``Pool2DLayer(2)`` (max, floor),
``Deconv2DLayer(3, stride=2, crop='valid')`` (the input gradient of a true convolution: each input pixel scatters the
kernel, turned by 180 degrees, onto a 3x3 window of the 2x larger map) and ``ConcatLayer`` with centre cropping."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def fc_densenet_params(n_classes: int, first: int, n_pool: int, growth: int, layers: list[int], seed: int = 0):
    """Random parameters of the network, in Lasagne's order: first conv (W, b); per BN_ReLU_Conv a BatchNormLayer
    (beta, gamma, mean, inv_std) and a Conv2DLayer (W, b); per transition up a Deconv2DLayer (W, b); the final conv."""
    rng = np.random.default_rng(seed)
    params: list[np.ndarray] = []

    def conv(c_in: int, c_out: int, k: int) -> None:
        params.extend([rng.normal(0, np.sqrt(2 / (k * k * c_in)), (c_out, c_in, k, k)), rng.normal(0, 0.1, c_out)])

    def bn_relu_conv(c_in: int, c_out: int, k: int) -> None:
        params.extend([rng.normal(0, 0.2, c_in), rng.uniform(0.5, 1.5, c_in), rng.normal(0, 0.2, c_in),
                       rng.uniform(0.7, 1.4, c_in)])  # fmt: skip
        conv(c_in, c_out, k)

    conv(3, first, 3)
    stack, skips = first, []
    for i in range(n_pool):
        for _ in range(layers[i]):
            bn_relu_conv(stack, growth, 3)
            stack += growth
        skips.append(stack)
        bn_relu_conv(stack, stack, 1)
    for _ in range(layers[n_pool]):
        bn_relu_conv(stack, growth, 3)
        stack += growth
    upsample = growth * layers[n_pool]
    for i in range(n_pool):
        keep = growth * layers[n_pool + i]
        params.extend([rng.normal(0, np.sqrt(2 / (9 * upsample)), (upsample, keep, 3, 3)), rng.normal(0, 0.1, keep)])
        stack = keep + skips[::-1][i]
        for _ in range(layers[n_pool + i + 1]):
            bn_relu_conv(stack, growth, 3)
            stack += growth
        upsample = growth * layers[n_pool + i + 1]
    conv(stack, n_classes, 1)
    return [p.astype(np.float32) for p in params]


def _centre_concat(maps: list[Tensor]) -> Tensor:
    h, w = min(m.shape[-2] for m in maps), min(m.shape[-1] for m in maps)
    crops = []
    for m in maps:
        top, left = (m.shape[-2] - h) // 2, (m.shape[-1] - w) // 2
        crops.append(m[..., top : top + h, left : left + w])
    return torch.cat(crops, 1)


def _deconv(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Lasagne's ``Deconv2DLayer(3, stride=2, crop='valid')``, written as the scatter it is."""
    n, _, h, w = x.shape
    out = torch.zeros(n, weight.shape[1], 2 * (h - 1) + 3, 2 * (w - 1) + 3, dtype=x.dtype)
    for a in range(3):
        for b in range(3):  # kernel tap (a, b) of the true convolution is W[..., 2 - a, 2 - b]
            tap = torch.einsum("nohw,oc->nchw", x, weight[:, :, 2 - a, 2 - b])
            out[:, :, a : a + 2 * h : 2, b : b + 2 * w : 2] += tap
    return out + bias.view(1, -1, 1, 1)


def fc_densenet_forward(params: list[np.ndarray], x: Tensor, n_pool: int, layers: list[int]) -> Tensor:
    """The logits (before the softmax) of the Lasagne network with these parameters, in float64."""
    arrays = iter(torch.from_numpy(p.astype(np.float64)) for p in params)

    def conv(t: Tensor) -> Tensor:
        weight, bias = next(arrays), next(arrays)
        return F.conv2d(t, weight, bias, padding=weight.shape[-1] // 2)

    def bn_relu_conv(t: Tensor) -> Tensor:
        beta, gamma, mean, inv_std = (next(arrays).view(1, -1, 1, 1) for _ in range(4))
        return conv(((t - mean) * gamma * inv_std + beta).clamp_min(0))

    stack, skips = conv(x.double()), []
    for i in range(n_pool):
        for _ in range(layers[i]):
            stack = torch.cat([stack, bn_relu_conv(stack)], 1)
        skips.append(stack)
        stack = F.max_pool2d(bn_relu_conv(stack), 2)
    new = []
    for _ in range(layers[n_pool]):
        new.append(bn_relu_conv(stack))
        stack = torch.cat([stack, new[-1]], 1)
    for i in range(n_pool):
        weight, bias = next(arrays), next(arrays)
        stack = _centre_concat([_deconv(torch.cat(new, 1), weight, bias), skips[::-1][i]])
        new = []
        for _ in range(layers[n_pool + i + 1]):
            new.append(bn_relu_conv(stack))
            stack = torch.cat([stack, new[-1]], 1)
    return conv(stack)
