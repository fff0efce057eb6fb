"""densebackbones: densely connected networks for classification, segmentation and detection.

Importing it registers every model of every task, with densebackbones, timm (backbones) and mmengine.
"""

__version__ = "0.1.0"

from . import (
    heads,  # noqa: E402  (registers the segmentation and detection models; imports models)
    models,  # noqa: E402  (registers the backbones)
)
from .models import DenseNet, cifar_block_config  # noqa: E402
from .models.published import weights_meta  # noqa: E402
from .registry import (  # noqa: E402
    MODELS,
    TASKS,
    create_model,
    is_model,
    list_models,
    model_arg_names,
    model_entrypoint,
    model_task,
)

if MODELS is not None:  # mmengine installed (extra "mm"): register the OpenMMLab backbone wrapper
    from . import mm  # noqa: E402,F401

__all__ = [
    "MODELS",
    "TASKS",
    "DenseNet",
    "__version__",
    "cifar_block_config",
    "create_model",
    "heads",
    "is_model",
    "list_models",
    "model_arg_names",
    "model_entrypoint",
    "model_task",
    "models",
    "weights_meta",
]
