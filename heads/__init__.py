"""Task heads over dense backbones, installed as ``densebackbones.heads``.

Heads consume only a backbone's ``feature_info`` and its ``features_only`` outputs, so each sits on any registered
dense backbone. Their models are registered in the one registry (``densebackbones.create_model``,
``list_models(task=...)``, mmengine's ``type='densebackbones.<name>'``); ``import densebackbones`` imports this
package, so every model is registered from the start.

* Semantic segmentation (``fc_densenet.py``): FC-DenseNet56/67/103 and the FC-DenseNet decoder on registered
  backbones (``fc_densenet_bc121_k32``...); DenseASPP-121/161/169/201 on the DenseNets and on any pyramid backbone
  (``dense_aspp.py``); DeepLabV3 with torchvision's head on any pyramid backbone (``deeplab.py``).
* Detection: DSOD300, DSOD300-lite and the DSOD head on registered backbones (``dsod.py``); Pelee and its head on
  registered backbones (``pelee.py``); both single-shot detectors share SSD's default boxes, box coding, matching,
  multibox loss, post-processing and detector base class (``ssd.py``), and are trained and evaluated on VOC, COCO
  and a generated shapes set by ``tools/train_det.py``.
"""

from __future__ import annotations

from .deeplab import DeepLabV3, deeplabv3_densenet121
from .dense_aspp import DenseASPP, DenseASPPHead, dense_aspp121, dense_aspp161, dense_aspp169, dense_aspp201
from .dsod import DSOD, DSODHead, L2Norm, dsod300, dsod300_lite, dsod_bc121_k32
from .fc_densenet import (
    DenseSegmentor,
    FCDenseNet,
    FCDenseNetDecoder,
    FCDenseNetEncoder,
    TransitionUp,
    fc_densenet56,
    fc_densenet67,
    fc_densenet103,
    fc_densenet_bc121_k32,
    fc_densenet_bc169_k32,
)
from .pelee import Pelee, PeleeHead, ResBlock, pelee, pelee_bc121_k32
from .ssd import SingleShotDetector

__all__ = [
    "DSOD",
    "DeepLabV3",
    "DenseASPP",
    "DenseASPPHead",
    "DSODHead",
    "DenseSegmentor",
    "FCDenseNet",
    "FCDenseNetDecoder",
    "FCDenseNetEncoder",
    "L2Norm",
    "Pelee",
    "PeleeHead",
    "ResBlock",
    "SingleShotDetector",
    "TransitionUp",
    "deeplabv3_densenet121",
    "dense_aspp121",
    "dense_aspp161",
    "dense_aspp169",
    "dense_aspp201",
    "dsod300",
    "dsod300_lite",
    "dsod_bc121_k32",
    "fc_densenet56",
    "fc_densenet67",
    "fc_densenet103",
    "fc_densenet_bc121_k32",
    "fc_densenet_bc169_k32",
    "pelee",
    "pelee_bc121_k32",
]
