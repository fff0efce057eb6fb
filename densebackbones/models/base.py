"""The model contract every dense family shares, owned once: :class:`DenseBackbone`.

DenseNet, DSOD's backbone, PeleeNet and CondenseNet differ in their stem, dense layers and transitions only; what a
user or a client library (timm, smp, torchvision, OpenMMLab) calls on a backbone is the same for all of them and lives
here: timm's factory arguments (``num_classes``, ``in_chans``, ``global_pool``, ``drop_rate``; ``device``/``dtype``
come from :func:`densebackbones.registry.register_model`), ``forward_features`` / ``forward_head(pre_logits=)`` /
``forward_intermediates`` / ``prune_intermediate_layers``, ``reset_classifier`` on the model's own device and dtype,
``set_grad_checkpointing`` <-> ``memory_mode``, ``feature_info``, ``group_matcher``, complete weight loading, and the
input check (:class:`~densebackbones.models.helpers.InputSizeCheck`).

A family subclasses :class:`DenseBackbone`, calls ``super().__init__()``, builds its ``features`` (an ordered dict
of its stem, blocks and transitions) with their ``feature_info`` and ends its constructor with
:meth:`DenseBackbone.build_tail`. It may set the class hooks ``stem_pattern`` (its stem's parameter names, for
``group_matcher``), ``checkpoint_filter`` (key remapping of foreign checkpoints) and override
``describe_checkpoint`` (what a checkpoint that does not fit was made with). MSDNet, whose multi-scale layout has
no single ``features`` sequence, implements the same contract in its own file.
"""

import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import create_classifier
from timm.models import build_model_with_cfg
from timm.models._features import feature_take_indices
from torch import Tensor

from ..layers import (
    DenseBlock,
    LayerFn,
    check_output_stride,
    compute_layout,
    memory_mode_of,
    set_cpu_channels_last,
    set_memory_mode,
)
from . import checks
from .helpers import (
    DenseFeatureGetterNet,
    InputSizeCheck,
    check_out_indices,
    check_weights_overlay,
    load_checkpoint_into,
    record_min_input_size,
)
from .published import check_weights_available

__all__ = ["DenseBackbone", "build_dense_backbone", "checkpoint_filter_fn", "default_cfg"]


class DenseBackbone(InputSizeCheck, nn.Module):
    """Base of the dense families: a ``features`` sequence (stem, dense blocks, transitions, final norm) and a pooled
    classifier, with timm's model contract (see the module docstring for what a family supplies).

    ``forward(x) = forward_head(forward_features(x))``; ``forward_features`` checks the input size and layout first.
    """

    # Parameter names of the family's stem, the first group of ``group_matcher`` (DenseNet's 7x7 stem by default).
    stem_pattern = r"^features\.(?:conv0|norm0)"

    def __init__(self) -> None:
        super().__init__()

    @staticmethod
    def checkpoint_filter(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        """Map a foreign checkpoint's keys onto this family's names (default: :func:`checkpoint_filter_fn`)."""
        return checkpoint_filter_fn(state_dict, model)

    # A family's ``describe_checkpoint(state_dict) -> (what it was made with, registered names it fits)`` explains a
    # checkpoint that does not fit (DenseNet, CondenseNet); None: the error lists the misfitting shapes alone.
    describe_checkpoint: Callable[[dict[str, Tensor]], tuple[str, list[str]]] | None = None

    def build_tail(
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
        """Complete a family's model after its last dense block; every family's constructor ends here.

        Adds the final BN-ReLU (``norm5``/``act5``, the names of torchvision and timm whatever the number of blocks,
        so their checkpoints load; ``final_norm=False`` for families whose features already end in one, such as
        PeleeNet's post-activation transition), its feature tap, the pooled classifier, the timm attributes and the
        initialisation. ``features``: the family's stem, blocks and transitions; ``feature_info``: its levels up to
        the last block; ``stride``: the total stride (also the smallest input ``_check_input`` accepts)."""
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
        """Parameter groups for layer-wise learning-rate decay (timm's ``group_parameters``): the family's stem
        (``stem_pattern``), then each dense block with its transition, then the final norm."""
        return dict(
            stem=self.stem_pattern,
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

    @torch.jit.ignore
    def set_cpu_channels_last(self, enabled: bool = True) -> None:
        """Whether the dense blocks compute in channels_last on the CPU whatever the input's layout (default on:
        faster oneDNN convolutions; same values). See :func:`densebackbones.layers.set_cpu_channels_last`."""
        set_cpu_channels_last(self, enabled)

    # Eager-side switches read over the module tree (a set comprehension): not compiled by TorchScript.
    __jit_unused_properties__ = ["memory_mode", "grad_checkpointing"]

    @property
    def memory_mode(self) -> str:
        """The dense blocks' memory mode (held by the blocks alone; ``'mixed'`` if they differ)."""
        return memory_mode_of(self)

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
        """The pool and classifier, on the device and in the dtype of the features and in the model's training
        mode (a reset after ``eval()`` stays in eval); ``head_hidden_size`` is the pre-logits width
        (``num_features`` times the pool's multiple: twice for ``'catavgmax'``), as timm keeps it."""
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=pool_type)
        self.global_pool.train(self.training)
        self.classifier.train(self.training)
        ref = next((p for p in self.features.parameters() if p.is_floating_point()), None)
        if ref is not None:
            self.classifier.to(device=ref.device, dtype=ref.dtype)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    def _compute_layout(self, x: Tensor) -> Tensor:
        """The input in the first dense block's compute layout (channels_last on the CPU), so that the stem runs in
        it too."""
        if torch.jit.is_scripting():  # scripted blocks concatenate in the input's layout (layers/routes.py)
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
            raise ValueError(f"output_fmt {output_fmt!r} is not supported; {type(self).__name__} returns 'NCHW'")
        self._check_input(x)
        x = self._compute_layout(x)
        take_indices, max_index = feature_take_indices(len(self.feature_info), self.checked_indices(indices))
        tap_names = [info["module"].split(".", 1)[1] for info in self.feature_info]
        intermediates = []
        level = 0
        for name, module in self.features.named_children():
            # A level inside a module (PeleeNet's stride-2 map inside its stem block): the module returns it too.
            inner_tap = getattr(module, "inner_tap", None)
            if level < len(tap_names) and inner_tap is not None and tap_names[level] == f"{name}.{inner_tap}":
                x, inner = module.forward_with_inner_tap(x)
                if level in take_indices:
                    intermediates.append(inner)
                level += 1
            else:
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
        last_tap = self.feature_info[max_index]["module"].split(".")[1:]  # the module of features holding the level
        names = [name for name, _ in self.features.named_children()]
        for name in names[names.index(last_tap[0]) + 1 :]:
            delattr(self.features, name)
        if len(last_tap) > 1:  # a level inside a module (its inner_tap): what follows it inside goes too
            getattr(self.features, last_tap[0]).prune_to_inner_tap()
        # forward_features now ends at that level: a head built later (reset_classifier) takes its width
        self.num_features = self.feature_info[max_index]["num_chs"]
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    @torch.jit.ignore
    def load_pretrained(self, checkpoint_path: str, adapt_in_chans: bool = True) -> None:
        """timm's ``custom_load`` hook: load a checkpoint file completely, its keys mapped by the family's
        ``checkpoint_filter`` and a misfit described by its ``describe_checkpoint`` (``adapt_in_chans``: see
        :func:`~densebackbones.models.helpers.load_checkpoint_into`)."""
        load_checkpoint_into(self, checkpoint_path, self.checkpoint_filter, self.describe_checkpoint, adapt_in_chans)

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


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Map torchvision / timm / densebackbones state_dicts onto ``model``'s key names (every dense family's filter).

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


# ------------------------------------------------------------------------------------------------------- builders
def build_dense_backbone(
    model_cls: type[DenseBackbone], variant: str, pretrained: bool, num_levels: int, **model_args: Any
) -> DenseBackbone:
    """timm's ``build_model_with_cfg`` for every :class:`DenseBackbone` family: pretrained weights, local files
    included, load through :meth:`DenseBackbone.load_pretrained` (complete and shape-checked), and ``features_only``
    gives ``num_levels`` feature levels."""
    overlay = dict(model_args.get("pretrained_cfg_overlay") or {})
    check_weights_overlay(overlay, pretrained)
    check_weights_available(variant, pretrained, model_args.get("pretrained_cfg"), overlay)
    check_output_stride(model_args.get("output_stride", 32), variant)  # the error names the registered model
    if overlay.get("file") or overlay.get("url"):
        # timm resets custom_load for an overlaid source; every source goes through DenseBackbone.load_pretrained.
        overlay.setdefault("custom_load", True)
        model_args["pretrained_cfg_overlay"] = overlay
    # features_only wraps the model in timm's FeatureGetterNet, which calls prune_intermediate_layers (validating
    # out_indices with the model's own levels in the message) and then forward_intermediates.
    model = build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=model_cls.checkpoint_filter,
        feature_cfg=dict(feature_cls=DenseFeatureGetterNet, out_indices=tuple(range(num_levels))),
        **model_args,
    )
    return record_min_input_size(model)


def default_cfg(url: str = "", **kwargs) -> dict[str, Any]:
    """timm's pretrained config of an ImageNet dense backbone (224 px, ImageNet mean and std), ``kwargs`` on top."""
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
        "custom_load": True,  # files and URLs go through DenseBackbone.load_pretrained (shape-checked, complete)
        **kwargs,
    }
