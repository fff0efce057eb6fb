"""Output stride: dilated dense backbones for dense prediction (DeepLab, PSPNet, DenseASPP).

A backbone at ``output_stride`` 8 or 16 keeps the resolution of its later levels: the downsampling steps (a
transition's pooling, a stand-alone pool) that would take its stride past ``output_stride`` are removed, and every
3x3 convolution after such a step is dilated by the product of the factors removed so far, so that it sees the same
neighbourhood of the image as before. This is how DenseASPP (Yang et al., CVPR 2018, Sec. 3.2) runs DenseNet-121 at
stride 8 (the last two transitions' pooling removed, blocks 3 and 4 dilated by 2 and 4) and how timm's ResNets
implement ``output_stride``. Pooling layers have no parameters and dilation does not change a convolution's weight,
so the parameter names and shapes, and therefore the weights, are the same at every output stride.
"""

from __future__ import annotations

__all__ = ["OUTPUT_STRIDES", "DilationPlan", "check_output_stride"]

OUTPUT_STRIDES = (8, 16, 32)


def check_output_stride(
    output_stride: int, model: str = "this model", strides: tuple[int, ...] = OUTPUT_STRIDES, hint: str = ""
) -> int:
    """``output_stride`` if it is one of ``strides``; a ``ValueError`` naming the strides ``model`` takes otherwise
    (``hint``: why, where a model takes fewer)."""
    if isinstance(output_stride, bool) or output_stride not in strides:
        takes = " or ".join(", ".join(map(str, strides)).rsplit(", ", 1))
        only = " only" if len(strides) == 1 else " (32: the network as published; 8 and 16 dilate its later blocks)"
        raise ValueError(f"{model} takes output_stride={takes}{only}, got {output_stride!r}{hint}")
    return output_stride


class DilationPlan:
    """Which downsampling steps a backbone keeps at ``output_stride``, and the dilation of the layers after them.

    A constructor makes one after its stem (``stride``: the stem's reduction), asks :meth:`downsample` at every
    step that would halve the resolution, and builds the following 3x3 convolutions with :attr:`dilation`.

    Args:
        output_stride: 8, 16 or 32 (32: every step kept, no dilation).
        stride: the reduction before the first step (the stem's).
        model: the model's name, for the error message.
    """

    def __init__(self, output_stride: int, stride: int, model: str = "this model") -> None:
        self.output_stride = check_output_stride(output_stride, model)
        self.stride = stride
        self.dilation = 1

    def downsample(self, factor: int = 2) -> bool:
        """Whether the next downsampling step by ``factor`` is kept (the stride grows) or removed (the dilation of
        the layers after it grows instead)."""
        if self.stride * factor > self.output_stride:
            self.dilation *= factor
            return False
        self.stride *= factor
        return True
