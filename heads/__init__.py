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

from .fc_densenet import DenseSegmentor, FCDenseNet, FCDenseNetDecoder, FCDenseNetEncoder, TransitionUp

__all__ = [
    "SEGMENTATION_MODELS",
    "DenseSegmentor",
    "FCDenseNet",
    "FCDenseNetDecoder",
    "FCDenseNetEncoder",
    "TransitionUp",
    "create_segmentation_model",
    "list_segmentation_models",
    "segmentation_model_args",
]

# name -> (class, default arguments); module constant, deep-copied before use.
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


def list_segmentation_models() -> list[str]:
    return sorted(SEGMENTATION_MODELS)


def segmentation_model_args(name: str) -> list[str]:
    """Constructor arguments a config may set for ``name``."""
    if name not in SEGMENTATION_MODELS:
        raise unknown_name_error(name, list_segmentation_models(), "densebackbones.heads.list_segmentation_models()")
    cls = SEGMENTATION_MODELS[name][0]
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def create_segmentation_model(name: str, **kwargs: Any) -> nn.Module:
    """Create a registered segmentation model; ``kwargs`` override its defaults (``num_classes``, ...)."""
    if name not in SEGMENTATION_MODELS:
        raise unknown_name_error(name, list_segmentation_models(), "densebackbones.heads.list_segmentation_models()")
    cls, defaults = SEGMENTATION_MODELS[name]
    return cls(**dict(deepcopy(defaults), **kwargs))


if MODELS is not None:
    for _cls in (FCDenseNet, DenseSegmentor):
        MODELS.register_module(module=_cls)
    for _name in SEGMENTATION_MODELS:
        MODELS.register_module(name=_name, module=lambda _n=_name, **kw: create_segmentation_model(_n, **kw))
