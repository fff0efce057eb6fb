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
* ``'timm'``: timm's own ImageNet training transform (``timm.data.create_transform``: random-resized crop, flip,
  colour jitter unless an auto-augmentation is set, the auto-augmentation, normalise, random erasing), as timm's
  ``train.py`` builds it; evaluation: as the ImageNet recipes (resize by the crop fraction, centre crop), which is
  timm's evaluation transform at the same ``crop_pct``.

Modern recipe options (:class:`AugmentOptions`, the config's data keys) add to every recipe but ``'none'``: an
auto-augmentation policy on the image (timm's strings: ``'rand-m9-mstd0.5-inc1'`` RandAugment, ``'original'``
AutoAugment, ``'augmix-m5-w4-d2'``; torchvision's ``'cifar10'`` AutoAugment policy and ``'ta_wide'``
TrivialAugment), then after normalisation Cutout (a ``cutout`` x ``cutout`` zero square, DeVries and Taylor 2017,
torchvision's ``RandomErasing``) and timm's ``RandomErasing`` (``re_prob``, ``re_mode``, ``re_count``). The ImageNet
recipes evaluate at ``test_size`` with ``test_crop_pct`` (timm's ``test_input_size`` and ``test_crop_pct``) and
resize with ``interpolation``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms import v2

__all__ = [
    "AUGMENTATIONS",
    "AUTO_AUGMENT_TORCHVISION",
    "AugmentOptions",
    "Lighting",
    "TenCropStack",
    "TorchSeeded",
    "build_eval_transform",
    "build_train_transform",
    "keep_one_posterize_bit",
]

# ImageNet RGB eigen-decomposition used by fb.resnet.torch (docs/reference.md).
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
AUGMENTATIONS = ("plus", "none", "imagenet", "imagenet_crop_flip", "shift", "resize_flip", "timm")
_IMAGENET_EVAL = ("imagenet", "imagenet_crop_flip", "timm")  # resize by the crop fraction and centre-crop at evaluation
AUTO_AUGMENT_TORCHVISION = ("cifar10", "ta_wide")  # torchvision's CIFAR-10 AutoAugment policy and TrivialAugmentWide
_TIMM_AUTO_AUGMENT = ("rand", "augmix", "original", "originalr", "v0", "v0r", "3a")  # timm's policy names (prefixes)
_INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class AugmentOptions:
    """The modern recipe options of a classification config (see the module docstring): all off by default."""

    auto_augment: str | None = None
    re_prob: float = 0.0
    re_mode: str = "pixel"
    re_count: int = 1
    cutout: int = 0
    interpolation: str = "bilinear"
    test_size: int | None = None  # evaluation side (None: the training size)
    test_crop_pct: float | None = None  # centre-crop fraction at evaluation (None: 224/256)

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation={self.interpolation!r} is not one of {_INTERPOLATIONS}")
        aa = self.auto_augment
        if aa is not None and aa not in AUTO_AUGMENT_TORCHVISION and aa.split("-")[0] not in _TIMM_AUTO_AUGMENT:
            raise ValueError(
                f"auto_augment={aa!r} is neither timm's (e.g. 'rand-m9-mstd0.5-inc1', 'original', 'augmix-m5-w4-d2') "
                f"nor torchvision's {AUTO_AUGMENT_TORCHVISION}"
            )
        if aa is not None and aa not in AUTO_AUGMENT_TORCHVISION:
            try:  # timm parses the string: a section it does not know fails here, not in a loader worker
                _auto_augment(self, 224, (0.5, 0.5, 0.5))
            except (AssertionError, KeyError, ValueError, IndexError) as err:
                raise ValueError(f"auto_augment={aa!r}: timm cannot parse it ({err or type(err).__name__})") from None

    @property
    def any(self) -> bool:
        return bool(self.auto_augment or self.re_prob or self.cutout)


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


def _auto_augment(options: AugmentOptions, image_size: int, mean: Sequence[float]) -> list:
    """The auto-augmentation stage, on a PIL image (timm's policies need one; torchvision's take either)."""
    name = options.auto_augment
    if name is None:
        return []
    if name == "cifar10":
        return [v2.ToPILImage(), v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)]
    if name == "ta_wide":
        return [v2.ToPILImage(), v2.TrivialAugmentWide()]
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform

    fill = tuple(round(255 * m) for m in mean)  # timm's hparams: translation range and fill as its factory sets them
    hparams = dict(translate_const=int(image_size * 0.45), img_mean=fill if len(fill) > 1 else fill[0])
    if options.interpolation == "bicubic":
        from PIL import Image

        hparams["interpolation"] = Image.BICUBIC
    if name.startswith("rand"):
        policy = keep_one_posterize_bit(rand_augment_transform(name, hparams))
    elif name.startswith("augmix"):
        hparams["translate_pct"] = 0.3
        policy = augment_and_mix_transform(name, hparams)
    else:
        policy = auto_augment_transform(name, hparams)
    return [v2.ToPILImage(), policy]


def keep_one_posterize_bit(transform):
    """``transform`` (a timm RandAugment, or a ``Compose`` holding one) with its posterize operations keeping at least
    one bit: timm asks Pillow for 0 bits at some magnitudes (10 with ``inc1``, below 2.5 without), which Pillow 13
    refuses (``ValueError: bits must be between or equal to 1 and 8``, ending a loader worker)."""
    for part in getattr(transform, "transforms", [transform]):
        for op in getattr(part, "ops", []):
            if op.name.startswith("Posterize") and op.level_fn is not None:
                op.level_fn = functools.partial(_at_least_one_bit, op.level_fn)
    return transform


def _at_least_one_bit(level_fn, magnitude: float, hparams: dict) -> tuple[int]:
    """timm's posterize level with 0 bits raised to 1: older Pillow turned 0 bits into a black image, Pillow 13
    raises; the RandAugment authors' code keeps at least one bit (as cross-checked in
    ildoonet/pytorch-randaugment#13)."""
    (bits,) = level_fn(magnitude, hparams)
    return (max(int(bits), 1),)


def _erasing(options: AugmentOptions, image_size: int) -> list:
    """Cutout and random erasing, on the normalised tensor."""
    ops = []
    if options.cutout:
        area = min(options.cutout**2 / image_size**2, 1.0)
        ops.append(v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0))
    if options.re_prob:
        from timm.data.random_erasing import RandomErasing

        ops.append(RandomErasing(options.re_prob, mode=options.re_mode, max_count=options.re_count, device="cpu"))
    return ops


def build_train_transform(
    augment: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    native_size: int | None = None,
    options: AugmentOptions = AugmentOptions(),
) -> v2.Compose:
    """Training transform by recipe name (see the module docstring); ``native_size``: the images' own size, resized
    to ``image_size`` first when they differ (the fixed-size recipes); ``options``: the modern recipe's stages."""
    if augment == "timm":
        from timm.data import create_transform

        if options.auto_augment in AUTO_AUGMENT_TORCHVISION or options.cutout:
            what = "data.cutout" if options.cutout else f"data.auto_augment={options.auto_augment!r} (torchvision's)"
            raise ValueError(
                f"{what} is not part of timm's transform (data.augment='timm'): use timm's policies ('rand-...', "
                f"'original', 'augmix-...') and data.re_prob there, or another recipe, e.g. data.augment="
                f"'imagenet_crop_flip'"
            )
        timm_transform = create_transform(
            image_size, is_training=True, auto_augment=options.auto_augment, interpolation=options.interpolation,
            mean=tuple(mean), std=tuple(std), re_prob=options.re_prob, re_mode=options.re_mode,
            re_count=options.re_count,
        )  # fmt: skip
        # timm's transform takes PIL images; array data sets (CIFAR, digits...) give uint8 tensors
        return v2.Compose([v2.ToPILImage(), keep_one_posterize_bit(timm_transform)])
    if augment == "none" and options.any:
        raise ValueError(
            "data.augment='none' trains on the plain images; auto_augment, cutout and re_prob need a recipe, e.g. "
            "data.augment='plus'"
        )
    interpolation = v2.InterpolationMode(options.interpolation)
    if augment == "plus":
        ops = [v2.RandomCrop(image_size, padding=4, fill=0), v2.RandomHorizontalFlip()]
    elif augment == "shift":
        ops = [v2.RandomCrop(image_size, padding=1, fill=0)]
    elif augment == "none":
        ops = []
    elif augment == "imagenet":
        ops = [
            v2.ToImage(),
            v2.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation=interpolation),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
            *_auto_augment(options, image_size, mean),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            Lighting(0.1),
            v2.RandomHorizontalFlip(),
            v2.Normalize(mean, std),
            *_erasing(options, image_size),
        ]
        return v2.Compose(ops)
    elif augment == "imagenet_crop_flip":
        ops = [
            v2.ToImage(),
            v2.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation=interpolation),
            v2.RandomHorizontalFlip(),
        ]
        ops += [*_auto_augment(options, image_size, mean), *_to_float(mean, std), *_erasing(options, image_size)]
        return v2.Compose(ops)
    elif augment == "resize_flip":
        resize = v2.Resize((image_size, image_size), interpolation=interpolation)
        ops = [v2.ToImage(), resize, v2.RandomHorizontalFlip()]
        ops += [*_auto_augment(options, image_size, mean), *_to_float(mean, std), *_erasing(options, image_size)]
        return v2.Compose(ops)
    else:
        raise ValueError(f"unknown augmentation {augment!r}; use one of {AUGMENTATIONS}")
    ops += [*_auto_augment(options, image_size, mean), *_to_float(mean, std), *_erasing(options, image_size)]
    return v2.Compose(_resized(ops, image_size, native_size))


def build_eval_transform(
    augment: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    ten_crop: bool = False,
    native_size: int | None = None,
    options: AugmentOptions = AugmentOptions(),
) -> v2.Compose:
    """Evaluation transform: the ImageNet recipes resize to the crop's side divided by the crop fraction (224/256, or
    ``options.test_crop_pct``) and centre-crop (or ten-crop) at ``options.test_size`` or the training size."""
    size = options.test_size or image_size
    interpolation = v2.InterpolationMode(options.interpolation)
    if augment == "resize_flip" and not ten_crop:
        return v2.Compose(
            [v2.ToImage(), v2.Resize((size, size), interpolation=interpolation), *_to_float(mean, std)[1:]]
        )
    if augment not in _IMAGENET_EVAL:
        if ten_crop:
            raise ValueError("ten-crop evaluation is defined for the ImageNet pipeline only")
        return v2.Compose(_resized(_to_float(mean, std), size, native_size))
    resize = round(size / options.test_crop_pct) if options.test_crop_pct else round(size * 256 / 224)
    crop = TenCropStack(size) if ten_crop else v2.CenterCrop(size)
    ops = [v2.ToImage(), v2.Resize(resize, interpolation=interpolation), crop, *_to_float(mean, std)[1:]]
    return v2.Compose(ops)
