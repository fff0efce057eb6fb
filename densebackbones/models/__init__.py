"""Model families, one per file. Importing this package registers every model."""

from .base import DenseBackbone
from .condensenet import CondenseNet, convert
from .densenet import MODEL_ARCHS as DENSENET_ARCHS
from .densenet import DenseNet, checkpoint_filter_fn, cifar_block_config
from .dsod import DSODNet
from .helpers import check_out_indices, check_state_dict_fits, load_checkpoint_into
from .msdnet import MSDNet
from .peleenet import PeleeNet

__all__ = [
    "CondenseNet",
    "DENSENET_ARCHS",
    "DSODNet",
    "DenseBackbone",
    "DenseNet",
    "MSDNet",
    "PeleeNet",
    "check_out_indices",
    "check_state_dict_fits",
    "checkpoint_filter_fn",
    "cifar_block_config",
    "convert",
    "load_checkpoint_into",
]
