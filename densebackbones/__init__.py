"""densebackbones: densely connected networks for classification, segmentation and detection."""

__version__ = "0.1.0"

from . import models  # noqa: E402,F401  (registers every model)
from .models import DenseNet, cifar_block_config  # noqa: E402
from .registry import MODELS, create_model, is_model, list_models, model_entrypoint  # noqa: E402

if MODELS is not None:  # mmengine installed (extra "mm"): register the OpenMMLab backbone wrapper
    from . import mm  # noqa: E402,F401

__all__ = [
    "MODELS",
    "DenseNet",
    "__version__",
    "cifar_block_config",
    "create_model",
    "is_model",
    "list_models",
    "model_entrypoint",
]
