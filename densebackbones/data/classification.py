"""Classification data sets in their real on-disk formats.

* CIFAR-10/100: the python pickle batches (``cifar-10-batches-py/``, ``cifar-100-python/``).
* SVHN: the cropped-digit ``train_32x32.mat`` / ``test_32x32.mat`` files (label 10 means digit 0).
* Fashion-MNIST: IDX files, plain or gzipped, directly in the root, in ``FashionMNIST/raw/`` (torchvision's layout)
  or as Debian's ``dataset-fashion-mnist`` installs them.
* ImageNet: an ImageFolder tree ``root/train/<class>/*.JPEG`` and ``root/val/<class>/*.JPEG``.
* digits: scikit-learn's 8x8 handwritten digits, shipped inside scikit-learn, the offline default.

Torchvision's own CIFAR/SVHN classes verify md5 sums of the official files; these readers check the layout and the
contents instead, so that small fixtures in the same format can be tested. ``download=True`` fetches the official
files through torchvision.
"""

from __future__ import annotations

import gzip
import multiprocessing
import pickle
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

__all__ = ["ArrayDataset", "ImageFolderDataset", "DatasetInfo", "DATASETS", "build_classification_dataset", "read_idx"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and its transforms need to know about a data set."""

    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class ArrayDataset(Dataset):
    """Images held in memory as a uint8 array (N, H, W, C) with integer labels.

    Items are ``(transform(image), label)`` with the image as a uint8 tensor (C, H, W), which torchvision's
    ``transforms.v2`` handle without a PIL round trip.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None) -> None:
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


def _missing(root: Path, layout: str, download_hint: bool = True) -> FileNotFoundError:
    hint = " or set download=True (data.download=True) to fetch it" if download_hint else ""
    return FileNotFoundError(f"data set not found under {root}. Expected layout: {layout}{hint}.")


# ------------------------------------------------------------------------------------------------------------ CIFAR
_CIFAR = {
    "cifar10": dict(
        folder="cifar-10-batches-py",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test=["test_batch"],
        label_key="labels",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": dict(
        folder="cifar-100-python",
        train=["train"],
        test=["test"],
        label_key="fine_labels",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}


def _read_cifar(name: str, root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    spec = _CIFAR[name]
    folder = root / spec["folder"]
    files = spec["train"] if train else spec["test"]
    if download and not all((folder / f).exists() for f in files):
        import torchvision.datasets as tvd

        (tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100)(str(root), train=train, download=True)
    missing = [f for f in files if not (folder / f).exists()]
    if missing:
        raise _missing(
            root, f"{root}/{spec['folder']}/{{{', '.join(spec['train'] + spec['test'])}}} (python pickle batches)"
        )
    images, labels = [], []
    for filename in files:
        with open(folder / filename, "rb") as handle:
            try:
                batch = pickle.load(handle, encoding="latin1")
            except Exception as err:
                raise ValueError(f"{folder / filename} is not a CIFAR python batch: {err}") from err
        if "data" not in batch or spec["label_key"] not in batch:
            raise ValueError(f"{folder / filename} lacks 'data' or {spec['label_key']!r}; is it a {name} batch?")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(batch[spec["label_key"]])
    return np.concatenate(images), np.asarray(labels)


# ------------------------------------------------------------------------------------------------------------- SVHN
def _read_svhn(root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    split = "train" if train else "test"
    path = root / f"{split}_32x32.mat"
    if download and not path.exists():
        import torchvision.datasets as tvd

        tvd.SVHN(str(root), split=split, download=True)
    if not path.exists():
        raise _missing(root, f"{root}/train_32x32.mat and {root}/test_32x32.mat (the cropped-digit .mat files)")
    from scipy.io import loadmat

    mat = loadmat(str(path))
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path} lacks the 'X'/'y' arrays of the SVHN cropped-digit format")
    images = np.ascontiguousarray(mat["X"].transpose(3, 0, 1, 2)).astype(np.uint8)
    labels = mat["y"].reshape(-1).astype(np.int64)
    labels[labels == 10] = 0  # SVHN stores digit 0 as label 10
    return images, labels


# ---------------------------------------------------------------------------------------------------- Fashion-MNIST
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {array.size} values")
    return array.reshape(dims)


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw", root / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).exists():
                return folder / name
    return None


def _read_fashion_mnist(root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if train else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    if download and _find_idx(root, stems[0]) is None:
        import torchvision.datasets as tvd

        tvd.FashionMNIST(str(root), train=train, download=True)
    paths = [_find_idx(root, stem) for stem in stems]
    if None in paths:
        raise _missing(
            root,
            f"{root}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz] (IDX files, also accepted under "
            f"FashionMNIST/raw/; Debian's dataset-fashion-mnist package installs them)",
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{paths[0]} / {paths[1]}: expected (N, H, W) images and N labels")
    return images[..., None].copy(), labels.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------- digits
def _read_digits(train: bool) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255, 8x8x1
    train_idx, test_idx = train_test_split(
        np.arange(len(images)), test_size=0.2, random_state=0, stratify=digits.target
    )  # fixed stratified split: 1437 train / 360 test
    idx = train_idx if train else test_idx
    return images[idx], digits.target[idx].astype(np.int64)


# -------------------------------------------------------------------------------------------------------- ImageNet


def read_skipping_corrupt(dataset, index: int, load: Callable[[Any], Any]) -> tuple[Any, Any]:
    """``(load(path), target)`` of ``dataset.samples[index]`` (a list of ``(path, target)``), or with
    ``dataset.skip_corrupt`` the next readable sample's, counting the skipped files in ``dataset._skipped`` (a
    ``multiprocessing.Value``, shared with loader workers) with a warning each; otherwise an unreadable file is an
    error naming it and the fix."""
    for attempt in range(len(dataset.samples)):
        path, target = dataset.samples[(index + attempt) % len(dataset.samples)]
        try:
            return load(path), target
        except Exception as err:  # PIL raises several types for truncated or non-image files
            if not dataset.skip_corrupt:
                raise OSError(
                    f"cannot read image {path}: {err}. Remove or replace it, or set data.skip_corrupt=True"
                ) from err
            with dataset._skipped.get_lock():
                dataset._skipped.value += 1
            warnings.warn(f"skipping unreadable image {path}: {err}", stacklevel=3)
    raise OSError(f"no readable image in {len(dataset.samples)} files")


class ImageFolderDataset(Dataset):
    """An ImageFolder tree (``split/<class>/<image>``) whose unreadable images are named, or skipped and counted.

    Args:
        root: folder with one sub-folder per class.
        transform: applied to the decoded RGB PIL image.
        skip_corrupt: replace an unreadable image by the next readable one and count it (``num_skipped``), instead
            of raising an error naming the file.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        skip_corrupt: bool = False,
        classes: Sequence[str] | None = None,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise _missing(root, f"{root}/<class name>/<image>.JPEG, one folder per class", download_hint=False)
        try:
            own = find_classes(str(root))[0]
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{root}: {err}. Expected layout: {root}/<class name>/<image>.JPEG") from err
        classes = list(own if classes is None else classes)
        unknown = sorted(set(own) - set(classes))
        if unknown:
            raise ValueError(
                f"{root} has class folder(s) {unknown[:5]} that the training split lacks: every split's labels come "
                f"from the training split's class list, so these images would have no label; add them to train or "
                f"remove them"
            )
        absent = sorted(set(classes) - set(own))
        if absent:
            warnings.warn(
                f"{root} lacks {len(absent)} of the training split's {len(classes)} classes ({', '.join(absent[:5])}"
                f"{', ...' if len(absent) > 5 else ''}): they are not evaluated; labels still follow train's list",
                stacklevel=2,
            )
        class_to_idx = {name: i for i, name in enumerate(classes)}
        try:
            self.samples = make_dataset(str(root), {c: class_to_idx[c] for c in own}, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{root}: {err}. Expected layout: {root}/<class name>/<image>.JPEG") from err
        self.classes = classes
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self._skipped = multiprocessing.Value("i", 0)  # shared with forked loader workers

    @property
    def num_skipped(self) -> int:
        return self._skipped.value

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, path: str) -> Image.Image:
        with open(path, "rb") as handle:
            image = Image.open(handle)
            return image.convert("RGB")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = read_skipping_corrupt(self, index, self._load)
        return (self.transform(image) if self.transform else image), label


# -------------------------------------------------------------------------------------------------------- registry
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(10, 3, 32, _CIFAR["cifar10"]["mean"], _CIFAR["cifar10"]["std"]),
    "cifar100": DatasetInfo(100, 3, 32, _CIFAR["cifar100"]["mean"], _CIFAR["cifar100"]["std"]),
    "svhn": DatasetInfo(10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "fashion_mnist": DatasetInfo(10, 1, 28, (0.2860,), (0.3530,)),
    "digits": DatasetInfo(10, 1, 8, (0.3053,), (0.3759,)),  # measured over the 1797 images
    "imagenet": DatasetInfo(1000, 3, 224, IMAGENET_MEAN, IMAGENET_STD),
}


def build_classification_dataset(
    name: str,
    root: str | Path | None,
    train: bool,
    transform: Callable | None = None,
    download: bool = False,
    skip_corrupt: bool = False,
) -> Dataset:
    """Build the train or test split of a registered data set (``DATASETS``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; use one of {sorted(DATASETS)}")
    if name == "digits":
        return ArrayDataset(*_read_digits(train), transform=transform)
    if root is None:
        raise ValueError(f"data set {name!r} needs a root folder (data.root or --data-root)")
    root = Path(root).expanduser()
    if name == "imagenet":  # class indices from the training split's folders, for every split
        classes = find_classes(str(root / "train"))[0] if (root / "train").is_dir() else None
        split = root / ("train" if train else "val")
        return ImageFolderDataset(split, transform, skip_corrupt=skip_corrupt, classes=classes)
    if name in _CIFAR:
        images, labels = _read_cifar(name, root, train, download)
    elif name == "svhn":
        images, labels = _read_svhn(root, train, download)
    else:
        images, labels = _read_fashion_mnist(root, train, download)
    if len(images) == 0:
        raise ValueError(f"the {'train' if train else 'test'} split of {name} under {root} is empty")
    return ArrayDataset(images, labels, transform=transform)
