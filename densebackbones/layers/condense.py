"""CondenseNet's layers (Huang, Liu, van der Maaten, Weinberger, "CondenseNet: An Efficient DenseNet using Learned
Group Convolutions", CVPR 2018, Sec. 3), exact to the official code (ShichenLiu/CondenseNet, ``layers.py``).

* :class:`LearnedGroupConv`: BN-ReLU-(dropout)-1x1 convolution whose weight is multiplied by a mask buffer. Its
  ``G`` groups own the output channels ``g::G``; during the first half of training the mask drops, in ``C - 1``
  condensation stages, ``in // C`` further input channels per group and stage: those with the smallest L1 weight
  summed over the group's outputs (Sec. 3.1, "Condensation criterion"). Mask, stage and drop count are buffers, so
  a checkpoint resumed mid-training continues with them.
* The group-lasso penalty (Sec. 3.1, "Group lasso") of a learned group convolution, for the loss.
* :class:`CondensedConv` and :class:`CondensedLinear`: the deployment form after training (Sec. 3.2, Fig. 5): an
  index selection of the kept input channels, BN-ReLU, a grouped convolution and a channel shuffle; a classifier that
  keeps half of its input features.
* :class:`CondenseLayer`: a dense layer, learned group 1x1 (or its condensed form) then BN-ReLU-grouped 3x3; a layer
  of :class:`~densebackbones.layers.DenseBlock` (``layer_cls``), so CondenseNet's blocks have every memory mode.

Module and buffer names follow the official code (``conv_1.norm``, ``conv_1.conv``, ``_mask``, ``_stage``,
``_count``, ``conv_1.index``, ``classifier.linear``), so its checkpoints map onto ours by block and layer names alone.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .dense import LayerFn, concatenated, drop_path

__all__ = [
    "CondenseLayer",
    "CondensedConv",
    "CondensedLinear",
    "LearnedGroupConv",
    "condensation_stage",
    "channel_shuffle",
]


def condensation_stage(progress: float, condense_factor: int) -> int:
    """The condensation stage at training progress ``progress`` in [0, 1] (official ``_check_drop``): the first
    ``i`` in ``0..C-2`` with ``2 * progress < (i + 1) / (C - 1)``, else ``C - 1``. With C = 4 the stage rises at
    progress 1/6, 1/3 and 1/2; the second half of training runs on the condensed structure."""
    for i in range(condense_factor - 1):
        if progress * 2 < (i + 1) / (condense_factor - 1):
            return i
    return condense_factor - 1


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle: ``(N, G * c, H, W)`` with group-major channels to channel-major order."""
    n, chs, h, w = x.shape
    return x.view(n, groups, chs // groups, h, w).transpose(1, 2).reshape(n, chs, h, w)


class LearnedGroupConv(nn.Module):
    """BN-ReLU-(dropout)-1x1 conv with a learned, progressively condensed group structure.

    Args:
        in_chs: input channels (divisible by ``groups`` and ``condense_factor``).
        out_chs: output channels (divisible by ``groups``); group ``g`` owns outputs ``g, g + G, g + 2G, ...``.
        groups: G, the groups of the condensed convolution.
        condense_factor: C, each group keeps ``in_chs / C`` inputs at the end (default: G).
        drop_rate: dropout before the convolution (the official ``dropout_rate``, 0 in its recipes).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        groups: int,
        condense_factor: int | None = None,
        drop_rate: float = 0.0,
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
    ) -> None:
        super().__init__()
        condense_factor = condense_factor or groups
        for what, value, divisor in (
            ("input", in_chs, groups),
            ("input", in_chs, condense_factor),
            ("output", out_chs, groups),
        ):
            if value % divisor:
                raise ValueError(f"{divisor} does not divide the {value} {what} channels of a learned group conv")
        self.in_channels, self.out_channels = in_chs, out_chs
        self.groups, self.condense_factor = groups, condense_factor
        self.norm = norm_layer(in_chs)
        self.relu = act_layer(inplace=True)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        # Official buffer names and shapes (the mask has the weight's shape), for checkpoint compatibility.
        self.register_buffer("_count", torch.zeros(1))  # input channels dropped per group so far
        self.register_buffer("_stage", torch.zeros(1))  # condensation stage reached, 0..C-1
        self.register_buffer("_mask", torch.ones_like(self.conv.weight))

    # Masks only move one way (inputs are dropped, never restored), so an average of a mask's history by any weights
    # (an EMA or SWA copy that averages buffers: timm's ModelEmaV3, torch's AveragedModel) is below 1 exactly where
    # the live model has dropped the input: its floor is the live mask. Count and stage follow from the mask (each
    # stage drops in / C inputs per group), whatever an average made of their own buffers.
    @property
    def dropped(self) -> int:
        """Input channels each group has dropped."""
        return int((self._group_weight(self._mask[:, :, 0, 0])[0, 0] < 1).sum())

    @property
    def stage(self) -> int:
        return self.dropped // (self.in_channels // self.condense_factor)

    @property
    def condensed(self) -> bool:
        """Whether condensation has finished (stage C - 1: every group keeps ``in / C`` inputs)."""
        return self.stage >= self.condense_factor - 1

    @torch.no_grad()
    def restore_structure(self) -> None:
        """Mask, stage and count as the live model's (0/1 and whole numbers) where an average made them fractions."""
        self._mask.floor_()
        self._count.fill_(self.dropped)
        self._stage.fill_(self.stage)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.restore_structure()  # an EMA or SWA copy's checkpoint

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.relu(self.norm(x)))
        return F.conv2d(x, self.conv.weight * self._mask.floor())  # floor: an averaged copy's mask (see stage)

    def _group_weight(self, weight: Tensor) -> Tensor:
        """(G, out / G, in): group ``g``'s rows are outputs ``g::G``."""
        return weight.view(self.out_channels // self.groups, self.groups, self.in_channels).transpose(0, 1)

    @torch.no_grad()
    def update_condensation(self, progress: float) -> int:
        """Advance the mask to the stage of ``progress``; returns the input channels dropped per group now.

        Each stage passed drops ``in // C`` more inputs per group, those with the smallest L1 weight summed over the
        group's outputs (official ``_dropping``). The official code drops once per call, so a jump over two stages
        would drop one stage's worth; here every stage passed drops its share (the same when progress advances
        per iteration, as training does)."""
        stage = condensation_stage(progress, self.condense_factor)
        if stage <= self.stage:
            return 0
        delta = (stage - self.stage) * (self.in_channels // self.condense_factor)
        self._drop_inputs(delta)
        self._stage.fill_(stage)
        return delta

    def _drop_inputs(self, delta: int) -> None:
        mask = self._group_weight(self._mask[:, :, 0, 0])  # (G, out / G, in), a view of the mask
        importance = self._group_weight((self.conv.weight * self._mask).abs()[:, :, 0, 0]).sum(1)  # (G, in)
        # Inputs a group has dropped have zero weight; rank them first so that the next ``delta`` are new drops.
        importance = importance.masked_fill(mask[:, 0, :] == 0, -1.0)
        order = importance.argsort(dim=1, stable=True)[:, self.dropped : self.dropped + delta]
        for g in range(self.groups):
            mask[g][:, order[g]] = 0.0
        self._count.add_(delta)

    def lasso_loss(self) -> Tensor:
        """Group lasso (Sec. 3.1): the sum over groups and inputs of the L2 norm of the group's weights for that
        input, ``sqrt(max(sum W^2, 1e-6))``; zero once the stage reaches G - 1 (the official switch)."""
        if self.stage >= self.groups - 1:
            return self.conv.weight.new_zeros(())
        squares = self._group_weight((self.conv.weight * self._mask)[:, :, 0, 0].pow(2)).sum(1)
        return squares.clamp(min=1e-6).sqrt().sum()


class CondensedConv(nn.Module):
    """A condensed learned group convolution (official ``CondenseConv``): index selection of ``in * G / C`` inputs
    (each group's kept ones, group after group), BN-ReLU, a grouped 1x1 convolution and a channel shuffle that puts
    the outputs back in the learned layer's order.

    Build it empty (then load a converted checkpoint) or from a trained layer with :meth:`from_learned`."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        groups: int,
        condense_factor: int | None = None,
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
    ) -> None:
        super().__init__()
        condense_factor = condense_factor or groups
        self.in_channels = in_chs * groups // condense_factor
        self.out_channels, self.groups, self.condense_factor = out_chs, groups, condense_factor
        self.norm = norm_layer(self.in_channels)
        self.relu = act_layer(inplace=True)
        self.conv = nn.Conv2d(self.in_channels, out_chs, 1, groups=groups, bias=False)
        self.register_buffer("index", torch.zeros(self.in_channels, dtype=torch.long))

    @classmethod
    @torch.no_grad()
    def from_learned(cls, learned: LearnedGroupConv) -> CondensedConv:
        # Dropout is a training-time module: the deployed layer has none, as in the official conversion.
        norm_layer, act_layer = type(learned.norm), type(learned.relu)
        new = cls(
            learned.in_channels, learned.out_channels, learned.groups, learned.condense_factor, norm_layer, act_layer
        )
        new = new.to(learned.conv.weight.device, learned.conv.weight.dtype)
        mask = learned._group_weight(learned._mask.floor()[:, :, 0, 0])[:, 0, :]  # (G, in): a group's kept inputs
        kept = [mask[g].nonzero().flatten() for g in range(learned.groups)]
        per_group = new.in_channels // learned.groups
        if any(len(k) != per_group for k in kept):
            raise ValueError(
                f"a group keeps {[len(k) for k in kept]} inputs, not in / C = {per_group}: condensation has not "
                f"finished (stage {learned.stage} of {learned.condense_factor - 1})"
            )
        index = torch.cat(kept)
        new.index.copy_(index)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new.norm, name).copy_(getattr(learned.norm, name)[index])
        new.norm.num_batches_tracked.copy_(learned.norm.num_batches_tracked)
        # Group g's outputs g::G become rows g * out/G ... of the grouped conv, reading its own kept inputs.
        grouped = learned._group_weight(learned.conv.weight[:, :, 0, 0])  # (G, out / G, in)
        weight = torch.stack([grouped[g][:, kept[g]] for g in range(learned.groups)])  # (G, out / G, in / C)
        new.conv.weight.copy_(weight.reshape(learned.out_channels, per_group, 1, 1))
        return new

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.norm(x.index_select(1, self.index)))
        return channel_shuffle(self.conv(x), self.groups)


class CondensedLinear(nn.Module):
    """The condensed classifier (official ``CondenseLinear``): index selection of ``keep`` of the features, then a
    linear layer. :meth:`from_linear` keeps the features with the largest L1 weight over the classes."""

    def __init__(self, in_features: int, out_features: int, keep: float = 0.5) -> None:
        super().__init__()
        if not 0 < keep <= 1 or int(in_features * keep) < 1:
            raise ValueError(f"keep={keep} must be in (0, 1] and keep at least one of the {in_features} features")
        self.in_features, self.out_features = int(in_features * keep), out_features
        self.linear = nn.Linear(self.in_features, out_features)
        self.register_buffer("index", torch.zeros(self.in_features, dtype=torch.long))

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, keep: float = 0.5) -> CondensedLinear:
        new = cls(linear.in_features, linear.out_features, keep).to(linear.weight.device, linear.weight.dtype)
        # The official order: ascending L1 weight, the largest ``in_features`` kept.
        order = linear.weight.abs().sum(0).argsort(stable=True)
        index = order[linear.in_features - new.in_features :]
        new.index.copy_(index)
        new.linear.weight.copy_(linear.weight[:, index])
        new.linear.bias.copy_(linear.bias)
        return new

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.index_select(1, self.index))


class CondenseLayer(nn.Module):
    """CondenseNet's dense layer: learned group 1x1 (``bottleneck * k`` maps) then BN-ReLU-3x3 grouped conv (k maps).

    Args:
        in_chs: channels of the concatenated input.
        growth_rate: k.
        groups: G of the learned group 1x1 convolution.
        condense_factor: C (default G).
        group_3x3: groups of the 3x3 convolution.
        bottleneck: width factor of the 1x1 (4).
        drop_rate: dropout inside the learned group conv.
        drop_path_rate: stochastic depth on the layer's new maps (:func:`~densebackbones.layers.dense.drop_path`).
        converted: build the deployment form (:class:`CondensedConv`) instead of the learned one.
        dilation: dilation of the 3x3 convolution (padding too), for a reduced output stride (layers/dilation.py).

    Shape:
        Input: a tensor (N, in_chs, H, W) or a list of tensors whose channels sum to ``in_chs``.
        Output: (N, growth_rate, H, W).
    """

    preact = False  # the learned conv multiplies its weight by a mask: the shared buffer runs its own modules

    def __init__(
        self,
        in_chs: int,
        growth_rate: int,
        *,
        groups: int = 4,
        condense_factor: int | None = None,
        group_3x3: int = 4,
        bottleneck: int = 4,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        converted: bool = False,
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        width = bottleneck * growth_rate
        if converted:
            self.conv_1 = CondensedConv(in_chs, width, groups, condense_factor, norm_layer, act_layer)
        else:
            self.conv_1 = LearnedGroupConv(in_chs, width, groups, condense_factor, drop_rate, norm_layer, act_layer)
        self.conv_2 = nn.Sequential()
        self.conv_2.add_module("norm", norm_layer(width))
        self.conv_2.add_module("relu", act_layer(inplace=True))
        conv = nn.Conv2d(width, growth_rate, 3, padding=dilation, dilation=dilation, groups=group_3x3, bias=False)
        self.conv_2.add_module("conv", conv)
        self.drop_path = drop_path(drop_path_rate)

    def output_channels(self) -> int:
        """Maps the layer writes, as its convolutions stand now (a pruning tool may have narrowed them)."""
        return self.conv_2.conv.out_channels

    def forward(self, features):  # a Tensor or a sequence of Tensors; unannotated as DenseLayer.forward
        return self.drop_path(self.conv_2(self.conv_1(concatenated(features))))
