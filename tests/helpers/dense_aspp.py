"""DenseASPP as the official code builds it (DeepMotionAIResearch/DenseASPP, ``models/DenseASPP.py``), for the tests:
a state_dict with the official keys and shapes (``features.denseblock3.denselayer1.norm.1``, ``features.transition4``,
``ASPP_3.conv.1``, ``classification.1``, saved through DataParallel with ``module.``) for a config of
``cfgs/DenseASPP*.py``, and an independent float64 forward pass from such a state_dict by the official semantics at
output stride 8: transitions 2-4 without pooling, blocks 3 and 4 dilated by 2 and 4, norm5 rectified in place by the
first branch's ReLU, branches concatenated new maps first, ``Upsample(scale_factor=8)`` as PyTorch 0.3.1 computed
it (corners aligned)."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor

# cfgs/DenseASPP{121,161,169,201}.py
OFFICIAL_CFGS = {
    121: dict(growth_rate=32, num_init_features=64, block_config=(6, 12, 24, 16), d_feature0=128, d_feature1=64),
    161: dict(growth_rate=48, num_init_features=96, block_config=(6, 12, 36, 24), d_feature0=512, d_feature1=128),
    169: dict(growth_rate=32, num_init_features=64, block_config=(6, 12, 32, 32), d_feature0=336, d_feature1=168),
    201: dict(growth_rate=32, num_init_features=64, block_config=(6, 12, 48, 32), d_feature0=480, d_feature1=240),
}
DILATIONS = (3, 6, 12, 18, 24)


def official_shapes(cfg: dict, n_class: int, bn_size: int = 4) -> OrderedDict[str, tuple[int, ...]]:
    """Every parameter and statistic of the official model, by its key, with its shape."""
    shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def norm(prefix: str, c: int) -> None:
        for field in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{field}"] = (c,)

    k, c = cfg["growth_rate"], cfg["num_init_features"]
    shapes["features.conv0.weight"] = (c, 3, 7, 7)
    norm("features.norm0", c)
    for b, layers in enumerate(cfg["block_config"], 1):
        for i in range(1, layers + 1):
            p = f"features.denseblock{b}.denselayer{i}"
            norm(f"{p}.norm.1", c)
            shapes[f"{p}.conv.1.weight"] = (bn_size * k, c, 1, 1)
            norm(f"{p}.norm.2", bn_size * k)
            shapes[f"{p}.conv.2.weight"] = (k, bn_size * k, 3, 3)
            c += k
        norm(f"features.transition{b}.norm", c)
        shapes[f"features.transition{b}.conv.weight"] = (c // 2, c, 1, 1)
        c //= 2
    norm("features.norm5", c)
    d0, d1 = cfg["d_feature0"], cfg["d_feature1"]
    for i, d in enumerate(DILATIONS):
        if i:
            norm(f"ASPP_{d}.norm.1", c)
        shapes[f"ASPP_{d}.conv.1.weight"], shapes[f"ASPP_{d}.conv.1.bias"] = (d0, c, 1, 1), (d0,)
        norm(f"ASPP_{d}.norm.2", d0)
        shapes[f"ASPP_{d}.conv.2.weight"], shapes[f"ASPP_{d}.conv.2.bias"] = (d1, d0, 3, 3), (d1,)
        c += d1
    shapes["classification.1.weight"], shapes["classification.1.bias"] = (n_class, c, 1, 1), (n_class,)
    return shapes


def official_parameter_count(cfg: dict, n_class: int = 19) -> int:
    return sum(torch.Size(s).numel() for k, s in official_shapes(cfg, n_class).items() if "running" not in k)


def official_state_dict(cfg: dict, n_class: int, seed: int = 0) -> OrderedDict[str, Tensor]:
    """Random weights and statistics under the official keys (DataParallel's ``module.`` prefix, no
    ``num_batches_tracked``: PyTorch 0.3.1 had none)."""
    g = torch.Generator().manual_seed(seed)
    state: OrderedDict[str, Tensor] = OrderedDict()
    for key, shape in official_shapes(cfg, n_class).items():
        if key.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("weight") and len(shape) == 4:
            value = torch.randn(shape, generator=g) * (2 / (shape[1] * shape[2] * shape[3])) ** 0.5
        else:
            value = torch.randn(shape, generator=g) * 0.2 + (1.0 if key.endswith("weight") else 0.0)
        state[f"module.{key}"] = value
    return state


def official_forward(state: dict[str, Tensor], cfg: dict, x: Tensor) -> Tensor:
    """The official network's logits for ``x`` (eval mode), in float64."""
    s = {k.removeprefix("module."): v.double() for k, v in state.items()}

    def bn(prefix: str, t: Tensor) -> Tensor:
        mean, var = s[f"{prefix}.running_mean"], s[f"{prefix}.running_var"]
        return F.batch_norm(t, mean, var, s[f"{prefix}.weight"], s[f"{prefix}.bias"], False, 0.0, 1e-5)

    t = F.conv2d(x.double(), s["features.conv0.weight"], stride=2, padding=3)
    t = F.max_pool2d(F.relu(bn("features.norm0", t)), 3, 2, 1)
    for b, layers in enumerate(cfg["block_config"], 1):
        dilation = {3: 2, 4: 4}.get(b, 1)
        for i in range(1, layers + 1):
            p = f"features.denseblock{b}.denselayer{i}"
            new = F.conv2d(F.relu(bn(f"{p}.norm.1", t)), s[f"{p}.conv.1.weight"])
            new = F.conv2d(F.relu(bn(f"{p}.norm.2", new)), s[f"{p}.conv.2.weight"], padding=dilation,
                           dilation=dilation)  # fmt: skip
            t = torch.cat([t, new], 1)
        t = F.conv2d(F.relu(bn(f"features.transition{b}.norm", t)), s[f"features.transition{b}.conv.weight"])
        if b == 1:
            t = F.avg_pool2d(t, 2, 2)
    t = F.relu(bn("features.norm5", t))  # ASPP_3's ReLU(inplace=True) rectifies the shared tensor
    for i, d in enumerate(DILATIONS):
        p = f"ASPP_{d}"
        u = bn(f"{p}.norm.1", t) if i else t
        u = F.conv2d(F.relu(u), s[f"{p}.conv.1.weight"], s[f"{p}.conv.1.bias"])
        u = F.conv2d(F.relu(bn(f"{p}.norm.2", u)), s[f"{p}.conv.2.weight"], s[f"{p}.conv.2.bias"], padding=d,
                     dilation=d)  # fmt: skip
        t = torch.cat([u, t], 1)
    logits = F.conv2d(t, s["classification.1.weight"], s["classification.1.bias"])
    return F.interpolate(logits, scale_factor=8, mode="bilinear", align_corners=True)
