"""FC-DenseNet, "The One Hundred Layers Tiramisu" (Jegou, Drozdzal, Vazquez, Romero, Bengio; CVPRW 2017).

Sec. 3 / Table 1 of the paper:

* first layer: 3x3 convolution with 48 filters;
* layer: BN-ReLU-3x3 conv (k filters)-Dropout(0.2), convolutions with bias, He-uniform initialisation;
* transition down: BN-ReLU-1x1 conv (same width)-Dropout(0.2)-2x2 max-pool;
* transition up: 3x3 transposed convolution, stride 2, applied only to the *new* feature maps of the previous
  dense block (Sec. 3.2: "to prevent the number of feature maps from exploding"), then concatenated with the skip;
* up-path blocks pass on only their new maps; the last block's output is concatenated with its input before the
  final 1x1 convolution.

The transposed convolution gives ``2h + 1`` pixels for an input of ``h``; it is centre-cropped (or padded, for
encoders whose strides round up) to the skip's size, so any input size works and logits have the input's size.

:class:`FCDenseNetDecoder` is the up path on its own, built from an encoder's ``feature_info`` (channels and
strides of the maps it returns, shallow to deep); :class:`FCDenseNet` is the paper's encoder plus that decoder,
and :class:`DenseSegmentor` puts the decoder on any registered dense backbone (``features_only``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import generate_default_cfgs
from torch import Tensor

from densebackbones.layers import (
    DenseBlock,
    LayerFn,
    Transition,
    compute_layout,
    memory_mode_of,
    resolve_memory_mode,
    set_memory_mode,
)
from densebackbones.models import checks
from densebackbones.models.helpers import InputSizeCheck, build_task_model, task_cfg
from densebackbones.models.published import with_published
from densebackbones.registry import create_model, register_model

__all__ = ["TransitionUp", "FCDenseNetEncoder", "FCDenseNetDecoder", "FCDenseNet", "DenseSegmentor", "match_size"]


def match_size(x: Tensor, size: list[int]) -> Tensor:
    """Centre-crop or zero-pad the last two dimensions of ``x`` to ``size`` (a crop keeps the first of two middle
    rows; a pad puts the odd row after)."""
    if torch.jit.is_scripting():
        return _match_size_branching(x, size)
    return _match_size_branch_free(x, size)


def _match_size_branching(x: Tensor, size: list[int]) -> Tensor:
    """:func:`match_size` as TorchScript compiles it (it knows no ``torch.sym_ite``)."""
    for dim, target in ((-2, size[0]), (-1, size[1])):
        current = x.shape[dim]
        if current > target:
            x = x.narrow(dim, (current - target) // 2, target)
        elif current < target:
            before = (target - current) // 2
            pad = [0, 0, before, target - current - before] if dim == -2 else [before, target - current - before, 0, 0]
            x = F.pad(x, pad)
    return x


@torch.jit.unused
def _match_size_branch_free(x: Tensor, size: list[int]) -> Tensor:
    """A pad and a crop per dimension, their amounts chosen by ``torch.sym_max`` rather than an ``if``: exported
    with a dynamic height and width (torch.export), a branch on sizes would pin them to the example's."""
    for dim, target in ((-2, size[0]), (-1, size[1])):
        delta = target - x.shape[dim]
        if not isinstance(delta, torch.SymInt) and delta == 0:  # eager: no copy where nothing changes
            continue
        # a non-negative pad, then a crop: negative pads (crops) are refused by ExecuTorch's pad kernel
        grow, shrink = torch.sym_max(delta, 0), torch.sym_max(-delta, 0)
        before = grow // 2
        x = F.pad(x, [0, 0, before, grow - before] if dim == -2 else [before, grow - before, 0, 0])
        x = x.narrow(dim, shrink // 2, target)
    return x


def resize_logits(logits: Tensor, size: list[int]) -> Tensor:
    """``logits`` bilinearly resized to ``size`` (height, width) where their size differs (an encoder of output
    stride > 1)."""
    if logits.shape[-2] == size[0] and logits.shape[-1] == size[1]:
        return logits
    return F.interpolate(logits, size=(size[0], size[1]), mode="bilinear", align_corners=False)


# Under torch.fx (and torchvision's create_feature_extractor) both are single graph nodes, called with the traced
# sizes when the graph runs: their branches depend on sizes a symbolic trace does not know.
torch.fx.wrap("match_size")
torch.fx.wrap("resize_logits")


class TransitionUp(nn.Module):
    """3x3 transposed convolution, stride 2, then centre-crop to the skip and concatenate it (Sec. 3.2).

    ``scale=1`` (a backbone with two levels at the same stride, as the CIFAR DenseNets' stem and first block)
    uses a 3x3 convolution instead, so that nothing is upsampled and then cropped out of alignment.

    Shape:
        Input: ``x`` (N, in_chs, h, w) and ``skip`` (N, C_skip, H, W). Output: (N, out_chs + C_skip, H, W).
    """

    def __init__(self, in_chs: int, out_chs: int, scale: int = 2) -> None:
        super().__init__()
        if scale == 2:
            self.conv = nn.ConvTranspose2d(in_chs, out_chs, kernel_size=3, stride=2, bias=True)
        elif scale == 1:
            self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1, bias=True)
        else:
            raise ValueError(f"TransitionUp supports scale 1 or 2 between consecutive levels, got {scale}")

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return torch.cat([match_size(self.conv(x), [skip.shape[-2], skip.shape[-1]]), skip], 1)


def _check_block_args(growth_rate, drop_rate, norm_layer, act_layer, memory_efficient) -> None:
    checks.check_int("growth_rate", growth_rate, 1, "k of the dense blocks: FC-DenseNet56 12, 67 and 103 16")
    checks.check_rate("drop_rate", drop_rate)
    checks.check_layers(norm_layer, act_layer, memory_efficient)


def _block_layer_kwargs(drop_rate: float, norm_layer: LayerFn, act_layer: LayerFn, memory_efficient: bool) -> dict:
    # Paper's layer: BN-ReLU-3x3 conv-Dropout, no bottleneck, convolutions with bias.
    return dict(
        bn_size=None,
        drop_rate=drop_rate,
        norm_layer=norm_layer,
        act_layer=act_layer,
        memory_mode="efficient" if memory_efficient else "buffer",
        conv_bias=True,
    )


class FCDenseNetEncoder(nn.Module):
    """The paper's down path: first conv, then (dense block, transition down) per level.

    ``forward`` returns the skip maps (the dense block outputs, strides 1, 2, 4...) and, last, the output of the
    final transition down, described by ``feature_info`` like any backbone's features.
    """

    def __init__(
        self,
        in_chans: int,
        growth_rate: int,
        layers_per_block: Sequence[int],
        first_conv_chs: int = 48,
        drop_rate: float = 0.2,
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        checks.check_int("in_chans", in_chans, 1, "3 for RGB, 1 for grey images")
        _check_block_args(growth_rate, drop_rate, norm_layer, act_layer, memory_efficient)
        checks.check_ints("layers_per_block", layers_per_block, 1, hint="layers of each down-path block")
        checks.check_int("first_conv_chs", first_conv_chs, 1, "filters of the first convolution (48)")
        self.in_chans = in_chans
        layer_kwargs = _block_layer_kwargs(drop_rate, norm_layer, act_layer, memory_efficient)
        self.first_conv = nn.Conv2d(in_chans, first_conv_chs, kernel_size=3, padding=1, bias=True)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        self.feature_info: list[dict[str, Any]] = []
        chs, stride = first_conv_chs, 1
        for i, num_layers in enumerate(layers_per_block):
            block = DenseBlock(num_layers, chs, growth_rate, **layer_kwargs)
            chs = block.out_chs
            self.blocks.append(block)
            self.feature_info.append(dict(num_chs=chs, reduction=stride, module=f"blocks.{i}"))
            self.transitions.append(
                Transition(
                    chs,
                    chs,
                    pool="max",
                    drop_rate=drop_rate,
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                    conv_bias=True,
                )
            )
            stride *= 2
        self.feature_info.append(dict(num_chs=chs, reduction=stride, module=f"transitions.{len(self.blocks) - 1}"))

    def forward(self, x: Tensor) -> list[Tensor]:
        # The input in the first block's compute layout (channels_last on the CPU), so that the first convolution
        # runs in it too instead of the block converting its 48-map output.
        x = self.first_conv(self._compute_layout(x))
        features: list[Tensor] = []
        for block, transition in zip(self.blocks, self.transitions):
            x = block(x)
            features.append(x)
            x = transition(x)
        features.append(x)
        return features

    def _compute_layout(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # scripted blocks concatenate in the input's layout (layers/routes.py)
            return x
        return self._eager_compute_layout(x)

    @torch.jit.unused
    def _eager_compute_layout(self, x: Tensor) -> Tensor:
        return compute_layout(x, self.blocks[0]) if len(self.blocks) else x


class FCDenseNetDecoder(nn.Module):
    """FC-DenseNet up path over any encoder: bottleneck block, then (transition up + skip, dense block) per level.

    Args:
        encoder_channels: channels of the encoder's maps, shallow to deep (``feature_info.channels()``); the last
            feeds the bottleneck block, the others are skips.
        encoder_reductions: their strides (``feature_info.reduction()``); logits are upsampled bilinearly by the
            shallowest stride when it is above 1 (a backbone whose first map is at stride 2 or 4).
        num_classes: output classes.
        growth_rate: k of the decoder's dense blocks.
        layers_per_block: layers of the bottleneck block followed by each up block (one more than the skips), or
            one int for all.
        drop_rate, norm_layer, act_layer, memory_efficient: as for the dense layers.

    Shape:
        Input: the encoder's maps. Output: (N, num_classes, H, W) with (H, W) = ``output_size``.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_reductions: Sequence[int],
        num_classes: int,
        growth_rate: int = 16,
        layers_per_block: int | Sequence[int] = 4,
        drop_rate: float = 0.2,
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        checks.check_ints("encoder_channels", encoder_channels, 1, hint="the encoder's feature_info.channels()")
        checks.check_ints("encoder_reductions", encoder_reductions, 1, hint="the encoder's feature_info.reduction()")
        checks.check_int("num_classes", num_classes, 1, "output classes of the segmentation")
        _check_block_args(growth_rate, drop_rate, norm_layer, act_layer, memory_efficient)
        if len(encoder_channels) < 2 or len(encoder_channels) != len(encoder_reductions):
            raise ValueError(
                f"the decoder needs at least two encoder levels with one stride each, got channels "
                f"{list(encoder_channels)} and strides {list(encoder_reductions)}"
            )
        num_skips = len(encoder_channels) - 1
        if isinstance(layers_per_block, int):
            layers_per_block = [checks.check_int("layers_per_block", layers_per_block, 1)] * (num_skips + 1)
        checks.check_ints("layers_per_block", layers_per_block, 1, hint="an int, or one count per decoder block")
        if len(layers_per_block) != num_skips + 1:
            raise ValueError(
                f"layers_per_block needs {num_skips + 1} entries (bottleneck + {num_skips} up blocks) for an "
                f"encoder with {num_skips + 1} levels, got {list(layers_per_block)}"
            )
        layer_kwargs = _block_layer_kwargs(drop_rate, norm_layer, act_layer, memory_efficient)
        self.output_stride = encoder_reductions[0]
        # Bottleneck (Sec. 3.2): only its new maps are upsampled.
        self.bottleneck = DenseBlock(
            layers_per_block[0], encoder_channels[-1], growth_rate, concat_input=False, **layer_kwargs
        )
        self.transitions_up = nn.ModuleList()
        self.blocks = nn.ModuleList()
        new_maps = self.bottleneck.out_chs
        skips = list(encoder_channels[:-1])[::-1]
        reductions = list(encoder_reductions)[::-1]
        for i, (num_layers, skip_chs) in enumerate(zip(layers_per_block[1:], skips)):
            scale = reductions[i] // reductions[i + 1]
            if scale not in (1, 2) or reductions[i] % reductions[i + 1]:
                raise ValueError(
                    f"consecutive encoder strides must double or stay equal, got {reductions[i + 1]} -> "
                    f"{reductions[i]} in {list(encoder_reductions)}; pick out_indices accordingly"
                )
            self.transitions_up.append(TransitionUp(new_maps, new_maps, scale))
            last = i == num_skips - 1
            block = DenseBlock(num_layers, new_maps + skip_chs, growth_rate, concat_input=last, **layer_kwargs)
            self.blocks.append(block)
            new_maps = block.out_chs
        self.classifier = nn.Conv2d(new_maps, num_classes, kernel_size=1, bias=True)

    # list annotations (not Sequence), which TorchScript compiles; any sequence works in Python.
    def forward(self, features: list[Tensor], output_size: list[int] | None = None) -> Tensor:
        x = self.bottleneck(features[-1])
        # Skips from the deepest up: features[-2], features[-3]...
        for i, (transition_up, block) in enumerate(zip(self.transitions_up, self.blocks)):
            x = block(transition_up(x, features[-2 - i]))
        logits = self.classifier(x)
        if output_size is not None:
            logits = resize_logits(logits, [output_size[0], output_size[1]])
        return logits


def _he_uniform(module: nn.Module) -> None:
    # HeUniform for every (transposed) convolution, zero biases, as the original Lasagne code.
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class _BatchStatsAtTest:
    """Mixin: with ``batch_stats_at_test`` the model normalises with the batch's statistics in eval mode too (the
    original code's behaviour), without touching the running statistics."""

    # batch_stats_at_test (a bool) is set by each model; no class annotation, which TorchScript would fail to resolve.
    # Where checkpoint loading finds the classifier (replaced when its size differs), as timm's configs say.
    pretrained_cfg = {"classifier": "decoder.classifier", "first_conv": None}

    def _forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and self.batch_stats_at_test:
            if torch.jit.is_scripting():
                raise RuntimeError(
                    "batch_stats_at_test=True does not script (it switches BN modes around the forward); use "
                    "torch.export or torch.jit.trace"
                )
            return self._forward_with_batch_stats(x)
        return self._forward(x)

    @torch.jit.unused
    def _forward_with_batch_stats(self, x: Tensor) -> Tensor:
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [(buf, buf.clone()) for m in norms for buf in m.buffers()]
        for m in norms:
            m.train()
        try:
            return self._forward(x)
        finally:
            with torch.no_grad():
                for buf, value in saved:
                    buf.copy_(value)
            for m in norms:
                m.eval()


class _MemoryModes:
    """``memory_mode`` and ``set_memory_mode`` of a segmentation model, as the backbones have them
    (``layers/routes.py``: every mode gives the same results)."""

    # Eager-side switches read over the module tree: not compiled by TorchScript.
    __jit_unused_properties__ = ["memory_mode"]

    @property
    def memory_mode(self) -> str:
        """The dense blocks' memory mode (``'mixed'`` if they differ)."""
        return memory_mode_of(self)

    @torch.jit.unused
    def set_memory_mode(self, mode: str) -> None:
        """Switch every dense block (encoder and decoder) to ``'plain'``, ``'buffer'`` or ``'efficient'``."""
        set_memory_mode(self, mode)


class FCDenseNet(_MemoryModes, InputSizeCheck, _BatchStatsAtTest, nn.Module):
    """FC-DenseNet for semantic segmentation (FC-DenseNet56/67/103 are its registered configurations).

    Args:
        num_classes: output classes (CamVid: 11; void is ignored in loss and metrics).
        in_chans: input channels.
        growth_rate: k (56: 12; 67 and 103: 16).
        layers_per_block: layers of the 2n+1 dense blocks, down path, bottleneck, up path (an int: all equal).
        first_conv_chs: filters of the first convolution (48).
        drop_rate: dropout after every convolution but the first and the transposed ones (0.2).
        batch_stats_at_test: normalise with batch statistics in eval mode as the original code did.
        norm_layer, act_layer, memory_efficient: as for the dense layers.
        memory_mode: ``'plain'``, ``'buffer'`` (default) or ``'efficient'`` for every dense block (as the backbones'
            argument; ``memory_efficient=True`` is ``'efficient'``).

    Shape:
        Input: (N, in_chans, H, W) with H, W >= 2 ** n (32 for five pools). Output: (N, num_classes, H, W).
    """

    def __init__(
        self,
        num_classes: int = 11,
        in_chans: int = 3,
        *,
        growth_rate: int = 16,
        layers_per_block: int | Sequence[int] = (4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4),
        first_conv_chs: int = 48,
        drop_rate: float = 0.2,
        batch_stats_at_test: bool = False,
        norm_layer: LayerFn = nn.BatchNorm2d,
        act_layer: LayerFn = nn.ReLU,
        memory_efficient: bool = False,
        memory_mode: str | None = None,
    ) -> None:
        super().__init__()
        memory_mode = resolve_memory_mode(memory_efficient, memory_mode)
        checks.check_int("num_classes", num_classes, 1, "output classes, e.g. CamVid: 11")
        checks.check_int("in_chans", in_chans, 1, "3 for RGB, 1 for grey images")
        checks.check_flag("batch_stats_at_test", batch_stats_at_test)
        if isinstance(layers_per_block, int):
            layers_per_block = [checks.check_int("layers_per_block", layers_per_block, 1)] * 11
        hint = "layers of the 2n+1 blocks, e.g. (4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4), or one int"
        layers_per_block = list(checks.check_ints("layers_per_block", layers_per_block, 1, hint=hint))
        if len(layers_per_block) % 2 == 0 or len(layers_per_block) < 3:
            raise ValueError(
                f"layers_per_block needs an odd number of blocks (down path, bottleneck, up path of equal length), "
                f"got {len(layers_per_block)}: {layers_per_block}"
            )
        num_pools = len(layers_per_block) // 2
        self.num_classes = num_classes
        self.batch_stats_at_test = batch_stats_at_test
        self.in_chans, self.min_input_size = in_chans, 2**num_pools
        self.input_size_reason = f"the size that survives {num_pools} poolings"
        common = dict(
            drop_rate=drop_rate, norm_layer=norm_layer, act_layer=act_layer, memory_efficient=memory_efficient
        )
        self.encoder = FCDenseNetEncoder(in_chans, growth_rate, layers_per_block[:num_pools], first_conv_chs, **common)
        self.decoder = FCDenseNetDecoder(
            [info["num_chs"] for info in self.encoder.feature_info],
            [info["reduction"] for info in self.encoder.feature_info],
            num_classes,
            growth_rate,
            layers_per_block[num_pools:],
            **common,
        )
        set_memory_mode(self, memory_mode)
        _he_uniform(self)

    def _forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.decoder(self.encoder(x), [x.shape[-2], x.shape[-1]])


class DenseSegmentor(_MemoryModes, InputSizeCheck, _BatchStatsAtTest, nn.Module):
    """An FC-DenseNet decoder on any registered dense backbone (``features_only``), full-resolution logits.

    Args:
        encoder: registered backbone name (``densebackbones.list_models()``).
        num_classes: output classes.
        encoder_kwargs: passed to ``create_model`` (``pretrained=True``, ``pretrained_cfg_overlay``,
            ``memory_efficient``, ``in_chans``...).
        out_indices: backbone levels used as skips and bottleneck input (default: all).
        growth_rate, layers_per_block, drop_rate: of the decoder.
        batch_stats_at_test: as in :class:`FCDenseNet`.
        memory_efficient: memory-efficient dense layers in the encoder and the decoder.
        memory_mode: ``'plain'``, ``'buffer'`` (default) or ``'efficient'`` for every dense block, encoder and decoder.
    """

    def __init__(
        self,
        encoder: str = "densenet_bc121_k32",
        num_classes: int = 11,
        *,
        encoder_kwargs: dict[str, Any] | None = None,
        out_indices: Sequence[int] | None = None,
        growth_rate: int = 16,
        layers_per_block: int | Sequence[int] = 4,
        drop_rate: float = 0.2,
        batch_stats_at_test: bool = False,
        memory_efficient: bool = False,
        memory_mode: str | None = None,
    ) -> None:
        super().__init__()
        memory_mode = resolve_memory_mode(memory_efficient, memory_mode)
        checks.check_backbone_name("encoder", encoder)
        kwargs = dict(checks.check_optional_dict("encoder_kwargs", encoder_kwargs))
        checks.check_int("num_classes", num_classes, 1, "output classes, e.g. CamVid: 11")
        if out_indices is not None:
            checks.check_ints("out_indices", out_indices, -100, hint="backbone levels used as skips and bottleneck")
        checks.check_flag("batch_stats_at_test", batch_stats_at_test)
        _check_block_args(growth_rate, drop_rate, nn.BatchNorm2d, nn.ReLU, memory_efficient)
        if not isinstance(layers_per_block, int) or isinstance(layers_per_block, bool):
            checks.check_ints("layers_per_block", layers_per_block, 1, hint="an int, or one per decoder block")
        else:
            checks.check_int("layers_per_block", layers_per_block, 1, "layers of every decoder block")
        kwargs.setdefault("memory_efficient", memory_efficient)
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        self.num_classes = num_classes
        self.batch_stats_at_test = batch_stats_at_test
        self.encoder = create_model(encoder, features_only=True, **kwargs)
        backbone = getattr(self.encoder, "model", self.encoder)  # timm's features_only wrapper keeps it as .model
        self.in_chans, self.min_input_size = backbone.in_chans, backbone.min_input_size
        self.input_size_reason = f"the minimum of its encoder {encoder}"
        info = self.encoder.feature_info
        self.decoder = FCDenseNetDecoder(
            info.channels(),
            info.reduction(),
            num_classes,
            growth_rate,
            layers_per_block,
            drop_rate=drop_rate,
            memory_efficient=memory_efficient,
        )
        _he_uniform(self.decoder)
        set_memory_mode(self, memory_mode)

    def _forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.decoder(self.encoder(x), [x.shape[-2], x.shape[-1]])


# ------------------------------------------------------------------------------------------------ registered models
def _cfg() -> dict[str, Any]:
    # CamVid as FC-DenseNet trains on it: 11 classes (void ignored), 360x480 images, its per-channel statistics
    # (densebackbones.data.segmentation).
    camvid = dict(mean=(0.4112, 0.4252, 0.4329), std=(0.3070, 0.3118, 0.3057))
    return task_cfg(11, (3, 360, 480), "decoder.classifier", "arXiv:1611.09326", **camvid)


default_cfgs = generate_default_cfgs(
    with_published(
        {
            "fc_densenet56": _cfg(),
            "fc_densenet67": _cfg(),
            "fc_densenet103": _cfg(),
            "fc_densenet_bc121_k32": _cfg(),
            "fc_densenet_bc169_k32": _cfg(),
        }
    )
)


def _create(model_cls: type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    return build_task_model(model_cls, variant, pretrained, default_cfgs, **kwargs)


@register_model(task="segmentation", model_cls=FCDenseNet)
def fc_densenet56(pretrained: bool = False, **kwargs: Any) -> FCDenseNet:
    """FC-DenseNet56 (Table 2): 4 layers per block, k=12."""
    model_args = dict(growth_rate=12, layers_per_block=4)
    return _create(FCDenseNet, "fc_densenet56", pretrained, **dict(model_args, **kwargs))


@register_model(task="segmentation", model_cls=FCDenseNet)
def fc_densenet67(pretrained: bool = False, **kwargs: Any) -> FCDenseNet:
    """FC-DenseNet67 (Table 2): 5 layers per block, k=16."""
    model_args = dict(growth_rate=16, layers_per_block=5)
    return _create(FCDenseNet, "fc_densenet67", pretrained, **dict(model_args, **kwargs))


@register_model(task="segmentation", model_cls=FCDenseNet)
def fc_densenet103(pretrained: bool = False, **kwargs: Any) -> FCDenseNet:
    """FC-DenseNet103 (Table 2): 4-5-7-10-12-15-12-10-7-5-4 layers, k=16."""
    model_args = dict(growth_rate=16, layers_per_block=(4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4))
    return _create(FCDenseNet, "fc_densenet103", pretrained, **dict(model_args, **kwargs))


@register_model(task="segmentation", model_cls=DenseSegmentor)
def fc_densenet_bc121_k32(pretrained: bool = False, **kwargs: Any) -> DenseSegmentor:
    """FC-DenseNet103's up path (bottleneck 12, then 10-7-5-4, k=16) on ImageNet DenseNet-121 features."""
    model_args = dict(encoder="densenet_bc121_k32", growth_rate=16, layers_per_block=(12, 10, 7, 5, 4))
    return _create(DenseSegmentor, "fc_densenet_bc121_k32", pretrained, **dict(model_args, **kwargs))


@register_model(task="segmentation", model_cls=DenseSegmentor)
def fc_densenet_bc169_k32(pretrained: bool = False, **kwargs: Any) -> DenseSegmentor:
    """FC-DenseNet103's up path on ImageNet DenseNet-169 features."""
    model_args = dict(encoder="densenet_bc169_k32", growth_rate=16, layers_per_block=(12, 10, 7, 5, 4))
    return _create(DenseSegmentor, "fc_densenet_bc169_k32", pretrained, **dict(model_args, **kwargs))
