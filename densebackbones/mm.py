"""OpenMMLab adapter: any registered dense backbone as an mmengine ``BaseModule``.

In an mmsegmentation / mmdetection config (mmcv is not needed by densebackbones itself)::

    custom_imports = dict(imports=['densebackbones'], allow_failed_imports=False)
    model = dict(
        backbone=dict(
            type='densebackbones.DenseNetBackbone',
            arch='densenet_bc121_k32',
            out_indices=(1, 2, 3, 4),
            frozen_stages=1,
            norm_eval=True,
            init_cfg=dict(type='Pretrained', checkpoint='densenet121.pth'),
            output_stride=32,  # 8 or 16 for DeepLab-style heads (configs/seg/deeplabv3_densenet121_os8_*.py)
        ),
        ...)

The scope prefix ``densebackbones.`` makes mmengine look the type up in this package's registry (a child of
mmengine's root ``MODELS``), whatever the default scope of the calling project is.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from .models.densenet import DenseNet
from .models.msdnet import MSDNet
from .registry import MODELS, create_model

__all__ = ["MMPRETRAIN_ARCHS", "DenseNetBackbone", "act_layer_from_cfg", "norm_layer_from_cfg", "resolve_arch"]

# mmpretrain's DenseNet arch names (its ``arch_settings``: growth rate 32 or 48, the paper's depths, stem 2k) and the
# registered models that are the same networks.
MMPRETRAIN_ARCHS = {
    "121": "densenet_bc121_k32",
    "169": "densenet_bc169_k32",
    "201": "densenet_bc201_k32",
    "161": "densenet_bc161_k48",
}
# mmpretrain's dict form of ``arch`` and the DenseNet arguments its keys are.
_MMPRETRAIN_KEYS = {"growth_rate": "growth_rate", "depths": "block_config", "init_channels": "stem_width"}

_NORM_TYPES = {"BN": nn.BatchNorm2d, "BN2d": nn.BatchNorm2d, "SyncBN": nn.SyncBatchNorm, "GN": nn.GroupNorm}


def norm_layer_from_cfg(cfg: dict[str, Any]) -> Any:
    """Translate an OpenMMLab ``norm_cfg`` (``dict(type='SyncBN', momentum=0.01, requires_grad=False)``) into a
    norm-layer callable. ``requires_grad=False`` freezes the layers' weight and bias, as mmpretrain's and mmdet's
    backbones do (OpenMMLab's ``build_norm_layer``). The callable is a ``functools.partial`` of module-level
    functions, so that a backbone built from it pickles (``torch.save`` of the whole module)."""
    cfg = dict(cfg)
    kind = cfg.pop("type", "BN")
    requires_grad = bool(cfg.pop("requires_grad", True))
    if kind not in _NORM_TYPES:
        raise ValueError(f"unsupported norm type {kind!r}; use one of {sorted(_NORM_TYPES)}")
    if kind == "GN":
        if "num_groups" not in cfg:
            raise ValueError(
                "norm_cfg of type 'GN' needs num_groups (OpenMMLab's key), e.g. dict(type='GN', num_groups=32)"
            )
        return partial(_group_norm, cfg.pop("num_groups"), requires_grad, **cfg)
    return partial(_norm, _NORM_TYPES[kind], requires_grad, **cfg)


def _norm(layer_type: type[nn.Module], requires_grad: bool, num_channels: int, **kwargs: Any) -> nn.Module:
    return layer_type(num_channels, **kwargs).requires_grad_(requires_grad)


def _group_norm(num_groups: int, requires_grad: bool, num_channels: int, **kwargs: Any) -> nn.Module:
    return nn.GroupNorm(num_groups, num_channels, **kwargs).requires_grad_(requires_grad)


def act_layer_from_cfg(cfg: dict[str, Any]) -> Any:
    """Translate an OpenMMLab ``act_cfg`` (``dict(type='ReLU')``) into an activation callable from ``torch.nn``."""
    cfg = dict(cfg)
    kind = cfg.pop("type", "ReLU")
    cfg.pop("inplace", None)  # the layers pass inplace=True themselves
    layer = getattr(nn, kind, None)
    if not isinstance(layer, type) or not issubclass(layer, nn.Module):
        raise ValueError(f"unknown activation type {kind!r}; use a torch.nn activation name such as 'ReLU' or 'SiLU'")
    return partial(layer, **cfg)


def resolve_arch(arch: str | dict[str, Any]) -> str | dict[str, Any]:
    """A registered name or :class:`DenseNet` arguments for ``arch`` given as ours (a registered name or alias, or a
    dict of DenseNet arguments) or as mmpretrain's (``'121'``, ``'169'``, ``'201'``, ``'161'``, or
    ``dict(growth_rate=32, depths=(6, 12, 24, 16), init_channels=64)``)."""
    if isinstance(arch, str):
        return MMPRETRAIN_ARCHS.get(arch.lower().removeprefix("densenet-"), arch)
    if not isinstance(arch, dict):
        raise TypeError(f"arch must be a model name or a dict, got {type(arch).__name__}")
    mmpretrain_keys = set(arch) & set(_MMPRETRAIN_KEYS) - {"growth_rate"}
    if not mmpretrain_keys:
        return dict(arch)
    missing = set(_MMPRETRAIN_KEYS) - set(arch)
    extra = set(arch) - set(_MMPRETRAIN_KEYS)
    if missing or extra:
        raise ValueError(
            f"mmpretrain's arch dict needs exactly {sorted(_MMPRETRAIN_KEYS)}; got {sorted(arch)} "
            f"(for other DenseNet arguments use our form, e.g. dict(growth_rate=32, block_config=(6, 12, 24, 16)))"
        )
    return {
        ours: tuple(arch[theirs]) if theirs == "depths" else arch[theirs] for theirs, ours in _MMPRETRAIN_KEYS.items()
    }


@MODELS.register_module()
class DenseNetBackbone(BaseModule):
    """A dense backbone returning a tuple of feature maps, with OpenMMLab's backbone options.

    Args:
        arch: a registered backbone name (``densebackbones.list_models(task='classification')``) or a dict of
            :class:`DenseNet` arguments; mmpretrain's forms too (``'121'``, ``'169'``, ``'201'``, ``'161'``, or
            ``dict(growth_rate=..., depths=..., init_channels=...)``), see :func:`resolve_arch`.
        out_indices: feature levels to return (see the model's ``feature_info``); None returns all.
        frozen_stages: freeze every layer that feature levels ``0..frozen_stages`` depend on (parameters get no
            gradient, their BN layers stay in eval mode); -1 freezes nothing.
        norm_eval: keep every BatchNorm layer in eval mode during training (frozen running statistics), as
            OpenMMLab backbones do for small per-GPU batches.
        norm_cfg: optional OpenMMLab norm config (``dict(type='SyncBN')``) translated into ``norm_layer``.
        act_cfg: optional OpenMMLab activation config translated into ``act_layer``.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads a torchvision, timm or densebackbones checkpoint
            through the same checks as ``create_model`` when ``init_weights()`` is called.
        output_stride: 32 (the network as published), 16 or 8 for DeepLab-style heads (ASPPHead, PSPHead...): the
            pooling past that stride is removed and the later blocks dilated, with the same weights (so a
            Pretrained checkpoint loads at every value); ``feature_info`` gives the strides. MSDNet takes 32 only.
        **model_kwargs: further model arguments (``memory_efficient``, ``in_chans``, ``proj_drop_rate``...).

    Shape:
        Input: (N, C, H, W). Output: a tuple of (N, C_i, H / s_i, W / s_i), one per ``out_indices`` entry.
    """

    def __init__(
        self,
        arch: str | dict[str, Any] = "densenet_bc121_k32",
        out_indices: Sequence[int] | int | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        norm_cfg: dict[str, Any] | None = None,
        act_cfg: dict[str, Any] | None = None,
        init_cfg: dict[str, Any] | None = None,
        output_stride: int = 32,
        **model_kwargs: Any,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        model_kwargs["output_stride"] = output_stride
        if norm_cfg is not None:
            model_kwargs["norm_layer"] = norm_layer_from_cfg(norm_cfg)
        if act_cfg is not None:
            model_kwargs["act_layer"] = act_layer_from_cfg(act_cfg)
        self.arch = arch
        self._model_kwargs = dict(model_kwargs)
        arch = resolve_arch(arch)
        if isinstance(arch, str):
            self.model = create_model(arch, num_classes=0, **model_kwargs)
        else:
            self.model = DenseNet(**dict(arch, num_classes=0, **model_kwargs))
        self.feature_info = self.model.feature_info
        num_levels = len(self.feature_info)
        checked = self.model.checked_indices(out_indices)
        if isinstance(checked, int):
            checked = list(range(num_levels - checked, num_levels))
        self.out_indices = tuple(checked) if checked is not None else tuple(range(num_levels))
        self._drop_unused_exits(self.model)
        if not -1 <= frozen_stages < num_levels:
            raise ValueError(f"frozen_stages must be in -1..{num_levels - 1} (feature levels), got {frozen_stages}")
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self._freeze_stages()

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        # The taps' container ("features" of the dense families, "blocks" of MSDNet) in order, up to the last tap.
        container, last_tap = self.feature_info[self.frozen_stages]["module"].rsplit(".", 1)
        frozen = []
        for name, module in self.model.get_submodule(container).named_children():
            frozen.append(module)
            if name == last_tap:
                break
        return frozen

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained', checkpoint=...)`` with create_model's checks; else mmengine's."""
        if not (isinstance(self.init_cfg, dict) and self.init_cfg.get("type") == "Pretrained"):
            super().init_weights()
            return
        if not isinstance(self.arch, str):
            raise ValueError("init_cfg 'Pretrained' needs arch to be a registered model name, not a dict")
        checkpoint = self.init_cfg["checkpoint"]
        source = create_model(
            self.arch,
            pretrained=True,
            num_classes=0,
            pretrained_cfg_overlay=dict(file=checkpoint),
            **self._model_kwargs,
        )
        self._drop_unused_exits(source)
        self.model.load_state_dict(source.state_dict(), strict=True)
        self._is_init = True

    def _drop_unused_exits(self, model: nn.Module) -> None:
        """MSDNet's exits (and the blocks after the last level taken) feed no feature map: they are removed, so that
        every parameter of the backbone gets a gradient (DDP without ``find_unused_parameters``)."""
        if isinstance(model, MSDNet):
            model.prune_intermediate_layers(list(self.out_indices), prune_head=True)

    def train(self, mode: bool = True) -> DenseNetBackbone:
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(
            self.model.forward_intermediates(
                x, indices=list(self.out_indices), intermediates_only=True, stop_early=True
            )
        )


MODELS.register_module(module=DenseNet)
