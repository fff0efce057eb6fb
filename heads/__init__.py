"""Task heads over dense backbones, installed as ``densebackbones.heads``.

Heads consume only a backbone's ``feature_info`` and its ``features_only`` outputs, so each sits on any registered
dense backbone.

* Semantic segmentation: FC-DenseNet56/67/103 (``fc_densenet.py``) and the FC-DenseNet decoder on registered
  backbones, created by name with :func:`create_segmentation_model`.
* Detection: DSOD300 and its head on registered backbones (``dsod.py``) with SSD's default boxes, box coding,
  matching, multibox loss and post-processing (``ssd.py``); data sets, evaluation and tools are still to come.
"""

from __future__ import annotations

import inspect
from copy import deepcopy
from typing import Any

from torch import nn

from densebackbones.registry import MODELS, unknown_name_error

from .dsod import DSOD, DSODHead, dsod300, dsod300_lite
from .fc_densenet import DenseSegmentor, FCDenseNet, FCDenseNetDecoder, FCDenseNetEncoder, TransitionUp

__all__ = [
    "DETECTION_MODELS",
    "DSOD",
    "DSODHead",
    "SEGMENTATION_MODELS",
    "DenseSegmentor",
    "FCDenseNet",
    "FCDenseNetDecoder",
    "FCDenseNetEncoder",
    "TransitionUp",
    "create_detection_model",
    "create_segmentation_model",
    "detection_model_args",
    "dsod300",
    "dsod300_lite",
    "list_detection_models",
    "list_segmentation_models",
    "segmentation_model_args",
]


class _Table:
    """Named model configurations of one task: name -> (class, default arguments), deep-copied before use."""

    def __init__(self, entries: dict[str, tuple[type[nn.Module], dict[str, Any]]], lister: str) -> None:
        self.entries, self.lister = entries, lister

    def _entry(self, name: str) -> tuple[type[nn.Module], dict[str, Any]]:
        if name not in self.entries:
            raise unknown_name_error(name, sorted(self.entries), self.lister)
        return self.entries[name]

    def names(self) -> list[str]:
        return sorted(self.entries)

    def args(self, name: str) -> list[str]:
        return [p for p in inspect.signature(self._entry(name)[0].__init__).parameters if p != "self"]

    def create(self, name: str, **kwargs: Any) -> nn.Module:
        cls, defaults = self._entry(name)
        return cls(**dict(deepcopy(defaults), **kwargs))


SEGMENTATION_MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    # Jegou et al. 2017, Table 2: 4 layers per block, k=12 / 5 layers, k=16 / 4-5-7-10-12-15-..., k=16.
    "fc_densenet56": (FCDenseNet, dict(growth_rate=12, layers_per_block=4)),
    "fc_densenet67": (FCDenseNet, dict(growth_rate=16, layers_per_block=5)),
    "fc_densenet103": (FCDenseNet, dict(growth_rate=16, layers_per_block=(4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4))),
    # The FC-DenseNet103 up path (bottleneck 12, then 10-7-5-4) on ImageNet DenseNet-121 features (strides 2-32).
    "fc_densenet_bc121_k32": (
        DenseSegmentor,
        dict(encoder="densenet_bc121_k32", growth_rate=16, layers_per_block=(12, 10, 7, 5, 4)),
    ),
    "fc_densenet_bc169_k32": (
        DenseSegmentor,
        dict(encoder="densenet_bc169_k32", growth_rate=16, layers_per_block=(12, 10, 7, 5, 4)),
    ),
}
DETECTION_MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "dsod300": (DSOD, dict(backbone="dsod_ds64_192_48_1", backbone_indices=(1, 2))),  # Shen et al. 2017, Table 4
    # DSOD300-lite: DS-64-256-64-1 (layers per block reconstructed from its 10.4M parameters; models/dsod.py)
    "dsod300_lite": (DSOD, dict(backbone="dsod_ds64_256_64_1", backbone_indices=(1, 2))),
    # The DSOD head on ImageNet DenseNet-121 features (strides 16 and 32).
    "dsod_bc121_k32": (DSOD, dict(backbone="densenet_bc121_k32")),
}
_SEGMENTATION = _Table(SEGMENTATION_MODELS, "densebackbones.heads.list_segmentation_models()")
_DETECTION = _Table(DETECTION_MODELS, "densebackbones.heads.list_detection_models()")


def list_segmentation_models() -> list[str]:
    return _SEGMENTATION.names()


def segmentation_model_args(name: str) -> list[str]:
    """Constructor arguments a config may set for ``name``."""
    return _SEGMENTATION.args(name)


def create_segmentation_model(name: str, **kwargs: Any) -> nn.Module:
    """Create a registered segmentation model; ``kwargs`` override its defaults (``num_classes``, ...)."""
    return _SEGMENTATION.create(name, **kwargs)


def list_detection_models() -> list[str]:
    return _DETECTION.names()


def detection_model_args(name: str) -> list[str]:
    return _DETECTION.args(name)


def create_detection_model(name: str, **kwargs: Any) -> nn.Module:
    """Create a registered detector; ``kwargs`` override its defaults (``num_classes``, ``priors``, ...)."""
    return _DETECTION.create(name, **kwargs)


if MODELS is not None:
    for _cls in (FCDenseNet, DenseSegmentor, DSOD):
        MODELS.register_module(module=_cls)
    for _name in SEGMENTATION_MODELS:
        MODELS.register_module(name=_name, module=lambda _n=_name, **kw: create_segmentation_model(_n, **kw))
    for _name in DETECTION_MODELS:
        MODELS.register_module(name=_name, module=lambda _n=_name, **kw: create_detection_model(_n, **kw))
