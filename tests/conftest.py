"""Shared fixtures: tiny dense models and deterministic seeds keep the CPU suite fast."""

from __future__ import annotations

import pytest
import torch

import densebackbones as db

IMAGENET_MODELS = [name for name in db.list_models() if not name.endswith("_cifar")]
CIFAR_MODELS = [name for name in db.list_models() if name.endswith("_cifar")]


def tiny_input(name: str, batch: int = 2) -> torch.Tensor:
    """The smallest input each family accepts: 32 px for the ImageNet stride 32, 8 px for the CIFAR stride 4."""
    size = 8 if name.endswith("_cifar") else 32
    return torch.randn(batch, 3, size, size)


def tiny_densenet(**kwargs) -> db.DenseNet:
    """A DenseNet-BC with two 2-layer blocks and k=4: every code path, a few thousand parameters."""
    args = dict(growth_rate=4, block_config=(2, 2), stem_type="cifar", num_classes=3)
    return db.DenseNet(**dict(args, **kwargs))


def run_training_tool(tool, config: str, work_dir, *options: str, data_root=None, extra=()) -> dict:
    """Run a training tool's ``main`` in-process: ``--work-dir``, optional ``--data-root``, extra arguments, and
    ``--cfg-options`` (plots off to save time)."""
    argv = [config, "--work-dir", str(work_dir)]
    if data_root is not None:
        argv += ["--data-root", str(data_root)]
    argv += [*extra, "--cfg-options", "train.plot=False", *options]
    return tool.main(tool.get_args_parser().parse_args(argv))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
