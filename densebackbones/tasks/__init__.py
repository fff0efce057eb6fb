"""Task adapters for the shared trainer (``densebackbones.engine``): for classification, semantic segmentation and
detection, the model a config names, its loss, metric, data sets and data defaults, and what a finished run exports.
The tools are thin over these; the engine knows none of them."""

from .classification import CLS_DATA, ClassificationTask
from .detection import DET_DATA, DetectionTask
from .metrics import SegmentationMetric, TopKAccuracy
from .segmentation import SEG_DATA, SegmentationTask

__all__ = [
    "CLS_DATA",
    "DET_DATA",
    "SEG_DATA",
    "ClassificationTask",
    "DetectionTask",
    "SegmentationMetric",
    "SegmentationTask",
    "TopKAccuracy",
]
