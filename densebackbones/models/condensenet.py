"""CondenseNet (Huang, Liu, van der Maaten, Weinberger, "CondenseNet: An Efficient DenseNet using Learned Group
Convolutions", CVPR 2018), exact to the official code (ShichenLiu/CondenseNet: ``models/condensenet.py``,
``models/condensenet_converted.py``, ``utils.convert_model``).

* Stem: one 3x3 convolution to ``2 * k[0]`` maps, stride 2 (ImageNet) or 1 (CIFAR), no BN after it.
* Dense blocks of :class:`~densebackbones.layers.CondenseLayer` (learned group 1x1 to ``4k``, BN-ReLU-grouped 3x3 to
  ``k``) with a growth rate per block ("exponentially increasing growth rate", Sec. 3.3); transitions are a 2x2
  average pool only, so connectivity stays dense across blocks ("fully dense connectivity", Sec. 3.3).
* Final BN-ReLU, global average pool, linear classifier.
* Training condenses the learned group convolutions during its first half (:meth:`set_training_progress`, called by
  the trainer every iteration) and may add a group-lasso term (:meth:`regularization_loss`); :func:`convert` then
  gives the deployment model (index selection, grouped convolutions, shuffles, a classifier on half the features).

Parameter counts (docs/reference.md): ImageNet CondenseNet-74 C=G=4 11,922,680 (converted 4,773,944), C=G=8
11,103,608 (2,935,416); CIFAR-10 CondenseNet-86 1,451,594 (516,202), CondenseNet-182 13,792,906 (4,209,226).
"""

from __future__ import annotations

import copy
import re
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs
from torch import Tensor

from ..layers import (
    CondensedConv,
    CondensedLinear,
    CondenseLayer,
    DenseBlock,
    DilationPlan,
    LayerFn,
    LearnedGroupConv,
    conv2d,
    drop_path_rates,
    resolve_memory_mode,
)
from ..layers.routes import is_fx_symbolic_tracing
from ..registry import register_model
from . import checks
from .base import DenseBackbone, build_dense_backbone, checkpoint_filter_fn, default_cfg
from .published import with_published

__all__ = ["CondenseNet", "convert", "describe_checkpoint_fit", "infer_arch", "MODEL_ARCHS"]


def _divisors_of_all(values: Sequence[int]) -> list[int]:
    return [d for d in range(1, min(values) + 1) if all(v % d == 0 for v in values)]


class CondenseNet(DenseBackbone):
    """CondenseNet with DenseNet's interface (timm contract, memory modes, feature levels).

    Args:
        num_classes: classifier outputs; 0 removes the classifier.
        in_chans: input channels.
        growth_rate: k per block (ImageNet 8-16-32-64-128).
        block_config: layers per block (ImageNet 4-6-8-10-8).
        groups: G of the learned group 1x1 convolutions (4 or 8).
        condense_factor: C, each group keeps ``1/C`` of its inputs (default G).
        group_3x3: groups of the 3x3 convolutions (default G).
        bottleneck: width of the 1x1 output in units of k (4).
        stem_type: ``'imagenet'`` (3x3 stride 2) or ``'cifar'`` (3x3 stride 1).
        proj_drop_rate: dropout before every learned group convolution (the official ``dropout_rate``).
        drop_path_rate: stochastic depth on the dense layers, as :class:`DenseNet` (not in the paper: 0).
        group_lasso_lambda: weight of the group-lasso term :meth:`regularization_loss` returns (0: none).
        converted: build the deployment form (condensed convolutions and classifier) to load converted weights.
        condense_steps: condense by itself over this many training forwards (the steps of the whole schedule, times
            the gradient accumulation), for training loops other than densebackbones' (timm's ``train.py
            --model-kwargs condense_steps=N``, Lightning, a plain loop): each forward in training mode with
            gradients on advances the condensation to forwards done / ``condense_steps`` first, as the engine's
            :meth:`set_training_progress` does per step; the count is a buffer (``condense_forwards``), so a resumed
            run continues its schedule. None (default): only :meth:`set_training_progress` condenses, and a training
            forward without it warns.
        output_stride: 32 (as published), 16 or 8: the average-pool transitions past that stride removed (an
            Identity) and the later blocks' 3x3 convolutions dilated (layers/dilation.py); the CIFAR layout (total
            stride 4) is the same at every value.
        drop_rate, global_pool, norm_layer, act_layer, memory_efficient, memory_mode: as :class:`DenseNet`.
    """

    # The masks and stages are structure, not statistics: an EMA copy takes them as they are (trainer hook).
    ema_copies_buffers = True
    stem_pattern = r"^features\.init_conv"

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        growth_rate: Sequence[int] = (8, 16, 32, 64, 128),
        block_config: Sequence[int] = (4, 6, 8, 10, 8),
        groups: int = 4,
        condense_factor: int | None = None,
        group_3x3: int | None = None,
        bottleneck: int = 4,
        stem_type: str = "imagenet",
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        group_lasso_lambda: float = 0.0,
        converted: bool = False,
        condense_steps: int | None = None,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
        memory_efficient: bool = False,
        memory_mode: str | None = None,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        checks.check_head(num_classes, in_chans, drop_rate, global_pool)
        blocks = len(checks.check_ints("block_config", block_config, 1, hint="layers per block, (4, 6, 8, 10, 8)"))
        checks.check_per_stage("growth_rate", growth_rate, blocks, what="block")
        checks.check_int("groups", groups, 1, "G of the learned group convolutions, 4 or 8")
        for name, value in (("condense_factor", condense_factor), ("group_3x3", group_3x3)):
            if value is not None:
                checks.check_int(name, value, 1, "None: the same as groups")
        checks.check_int("bottleneck", bottleneck, 1, "width of the 1x1 output in units of growth_rate (4)")
        checks.check_choice("stem_type", stem_type, ("imagenet", "cifar"), "'imagenet': stride 2, 'cifar': stride 1")
        checks.check_rate("proj_drop_rate", proj_drop_rate)
        checks.check_rate("drop_path_rate", drop_path_rate)
        checks.check_number("group_lasso_lambda", group_lasso_lambda, 0.0, hint="0 turns the group lasso off")
        checks.check_flag("converted", converted)
        checks.check_layers(norm_layer, act_layer, memory_efficient)
        growth_rates = [growth_rate] * len(block_config) if isinstance(growth_rate, int) else list(growth_rate)
        if not block_config or len(growth_rates) != len(block_config) or min(block_config) < 1:
            raise ValueError(
                f"block_config {tuple(block_config)} and growth_rate {growth_rate} must describe the same blocks "
                f"(one positive layer count and one growth rate each)"
            )
        if stem_type not in ("imagenet", "cifar"):
            raise ValueError(f"unknown stem_type {stem_type!r}; use 'imagenet' (stride 2) or 'cifar' (stride 1)")
        condense_factor = condense_factor or groups
        group_3x3 = group_3x3 or groups
        self._check_groups(growth_rates, block_config, groups, condense_factor, group_3x3, bottleneck)
        memory_mode = resolve_memory_mode(memory_efficient, memory_mode)
        self.converted, self.group_lasso_lambda = converted, group_lasso_lambda
        chs, stride = 2 * growth_rates[0], 2 if stem_type == "imagenet" else 1
        features: OrderedDict[str, nn.Module] = OrderedDict(
            init_conv=conv2d(in_chans, chs, 3, stride=stride, padding=1, bias=False)
        )
        feature_info = []
        layer_kwargs = dict(
            groups=groups,
            condense_factor=condense_factor,
            group_3x3=group_3x3,
            bottleneck=bottleneck,
            drop_rate=proj_drop_rate,
            converted=converted,
            norm_layer=norm_layer,
            act_layer=act_layer,
        )
        plan = DilationPlan(output_stride, stride, type(self).__name__)
        path_rates = drop_path_rates(drop_path_rate, block_config)
        for i, (num_layers, k) in enumerate(zip(block_config, growth_rates)):
            layer = dict(layer_cls=CondenseLayer, memory_mode=memory_mode, dilation=plan.dilation, **layer_kwargs)
            block = DenseBlock(num_layers, chs, k, drop_path_rates=path_rates[i], **layer)
            features[f"denseblock{i + 1}"] = block
            chs = block.out_chs
            if i == len(block_config) - 1:
                break
            feature_info.append(dict(num_chs=chs, reduction=plan.stride, module=f"features.denseblock{i + 1}"))
            # No convolution: dense across blocks. Past output_stride an Identity (no parameters either way).
            features[f"transition{i + 1}"] = nn.AvgPool2d(2, stride=2) if plan.downsample() else nn.Identity()
        head = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, global_pool=global_pool)
        self.build_tail(features, feature_info, chs, plan.stride, norm_layer, act_layer, **head)
        self.output_stride = output_stride
        if converted and num_classes:
            self.classifier = CondensedLinear(chs, num_classes)
        self.progress_set_by_trainer = False  # set_training_progress was called: it drives condensation
        # whether regularization_loss() was taken since the last training forward (a warning for other loops)
        self.training_forwards, self.lasso_taken, self.lasso_warned = 0, False, False
        self.condense_steps: int | None = None
        if condense_steps is not None:
            checks.check_int("condense_steps", condense_steps, 1, "training forwards over which to condense")
            self.set_condense_steps(condense_steps)

    @staticmethod
    def _check_groups(growth_rates, block_config, groups, condense_factor, group_3x3, bottleneck) -> None:
        inputs, widths = [], []
        chs = 2 * growth_rates[0]
        for num_layers, k in zip(block_config, growth_rates):
            inputs += [chs + i * k for i in range(num_layers)]
            widths.append(bottleneck * k)
            chs += num_layers * k
        for name, value, channels in (
            ("groups", groups, inputs + widths),
            ("condense_factor", condense_factor, inputs),
            ("group_3x3", group_3x3, widths + list(growth_rates)),
        ):
            bad = [c for c in channels if value < 1 or c % value]
            if bad:
                raise ValueError(
                    f"{name}={value} does not divide the {bad[0]} channels of a layer; values that divide every "
                    f"layer's channels here: {', '.join(map(str, _divisors_of_all(channels)))}"
                )

    # ---------------------------------------------------------------------------------------- training-time hooks
    def learned_convs(self) -> list[LearnedGroupConv]:
        return [m for m in self.modules() if isinstance(m, LearnedGroupConv)]

    @torch.no_grad()
    def set_training_progress(self, progress: float) -> None:
        """The trainer's per-iteration hook (``progress`` = optimiser steps done / all steps, in [0, 1]): advance
        every learned group convolution's condensation to that progress (drops happen at C - 1 stage changes in the
        first half of training). A converted model has nothing to condense. Once called, it alone drives
        condensation (``condense_steps`` counting stops)."""
        self.progress_set_by_trainer = True
        self._condense_to(progress)

    def _condense_to(self, progress: float) -> None:
        for conv in self.learned_convs():
            conv.update_condensation(progress)

    def set_condense_steps(self, steps: int) -> None:
        """Condense by itself over ``steps`` training forwards (the ``condense_steps`` argument, for a model built
        elsewhere); the count starts at 0 unless the model has one."""
        checks.check_int("condense_steps", steps, 1, "training forwards over which to condense")
        self.condense_steps = steps
        if not hasattr(self, "condense_forwards"):
            device = next(self.parameters()).device
            self.register_buffer("condense_forwards", torch.zeros((), dtype=torch.long, device=device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Weights saved without a forward count (before condense_steps was set) keep this model's count; a count
        # saved by a model with condense_steps is a training-loop state that a model without them has no use for.
        key = f"{prefix}condense_forwards"
        if hasattr(self, "condense_forwards") and key not in state_dict:
            state_dict[key] = self.condense_forwards.clone()
        elif not hasattr(self, "condense_forwards"):
            state_dict.pop(key, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.jit.unused
    def _advance_condensation(self) -> None:
        """Once per training forward with gradients on (forward, forward_features or forward_intermediates:
        features_only too): ``condense_steps`` counting, or a warning that nothing condenses the model."""
        if not (self.training and torch.is_grad_enabled()) or torch.jit.is_tracing() or is_fx_symbolic_tracing():
            return
        if self.progress_set_by_trainer or self.converted:
            return
        # The group lasso is a loss term: another loop must add regularization_loss() itself (the engine does).
        if self.group_lasso_lambda and self.training_forwards and not self.lasso_taken and not self.lasso_warned:
            warnings.warn(
                f"CondenseNet(group_lasso_lambda={self.group_lasso_lambda}) trains without its group lasso: add "
                f"model.regularization_loss() to the loss every step (densebackbones' trainer does)",
                stacklevel=4,
            )
            self.lasso_warned = True
        self.training_forwards += 1
        self.lasso_taken = False
        if self.condense_steps is None:
            if not self.condensation_finished:
                warnings.warn(
                    "a CondenseNet trains but nothing advances its condensation, so its learned group convolutions "
                    "never condense: create it with condense_steps=<training forwards> (timm's train.py: "
                    "--model-kwargs condense_steps=N) or call model.set_training_progress(steps done / all steps) "
                    "every step (densebackbones' trainer does)",
                    stacklevel=4,
                )
            return
        self._condense_to(min(int(self.condense_forwards.item()) / self.condense_steps, 1.0))
        self.condense_forwards.add_(1)

    def forward_features(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            self._advance_condensation()
        # DenseBackbone.forward_features' body: TorchScript compiles no super() call
        self._check_input(x)
        return self.features(self._compute_layout(x))

    def forward_intermediates(self, x: Tensor, *args: Any, **kwargs: Any):
        if not torch.jit.is_scripting():
            self._advance_condensation()
        return super().forward_intermediates(x, *args, **kwargs)

    def regularization_loss(self) -> Tensor | None:
        """The trainer adds this to the loss: ``group_lasso_lambda`` times the group lasso of every learned group
        convolution still condensing (None when the weight is 0 or nothing condenses)."""
        convs = self.learned_convs()
        self.lasso_taken = True
        if not self.group_lasso_lambda or not convs:
            return None
        return self.group_lasso_lambda * torch.stack([conv.lasso_loss() for conv in convs]).sum()

    # TorchScript compiles properties; this one is eager-side bookkeeping (a generator over the learned convs).
    __jit_unused_properties__ = [*DenseBackbone.__jit_unused_properties__, "condensation_finished"]

    @property
    def condensation_finished(self) -> bool:
        return all(conv.condensed for conv in self.learned_convs())

    # ---------------------------------------------------------------------------------------------------- timm
    @staticmethod
    def checkpoint_filter(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        """Our or the official CondenseNet weights (training-time or converted): :func:`condensenet_filter_fn`."""
        return condensenet_filter_fn(state_dict, model)

    def describe_checkpoint(self, state_dict: dict[str, Tensor]) -> tuple[str, list[str]]:
        """Weights of another layout: the arguments (``groups``, ``condense_factor``...) that fit them."""
        return describe_checkpoint_fit(state_dict, self)


def convert(model: CondenseNet, force: bool = False, classifier_keep: float = 0.5) -> CondenseNet:
    """The deployment form of a trained CondenseNet (Sec. 3.2; official ``convert_model``). Every learned group
    convolution becomes index selection, BN-ReLU, a grouped convolution and a shuffle, with the same features as
    ``model``; the classifier keeps the ``classifier_keep`` share of its features with the largest L1 weight (the
    official 0.5, which the registered ``*_converted`` models and the paper's counts assume), so the logits lose
    the dropped features' contributions; ``classifier_keep=1.0`` keeps them all and the logits too. ``model`` is
    left as it is.

    Args:
        model: a trained CondenseNet whose condensation has finished (the first half of training).
        force: convert a model whose condensation has not finished by completing it now (the remaining stages
            drop the inputs of smallest weight at once); its features then differ from ``model``'s.
        classifier_keep: the share of features the classifier keeps.
    """
    if not isinstance(model, CondenseNet):
        raise TypeError(f"convert() takes a CondenseNet, got {type(model).__name__}")
    if model.converted:
        raise ValueError("the model is converted already")
    unfinished = [conv for conv in model.learned_convs() if not conv.condensed]
    if unfinished and not force:
        stage, last = min(c.stage for c in unfinished), unfinished[0].condense_factor - 1
        raise ValueError(
            f"condensation has not finished ({len(unfinished)} learned group convolutions at stage {stage} of "
            f"{last}; it ends half-way through training): train on, or pass force=True to complete it now by "
            f"weight magnitude"
        )
    converted = copy.deepcopy(model)
    for layer in converted.modules():
        if isinstance(layer, CondenseLayer) and isinstance(layer.conv_1, LearnedGroupConv):
            layer.conv_1.restore_structure()  # an EMA or SWA copy: its masks as the live model's
            layer.conv_1.update_condensation(1.0)  # no-op when finished
            layer.conv_1 = CondensedConv.from_learned(layer.conv_1)
    if isinstance(converted.classifier, nn.Linear):
        converted.classifier = CondensedLinear.from_linear(converted.classifier, classifier_keep)
    converted.converted = True
    cfg = getattr(converted, "pretrained_cfg", None)
    if cfg and cfg.get("architecture") and not cfg["architecture"].endswith("_converted"):
        converted.pretrained_cfg = dict(cfg, architecture=f"{cfg['architecture']}_converted")
    return converted


# The official key names: denseblock_1.denselayer_1 (ours: denseblock1.denselayer1), norm_last (ours: norm5).
_OFFICIAL_KEY = re.compile(r"(denseblock|denselayer|transition)_(\d+)")


def condensenet_filter_fn(state_dict: dict[str, Tensor], model: CondenseNet) -> dict[str, Tensor]:
    """DenseNet's filter (training checkpoints, DDP's ``module.``) plus the official code's block and layer names."""
    state_dict = checkpoint_filter_fn(state_dict, model)
    out = {}
    for key, value in state_dict.items():
        key = _OFFICIAL_KEY.sub(r"\1\2", key).replace("features.norm_last.", "features.norm5.")
        out[key] = value
    if not hasattr(model, "condense_forwards"):  # trained with condense_steps, loaded into a model without
        out.pop("condense_forwards", None)
    return out


_LAYER_KEY = re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\.conv_2\.conv\.weight$")


def _smallest_period(mask: Tensor) -> int:
    """The number of groups of a learned convolution's mask (width, in): group g owns rows g, g + G, ..."""
    rows = mask.shape[0]
    for groups in range(1, rows + 1):
        if rows % groups == 0 and torch.equal(mask, mask[:groups].repeat(rows // groups, 1)):
            return groups
    return rows


def infer_arch(state_dict: dict[str, Tensor]) -> dict[str, Any] | None:
    """The CondenseNet arguments a state_dict (our key names) was made with, from its tensor shapes: growth_rate and
    block_config, bottleneck, group_3x3, converted; groups and condense_factor from a converted checkpoint's grouped
    convolutions, or from a training checkpoint's masks once condensation has begun (else they stay None)."""
    layers: dict[int, dict[int, str]] = {}
    for key in state_dict:
        match = _LAYER_KEY.match(key)
        if match:
            layers.setdefault(int(match.group(1)), {})[int(match.group(2))] = key[: -len(".conv_2.conv.weight")]
    stem = state_dict.get("features.init_conv.weight")
    if not layers or stem is None:
        return None
    chs = int(stem.shape[0])
    growth, block_config, found = [], [], {"groups": set(), "condense_factor": set(), "group_3x3": set()}
    bottlenecks, converted = set(), set()
    for block in sorted(layers):
        ks = set()
        for layer in sorted(layers[block]):
            prefix = layers[block][layer]
            conv_2, conv_1 = state_dict[f"{prefix}.conv_2.conv.weight"], state_dict.get(f"{prefix}.conv_1.conv.weight")
            k, width = int(conv_2.shape[0]), int(conv_2.shape[1])
            ks.add(k)
            if conv_1 is not None:
                width = int(conv_1.shape[0])
                bottlenecks.add(width // k)
                found["group_3x3"].add(width // int(conv_2.shape[1]))
                index = state_dict.get(f"{prefix}.conv_1.index")
                converted.add(index is not None)
                if index is not None:  # converted: a grouped conv over in * G / C kept inputs
                    kept = int(index.shape[0])
                    groups = kept // int(conv_1.shape[1])
                    found["groups"].add(groups)
                    found["condense_factor"].add(chs * groups // kept if kept else 0)
                mask = state_dict.get(f"{prefix}.conv_1._mask")
                stage, count = state_dict.get(f"{prefix}.conv_1._stage"), state_dict.get(f"{prefix}.conv_1._count")
                if mask is not None and stage is not None and count is not None and float(count.sum()) > 0:
                    # condensation has begun: the masks show G, and each stage dropped in / C inputs per group
                    found["groups"].add(_smallest_period(mask.flatten(1)))
                    found["condense_factor"].add(round(chs * float(stage.sum()) / float(count.sum())))
            chs += k
        growth.append(min(ks))
        block_config.append(len(layers[block]))
    arch: dict[str, Any] = dict(growth_rate=tuple(growth), block_config=tuple(block_config))
    arch["bottleneck"] = min(bottlenecks) if bottlenecks else None
    for name, values in found.items():
        arch[name] = min(values) if len(values) == 1 else None
    arch["converted"] = converted == {True}
    return arch


def describe_checkpoint_fit(state_dict: dict[str, Tensor], model: CondenseNet) -> tuple[str, list[str]]:
    """What :func:`~densebackbones.models.helpers.check_state_dict_fits` says about a CondenseNet checkpoint that
    does not fit ``model``: the arguments it was made with, those to pass to this model's name, the registered
    models it fits."""
    ours, theirs = infer_arch(model.state_dict()), infer_arch(state_dict)
    if theirs is None or ours is None:
        return "no CondenseNet layers found (a checkpoint of another network?)", []
    if theirs["groups"] is None and theirs["group_3x3"] is not None:
        theirs["groups"] = theirs["group_3x3"]  # condensation had not begun: G follows group_3x3 by default
    shown = ", ".join(f"{k}={v}" for k, v in theirs.items() if v is not None and k != "converted")
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    base = name[: -len("_converted")] if name and name.endswith("_converted") else name
    matches = [
        f"{arch_name}_converted" if theirs["converted"] else arch_name
        for arch_name, arch in MODEL_ARCHS.items()
        if tuple(arch["growth_rate"]) == theirs["growth_rate"]
        and tuple(arch["block_config"]) == theirs["block_config"]
        and arch["groups"] == theirs["groups"]
        and theirs["condense_factor"] in (None, arch["groups"])
        and theirs["group_3x3"] in (None, arch["groups"])
    ]
    if base in MODEL_ARCHS:  # the arguments that turn this registered model into the checkpoint's
        reference = dict(MODEL_ARCHS[base])
        reference = dict(
            growth_rate=tuple(reference["growth_rate"]),
            block_config=tuple(reference["block_config"]),
            groups=reference["groups"],
            condense_factor=reference["groups"],
            bottleneck=4,
        )
        args = {k: theirs[k] for k in reference if theirs.get(k) is not None and theirs[k] != reference[k]}
        if theirs["group_3x3"] is not None and theirs["group_3x3"] != theirs["groups"]:
            args["group_3x3"] = theirs["group_3x3"]
        target = f"{base}_converted" if theirs["converted"] else base
        call = ", ".join([repr(target), *(f"{k}={v!r}" for k, v in args.items())])
        fix = f"create_model({call})"
    else:
        args = {k: v for k, v in theirs.items() if v is not None}
        fix = f"CondenseNet({', '.join(f'{k}={v!r}' for k, v in args.items())})"
    form = "a converted (deployment) checkpoint" if theirs["converted"] else "a training-time checkpoint"
    other = f" (the model is {'converted' if ours['converted'] else 'training-time'})"
    desc = f"{form} made with {shown}{other if theirs['converted'] != ours['converted'] else ''}: load it with {fix}"
    if not theirs["converted"] and ours["converted"]:
        desc += " (or convert it with tools/convert_condensenet.py first)"
    return desc, matches


MODEL_ARCHS: dict[str, dict[str, Any]] = {
    "condensenet74_c4_g4": dict(block_config=(4, 6, 8, 10, 8), growth_rate=(8, 16, 32, 64, 128), groups=4),
    "condensenet74_c8_g8": dict(block_config=(4, 6, 8, 10, 8), growth_rate=(8, 16, 32, 64, 128), groups=8),
    "condensenet86_cifar": dict(block_config=(14, 14, 14), growth_rate=(8, 16, 32), groups=4, stem_type="cifar"),
    "condensenet182_cifar": dict(block_config=(30, 30, 30), growth_rate=(12, 24, 48), groups=4, stem_type="cifar"),
}


def _create(variant: str, pretrained: bool, converted: bool, /, **kwargs: Any) -> CondenseNet:
    name = f"{variant}_converted" if converted else variant
    if "converted" in kwargs and checks.check_flag("converted", kwargs.pop("converted")) != converted:
        other = variant if converted else f"{variant}_converted"
        raise ValueError(f"converted={not converted} contradicts {name!r}; create {other!r} instead")
    model_args = dict(copy.deepcopy(MODEL_ARCHS[variant]), converted=converted, **kwargs)
    levels = len(checks.check_ints("block_config", model_args["block_config"], hint="layers per block"))
    return build_dense_backbone(CondenseNet, name, pretrained, levels, **model_args)


def _condense_cfg(cifar: bool, converted: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(paper_ids="arXiv:1711.09224", first_conv="features.init_conv")
    if converted:
        kwargs["classifier"] = "classifier.linear"
    if cifar:
        kwargs.update(num_classes=10, input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0)
        kwargs.update(mean=(0.4914, 0.4824, 0.4467), std=(0.2471, 0.2435, 0.2616))
    return default_cfg(**kwargs)


default_cfgs = generate_default_cfgs(
    with_published(
        {
            f"{name}{suffix}": _condense_cfg(name.endswith("_cifar"), bool(suffix))
            for name in MODEL_ARCHS
            for suffix in ("", "_converted")
        }
    )
)


@register_model(model_cls=CondenseNet)
def condensenet74_c4_g4(pretrained: bool = False, **kwargs: Any) -> CondenseNet:
    """CondenseNet-74, C = G = 4 (Table 5): 11,922,680 parameters while training, 4,773,944 converted."""
    return _create("condensenet74_c4_g4", pretrained, False, **kwargs)


@register_model(model_cls=CondenseNet)
def condensenet74_c8_g8(pretrained: bool = False, **kwargs: Any) -> CondenseNet:
    """CondenseNet-74, C = G = 8 (Table 5): 11,103,608 parameters while training, 2,935,416 converted."""
    return _create("condensenet74_c8_g8", pretrained, False, **kwargs)


@register_model(model_cls=CondenseNet)
def condensenet86_cifar(pretrained: bool = False, **kwargs: Any) -> CondenseNet:
    """CIFAR CondenseNet-86 (14-14-14, k 8-16-32, C = G = 4; Table 3): 1,451,594 / 516,202 parameters (10 classes)."""
    return _create("condensenet86_cifar", pretrained, False, **kwargs)


@register_model(model_cls=CondenseNet)
def condensenet182_cifar(pretrained: bool = False, **kwargs: Any) -> CondenseNet:
    """CIFAR CondenseNet-182 (30-30-30, k 12-24-48, C = G = 4): 13,792,906 / 4,209,226 parameters (10 classes)."""
    return _create("condensenet182_cifar", pretrained, False, **kwargs)


@register_model(model_cls=CondenseNet)
def condensenet74_c4_g4_converted(pretrained: bool = False, **kwargs: Any) -> CondenseNet:
    """The deployment form of CondenseNet-74 C = G = 4 (load converted weights): 4,773,944 parameters."""
    return _create("condensenet74_c4_g4", pretrained, True, **kwargs)


@register_model(model_cls=CondenseNet)
def condensenet74_c8_g8_converted(pretrained: bool = False, **kwargs: Any) -> CondenseNet:
    """The deployment form of CondenseNet-74 C = G = 8: 2,935,416 parameters."""
    return _create("condensenet74_c8_g8", pretrained, True, **kwargs)


@register_model(model_cls=CondenseNet)
def condensenet86_cifar_converted(pretrained: bool = False, **kwargs: Any) -> CondenseNet:
    """The deployment form of CIFAR CondenseNet-86: 516,202 parameters (10 classes)."""
    return _create("condensenet86_cifar", pretrained, True, **kwargs)


@register_model(model_cls=CondenseNet)
def condensenet182_cifar_converted(pretrained: bool = False, **kwargs: Any) -> CondenseNet:
    """The deployment form of CIFAR CondenseNet-182: 4,209,226 parameters (10 classes)."""
    return _create("condensenet182_cifar", pretrained, True, **kwargs)
