"""Small data sets written in the real on-disk formats (CIFAR pickles, SVHN .mat, IDX, ImageFolder JPEGs)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_cifar10(root: Path, per_batch: int = 8) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = _rng()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "batch_label": name,
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            "filenames": [f"img{i}.png" for i in range(per_batch)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}, handle)
    return root


def write_cifar100(root: Path, count: int = 24) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = _rng(1)
    for name in ("train", "test"):
        batch = {
            "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            "fine_labels": [int(v) for v in rng.integers(0, 100, count)],
            "coarse_labels": [int(v) for v in rng.integers(0, 20, count)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    return root


def write_svhn(root: Path, count: int = 24) -> Path:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    rng = _rng(2)
    for split in ("train", "test"):
        images = rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8)
        labels = rng.integers(1, 11, (count, 1)).astype(np.uint8)  # 10 means digit 0
        savemat(str(root / f"{split}_32x32.mat"), {"X": images, "y": labels})
    return root


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(root: Path, count: int = 24, gz: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = _rng(3)
    for prefix in ("train", "t10k"):
        files = {
            f"{prefix}-images-idx3-ubyte": rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
            f"{prefix}-labels-idx1-ubyte": rng.integers(0, 10, count, dtype=np.uint8),
        }
        for name, array in files.items():
            data = _idx_bytes(array)
            if gz:
                with gzip.open(root / f"{name}.gz", "wb") as handle:
                    handle.write(data)
            else:
                (root / name).write_bytes(data)
    return root


def write_image_folder(root: Path, classes: int = 3, per_class: int = 4, size: int = 40) -> Path:
    rng = _rng(4)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"img_{i}.JPEG", format="JPEG")
    return root
