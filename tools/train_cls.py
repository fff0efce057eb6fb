"""Train a classifier (ImageNet, CIFAR, SVHN, Fashion-MNIST, digits) with the paper's recipes.

One process:  python tools/train_cls.py configs/cls/densenet_bc100_k12_cifar10.py --data-root data/cifar10
Several GPUs: torchrun --nproc_per_node 8 tools/train_cls.py configs/cls/densenet_bc121_k32_imagenet.py ...
Resume:       the same command with --resume auto (or --resume work_dirs/<run>/last.pth)
"""

from __future__ import annotations

import argparse

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)

from densebackbones.engine import cli
from densebackbones.tasks.classification import ClassificationTask


def get_args_parser() -> argparse.ArgumentParser:
    return cli.get_args_parser("Train a dense classifier")


def main(args: argparse.Namespace) -> dict[str, float]:
    return cli.train(args, ClassificationTask())


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
