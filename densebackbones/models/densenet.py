"""DenseNet and DenseNet-BC, every model of the paper.

Huang, Liu, van der Maaten, Weinberger. "Densely Connected Convolutional Networks", CVPR 2017 (arXiv:1608.06993),
and "Convolutional Networks with Dense Connectivity", TPAMI 2019.

* ImageNet models (Table 1): DenseNet-BC with a 7x7/2 stem of 2k channels, four dense blocks, bottleneck
  ``bn_size=4``, compression 0.5; 121/169/201/264 (k=32), 161/232/264 (k=48).
* CIFAR/SVHN models (Table 2, Sec. 3 "Implementation details"): a 3x3 stem, three dense blocks of
  ``(L - 4) / 3`` layers each (halved for BC), 16 stem channels for DenseNet and 2k for DenseNet-BC, a global
  average pool at 8x8, and dropout 0.2 after every convolution but the first for the runs without augmentation.
  Wide-DenseNet-BC (official code, L=40, k=36/48/60) is DenseNet-BC with large k.

Feature taps (``feature_info`` / ``out_indices`` / ``forward_intermediates``), as in timm: level 0 is the stem
output (ImageNet: after its BN-ReLU at stride 2; CIFAR: the 3x3 conv output), levels 1..n-1 are dense block outputs
*before* the transition (un-normalised, as the next layer normalises them itself), and the last level is the final
block after ``norm5``/``act5``. smp taps after the transition's BN-ReLU and mmpretrain after the transition; a head
that wants those normalises the tap itself.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from copy import deepcopy
from typing import Any

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs
from timm.models._features import feature_take_indices
from torch import Tensor

from ..layers import (
    DenseBlock,
    DilationPlan,
    LayerFn,
    Transition,
    check_output_stride,
    cifar_stem,
    compute_layout,
    imagenet_stem,
    resolve_memory_mode,
    set_memory_mode,
)
from ..registry import register_model
from . import checks
from .helpers import (
    DenseFeatureGetterNet,
    InputSizeCheck,
    check_out_indices,
    check_weights_overlay,
    load_checkpoint_into,
    record_min_input_size,
)

__all__ = ["DenseNet", "cifar_block_config", "checkpoint_filter_fn", "MODEL_ARCHS"]

_STEMS = {"imagenet": imagenet_stem, "cifar": cifar_stem}


def cifar_block_config(depth: int, bottleneck: bool, num_blocks: int = 3) -> tuple[int, ...]:
    """Layers per block of the paper's CIFAR/SVHN networks: ``(L - 4) / 3``, halved with bottlenecks (Sec. 4.2).

    The 4 counts the stem conv, the two transition convs and the classifier.
    """
    layers_per_block, rest = divmod(depth - (num_blocks + 1), num_blocks * (2 if bottleneck else 1))
    if rest or layers_per_block < 1:
        step = num_blocks * (2 if bottleneck else 1)
        raise ValueError(
            f"depth {depth} does not give whole dense blocks: depth - {num_blocks + 1} must be a positive multiple "
            f"of {step} ({'BC' if bottleneck else 'basic'} layers, {num_blocks} blocks); e.g. "
            f"{num_blocks + 1 + step * 6} or {num_blocks + 1 + step * 16}"
        )
    return (layers_per_block,) * num_blocks


class DenseNet(InputSizeCheck, nn.Module):
    """Densely connected network with any depth, growth rate, bottleneck, compression and stem.

    Args:
        num_classes: classifier outputs; 0 removes the classifier (``forward`` returns pooled features).
        in_chans: input image channels.
        growth_rate: k, channels each dense layer adds.
        block_config: number of layers in each dense block.
        bn_size: bottleneck width as a multiple of k (paper: 4); ``None`` disables the bottleneck ("B").
        compression: theta, the fraction of channels a transition keeps (paper: 0.5 for "C", 1 otherwise).
        stem_type: ``'imagenet'`` (7x7/2 conv, BN-ReLU, 3x3/2 max-pool) or ``'cifar'`` (one 3x3 conv).
        stem_width: stem output channels; default ``2 * growth_rate``.
        drop_rate: dropout before the classifier (timm's meaning).
        proj_drop_rate: the paper's dropout after every convolution except the first (Sec. 4.2: 0.2 on C10, C100
            and SVHN without augmentation); timm's name.
        global_pool: timm pool type for the head (``'avg'``, ``'max'``, ``'avgmax'``, ``''`` for none).
        transition_pool: ``'avg'`` (paper), ``'max'`` or ``'none'``.
        norm_layer: callable building a norm layer from a channel count.
        act_layer: callable building an activation (called with ``inplace=True``).
        memory_efficient: torchvision's flag; True is ``memory_mode='efficient'``.
        memory_mode: how dense blocks hold their features (same results and parameters in every mode):
            ``'buffer'`` (default, fastest: one shared buffer per block, no per-layer concatenation),
            ``'efficient'`` (shared buffer, activations recomputed in backward: least memory) or ``'plain'``
            (per-layer concatenation, as torchvision and timm). See :mod:`densebackbones.layers.shared_buffer`.
        output_stride: 32 (the network as published), 16 or 8: the transitions' pooling past that stride is
            removed and the later blocks' 3x3 convolutions are dilated by the factor removed (DenseASPP; timm's
            ``output_stride``), with the same parameters; ``feature_info`` gives the strides. Models whose total
            stride is at most ``output_stride`` (the 3-block CIFAR layout: 4) are unchanged.
            See :mod:`densebackbones.layers.dilation`.

    Shape:
        Input: (N, in_chans, H, W) with H, W at least the total stride (32 ImageNet, 4 CIFAR; ``output_stride``
        where that is smaller).
        Output: (N, num_classes), or (N, num_features) when ``num_classes=0``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        bn_size: int | None = 4,
        compression: float = 0.5,
        stem_type: str = "imagenet",
        stem_width: int | None = None,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        global_pool: str = "avg",
        transition_pool: str = "avg",
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
        memory_efficient: bool = False,
        memory_mode: str | None = None,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        checks.check_head(num_classes, in_chans, drop_rate, global_pool)
        checks.check_int("growth_rate", growth_rate, 1, "the channels each dense layer adds, e.g. 12, 32 or 48")
        checks.check_ints("block_config", block_config, 1, hint="layers per dense block, e.g. (6, 12, 24, 16)")
        if bn_size is not None:
            checks.check_int("bn_size", bn_size, 1, "bottleneck width in multiples of growth_rate (4); None: none")
        hint = "the share of channels a transition keeps: 0.5 for DenseNet-BC, 1 for none"
        checks.check_number("compression", compression, 0.0, 1.0, low_open=True, hint=hint)
        checks.check_choice("stem_type", stem_type, tuple(_STEMS))
        if stem_width is not None:
            checks.check_int("stem_width", stem_width, 1, "None: 2 * growth_rate")
        checks.check_rate("proj_drop_rate", proj_drop_rate)
        checks.check_choice("transition_pool", transition_pool, ("avg", "max", "none"))
        checks.check_layers(norm_layer, act_layer, memory_efficient)
        memory_mode = resolve_memory_mode(memory_efficient, memory_mode)
        stem_width = stem_width or 2 * growth_rate
        stem = _STEMS[stem_type](in_chans, stem_width, norm_layer=norm_layer, act_layer=act_layer)
        features = OrderedDict(stem.modules)
        feature_info = [dict(num_chs=stem_width, reduction=stem.tap_reduction, module=f"features.{stem.tap}")]

        layer_kwargs = dict(
            bn_size=bn_size,
            drop_rate=proj_drop_rate,
            norm_layer=norm_layer,
            act_layer=act_layer,
            memory_mode=memory_mode,
        )
        num_features, plan = stem_width, DilationPlan(output_stride, stem.reduction, type(self).__name__)
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, num_features, growth_rate, dilation=plan.dilation, **layer_kwargs)
            features[f"denseblock{i + 1}"] = block
            num_features = block.out_chs
            if i == len(block_config) - 1:
                break
            feature_info.append(dict(num_chs=num_features, reduction=plan.stride, module=f"features.denseblock{i + 1}"))
            out_chs = math.floor(num_features * compression)  # Sec. 3, compression: floor(theta * m)
            if out_chs < 1:
                raise ValueError(
                    f"compression={compression} leaves transition{i + 1} no channels (floor({compression} * "
                    f"{num_features})); raise compression to at least {1 / num_features:.3g} or widen the blocks"
                )
            # Past output_stride the pooling is removed (pool="none": an Identity, no parameters either way).
            pooled = transition_pool != "none" and plan.downsample()
            transition = Transition(
                num_features,
                out_chs,
                pool=transition_pool if pooled else "none",
                drop_rate=proj_drop_rate,
                norm_layer=norm_layer,
                act_layer=act_layer,
            )
            features[f"transition{i + 1}"] = transition
            num_features = out_chs
        head = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, global_pool=global_pool)
        self._finish(features, feature_info, num_features, plan.stride, norm_layer, act_layer, **head)
        self.output_stride = output_stride

    def _finish(
        self,
        features: OrderedDict[str, nn.Module],
        feature_info: list[dict[str, Any]],
        num_features: int,
        stride: int,
        norm_layer: LayerFn,
        act_layer: LayerFn,
        *,
        num_classes: int,
        in_chans: int,
        drop_rate: float,
        global_pool: str,
        final_norm: bool = True,
    ) -> None:
        """What every dense family shares after its last dense block: the final BN-ReLU (``norm5``/``act5``, the
        names of torchvision and timm whatever the number of blocks, so their checkpoints load; ``final_norm=False``
        for families whose features already end in one, such as PeleeNet's post-activation transition), its
        feature tap, the pooled classifier, the timm attributes and the initialisation. A family builds
        ``features`` (its stem, blocks and transitions) and ``feature_info`` up to its last block and calls this."""
        if final_norm:
            features["norm5"] = norm_layer(num_features)
            features["act5"] = act_layer(inplace=True)
        last = next(reversed(features))
        self.features = nn.Sequential(features)
        self.feature_info = [*feature_info, dict(num_chs=num_features, reduction=stride, module=f"features.{last}")]
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.min_input_size, self.input_size_reason = stride, "its total stride"  # checked in _check_input
        self.num_features = num_features
        self._set_head(num_classes, global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        # He-normal for convolutions as in the official Torch code (fb.resnet.torch: std = sqrt(2 / (k*k*n_out))),
        # BN gamma 1 / beta 0, classifier bias 0 (docs/reference.md, training recipes).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.modules.batchnorm._NormBase) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    # ----------------------------------------------------------------------------------------------- timm contract
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm's ``group_parameters``)."""
        return dict(
            stem=r"^features\.(?:conv0|norm0)",
            blocks=r"^features\.(?:denseblock|transition)(\d+)"
            if coarse
            else [
                (r"^features\.denseblock(\d+)\.denselayer(\d+)", None),
                (r"^features\.transition(\d+)", (99998,)),
                (r"^features\.norm5", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch: ``memory_mode='efficient'`` when enabled, ``'buffer'`` when not.

        Unlike timm's ``checkpoint_seq`` over whole blocks, the dense blocks keep only their shared feature buffer
        and recompute each layer in backward, with BatchNorm running statistics updated once per step.
        """
        self.set_memory_mode("efficient" if enable else "buffer")

    @torch.jit.ignore
    def set_memory_mode(self, mode: str) -> None:
        """Switch every dense block to ``'plain'``, ``'buffer'`` or ``'efficient'`` (see ``memory_mode``)."""
        set_memory_mode(self, mode)

    # Eager-side switches read over the module tree (a set comprehension): not compiled by TorchScript.
    __jit_unused_properties__ = ["memory_mode", "grad_checkpointing"]

    @property
    def memory_mode(self) -> str:
        """The dense blocks' memory mode (held by the blocks alone; ``'mixed'`` if they differ)."""
        modes = {m.memory_mode for m in self.modules() if isinstance(m, DenseBlock)}
        return modes.pop() if len(modes) == 1 else "mixed"

    @property
    def grad_checkpointing(self) -> bool:
        """timm's flag: whether the dense blocks recompute in backward (``memory_mode == 'efficient'``)."""
        return self.memory_mode == "efficient"

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0 removes it)."""
        checks.check_int("num_classes", num_classes, 0, "0 removes the classifier")
        if global_pool is not None:
            checks.check_pool("global_pool", global_pool)
        self.num_classes = num_classes
        self._set_head(num_classes, global_pool if global_pool is not None else self.global_pool.pool_type)

    def _set_head(self, num_classes: int, pool_type: str) -> None:
        """The pool and classifier, on the device and in the dtype of the features; ``head_hidden_size`` is the
        pre-logits width (``num_features`` times the pool's multiple: twice for ``'catavgmax'``), as timm keeps it."""
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=pool_type)
        ref = next((p for p in self.features.parameters() if p.is_floating_point()), None)
        if ref is not None:
            self.classifier.to(device=ref.device, dtype=ref.dtype)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    def _compute_layout(self, x: Tensor) -> Tensor:
        """The input in the first dense block's compute layout (channels_last on the CPU), so that the stem runs in
        it too."""
        if torch.jit.is_scripting():  # scripted blocks concatenate in the input's layout (layers/shared_buffer.py)
            return x
        return self._eager_compute_layout(x)

    @torch.jit.unused
    def _eager_compute_layout(self, x: Tensor) -> Tensor:
        block = next((m for m in self.features.children() if isinstance(m, DenseBlock)), None)
        return x if block is None else compute_layout(x, block)

    def checked_indices(self, indices: int | list[int] | tuple[int, ...] | None) -> int | list[int] | None:
        """``indices`` (feature levels, negative counting from the end, or an int for the last n) if they exist;
        a ``ValueError`` listing the model's levels with channels and strides otherwise."""
        name = (getattr(self, "pretrained_cfg", None) or {}).get("architecture") or type(self).__name__
        return check_out_indices(self.feature_info, indices, name)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Forward that also returns the feature maps listed in ``feature_info`` (timm's API).

        Args:
            x: input images.
            indices: feature levels to return; an int n takes the last n, None takes all.
            norm: timm's switch, accepted as timm's DenseNet does: the last level is already the final norm's output
                (``norm5``/``act5``, or PeleeNet's post-activation transition), equal to ``forward_features``, and the
                other levels feed pre-activation layers, so there is nothing more to apply.
            stop_early: stop after the last requested level (only with ``intermediates_only``).
            output_fmt: only ``'NCHW'``.
            intermediates_only: return only the list of maps.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} is not supported; DenseNet returns 'NCHW'")
        self._check_input(x)
        x = self._compute_layout(x)
        take_indices, max_index = feature_take_indices(len(self.feature_info), self.checked_indices(indices))
        tap_names = [info["module"].split(".", 1)[1] for info in self.feature_info]
        intermediates = []
        level = 0
        for name, module in self.features.named_children():
            x = module(x)
            if level < len(tap_names) and name == tap_names[level]:
                if level in take_indices:
                    intermediates.append(x)
                level += 1
                if intermediates_only and stop_early and level > max_index:
                    break
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] | tuple[int, ...] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the layers after the last requested level (and the head); returns the absolute indices kept."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), self.checked_indices(indices))
        last_tap = self.feature_info[max_index]["module"].split(".", 1)[1]
        names = [name for name, _ in self.features.named_children()]
        for name in names[names.index(last_tap) + 1 :]:
            delattr(self.features, name)
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    @torch.jit.ignore
    def load_pretrained(self, checkpoint_path: str, adapt_in_chans: bool = True) -> None:
        """timm's ``custom_load`` hook: load a torchvision, timm or densebackbones checkpoint file completely
        (``adapt_in_chans``: see :func:`~densebackbones.models.helpers.load_checkpoint_into`)."""
        load_checkpoint_into(self, checkpoint_path, checkpoint_filter_fn, _archs_matching_state_dict, adapt_in_chans)

    def forward_features(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.features(self._compute_layout(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# ------------------------------------------------------------------------------------------------ checkpoint filter
# torchvision's pre-0.4 checkpoints name layer parts 'norm.1', 'conv.2' instead of 'norm1', 'conv2'.
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: DenseNet) -> dict[str, Tensor]:
    """Map torchvision / timm / densebackbones DenseNet state_dicts onto ``model``'s key names.

    Accepts the current and the legacy (``norm.1``) torchvision key styles, timm's keys (identical apart from fused
    BN-act modules), DDP's ``module.`` prefix and training checkpoints holding ``state_dict``/``model``.
    """
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
            break
    out = {}
    for key, value in state_dict.items():
        key = key[7:] if key.startswith("module.") else key
        match = _LEGACY_KEY.match(key)
        if match:
            key = match.group(1) + match.group(2)
        out[key] = value
    # BatchNorm's batch counter is absent from old checkpoints; it only matters for momentum=None.
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.zeros_like(value)
    return out


def _archs_matching_state_dict(state_dict: dict[str, Tensor]) -> tuple[str, list[str]]:
    """Describe the DenseNet a state_dict came from and list the registered names with that architecture."""
    layers: dict[int, int] = {}
    growth_rate, bottleneck = None, None
    for key, value in state_dict.items():
        match = re.match(r"^features\.denseblock(\d+)\.denselayer(\d+)\.conv1\.weight$", key)
        if match:
            block, layer = int(match.group(1)), int(match.group(2))
            layers[block] = max(layers.get(block, 0), layer)
            conv2 = state_dict.get(key.replace("conv1", "conv2"))
            bottleneck = conv2 is not None
            growth_rate = int((conv2 if bottleneck else value).shape[0])
    if not layers:
        return "no DenseNet layers found", []
    block_config = tuple(layers[b] for b in sorted(layers))
    stem = state_dict.get("features.conv0.weight")
    stem_width = int(stem.shape[0]) if stem is not None else None
    desc = f"growth_rate={growth_rate}, block_config={block_config}, bottleneck={bottleneck}, stem_width={stem_width}"
    matches = [
        name
        for name, arch in MODEL_ARCHS.items()
        if tuple(arch["block_config"]) == block_config
        and arch["growth_rate"] == growth_rate
        and (arch.get("bn_size", 4) is not None) == bottleneck
        and arch.get("stem_width", 2 * growth_rate) == stem_width
    ]
    return desc, matches


# ------------------------------------------------------------------------------------------------------- builders
def _cifar_arch(depth: int, growth_rate: int, bc: bool) -> dict[str, Any]:
    arch = dict(growth_rate=growth_rate, block_config=cifar_block_config(depth, bottleneck=bc), stem_type="cifar")
    if bc:
        return arch  # DenseNet-BC: bottleneck 4k, compression 0.5, stem 2k
    # DenseNet: no bottleneck, no compression, 16 stem channels (Sec. 3, "Implementation details").
    return dict(arch, bn_size=None, compression=1.0, stem_width=16)


# Architecture table (module constant; deep-copied before use). Names carry depth, BC, growth rate and family.
MODEL_ARCHS: dict[str, dict[str, Any]] = {
    # ImageNet, Table 1 (all DenseNet-BC).
    "densenet_bc121_k32": dict(growth_rate=32, block_config=(6, 12, 24, 16)),
    "densenet_bc169_k32": dict(growth_rate=32, block_config=(6, 12, 32, 32)),
    "densenet_bc201_k32": dict(growth_rate=32, block_config=(6, 12, 48, 32)),
    "densenet_bc264_k32": dict(growth_rate=32, block_config=(6, 12, 64, 48)),
    "densenet_bc161_k48": dict(growth_rate=48, block_config=(6, 12, 36, 24)),
    "densenet_bc232_k48": dict(growth_rate=48, block_config=(6, 12, 48, 48)),
    "densenet_bc264_k48": dict(growth_rate=48, block_config=(6, 12, 64, 48)),
    # CIFAR / SVHN, Table 2.
    "densenet40_k12_cifar": _cifar_arch(40, 12, bc=False),
    "densenet100_k12_cifar": _cifar_arch(100, 12, bc=False),
    "densenet100_k24_cifar": _cifar_arch(100, 24, bc=False),
    "densenet_bc100_k12_cifar": _cifar_arch(100, 12, bc=True),
    "densenet_bc250_k24_cifar": _cifar_arch(250, 24, bc=True),
    "densenet_bc190_k40_cifar": _cifar_arch(190, 40, bc=True),
    # Wide-DenseNet-BC of the official code's README: L=40 with large k.
    "wide_densenet_bc40_k36_cifar": _cifar_arch(40, 36, bc=True),
    "wide_densenet_bc40_k48_cifar": _cifar_arch(40, 48, bc=True),
    "wide_densenet_bc40_k60_cifar": _cifar_arch(40, 60, bc=True),
}


def _create_densenet(variant: str, pretrained: bool = False, **kwargs) -> DenseNet:
    model_args = dict(deepcopy(MODEL_ARCHS[variant]), **kwargs)
    levels = len(checks.check_ints("block_config", model_args["block_config"], hint="layers per dense block")) + 1
    return build_dense_backbone(DenseNet, variant, pretrained, levels, **model_args)


def build_dense_backbone(
    model_cls: type[DenseNet], variant: str, pretrained: bool, num_levels: int, **model_args: Any
) -> DenseNet:
    """timm's ``build_model_with_cfg`` for every dense backbone family (DenseNet, DSOD's, PeleeNet): pretrained
    weights, local files included, load through :meth:`DenseNet.load_pretrained` (complete and shape-checked), and
    ``features_only`` gives ``num_levels`` feature levels."""
    overlay = dict(model_args.get("pretrained_cfg_overlay") or {})
    check_weights_overlay(overlay, pretrained)
    check_output_stride(model_args.get("output_stride", 32), variant)  # the error names the registered model
    if overlay.get("file") or overlay.get("url"):
        # timm resets custom_load for an overlaid source; every source goes through DenseNet.load_pretrained.
        overlay.setdefault("custom_load", True)
        model_args["pretrained_cfg_overlay"] = overlay
    # features_only wraps the model in timm's FeatureGetterNet, which calls prune_intermediate_layers (validating
    # out_indices with the model's own levels in the message) and then forward_intermediates.
    model = build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls=DenseFeatureGetterNet, out_indices=tuple(range(num_levels))),
        **model_args,
    )
    return record_min_input_size(model)


def _cfg(url: str = "", **kwargs) -> dict[str, Any]:
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "features.conv0",
        "classifier": "classifier",
        "paper_ids": "arXiv:1608.06993",
        "custom_load": True,  # files and URLs go through DenseNet.load_pretrained (shape-checked, complete)
        **kwargs,
    }


def _cifar_cfg(**kwargs) -> dict[str, Any]:
    # CIFAR-10 per-channel statistics; the 32-px family also serves CIFAR-100 and SVHN (set num_classes).
    return _cfg(
        num_classes=10,
        input_size=(3, 32, 32),
        pool_size=(8, 8),
        crop_pct=1.0,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        **kwargs,
    )


_TV_URL = "https://download.pytorch.org/models/"
default_cfgs = generate_default_cfgs(
    {
        # torchvision's ports of the official Torch weights (ImageNet-1k top-1 74.434 / 75.600 / 76.896 / 77.138).
        "densenet_bc121_k32.tv_in1k": _cfg(url=_TV_URL + "densenet121-a639ec97.pth", license="bsd-3-clause"),
        "densenet_bc169_k32.tv_in1k": _cfg(url=_TV_URL + "densenet169-b2777c0a.pth", license="bsd-3-clause"),
        "densenet_bc201_k32.tv_in1k": _cfg(url=_TV_URL + "densenet201-c1103571.pth", license="bsd-3-clause"),
        "densenet_bc161_k48.tv_in1k": _cfg(url=_TV_URL + "densenet161-8d451a50.pth", license="bsd-3-clause"),
        "densenet_bc264_k32": _cfg(),
        "densenet_bc232_k48": _cfg(),
        "densenet_bc264_k48": _cfg(),
        **{name: _cifar_cfg() for name in MODEL_ARCHS if name.endswith("_cifar")},
    }
)


# ------------------------------------------------------------------------------------------------ registered models
@register_model(model_cls=DenseNet)
def densenet_bc121_k32(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-121 (DenseNet-BC, k=32, blocks 6-12-24-16), ImageNet, Table 1."""
    return _create_densenet("densenet_bc121_k32", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc169_k32(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-169 (DenseNet-BC, k=32, blocks 6-12-32-32), ImageNet, Table 1."""
    return _create_densenet("densenet_bc169_k32", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc201_k32(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-201 (DenseNet-BC, k=32, blocks 6-12-48-32), ImageNet, Table 1."""
    return _create_densenet("densenet_bc201_k32", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc264_k32(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-264 (DenseNet-BC, k=32, blocks 6-12-64-48), ImageNet, Table 1."""
    return _create_densenet("densenet_bc264_k32", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc161_k48(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-161 (DenseNet-BC, k=48, blocks 6-12-36-24, stem 96), ImageNet, official models."""
    return _create_densenet("densenet_bc161_k48", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc232_k48(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-232 (DenseNet-BC, k=48, blocks 6-12-48-48, stem 96), ImageNet, official models."""
    return _create_densenet("densenet_bc232_k48", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc264_k48(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-264 with k=48 (blocks 6-12-64-48, stem 96), ImageNet, official cosine-schedule model."""
    return _create_densenet("densenet_bc264_k48", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet40_k12_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet (L=40, k=12), CIFAR/SVHN, Table 2."""
    return _create_densenet("densenet40_k12_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet100_k12_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet (L=100, k=12), CIFAR/SVHN, Table 2."""
    return _create_densenet("densenet100_k12_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet100_k24_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet (L=100, k=24), CIFAR/SVHN, Table 2."""
    return _create_densenet("densenet100_k24_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc100_k12_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-BC (L=100, k=12), CIFAR/SVHN, Table 2."""
    return _create_densenet("densenet_bc100_k12_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc250_k24_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-BC (L=250, k=24), CIFAR/SVHN, Table 2."""
    return _create_densenet("densenet_bc250_k24_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def densenet_bc190_k40_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """DenseNet-BC (L=190, k=40), CIFAR/SVHN, Table 2."""
    return _create_densenet("densenet_bc190_k40_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def wide_densenet_bc40_k36_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """Wide-DenseNet-BC (L=40, k=36), CIFAR/SVHN, official code."""
    return _create_densenet("wide_densenet_bc40_k36_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def wide_densenet_bc40_k48_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """Wide-DenseNet-BC (L=40, k=48), CIFAR/SVHN, official code."""
    return _create_densenet("wide_densenet_bc40_k48_cifar", pretrained, **kwargs)


@register_model(model_cls=DenseNet)
def wide_densenet_bc40_k60_cifar(pretrained: bool = False, **kwargs) -> DenseNet:
    """Wide-DenseNet-BC (L=40, k=60), CIFAR/SVHN, official code."""
    return _create_densenet("wide_densenet_bc40_k60_cifar", pretrained, **kwargs)
