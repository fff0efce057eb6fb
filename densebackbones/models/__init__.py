"""Model families, one per file. Importing this package registers every model."""

from .densenet import MODEL_ARCHS as DENSENET_ARCHS
from .densenet import DenseNet, checkpoint_filter_fn, cifar_block_config
from .dsod import DSODNet

__all__ = ["DENSENET_ARCHS", "DSODNet", "DenseNet", "checkpoint_filter_fn", "cifar_block_config"]
