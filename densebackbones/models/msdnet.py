"""MSDNet (Huang, Chen, Li, Wu, van der Maaten, Weinberger, "Multi-Scale Dense Networks for Resource Efficient Image
Classification", ICLR 2018), exact to the official PyTorch port (kalviny/MSDNet-PyTorch, ``models/msdnet.py``).

* A first layer makes a feature map per scale (CIFAR: 3x3 conv at full resolution, then 3x3/2 convs; ImageNet: 7x7/2
  conv with bias, BN, ReLU, 3x3/2 max-pool, then 3x3/2 convs), Sec. 4, Fig. 2.
* Dense layers keep a map per scale: at scale ``s`` a layer concatenates to its input a strided convolution of
  scale ``s - 1`` and a regular convolution of scale ``s`` (half of its new maps each; the finest scale has only the
  regular one), each a BN-ReLU unit after an optional 1x1 bottleneck (widths by ``bottleneck_factors``); new maps
  per layer are ``growth_rate * growth_factors[s]``.
* Scale pruning (``prune='max'``): the finest scales are dropped as depth grows, each drop followed by a transition
  (1x1 conv-BN-ReLU to half the channels at every remaining scale).
* After every block a classifier reads the coarsest scale (two 3x3/2 conv-BN-ReLU, 2x2 average pool, linear):
  ``forward`` returns every exit's logits, the last being the final classifier's (``output='final'``: only that).

Module names are the port's (``blocks.0.0.layers.0``, ``classifier.0.m``, ``classifier.0.linear``), so its
checkpoints load once DataParallel's ``module.`` prefix is stripped. Parameter counts (docs/reference.md):
CIFAR-100 anytime 3,067,960, CIFAR-100 budgeted-batch 2,078,924, ImageNet 23,958,440.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs
from timm.models._features import feature_take_indices
from torch import Tensor

from ..flops import flops_of
from ..layers import check_output_stride, conv2d, recompute_in_backward
from ..registry import register_model
from . import checks
from .base import default_cfg
from .helpers import (
    DenseFeatureGetterNet,
    InputSizeCheck,
    check_out_indices,
    check_weights_overlay,
    load_checkpoint_into,
    record_min_input_size,
)

__all__ = ["MSDNet", "MODEL_ARCHS", "block_steps"]


class ConvBasic(nn.Module):
    """conv (no bias)-BN-ReLU (the port's ``ConvBasic``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            conv2d(in_chs, out_chs, kernel, stride, padding, bias=False), nn.BatchNorm2d(out_chs), nn.ReLU(True)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvBN(nn.Module):
    """Optional 1x1 bottleneck to ``min(in, bottleneck_factor * out)`` (conv-BN-ReLU), then a 3x3 conv-BN-ReLU,
    stride 2 for ``down``."""

    def __init__(self, in_chs: int, out_chs: int, down: bool, bottleneck: bool, bottleneck_factor: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        inner = in_chs
        if bottleneck:
            inner = min(in_chs, bottleneck_factor * out_chs)
            layers += [nn.Conv2d(in_chs, inner, 1, bias=False), nn.BatchNorm2d(inner), nn.ReLU(True)]
        layers += [conv2d(inner, out_chs, 3, 2 if down else 1, 1, bias=False), nn.BatchNorm2d(out_chs)]
        layers.append(nn.ReLU(True))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDownNormal(nn.Module):
    """A scale that has a finer neighbour: ``cat[x_s, down(x_{s-1}), normal(x_s)]`` with half the new maps each."""

    def __init__(self, finer_chs: int, in_chs: int, out_chs: int, bottleneck: bool, factors: tuple[int, int]) -> None:
        super().__init__()
        self.conv_down = ConvBN(finer_chs, out_chs // 2, True, bottleneck, factors[0])
        self.conv_normal = ConvBN(in_chs, out_chs // 2, False, bottleneck, factors[1])

    def forward(self, x: Sequence[Tensor]) -> Tensor:
        return torch.cat([x[1], self.conv_down(x[0]), self.conv_normal(x[1])], 1)


class ConvNormal(nn.Module):
    """The finest remaining scale: ``cat[x_s, normal(x_s)]``."""

    def __init__(self, in_chs: int, out_chs: int, bottleneck: bool, factor: int) -> None:
        super().__init__()
        self.conv_normal = ConvBN(in_chs, out_chs, False, bottleneck, factor)

    def forward(self, x: Sequence[Tensor]) -> Tensor:
        return torch.cat([x[0], self.conv_normal(x[0])], 1)


class FirstLayer(nn.Module):
    """One map per scale from the image (the port's ``MSDNFirstLayer``)."""

    def __init__(self, in_chans: int, channels: int, growth_factors: Sequence[int], stem_type: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        first = channels * growth_factors[0]
        if stem_type == "cifar":
            self.layers.append(ConvBasic(in_chans, first, 3, 1, 1))
        else:  # ImageNet: the port's 7x7 convolution keeps its bias
            self.layers.append(
                nn.Sequential(
                    conv2d(in_chans, first, 7, 2, 3), nn.BatchNorm2d(first), nn.ReLU(True), nn.MaxPool2d(3, 2, 1)
                )
            )
        chs = first
        for factor in growth_factors[1:]:
            self.layers.append(ConvBasic(chs, channels * factor, 3, 2, 1))
            chs = channels * factor

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = []
        for layer in self.layers:
            x = layer(x)
            maps.append(x)
        return maps


class MSDLayer(nn.Module):
    """A dense layer over the scales it keeps (the port's ``MSDNLayer``); ``in_scales - out_scales`` finest scales
    are dropped here."""

    def __init__(
        self,
        in_chs: int,
        growth_rate: int,
        num_scales: int,
        in_scales: int,
        out_scales: int,
        growth_factors: Sequence[int],
        bottleneck_factors: Sequence[int],
        bottleneck: bool,
    ) -> None:
        super().__init__()
        self.in_scales, self.out_scales = in_scales, out_scales
        self.discard = in_scales - out_scales
        self.offset = num_scales - out_scales
        self.layers = nn.ModuleList()
        gr, bn = growth_factors, bottleneck_factors
        first = self.offset
        if self.discard > 0:
            chs = (in_chs * gr[first - 1], in_chs * gr[first])
            self.layers.append(ConvDownNormal(*chs, growth_rate * gr[first], bottleneck, (bn[first - 1], bn[first])))
        else:
            self.layers.append(ConvNormal(in_chs * gr[first], growth_rate * gr[first], bottleneck, bn[first]))
        for s in range(first + 1, num_scales):
            chs = (in_chs * gr[s - 1], in_chs * gr[s])
            self.layers.append(ConvDownNormal(*chs, growth_rate * gr[s], bottleneck, (bn[s - 1], bn[s])))

    def forward(self, x: Sequence[Tensor]) -> list[Tensor]:
        if self.discard > 0:
            inputs = [[x[i - 1], x[i]] for i in range(1, self.out_scales + 1)]
        else:
            inputs = [[x[0]]] + [[x[i - 1], x[i]] for i in range(1, self.out_scales)]
        return [layer(inp) for layer, inp in zip(self.layers, inputs)]


class ParallelModule(nn.Module):
    """One module per scale (the port's transition)."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.m = nn.ModuleList(modules)

    def forward(self, x: Sequence[Tensor]) -> list[Tensor]:
        return [m(t) for m, t in zip(self.m, x)]


class ClassifierModule(nn.Module):
    """An exit on the coarsest scale: ``m`` (two 3x3/2 conv-BN-ReLU, 2x2 average pool), then ``linear``."""

    def __init__(self, in_chs: int, inner: int, num_classes: int) -> None:
        super().__init__()
        self.m = nn.Sequential(ConvBasic(in_chs, inner, 3, 2, 1), ConvBasic(inner, inner, 3, 2, 1), nn.AvgPool2d(2))
        self.in_features = inner
        self.linear = nn.Linear(inner, num_classes) if num_classes else nn.Identity()

    def forward(self, x: Sequence[Tensor]) -> Tensor:
        # The port flattens the pooled map, which is 1x1 only for coarsest maps of 5-12 px (CIFAR inputs up to 48 px,
        # ImageNet up to 384); averaging it is the same there and lets larger inputs through.
        return self.linear(self.m(x[-1]).mean((2, 3)))


def block_steps(num_blocks: int, base: int, step: int, step_mode: str) -> list[int]:
    """Layers per block: ``[base] + [step] * (n - 1)`` (``'even'``) or ``[base] + [step * i + 1]`` (``'lin_grow'``)."""
    if step_mode not in ("even", "lin_grow"):
        raise ValueError(f"unknown step_mode {step_mode!r}; use 'even' or 'lin_grow'")
    return [base] + [step if step_mode == "even" else step * i + 1 for i in range(1, num_blocks)]


_NO_PYRAMID = (
    ": MSDNet computes all its scales from the first layer on and classifies the coarsest after every block, so "
    "there are no later blocks to dilate (for a dilated backbone take a DenseNet, DSOD's, PeleeNet or CondenseNet)"
)


class MSDNet(InputSizeCheck, nn.Module):
    """MSDNet with an exit after every block.

    Args:
        num_classes: classes of every exit; 0 removes the linear layers (the exits return pooled features).
        in_chans: input channels.
        num_blocks: blocks, one exit each (``nBlocks``).
        base, step, step_mode: layers per block, see :func:`block_steps`.
        channels: maps of the first layer's finest scale (``nChannels``).
        growth_rate: new maps per layer at the finest scale (``growthRate``).
        growth_factors: per-scale multipliers of channels and growth (``grFactor``); their number is the number of
            scales.
        bottleneck_factors: per-scale bottleneck widths (``bnFactor``).
        bottleneck: use the 1x1 bottlenecks.
        reduction: channel reduction of the transitions after a scale is dropped.
        stem_type: ``'cifar'`` (3x3 conv, exits with 128 maps) or ``'imagenet'`` (7x7/2 conv and max-pool, exits as
            wide as their input).
        output: ``'all'`` (every exit's logits, a list) or ``'final'`` (only the last exit, a plain classifier).
        exit_weights: the weights of the exits' cross-entropies in the training loss (default all 1, the paper's).
        feature_scale: the scale ``features_only`` returns per block (-1: the coarsest, which every block keeps).
        output_stride: 32 only. MSDNet computes every scale from the first layer on and takes an exit from the
            coarsest after each block: its blocks are not a pyramid of resolutions whose last ones could be dilated
            (for a dilated backbone use a DenseNet, DSOD's backbone, PeleeNet or CondenseNet).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        num_blocks: int = 5,
        base: int = 4,
        step: int = 4,
        step_mode: str = "even",
        channels: int = 32,
        growth_rate: int = 16,
        growth_factors: Sequence[int] = (1, 2, 4, 4),
        bottleneck_factors: Sequence[int] = (1, 2, 4, 4),
        bottleneck: bool = True,
        reduction: float = 0.5,
        stem_type: str = "imagenet",
        output: str = "all",
        exit_weights: Sequence[float] | None = None,
        feature_scale: int = -1,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        checks.check_head(num_classes, in_chans, 0.0)
        checks.check_int("num_blocks", num_blocks, 1, "blocks, one exit each")
        checks.check_int("base", base, 1, "layers of the first block")
        checks.check_int("step", step, 1, "layers added per block")
        checks.check_choice("step_mode", step_mode, ("even", "lin_grow"))
        checks.check_int("channels", channels, 1, "maps of the first layer's finest scale")
        checks.check_int("growth_rate", growth_rate, 1, "new maps per layer at the finest scale")
        scales = len(checks.check_ints("growth_factors", growth_factors, 1, hint="one multiplier per scale, (1, 2, 4)"))
        checks.check_ints("bottleneck_factors", bottleneck_factors, 1, scales, "one per scale", what="scale")
        checks.check_flag("bottleneck", bottleneck)
        checks.check_number("reduction", reduction, 0.0, 1.0, hint="the share of channels a transition keeps")
        checks.check_choice("stem_type", stem_type, ("cifar", "imagenet"))
        checks.check_choice("output", output, ("all", "final"), "'all': every exit's logits, 'final': the last")
        if exit_weights is not None:
            if not isinstance(exit_weights, (list, tuple)) or len(exit_weights) != num_blocks:
                raise ValueError(f"exit_weights must give one weight per exit ({num_blocks}), got {exit_weights!r}")
            for i, weight in enumerate(exit_weights):
                checks.check_number(f"exit_weights[{i}]", weight, 0.0, hint=f"exit_weights={exit_weights!r}")
        checks.check_int(
            "feature_scale", feature_scale, -scales, f"a scale in 0..{scales - 1}, or -{scales}..-1", scales - 1
        )
        check_output_stride(output_stride, "msdnet_* (MSDNet)", strides=(32,), hint=_NO_PYRAMID)
        self.output_stride = output_stride
        if len(bottleneck_factors) != len(growth_factors) or num_blocks < 1:
            raise ValueError(
                f"growth_factors {tuple(growth_factors)} and bottleneck_factors {tuple(bottleneck_factors)} need one "
                f"entry per scale, and num_blocks ({num_blocks}) must be at least 1"
            )
        self.set_output(output)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.num_scales = len(growth_factors)
        self.steps = block_steps(num_blocks, base, step, step_mode)
        if exit_weights is not None and len(exit_weights) != num_blocks:
            raise ValueError(f"{len(exit_weights)} exit_weights for {num_blocks} exits; give one per exit")
        self.exit_weights = tuple(exit_weights) if exit_weights is not None else (1.0,) * num_blocks
        self.scale_strides = [(1 if stem_type == "cifar" else 4) * 2**s for s in range(self.num_scales)]
        # The exit's two stride-2 convs and its 2x2 pool need the coarsest map at 5 px or more (5 -> 3 -> 2 -> 1).
        self.min_input_size = self.scale_strides[-1] * 5
        self.input_size_reason = f"its exits need the coarsest scale, stride {self.scale_strides[-1]}, at 5 px or more"
        self.blocks = nn.ModuleList()
        self.classifier = nn.ModuleList()
        self.block_scales: list[int] = []  # scales each block's output keeps
        block_chs: list[int] = []  # finest-scale channel unit after each block (times growth_factors[s] at scale s)
        # prune='max' (the port): the finest remaining scale goes every ceil(L / scales) layers
        interval, done = math.ceil(sum(self.steps) / self.num_scales), 0
        chs = channels
        for i, layers_in_block in enumerate(self.steps):
            modules: list[nn.Module] = [FirstLayer(in_chans, channels, growth_factors, stem_type)] if i == 0 else []
            out_scales = self.num_scales
            for _ in range(layers_in_block):
                done += 1
                in_scales = self.num_scales - math.floor(max(0, done - 2) / interval)
                out_scales = self.num_scales - math.floor((done - 1) / interval)
                modules.append(
                    MSDLayer(
                        chs,
                        growth_rate,
                        self.num_scales,
                        in_scales,
                        out_scales,
                        growth_factors,
                        bottleneck_factors,
                        bottleneck,
                    )
                )
                chs += growth_rate
                if in_scales > out_scales and reduction > 0:
                    offset, new = self.num_scales - out_scales, math.floor(reduction * chs)
                    if new < 1:
                        raise ValueError(
                            f"reduction={reduction} leaves a transition no channels (floor({reduction} * {chs})); "
                            f"use 0 (no transitions) or at least {1 / chs:.3g}"
                        )
                    modules.append(
                        ParallelModule(
                            [
                                ConvBasic(chs * growth_factors[offset + s], new * growth_factors[offset + s], 1, 1, 0)
                                for s in range(out_scales)
                            ]
                        )
                    )
                    chs = new
            self.blocks.append(nn.Sequential(*modules))
            self.block_scales.append(out_scales)
            block_chs.append(chs)
            exit_chs = chs * growth_factors[-1]
            inner = 128 if stem_type == "cifar" else exit_chs
            self.classifier.append(ClassifierModule(exit_chs, inner, num_classes))
        self.num_features = self.head_hidden_size = inner
        self.feature_scale = feature_scale
        self.feature_info = self._feature_info(block_chs, growth_factors)
        self.grad_checkpointing = False
        self._init_weights()

    @property
    def feature_scale_index(self) -> int:
        """``feature_scale`` counted from the finest scale (0)."""
        return self.feature_scale if self.feature_scale >= 0 else self.num_scales + self.feature_scale

    def _feature_info(self, block_chs: Sequence[int], growth_factors: Sequence[int]) -> list[dict[str, Any]]:
        scale = self.feature_scale_index
        if not 0 <= scale < self.num_scales:
            raise ValueError(f"feature_scale={self.feature_scale}: this MSDNet has scales 0..{self.num_scales - 1}")
        return [
            dict(
                num_chs=chs * growth_factors[scale],
                reduction=self.scale_strides[scale],
                module=f"blocks.{i}",
                kept=self.num_scales - kept_scales <= scale,
            )
            for i, (chs, kept_scales) in enumerate(zip(block_chs, self.block_scales))
        ]

    def _init_weights(self) -> None:
        # The port's initialisation: convolutions N(0, sqrt(2 / (k * k * out))), BN 1/0, linear biases 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------------------------------- outputs
    def set_output(self, output: str) -> None:
        """``'all'``: ``forward`` returns every exit's logits (a list, last = final); ``'final'``: only the last."""
        if output not in ("all", "final"):
            raise ValueError(f"unknown output {output!r}; use 'all' (every exit) or 'final' (the last exit only)")
        self.output = output

    @property
    def num_exits(self) -> int:
        return len(self.blocks)

    def _run_block(self, i: int, x: Any) -> Any:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled() and i > 0:
            return recompute_in_backward(self.blocks[i], lambda *maps: self.blocks[i](list(maps)), *x)
        return self.blocks[i](x)

    def forward_exits(self, x: Tensor, num_exits: int | None = None) -> list[Tensor]:
        """Logits of the first ``num_exits`` exits (all by default); later blocks are not run."""
        self._check_input(x)
        logits = []
        for i in range(num_exits or self.num_exits):
            x = self._run_block(i, x)
            logits.append(self.classifier[i](x))
        return logits

    def forward(self, x: Tensor) -> list[Tensor] | Tensor:
        exits = self.forward_exits(x)
        return exits if self.output == "all" else exits[-1]

    # -------------------------------------------------------------------------------------------- timm contract
    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier[-1].linear

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Fresh linear layers with ``num_classes`` outputs on every exit (0 removes them), on the device and in the
        dtype of the exit; the exits average their maps, so ``global_pool`` may only be ``'avg'`` (or None)."""
        checks.check_int("num_classes", num_classes, 0, "0 removes the classifier")
        if global_pool is not None and checks.check_pool("global_pool", global_pool) != "avg":
            raise ValueError(f"global_pool {global_pool!r}: MSDNet's exits average their maps; use 'avg' or None")
        self.num_classes = num_classes
        for exit_ in self.classifier:
            ref = next(exit_.m.parameters())
            exit_.linear = (
                nn.Linear(exit_.in_features, num_classes, device=ref.device, dtype=ref.dtype)
                if num_classes
                else nn.Identity()
            )

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^blocks\.0\.0\.", blocks=[(r"^blocks\.(\d+)", None), (r"^classifier\.(\d+)", None)])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block (after the first) in backward, with BN running statistics updated once."""
        self.grad_checkpointing = enable

    def checked_indices(self, indices: int | Sequence[int] | None) -> int | list[int] | None:
        name = (getattr(self, "pretrained_cfg", None) or {}).get("architecture") or type(self).__name__
        checked = check_out_indices(self.feature_info, indices, name)
        take, _ = feature_take_indices(len(self.feature_info), checked)
        pruned = [i for i in take if not self.feature_info[i]["kept"]]
        if pruned:
            kept = [i for i, info in enumerate(self.feature_info) if info["kept"]]
            raise ValueError(
                f"feature_scale={self.feature_scale} (stride {self.feature_info[0]['reduction']}) is pruned in blocks "
                f"{pruned}; it exists after blocks {kept}: choose out_indices among those or a coarser feature_scale"
            )
        return checked

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[list[Tensor], list[Tensor]]:
        """The ``feature_scale`` map after each requested block (timm's API); with ``intermediates_only=False`` also
        the exits' logits. ``norm`` is accepted and changes nothing, as in timm's DenseNet: every block ends in
        conv-BN-ReLU and MSDNet has no final norm."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} is not supported; MSDNet returns 'NCHW'")
        take, max_index = feature_take_indices(len(self.feature_info), self.checked_indices(indices))
        self._check_input(x)
        scale = self.feature_scale_index
        intermediates, logits = [], []
        last = max_index if intermediates_only and stop_early else self.num_exits - 1
        for i in range(last + 1):
            x = self._run_block(i, x)
            if i in take:
                intermediates.append(x[scale - (self.num_scales - len(x))])
            if not intermediates_only:
                logits.append(self.classifier[i](x))
        if intermediates_only:
            return intermediates
        return (logits if self.output == "all" else logits[-1]), intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take, max_index = feature_take_indices(len(self.feature_info), self.checked_indices(indices))
        del self.blocks[max_index + 1 :]
        del self.classifier[max_index + 1 :]
        if prune_head:
            self.classifier = nn.ModuleList()
        return take

    @torch.jit.ignore
    def load_pretrained(self, checkpoint_path: str, adapt_in_chans: bool = True) -> None:
        """Load densebackbones or the official port's weights completely."""
        load_checkpoint_into(self, checkpoint_path, None, None, adapt_in_chans)

    def exit_costs(self, input_size: tuple[int, int] | int | None = None) -> list[dict[str, int]]:
        """Cumulative cost of reaching each exit for one image: ``macs`` (multiply-adds of ``torch.utils.
        flop_counter``, :mod:`densebackbones.flops`) and ``params``, both counting every block and every earlier exit
        on the way (a sample leaving at exit k has evaluated exits 1..k-1 to decide, as the paper counts it).
        ``input_size``: side or (H, W), default the pretrained config's."""
        if input_size is None:
            input_size = tuple((getattr(self, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-2:])
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        was_training = self.training
        self.eval()
        try:
            x = torch.zeros(1, self.in_chans, h, w, device=next(self.parameters()).device)
            costs = []
            for k in range(1, self.num_exits + 1):
                params = sum(p.numel() for m in [*self.blocks[:k], *self.classifier[:k]] for p in m.parameters())
                costs.append(dict(macs=flops_of(self.forward_exits, x, k) // 2, params=params))
        finally:
            self.train(was_training)
        return costs


MODEL_ARCHS: dict[str, dict[str, Any]] = {
    # CIFAR anytime prediction (Sec. 5.1): 7 blocks, step 2, base 4, 16 channels, growth 6, factors 1-2-4.
    "msdnet_anytime_cifar": dict(
        num_blocks=7, base=4, step=2, step_mode="even", channels=16, growth_rate=6, growth_factors=(1, 2, 4),
        bottleneck_factors=(1, 2, 4), stem_type="cifar",
    ),
    # CIFAR budgeted batch classification (Sec. 5.2): 5 blocks, linearly growing steps, step 1, base 1.
    "msdnet_budgeted_cifar": dict(
        num_blocks=5, base=1, step=1, step_mode="lin_grow", channels=16, growth_rate=6, growth_factors=(1, 2, 4),
        bottleneck_factors=(1, 2, 4), stem_type="cifar",
    ),
    # ImageNet (Sec. 5): 5 blocks, step 4, base 4, 32 channels, growth 16, factors 1-2-4-4.
    "msdnet_imagenet": dict(
        num_blocks=5, base=4, step=4, step_mode="even", channels=32, growth_rate=16, growth_factors=(1, 2, 4, 4),
        bottleneck_factors=(1, 2, 4, 4), stem_type="imagenet",
    ),
}  # fmt: skip


def _create(variant: str, pretrained: bool, **kwargs: Any) -> MSDNet:
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    check_weights_overlay(overlay, pretrained)
    if overlay.get("file") or overlay.get("url"):
        overlay.setdefault("custom_load", True)
        kwargs["pretrained_cfg_overlay"] = overlay
    check_output_stride(kwargs.get("output_stride", 32), variant, strides=(32,), hint=_NO_PYRAMID)
    model_args = dict(MODEL_ARCHS[variant], **kwargs)
    checks.check_int("num_blocks", model_args["num_blocks"], 1, "blocks, one exit each")
    model = build_model_with_cfg(
        MSDNet,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls=DenseFeatureGetterNet, out_indices=tuple(range(model_args["num_blocks"]))),
        **model_args,
    )
    return record_min_input_size(model)


def _msd_cfg(cifar: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(paper_ids="arXiv:1703.09844", first_conv="blocks.0.0.layers.0", classifier=None)
    if cifar:
        kwargs.update(num_classes=100, input_size=(3, 32, 32), pool_size=None, crop_pct=1.0)
        kwargs.update(mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761))
        kwargs["first_conv"] = "blocks.0.0.layers.0.net.0"
    else:
        kwargs["first_conv"] = "blocks.0.0.layers.0.0"
    return default_cfg(**kwargs)


default_cfgs = generate_default_cfgs(
    {name: _msd_cfg(name.endswith("_cifar")) for name in MODEL_ARCHS},
)


@register_model(model_cls=MSDNet)
def msdnet_anytime_cifar(pretrained: bool = False, **kwargs: Any) -> MSDNet:
    """CIFAR-100 MSDNet for anytime prediction (7 exits): 3,067,960 parameters."""
    return _create("msdnet_anytime_cifar", pretrained, **kwargs)


@register_model(model_cls=MSDNet)
def msdnet_budgeted_cifar(pretrained: bool = False, **kwargs: Any) -> MSDNet:
    """CIFAR-100 MSDNet for budgeted batch classification (5 exits, lin_grow): 2,078,924 parameters."""
    return _create("msdnet_budgeted_cifar", pretrained, **kwargs)


@register_model(model_cls=MSDNet)
def msdnet_imagenet(pretrained: bool = False, **kwargs: Any) -> MSDNet:
    """ImageNet MSDNet (5 exits, step 4): 23,958,440 parameters."""
    return _create("msdnet_imagenet", pretrained, **kwargs)
