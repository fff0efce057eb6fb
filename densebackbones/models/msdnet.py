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
* After every block a classifier reads the coarsest scale (two 3x3/2 conv-BN-ReLU, 2x2 average pool, linear),
  Sec. 4. ``output='all'`` builds every exit and ``forward`` returns every exit's logits, the last being the final
  classifier's; ``output='final'`` (the default, what ``timm.create_model`` gives) builds only the last exit and is
  a plain timm classifier (``forward_features``/``forward_head``), into which an all-exit checkpoint loads.

Module names are the port's (``blocks.0.0.layers.0``, ``classifier.0.m``, ``classifier.0.linear``), so its
checkpoints load once DataParallel's ``module.`` prefix is stripped. Parameter counts with ``output='all'``
(docs/reference.md): CIFAR-100 anytime 3,067,960, CIFAR-100 budgeted-batch 2,078,924, ImageNet 23,958,440.

Every module passes its maps as ``list[Tensor]`` (a block takes and returns one map per kept scale, the first block
the image as a one-entry list) so that ``torch.jit.script`` types every call; this module's annotations are evaluated
(no postponed annotations) because ``torch.fx`` writes ``forward``'s into its generated code, where a string
annotation becomes an unknown type name for TorchScript.
"""

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs
from timm.models._features import feature_take_indices
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..flops import flops_of
from ..layers import check_output_stride, conv2d, recompute_in_backward, unit_recomputes
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
from .published import check_weights_available, with_published

__all__ = ["MSDNet", "MODEL_ARCHS", "block_steps", "min_input_side", "exit_checkpoint_filter_fn"]


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

    def forward(self, x: list[Tensor]) -> Tensor:
        return torch.cat([x[1], self.conv_down(x[0]), self.conv_normal(x[1])], 1)


class ConvNormal(nn.Module):
    """The finest remaining scale: ``cat[x_s, normal(x_s)]``."""

    def __init__(self, in_chs: int, out_chs: int, bottleneck: bool, factor: int) -> None:
        super().__init__()
        self.conv_normal = ConvBN(in_chs, out_chs, False, bottleneck, factor)

    def forward(self, x: list[Tensor]) -> Tensor:
        return torch.cat([x[0], self.conv_normal(x[0])], 1)


class FirstLayer(nn.Module):
    """One map per scale from the image (the port's ``MSDNFirstLayer``), which it takes as a one-entry list like
    every other unit of a block takes its maps."""

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

    def forward(self, image: list[Tensor]) -> list[Tensor]:
        x = image[0]
        maps: list[Tensor] = []
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

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        # The unit of output j reads input scales [j - 1 + shift, j + shift]: shifted by one where the finest input
        # scale is dropped here, and only its own scale at the finest output scale otherwise (the port's inputs).
        shift = 1 if self.discard > 0 else 0
        out: list[Tensor] = []
        for j, layer in enumerate(self.layers):
            out.append(layer(x[max(j + shift - 1, 0) : j + shift + 1]))
        return out


class ParallelModule(nn.Module):
    """One module per scale (the port's transition)."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.m = nn.ModuleList(modules)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        out: list[Tensor] = []
        for j, m in enumerate(self.m):
            out.append(m(x[j]))
        return out


class ClassifierModule(nn.Module):
    """An exit on the coarsest scale (Sec. 4, "Classifiers": two 3x3/2 conv-BN-ReLU, a 2x2 average pool and a linear
    layer): ``m`` holds the convolutions and the 2x2 pool, then timm's head follows: ``global_pool`` (timm's pool
    types, default ``'avg'``), dropout (``drop_rate``) and ``linear``."""

    def __init__(
        self, in_chs: int, inner: int, num_classes: int, global_pool: str = "avg", drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.m = nn.Sequential(ConvBasic(in_chs, inner, 3, 2, 1), ConvBasic(inner, inner, 3, 2, 1), nn.AvgPool2d(2))
        self.in_features = inner
        self.drop = nn.Dropout(drop_rate)
        self.set_head(num_classes, global_pool)

    def set_head(self, num_classes: int, pool_type: str) -> None:
        """A fresh pool and linear layer (``num_classes`` 0: none) on the device and in the dtype of ``m``, in the
        exit's training mode."""
        self.global_pool, self.linear = create_classifier(self.in_features, num_classes, pool_type=pool_type)
        ref = next(self.m.parameters())
        self.linear.to(device=ref.device, dtype=ref.dtype)
        self.global_pool.train(self.training)
        self.linear.train(self.training)

    def head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        # The port flattens the 2x2-pooled map, which is 1x1 only for coarsest maps of 5-12 px (CIFAR inputs up to
        # 48 px, ImageNet up to 384); averaging it ('avg') is the same there and lets larger inputs through.
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.linear(x)

    def forward(self, x: list[Tensor]) -> Tensor:
        return self.head(self.m(x[-1]))


class SkippedExit(nn.Module):
    """The place of an exit that a model built with ``output='final'`` leaves out: no parameters, so every parameter
    of that model is used, and the final exit keeps its index and its checkpoint keys (``classifier.<last>.*``)."""

    def forward(self, x: list[Tensor]) -> Tensor:
        raise RuntimeError("this exit was not built (output='final'); build the model with output='all'")


class SkippedScale(nn.Module):
    """The place of a per-scale unit whose map nothing reads: in the last block, the finer scales that neither an
    exit (it reads the coarsest), a requested feature map nor a later layer takes. No parameters, so every parameter
    gets a gradient; it passes its input through, and nothing reads what it returns. This one stands for a unit of
    the first layer or of a transition (one map in); :class:`SkippedLayerScale` for a dense layer's."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class SkippedLayerScale(SkippedScale):
    """:class:`SkippedScale` in a dense layer, whose units take the maps of one or two scales (a list)."""

    def forward(self, x: list[Tensor]) -> Tensor:  # type: ignore[override]
        return x[-1]


class MSDBlock(nn.Sequential):
    """A block: its layers and transitions in order (the port's ``nn.Sequential``, same module names), each taking and
    returning one map per kept scale. Typed for TorchScript, which takes an ``nn.Sequential``'s input as a Tensor."""

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        for module in self:
            x = module(x)
        return x


def _drop_skipped_keys(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook of :class:`MSDNet`: the keys of what the model did not build are dropped."""
    module.drop_skipped_keys(state_dict, prefix)


def exit_checkpoint_filter_fn(state_dict: dict[str, Tensor], model: "MSDNet") -> dict[str, Tensor]:
    """``load_checkpoint_into``'s filter: an all-exit checkpoint fits a final-only model (see
    :meth:`MSDNet.drop_skipped_keys`)."""
    return model.drop_skipped_keys(dict(state_dict))


def min_input_side(stem_type: str, num_scales: int) -> int:
    """The smallest input side of an MSDNet: every exit's two stride-2 convolutions and 2x2 pool need the coarsest
    scale (stride ``4 * 2 ** (num_scales - 1)`` with the ImageNet stem, ``2 ** (num_scales - 1)`` with CIFAR's) at
    5 px or more (5 -> 3 -> 2 -> 1)."""
    return (1 if stem_type == "cifar" else 4) * 2 ** (num_scales - 1) * 5


_MEMORY_MODES = "'plain' or 'efficient' (every block after the first recomputed in backward)"


def resolve_msdnet_memory_mode(memory_efficient: bool, memory_mode: str | None) -> str:
    """The mode MSDNet's ``memory_efficient`` / ``memory_mode`` arguments ask for: ``'plain'`` or ``'efficient'``.
    The other families' ``'buffer'`` (a shared concatenation buffer of a dense block) does not exist in MSDNet."""
    checks.check_flag("memory_efficient", memory_efficient)
    if memory_mode is None:
        return "efficient" if memory_efficient else "plain"
    if memory_mode not in ("plain", "efficient"):
        raise ValueError(
            f"memory_mode={memory_mode!r}: MSDNet has no shared concatenation buffer (its layers keep a map per "
            f"scale); use {_MEMORY_MODES}"
        )
    if memory_efficient and memory_mode != "efficient":
        raise ValueError(f"memory_efficient=True contradicts memory_mode={memory_mode!r}; pass only one of them")
    return memory_mode


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
    """MSDNet with an exit after every block (``output='all'``) or a plain classifier, its final exit (``'final'``).

    ``output`` decides what is built and what ``forward`` returns:

    * ``'final'`` (the default, and so what ``timm.create_model`` gives): only the last exit is built, the earlier
      exits' places hold parameter-free :class:`SkippedExit` modules, and ``forward`` returns one ``(N, num_classes)``
      tensor, ``forward_head(forward_features(x))``, as every timm model does. Every parameter gets a gradient, so DDP
      needs no ``find_unused_parameters``. An all-exit checkpoint loads into it: ``load_state_dict`` drops the keys of
      the skipped exits (``classifier.<i>.*``, :meth:`drop_skipped_keys`).
    * ``'all'``: the paper's network (Sec. 4), every exit built; ``forward`` returns every exit's logits, a list whose
      last entry is the final exit's. Anytime and budgeted training and evaluation need it (the MSDNet configs set it;
      ``tools/eval_msdnet.py`` builds it), and the parameter counts of the paper are this model's.

    Per-scale units whose maps nothing reads (the finer scales of the last block's last layers, when it keeps more
    than the coarsest: no registered layout does) are not built either (:class:`SkippedScale`); their checkpoint keys
    are dropped on loading like the skipped exits'.

    ``forward_features`` runs every block and the final exit's convolutions with its 2x2 pool (Sec. 4, "Classifiers"),
    giving the ``num_features``-channel map that the exit's pool and linear layer take (``forward_head``); the exits'
    input maps, the blocks' outputs, are ``forward_intermediates``'.

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
        output: ``'final'`` (only the last exit is built: a plain classifier) or ``'all'`` (every exit; ``forward``
            returns a list of logits), see above.
        exit_weights: the weights of the exits' cross-entropies in the training loss (default all 1, the paper's).
        feature_scale: the scale ``features_only`` returns per block (-1: the coarsest, which every block keeps).
        output_stride: 32 only. MSDNet computes every scale from the first layer on and takes an exit from the
            coarsest after each block: its blocks are not a pyramid of resolutions whose last ones could be dilated
            (for a dilated backbone use a DenseNet, DSOD's backbone, PeleeNet or CondenseNet).
        drop_rate: dropout before every exit's linear layer (timm's meaning).
        global_pool: timm pool type of every exit after its 2x2 average pool (``'avg'``, the port's, ``'max'``,
            ``'avgmax'``, ``'catavgmax'``..., or ``''`` to keep the map, with ``num_classes=0``).
        memory_efficient: True is ``memory_mode='efficient'``.
        memory_mode: ``'plain'`` (default) or ``'efficient'``: every block after the first is recomputed in backward
            (``set_grad_checkpointing``; same results, BN statistics updated once). MSDNet has no dense block with a
            shared concatenation buffer, so the other families' ``'buffer'`` is refused.
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
        output: str = "final",
        exit_weights: Sequence[float] | None = None,
        feature_scale: int = -1,
        output_stride: int = 32,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        memory_efficient: bool = False,
        memory_mode: str | None = None,
    ) -> None:
        super().__init__()
        checks.check_head(num_classes, in_chans, drop_rate, global_pool)
        _check_pool_fits_classes(global_pool, num_classes)
        memory_mode = resolve_msdnet_memory_mode(memory_efficient, memory_mode)
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
        self.built_output = output  # what was built; set_output may narrow 'all' to 'final' later
        self.output = output
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.num_scales = len(growth_factors)
        self.steps = block_steps(num_blocks, base, step, step_mode)
        if exit_weights is not None and len(exit_weights) != num_blocks:
            raise ValueError(f"{len(exit_weights)} exit_weights for {num_blocks} exits; give one per exit")
        self.exit_weights = tuple(exit_weights) if exit_weights is not None else (1.0,) * num_blocks
        self.scale_strides = [(1 if stem_type == "cifar" else 4) * 2**s for s in range(self.num_scales)]
        self.min_input_size = min_input_side(stem_type, self.num_scales)
        self.input_size_reason = f"its exits need the coarsest scale, stride {self.scale_strides[-1]}, at 5 px or more"
        self.blocks = nn.ModuleList()
        self.classifier = nn.ModuleList()
        # scales each block's output keeps; filled as a local because TorchScript warns about an annotated empty
        # list assigned to self
        block_scales: list[int] = []
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
            self.blocks.append(MSDBlock(*modules))
            block_scales.append(out_scales)
            block_chs.append(chs)
            exit_chs = chs * growth_factors[-1]
            inner = 128 if stem_type == "cifar" else exit_chs
            if output == "final" and i < num_blocks - 1:
                self.classifier.append(SkippedExit())
            else:
                self.classifier.append(ClassifierModule(exit_chs, inner, num_classes, global_pool, drop_rate))
        self.block_scales = block_scales
        self.num_features = inner  # channels of forward_features: the final exit's convolutions
        self.head_hidden_size = inner * self.classifier[-1].global_pool.feat_mult()
        # The head once prune_intermediate_layers(prune_head=True) removed every exit: timm's plain pool and linear
        # layer on the last tap (reset_classifier builds them); parameter-free until then.
        self.tap_pool: nn.Module = nn.Identity()
        self.tap_fc: nn.Module = nn.Identity()
        self.feature_scale = feature_scale
        self.feature_info = self._feature_info(block_chs, growth_factors)
        self.grad_checkpointing = memory_mode == "efficient"
        # Maps that are read: the coarsest scale after every block (exits, later blocks) and the feature_scale map
        # where a block keeps it (forward_intermediates); what feeds none of them is not built.
        coarsest, feature = self.num_scales - 1, self.feature_scale_index
        self._skip_unread_scales(
            {b: {coarsest, feature} if info["kept"] else {coarsest} for b, info in enumerate(self.feature_info)}
        )
        self.register_load_state_dict_pre_hook(_drop_skipped_keys)
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
        """``'all'``: ``forward`` returns every exit's logits (a list, last = final); ``'final'``: only the last, the
        earlier exits not computed. A model built with ``output='all'`` keeps the earlier exits' parameters after
        ``set_output('final')`` (they get no gradient: for training, build with ``output='final'`` and load the
        all-exit checkpoint); one built with ``output='final'`` has no earlier exits to return."""
        checks.check_choice("output", output, ("all", "final"), "'all': every exit's logits, 'final': the last")
        if output == "all" and self.built_output == "final":
            raise ValueError(
                "this MSDNet was built with output='final' and has only its last exit; build it with output='all' for "
                "every exit (an all-exit checkpoint loads into either)"
            )
        self.output = output

    @property
    def num_exits(self) -> int:
        return len(self.blocks)

    def drop_skipped_keys(self, state_dict: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
        """Remove, in place, the keys of what this model did not build: the exits of ``output='final'``
        (``{prefix}classifier.<i>.*`` for every exit but the last) and :class:`SkippedScale` units, so that an
        all-exit checkpoint (the port's) loads completely; returns ``state_dict``. Keys of anything the model has are
        kept, so a final-only checkpoint loaded into an all-exit model still reports the earlier exits' keys as
        missing."""
        skipped = tuple(
            f"{prefix}{name}." for name, m in self.named_modules() if isinstance(m, (SkippedExit, SkippedScale))
        )
        if skipped:
            for key in [k for k in state_dict if k.startswith(skipped)]:
                del state_dict[key]
        return state_dict

    def _skip_unread_scales(self, read: dict[int, set[int]]) -> None:
        """Replace by :class:`SkippedScale` every per-scale unit whose map nothing reads. ``read``: block index ->
        the scales (0 the finest) read from its output. Walks back from the last block: a dense layer's unit at scale
        ``s`` reads its input at ``s`` and, if it has a strided part, at ``s - 1`` (Sec. 4, Fig. 2); a transition's at
        ``s``; the first layer's scales are a chain, each read by the next."""
        needed: set[int] = set()
        for b in reversed(range(len(self.blocks))):
            needed = needed | read.get(b, set())
            for module in reversed(list(self.blocks[b])):
                units = module.layers if isinstance(module, (MSDLayer, FirstLayer)) else module.m
                offset = 0 if isinstance(module, FirstLayer) else self.num_scales - len(units)
                reads: set[int] = set()
                for j, unit in enumerate(units):
                    scale = offset + j
                    if isinstance(module, FirstLayer):
                        if scale > max(needed, default=-1):
                            units[j] = SkippedScale()
                    elif scale not in needed:
                        units[j] = SkippedLayerScale() if isinstance(module, MSDLayer) else SkippedScale()
                    else:
                        reads |= {scale - 1, scale} if isinstance(unit, ConvDownNormal) else {scale}
                needed = reads if isinstance(module, MSDLayer) else needed

    # Blocks are run by iterating self.blocks (TorchScript indexes a ModuleList by constants only). Every caller
    # writes `if not torch.jit.is_scripting() and self._recomputes(...)` so that TorchScript compiles only the plain
    # call: recomputation is torch.utils.checkpoint, a Python-level autograd feature, and changes memory, not values.
    @torch.jit.unused
    def _recomputes(self, i: int, maps: list[Tensor]) -> bool:
        """Whether block ``i`` is recomputed in backward (``memory_mode='efficient'``): in training with gradients,
        every block after the first; never while ``torch.fx`` traces (the graph takes the plain route, same values)."""
        if isinstance(maps[0], torch.fx.Proxy):
            return False
        efficient = self.grad_checkpointing and self.training
        return i > 0 and unit_recomputes(self.blocks[i], maps, efficient=efficient, compiled=True)

    @torch.jit.unused
    def _run_block_recomputed(self, i: int, maps: list[Tensor]) -> list[Tensor]:
        block = self.blocks[i]

        def run(*inputs: Tensor) -> list[Tensor]:
            return block(list(inputs))

        if torch.compiler.is_compiling():
            # torch.compile traces torch.utils.checkpoint without a context_fn only (recompute_in_backward's keeps
            # the BN running statistics from being updated twice); in a compiled graph the recomputation is planned
            # by AOTAutograd, which does not repeat the statistics' in-place updates.
            return checkpoint(run, *maps, use_reentrant=False)
        return recompute_in_backward(block, run, *maps)

    def forward_exits(self, x: Tensor, num_exits: int | None = None) -> list[Tensor]:
        """Logits of the first ``num_exits`` exits (all by default); later blocks are not run. Needs a model built
        with ``output='all'``."""
        if self.built_output == "final":
            raise ValueError(
                "forward_exits needs every exit, and this MSDNet was built with output='final'; build it with "
                "output='all' (forward gives the final exit)"
            )
        self._check_input(x)
        last = self.num_exits if num_exits is None or num_exits == 0 else num_exits
        maps = [x]
        logits: list[Tensor] = []
        for i, (block, exit_) in enumerate(zip(self.blocks, self.classifier)):
            if i < last:
                if not torch.jit.is_scripting() and self._recomputes(i, maps):
                    maps = self._run_block_recomputed(i, maps)
                else:
                    maps = block(maps)
                logits.append(exit_(maps))
        return logits

    def forward_features(self, x: Tensor) -> Tensor:
        """Every block, then the final exit's two 3x3/2 conv-BN-ReLU and 2x2 average pool (Sec. 4): the
        ``num_features``-channel map its pool and linear layer take (``forward_head``). Without exits (pruned with
        ``prune_head``): the last block's ``feature_scale`` map."""
        self._check_input(x)
        maps = [x]
        for i, block in enumerate(self.blocks):
            if not torch.jit.is_scripting() and self._recomputes(i, maps):
                maps = self._run_block_recomputed(i, maps)
            else:
                maps = block(maps)
        if len(self.classifier) == 0:
            # prune_intermediate_layers(prune_head=True) removed every exit: as in timm's features_only models, the
            # features end at the last block's tap (forward_intermediates' map)
            return maps[self.feature_scale_index - (self.num_scales - len(maps))]
        return self.classifier[-1].m(maps[-1])

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The final exit's pool, dropout and linear layer; ``pre_logits``: the pooled ``head_hidden_size`` vector.
        Without exits (pruned): the tap's pool and linear layer (none until ``reset_classifier``)."""
        if len(self.classifier) == 0:
            x = self.tap_pool(x)
            return x if pre_logits else self.tap_fc(x)
        return self.classifier[-1].head(x, pre_logits)

    def forward(self, x: Tensor) -> list[Tensor] | Tensor:
        if self.output == "all":
            return self.forward_exits(x)
        return self.forward_head(self.forward_features(x))

    # -------------------------------------------------------------------------------------------- timm contract
    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier[-1].linear if len(self.classifier) else self.tap_fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Fresh pools and linear layers with ``num_classes`` outputs (0 removes them) on every built exit, on the
        device and in the dtype of the exit; ``global_pool`` (None keeps the current one, or puts ``'avg'`` back where
        the pool was removed and ``num_classes`` asks for a linear layer) is a timm pool type."""
        checks.check_int("num_classes", num_classes, 0, "0 removes the classifier")
        exits = [m for m in self.classifier if isinstance(m, ClassifierModule)]
        if global_pool is None:
            global_pool = exits[-1].global_pool.pool_type if exits else "avg"
            if not global_pool and num_classes:  # classes asked of a model whose pool was removed: the port's pool
                global_pool = "avg"
        checks.check_pool("global_pool", global_pool)
        _check_pool_fits_classes(global_pool, num_classes)
        self.num_classes = num_classes
        for exit_ in exits:
            exit_.set_head(num_classes, global_pool)
        if exits:
            self.head_hidden_size = self.num_features * exits[-1].global_pool.feat_mult()
        elif len(self.classifier) == 0:  # pruned to a tap: a plain timm head on its maps
            device = next(self.parameters()).device
            self.tap_pool, self.tap_fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
            self.tap_pool, self.tap_fc = self.tap_pool.to(device), self.tap_fc.to(device)
            self.head_hidden_size = self.num_features * self.tap_pool.feat_mult()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^blocks\.0\.0\.", blocks=[(r"^blocks\.(\d+)", None), (r"^classifier\.(\d+)", None)])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block (after the first) in backward, with BN running statistics updated once
        (``memory_mode='efficient'``)."""
        self.grad_checkpointing = enable

    @property
    def memory_mode(self) -> str:
        """``'efficient'`` while blocks are recomputed in backward (``set_grad_checkpointing``), else ``'plain'``."""
        return "efficient" if self.grad_checkpointing else "plain"

    def set_memory_mode(self, mode: str) -> None:
        """``'plain'`` or ``'efficient'`` (see ``memory_mode``)."""
        self.grad_checkpointing = resolve_msdnet_memory_mode(False, mode) == "efficient"

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
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """The ``feature_scale`` map after each requested block (timm's API: these are the exits' inputs at the
        coarsest scale); with ``intermediates_only=False`` also ``forward_features``' map, as timm returns it.
        ``norm`` is accepted and changes nothing, as in timm's DenseNet: every block ends in conv-BN-ReLU and MSDNet
        has no final norm. ``stop_early`` (with ``intermediates_only``) skips the blocks after the last requested."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} is not supported; MSDNet returns 'NCHW'")
        take, max_index = feature_take_indices(len(self.feature_info), self.checked_indices(indices))
        self._check_input(x)
        scale = self.feature_scale_index
        intermediates = []
        last = max_index if intermediates_only and stop_early else len(self.blocks) - 1
        maps = [x]
        for i in range(last + 1):
            maps = self._run_block_recomputed(i, maps) if self._recomputes(i, maps) else self.blocks[i](maps)
            if i in take:
                intermediates.append(maps[scale - (self.num_scales - len(maps))])
        if intermediates_only:
            return intermediates
        if len(self.classifier) == 0:  # pruned with its exits: the features end at the last tap
            return maps[scale - (self.num_scales - len(maps))], intermediates
        return self.classifier[-1].m(maps[-1]), intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last requested level with their exits, and with ``prune_head`` every exit (the
        model then serves ``forward_intermediates(..., intermediates_only=True)``)."""
        take, max_index = feature_take_indices(len(self.feature_info), self.checked_indices(indices))
        if not prune_head and isinstance(self.classifier[max_index], SkippedExit):
            raise ValueError(
                f"block {max_index} has no exit in this output='final' MSDNet, so keeping the head would leave none; "
                f"pass prune_head=True or build it with output='all'"
            )
        del self.blocks[max_index + 1 :]
        del self.classifier[max_index + 1 :]
        if prune_head:
            self.classifier = nn.ModuleList()
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]  # the tap's maps
            self.tap_pool, self.tap_fc = nn.Identity(), nn.Identity()
        coarsest = self.num_scales - 1
        read = {i: {coarsest} for i, m in enumerate(self.classifier) if isinstance(m, ClassifierModule)}
        for i in take:
            read[i] = read.get(i, set()) | {self.feature_scale_index}
        self._skip_unread_scales(read)  # what fed only the removed blocks and exits
        return take

    @torch.jit.ignore
    def load_pretrained(self, checkpoint_path: str, adapt_in_chans: bool = True) -> None:
        """Load densebackbones or the official port's weights completely (an all-exit checkpoint into a final-only
        model too: the skipped exits' keys are dropped)."""
        load_checkpoint_into(self, checkpoint_path, exit_checkpoint_filter_fn, None, adapt_in_chans)

    def exit_costs(self, input_size: tuple[int, int] | int | None = None) -> list[dict[str, int]]:
        """Cumulative cost of reaching each exit for one image: ``macs`` (multiply-adds of ``torch.utils.
        flop_counter``, :mod:`densebackbones.flops`) and ``params``, both counting every block and every earlier exit
        on the way (a sample leaving at exit k has evaluated exits 1..k-1 to decide, as the paper counts it).
        ``input_size``: side or (H, W), default the pretrained config's. Needs ``output='all'``."""
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


def _check_pool_fits_classes(global_pool: str, num_classes: int) -> None:
    if not global_pool and num_classes:
        raise ValueError(
            f"global_pool='' keeps the unpooled map, which a linear classifier cannot take; pass num_classes=0 with "
            f"it (got num_classes={num_classes})"
        )


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
    check_weights_available(variant, pretrained, kwargs.get("pretrained_cfg"), overlay)
    if overlay.get("file") or overlay.get("url"):
        overlay.setdefault("custom_load", True)
        kwargs["pretrained_cfg_overlay"] = overlay
    check_output_stride(kwargs.get("output_stride", 32), variant, strides=(32,), hint=_NO_PYRAMID)
    model_args = dict(MODEL_ARCHS[variant], **kwargs)
    checks.check_int("num_blocks", model_args["num_blocks"], 1, "blocks, one exit each")
    if model_args["num_blocks"] != MODEL_ARCHS[variant]["num_blocks"]:  # the config names the final exit's linear
        overlay.setdefault("classifier", f"classifier.{model_args['num_blocks'] - 1}.linear")
        model_args["pretrained_cfg_overlay"] = overlay
    model = build_model_with_cfg(
        MSDNet,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls=DenseFeatureGetterNet, out_indices=tuple(range(model_args["num_blocks"]))),
        **model_args,
    )
    return record_min_input_size(model)


def _msd_cfg(variant: str) -> dict[str, Any]:
    """The variant's pretrained config, with timm's ``min_input_size`` computed from its layers
    (:func:`min_input_side`) so that timm's tests size their inputs by it, and ``pool_size`` (1, 1): the final exit's
    map (``forward_features``) at the default input size."""
    arch = MODEL_ARCHS[variant]
    side = min_input_side(arch["stem_type"], len(arch["growth_factors"]))
    kwargs: dict[str, Any] = dict(
        paper_ids="arXiv:1703.09844",
        classifier=f"classifier.{arch['num_blocks'] - 1}.linear",  # the final exit's
        min_input_size=(3, side, side),
        pool_size=(1, 1),
    )
    if arch["stem_type"] == "cifar":
        kwargs.update(num_classes=100, input_size=(3, 32, 32), crop_pct=1.0)
        kwargs.update(mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761))
        kwargs["first_conv"] = "blocks.0.0.layers.0.net.0"
    else:
        kwargs["first_conv"] = "blocks.0.0.layers.0.0"
    return default_cfg(**kwargs)


default_cfgs = generate_default_cfgs(with_published({name: _msd_cfg(name) for name in MODEL_ARCHS}))


@register_model(model_cls=MSDNet)
def msdnet_anytime_cifar(pretrained: bool = False, **kwargs: Any) -> MSDNet:
    """CIFAR-100 MSDNet for anytime prediction (7 exits): 3,067,960 parameters with ``output='all'``."""
    return _create("msdnet_anytime_cifar", pretrained, **kwargs)


@register_model(model_cls=MSDNet)
def msdnet_budgeted_cifar(pretrained: bool = False, **kwargs: Any) -> MSDNet:
    """CIFAR-100 MSDNet for budgeted batch classification (5 exits, lin_grow): 2,078,924 parameters with
    ``output='all'``."""
    return _create("msdnet_budgeted_cifar", pretrained, **kwargs)


@register_model(model_cls=MSDNet)
def msdnet_imagenet(pretrained: bool = False, **kwargs: Any) -> MSDNet:
    """ImageNet MSDNet (5 exits, step 4): 23,958,440 parameters with ``output='all'``."""
    return _create("msdnet_imagenet", pretrained, **kwargs)
