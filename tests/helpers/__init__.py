"""Shared test helpers, imported as ``from helpers import ...`` (``tests/`` is on pytest's ``pythonpath``): tiny dense
models keep the CPU suite fast. Fixtures live in ``tests/conftest.py``; data sets in their on-disk formats in
``helpers.data_fixtures``, the CUDA kernels' argument contracts in ``helpers.cuda_contracts``."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn
from densebackbones.heads import DSOD, Pelee
from densebackbones.heads.ssd import PELEE_VOC_PRIORS, VOC_PRIORS

import densebackbones as db

# A parametrization over the devices a test runs on: the CPU in the default suite, CUDA under ``-m gpu``.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]

BACKBONES = db.list_models(task="classification")
IMAGENET_MODELS = [name for name in BACKBONES if not name.endswith("_cifar")]
CIFAR_MODELS = [name for name in BACKBONES if name.endswith("_cifar")]


def tiny_input(name: str, batch: int = 2) -> torch.Tensor:
    """The smallest input each family accepts: 32 px for the ImageNet stride 32, 8 px for the CIFAR stride 4;
    MSDNet's exits need its coarsest scale at 5 px (20 px CIFAR, 160 px ImageNet)."""
    if name.startswith("msdnet"):
        size = 20 if name.endswith("_cifar") else 160
    else:
        size = 8 if name.endswith("_cifar") else 32
    return torch.randn(batch, 3, size, size)


# Tiny constructor arguments of every registered model (tiny_kwargs), shared by the geometry and compiler tests.
TINY_DENSE = dict(growth_rate=4)
TINY_DSOD_BACKBONE = dict(growth_rate=4, block_config=(1, 1, 1, 1), stem_chs=(8, 8, 16))
TINY_PELEENET = dict(growth_rate=8, block_config=(1, 1, 1, 1), stem_width=8)
TINY_DSOD_HEAD = dict(second_half=8, extra_halves=(8, 8, 8, 8))
TINY_PELEE_HEAD = dict(extra_chs=((8, 8), (8, 8), (8, 8)), res_chs=8)


def tiny_kwargs(name: str) -> dict:
    """``create_model`` arguments that keep a registered model's geometry (its stem, pools, strides, heads' kernels) and
    make it cheap: one layer per block, a few channels."""
    if name.startswith(("densenet", "wide_densenet")):
        return dict(TINY_DENSE, block_config=(1,) * _blocks(name))
    if name.startswith("dsod_ds"):
        return dict(TINY_DSOD_BACKBONE)
    if name == "peleenet":
        return dict(TINY_PELEENET)
    if name.startswith("condensenet"):
        return dict(block_config=(1,) * (3 if "cifar" in name else 5))
    if name.startswith("msdnet"):  # two blocks of one layer: every scale, a pruned one, two exits
        return dict(channels=4, growth_rate=2, num_blocks=2, base=1, step=1, step_mode="even")
    if name in ("fc_densenet56", "fc_densenet67", "fc_densenet103"):
        return dict(growth_rate=4, layers_per_block=1, first_conv_chs=8)
    if name.startswith("fc_densenet_bc"):
        blocks = (1, 1, 1, 1)
        return dict(encoder_kwargs=dict(TINY_DENSE, block_config=blocks), growth_rate=4, layers_per_block=1)
    if name.startswith("dense_aspp"):
        return dict(backbone_kwargs=dict(TINY_DENSE, block_config=(1, 1, 1, 1)), d_feature0=8, d_feature1=4)
    if name.startswith("deeplabv3"):
        return dict(backbone_kwargs=dict(TINY_DENSE, block_config=(1, 1, 1, 1)))
    if name.startswith("dsod"):
        backbone = TINY_DSOD_BACKBONE if name.startswith("dsod300") else dict(TINY_DENSE, block_config=(1, 1, 1, 1))
        return dict(backbone_kwargs=backbone, head_kwargs=TINY_DSOD_HEAD)
    if name == "pelee":
        return dict(backbone_kwargs=TINY_PELEENET, head_kwargs=TINY_PELEE_HEAD)
    if name == "pelee_bc121_k32":
        return dict(backbone_kwargs=dict(TINY_DENSE, block_config=(1, 1, 1, 1)), head_kwargs=TINY_PELEE_HEAD)
    raise AssertionError(f"no tiny variant for {name}: add one")


# One registered model per family (family_of maps every registered name to one of these).
FAMILIES = {
    "densenet": "densenet_bc121_k32",
    "densenet_cifar": "densenet40_k12_cifar",
    "dsod_backbone": "dsod_ds64_192_48_1",
    "peleenet": "peleenet",
    "condensenet": "condensenet86_cifar",
    "condensenet_converted": "condensenet74_c4_g4_converted",
    "msdnet": "msdnet_anytime_cifar",
    "fc_densenet": "fc_densenet56",
    "fc_densenet_bc": "fc_densenet_bc121_k32",
    "dense_aspp": "dense_aspp121",
    "deeplabv3": "deeplabv3_densenet121",
    "dsod": "dsod300",
    "dsod_bc": "dsod_bc121_k32",
    "pelee": "pelee",
    "pelee_bc": "pelee_bc121_k32",
}


def family_of(name: str) -> str:
    prefixes = (
        ("msdnet", "msdnet"),
        ("fc_densenet_bc", "fc_densenet_bc"),
        ("fc_densenet", "fc_densenet"),
        ("dense_aspp", "dense_aspp"),
        ("deeplabv3", "deeplabv3"),
        ("dsod_ds", "dsod_backbone"),
        ("dsod_bc", "dsod_bc"),
        ("dsod", "dsod"),
        ("pelee_bc", "pelee_bc"),
        ("peleenet", "peleenet"),
        ("pelee", "pelee"),
    )
    for prefix, family in prefixes:
        if name.startswith(prefix):
            return family
    if name.startswith("condensenet"):
        return "condensenet_converted" if name.endswith("_converted") else "condensenet"
    if name.startswith(("densenet", "wide_densenet")):
        return "densenet_cifar" if name.endswith("_cifar") else "densenet"
    raise AssertionError(f"{name} belongs to no family of test_compilers.py: add one")


def tiny_model(name: str, mode: str, dtype: torch.dtype = torch.float32, train: bool = False) -> nn.Module:
    """The tiny variant of ``name`` in ``mode`` (its dense blocks and the units that follow the mode)."""
    torch.manual_seed(0)
    model = db.create_model(name, **tiny_kwargs(name)).to(dtype)
    db.layers.set_memory_mode(model, mode)
    return model.train(train)


def smallest_input(model: nn.Module, dtype: torch.dtype = torch.float32, batch: int = 2) -> torch.Tensor:
    """Images of the model's smallest size. A training step takes four: at the smallest size the deepest maps are
    1x1, and batch statistics of two values normalise them to +-1 whatever they are, so that the gradient through
    such a BN is rounding noise (which compiled kernels, summing in another order, do not reproduce)."""
    torch.manual_seed(1)
    side = model.min_input_size
    return torch.randn(batch, 3, side, side, dtype=dtype)


def flat_outputs(output) -> list[torch.Tensor]:
    """The tensors of a model's output (a tensor, or nested tuples, lists and dicts of them), in order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    return [t for item in output for t in flat_outputs(item)]


def without_dropout(model: nn.Module) -> nn.Module:
    """Dropout off, so that a training step draws nothing and routes can be compared value for value."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):  # Dropout, Dropout2d (DenseASPP's)
            module.p = 0.0
    return model


def _blocks(name: str) -> int:
    return 3 if name.endswith("_cifar") else 4


def tiny_densenet(**kwargs) -> db.DenseNet:
    """A DenseNet-BC with two 2-layer blocks and k=4: every code path, a few thousand parameters."""
    args = dict(growth_rate=4, block_config=(2, 2), stem_type="cifar", num_classes=3)
    return db.DenseNet(**dict(args, **kwargs))


def tiny_fc_densenet(**kwargs) -> torch.nn.Module:
    """FC-DenseNet56's layout with one layer per block and k=4 (basic layers, dropout 0.2, up path); 32x32 input."""
    return db.create_model("fc_densenet56", **dict(num_classes=3, growth_rate=4, layers_per_block=1, **kwargs))


def tiny_dsod(**kwargs) -> DSOD:
    """DSOD300's layout (stem, four dense blocks, dense prediction structure, six sources) with k=4, 64x64 input."""
    args = dict(
        backbone="dsod_ds64_192_48_1",
        backbone_indices=(1, 2),
        backbone_kwargs=dict(growth_rate=4, block_config=(1, 2, 1, 1), stem_chs=(8, 8, 16)),
        head_kwargs=dict(second_half=8, extra_halves=(8, 8, 8, 8)),
        priors=dataclasses.replace(VOC_PRIORS, image_size=64),
    )
    return DSOD(3, **dict(args, **kwargs))


def tiny_pelee(**kwargs) -> Pelee:
    """Pelee's layout (stem block, two-way layers, extra layers, ResBlocks, six 1x1 heads) with k=8, read at PeleeNet's
    strides 8 and 16 so that 144 px inputs reach the 1x1 map."""
    args = dict(
        backbone="peleenet",
        backbone_indices=(2, 3),
        backbone_kwargs=dict(growth_rate=8, block_config=(1, 1, 1, 1), stem_width=8, transition_ceil=True),
        head_kwargs=dict(extra_chs=((8, 8), (8, 8), (8, 8)), res_chs=8),
        priors=dataclasses.replace(PELEE_VOC_PRIORS, image_size=144),
    )
    return Pelee(3, **dict(args, **kwargs))


def run_training_tool(tool, config: str, work_dir, *options: str, data_root=None, extra=()) -> dict:
    """Run a training tool's ``main`` in-process: ``--work-dir``, optional ``--data-root``, extra arguments, and
    ``--cfg-options`` (plots off to save time)."""
    argv = [config, "--work-dir", str(work_dir)]
    if data_root is not None:
        argv += ["--data-root", str(data_root)]
    argv += [*extra, "--cfg-options", "train.plot=False", *options]
    return tool.main(tool.get_args_parser().parse_args(argv))
