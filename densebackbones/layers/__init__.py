"""Dense primitives shared by every family: layers, blocks, transitions, stems, the shared-buffer dense block."""

from .condense import (
    CondensedConv,
    CondensedLinear,
    CondenseLayer,
    LearnedGroupConv,
    channel_shuffle,
    condensation_stage,
)
from .conv import PaddedConv2d, conv2d
from .dense import (
    DenseBlock,
    DenseLayer,
    LayerFn,
    Transition,
    drop_path,
    drop_path_rates,
    memory_mode_of,
    set_memory_mode,
)
from .dilation import OUTPUT_STRIDES, DilationPlan, check_output_stride
from .routes import MEMORY_MODES, TECHNIQUES, block_route, check_memory_mode, resolve_memory_mode, unit_recomputes
from .shared_buffer import (
    PreActivationLayer,
    SharedBufferBlock,
    SharedBufferLayer,
    compute_layout,
    recompute_in_backward,
    set_cpu_channels_last,
)
from .stems import Stem, cifar_stem, imagenet_stem
from .two_way import ConvNormAct, StemBlock, TwoWayDenseLayer, two_way_bottleneck

__all__ = [
    "drop_path",
    "drop_path_rates",
    "PaddedConv2d",
    "conv2d",
    "MEMORY_MODES",
    "TECHNIQUES",
    "PreActivationLayer",
    "SharedBufferBlock",
    "SharedBufferLayer",
    "OUTPUT_STRIDES",
    "DilationPlan",
    "check_output_stride",
    "CondenseLayer",
    "CondensedConv",
    "CondensedLinear",
    "LearnedGroupConv",
    "channel_shuffle",
    "condensation_stage",
    "ConvNormAct",
    "StemBlock",
    "TwoWayDenseLayer",
    "two_way_bottleneck",
    "DenseBlock",
    "DenseLayer",
    "LayerFn",
    "Stem",
    "Transition",
    "block_route",
    "check_memory_mode",
    "cifar_stem",
    "compute_layout",
    "imagenet_stem",
    "memory_mode_of",
    "recompute_in_backward",
    "resolve_memory_mode",
    "set_cpu_channels_last",
    "set_memory_mode",
    "unit_recomputes",
]
