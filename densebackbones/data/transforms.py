"""The paper's augmentations on torchvision ``transforms.v2``.

* ``'plus'`` (CIFAR "+", Sec. 4.1): zero-pad 4 px, random crop back to size, horizontal flip, normalise.
* ``'none'``: normalise only (the paper's C10/C100/SVHN runs, which use dropout 0.2 instead).
* ``'imagenet'`` (fb.resnet.torch, as the official DenseNet used): random-resized crop (area 0.08-1, ratio 3/4-4/3),
  colour jitter 0.4, PCA lighting (alpha 0.1), horizontal flip, normalise. Evaluation: resize 256, centre crop
  224, or ten crops.
* ``'imagenet_crop_flip'`` (PyTorch's ImageNet example, as PeleeNet's ``main.py`` trains): random-resized crop and
  horizontal flip only; evaluation as ``'imagenet'``.
* ``'shift'``: 1-px pad and random crop, for the 8x8 digits.
* ``'resize_flip'`` (CheXNet, Rajpurkar et al. 2017): resize to the square input size and flip horizontally;
  evaluation: resize only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.transforms import v2

__all__ = ["TorchSeeded", "Lighting", "build_train_transform", "build_eval_transform", "TenCropStack", "AUGMENTATIONS"]

# ImageNet RGB eigen-decomposition used by fb.resnet.torch (docs/reference.md).
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
AUGMENTATIONS = ("plus", "none", "imagenet", "imagenet_crop_flip", "shift", "resize_flip")
_IMAGENET_EVAL = ("imagenet", "imagenet_crop_flip")  # resize 256/224 and centre-crop at evaluation


class TorchSeeded:
    """Calls an albumentations pipeline with a seed drawn from torch's RNG on every call.

    Albumentations (>= 2.0) draws from generators of its own, seeded from the operating system unless ``Compose``
    gets a seed, so two runs with the same ``train.seed`` augmented differently and a failure (a NaN loss in a
    bf16 detection run) did not reproduce. Drawing each call's seed from torch ties the augmentation to the seed
    the trainer sets, to PyTorch's per-worker seeds (workers differ) and to the RNG state a checkpoint restores
    (a resumed run augments as the uninterrupted one would). ``generator`` (a numpy ``Generator``) replaces torch
    as the source, for a pipeline with a fixed seed of its own.
    """

    def __init__(self, pipeline, generator=None) -> None:
        self.pipeline, self.generator = pipeline, generator

    @property
    def transforms(self):
        """The wrapped pipeline's transforms (what ``A.Compose.transforms`` lists)."""
        return self.pipeline.transforms

    def __call__(self, **data):
        if self.generator is not None:
            seed = int(self.generator.integers(2**31))
        else:
            seed = int(torch.randint(2**31, ()))
        self.pipeline.set_random_seed(seed)
        return self.pipeline(**data)


class Lighting(torch.nn.Module):
    """AlexNet-style PCA lighting noise on a float image in [0, 1] (Krizhevsky et al. 2012, Sec. 4.1).

    Adds ``eigvec @ (alpha * eigval)`` with ``alpha ~ N(0, alphastd)`` per image, to every pixel.
    """

    def __init__(
        self,
        alphastd: float = 0.1,
        eigval: Sequence[float] = IMAGENET_PCA_EIGVAL,
        eigvec: Sequence[Sequence[float]] = IMAGENET_PCA_EIGVEC,
    ) -> None:
        super().__init__()
        self.alphastd = alphastd
        self.register_buffer("eigval", torch.tensor(eigval), persistent=False)
        self.register_buffer("eigvec", torch.tensor(eigvec), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        if self.alphastd == 0:
            return image
        if not image.is_floating_point() or image.shape[-3] != 3:
            raise ValueError("Lighting expects a float RGB image (3, H, W); put it after ToDtype(scale=True)")
        alpha = torch.randn(3) * self.alphastd
        rgb = self.eigvec @ (alpha * self.eigval)
        return image + rgb.view(3, 1, 1).to(image.dtype)


class TenCropStack(torch.nn.Module):
    """Ten crops (corners, centre and their flips) stacked into a (10, C, H, W) tensor."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.ten_crop = v2.TenCrop(size)

    def forward(self, image: Tensor) -> Tensor:
        return torch.stack(list(self.ten_crop(image)))


def _to_float(mean: Sequence[float], std: Sequence[float]) -> list[torch.nn.Module]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def _resized(ops: list, image_size: int, native_size: int | None) -> list:
    # Fixed-size sets (digits, CIFAR, SVHN, Fashion-MNIST) asked for another size are resized first (MSDNet's exits
    # need its coarsest scale at 5 px or more: 8 px digits go to 24 px).
    if native_size is None or native_size == image_size:
        return ops
    return [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True), *ops]


def build_train_transform(
    augment: str, image_size: int, mean: Sequence[float], std: Sequence[float], native_size: int | None = None
) -> v2.Compose:
    """Training transform by recipe name (see the module docstring); ``native_size``: the images' own size, resized
    to ``image_size`` first when they differ (the fixed-size recipes)."""
    if augment == "plus":
        ops = [v2.RandomCrop(image_size, padding=4, fill=0), v2.RandomHorizontalFlip(), *_to_float(mean, std)]
    elif augment == "shift":
        ops = [v2.RandomCrop(image_size, padding=1, fill=0), *_to_float(mean, std)]
    elif augment == "none":
        ops = _to_float(mean, std)
    elif augment == "imagenet":
        ops = [
            v2.ToImage(),
            v2.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
            v2.ToDtype(torch.float32, scale=True),
            Lighting(0.1),
            v2.RandomHorizontalFlip(),
            v2.Normalize(mean, std),
        ]
    elif augment == "imagenet_crop_flip":
        ops = [
            v2.ToImage(),
            v2.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            v2.RandomHorizontalFlip(),
            *_to_float(mean, std)[1:],
        ]
    elif augment == "resize_flip":
        ops = [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True), v2.RandomHorizontalFlip()]
        return v2.Compose([*ops, *_to_float(mean, std)[1:]])
    else:
        raise ValueError(f"unknown augmentation {augment!r}; use one of {AUGMENTATIONS}")
    return v2.Compose(ops if augment in _IMAGENET_EVAL else _resized(ops, image_size, native_size))


def build_eval_transform(
    augment: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    ten_crop: bool = False,
    native_size: int | None = None,
) -> v2.Compose:
    """Evaluation transform: ImageNet resizes to 256/224 of the crop and centre-crops (or ten-crops)."""
    if augment == "resize_flip" and not ten_crop:
        return v2.Compose(
            [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True), *_to_float(mean, std)[1:]]
        )
    if augment not in _IMAGENET_EVAL:
        if ten_crop:
            raise ValueError("ten-crop evaluation is defined for the ImageNet pipeline only")
        return v2.Compose(_resized(_to_float(mean, std), image_size, native_size))
    resize = round(image_size * 256 / 224)
    crop = TenCropStack(image_size) if ten_crop else v2.CenterCrop(image_size)
    return v2.Compose([v2.ToImage(), v2.Resize(resize, antialias=True), crop, *_to_float(mean, std)[1:]])
