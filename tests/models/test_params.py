"""Parameter counts against docs/reference.md (papers and official code), and a closed-form count for any config."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import densebackbones as db

# docs/reference.md "params (computed)": exact for ImageNet (equal to torchvision's num_params), millions to 3 decimals
# for CIFAR-10 heads.
IMAGENET_PARAMS = {
    "densenet_bc121_k32": 7_978_856,
    "densenet_bc169_k32": 14_149_480,
    "densenet_bc201_k32": 20_013_928,
    "densenet_bc161_k48": 28_681_000,
    "densenet_bc264_k32": 33_337_704,
    "densenet_bc232_k48": 55_570_984,
    "densenet_bc264_k48": 72_686_632,
}
CIFAR10_PARAMS_M = {
    "densenet40_k12_cifar": 1.020,
    "densenet100_k12_cifar": 6.980,
    "densenet100_k24_cifar": 27.249,
    "densenet_bc100_k12_cifar": 0.769,
    "densenet_bc250_k24_cifar": 15.324,
    "densenet_bc190_k40_cifar": 25.624,
    "wide_densenet_bc40_k36_cifar": 1.543,
    "wide_densenet_bc40_k48_cifar": 2.733,
    "wide_densenet_bc40_k60_cifar": 4.262,
}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):  # no memory, no init: counting needs neither
        return db.create_model(name, **kwargs)


@pytest.mark.parametrize("name", sorted(IMAGENET_PARAMS))
def test_imagenet_params_exact(name):
    assert count(meta_model(name)) == IMAGENET_PARAMS[name]


@pytest.mark.parametrize("name", sorted(CIFAR10_PARAMS_M))
def test_cifar_params_match_reference(name):
    assert round(count(meta_model(name)) / 1e6, 3) == CIFAR10_PARAMS_M[name]


def test_cifar100_head_differs_only_in_classifier():
    c10, c100 = (
        count(meta_model("densenet_bc100_k12_cifar")),
        count(meta_model("densenet_bc100_k12_cifar", num_classes=100)),
    )
    assert c100 - c10 == 90 * (342 + 1)
    assert round(c100 / 1e6, 3) == 0.800  # docs/reference.md: 0.769M (C10), 0.800M (C100)


def test_every_registered_model_has_a_reference_count():
    # DSOD's backbone has no classifier count in the papers; its count is checked inside DSOD300's 14.72M
    # (tests/heads/test_detection.py) and against the README table.
    # PeleeNet's count (2,802,248) is checked in tests/models/test_peleenet.py, CondenseNet's in
    # tests/models/test_condensenet.py, MSDNet's in tests/models/test_msdnet.py.
    others = ("dsod", "peleenet", "condensenet", "msdnet")
    densenets = [n for n in db.list_models(task="classification") if not n.startswith(others)]
    assert sorted(IMAGENET_PARAMS) + sorted(CIFAR10_PARAMS_M) == sorted(
        n for n in densenets if not n.endswith("_cifar")
    ) + sorted(n for n in densenets if n.endswith("_cifar"))


def closed_form_params(growth, blocks, bn_size, compression, stem_type, stem_width, num_classes, in_chans=3) -> int:
    """Count conv weights, BN affine parameters and the classifier from the paper's description."""
    total = in_chans * stem_width * (49 if stem_type == "imagenet" else 9)
    total += 2 * stem_width if stem_type == "imagenet" else 0
    chs = stem_width
    for b, layers in enumerate(blocks):
        for _ in range(layers):
            if bn_size:
                total += 2 * chs + chs * bn_size * growth + 2 * bn_size * growth + bn_size * growth * growth * 9
            else:
                total += 2 * chs + chs * growth * 9
            chs += growth
        if b < len(blocks) - 1:
            out = math.floor(chs * compression)
            total += 2 * chs + chs * out
            chs = out
    return total + 2 * chs + (chs * num_classes + num_classes if num_classes else 0)


@settings(max_examples=25, deadline=None)
@given(
    growth=st.integers(1, 16),
    blocks=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    bn_size=st.sampled_from([None, 2, 4]),
    compression=st.sampled_from([0.5, 0.75, 1.0]),
    stem_type=st.sampled_from(["imagenet", "cifar"]),
    stem_width=st.integers(2, 20),
    num_classes=st.sampled_from([0, 3, 10]),
    in_chans=st.integers(1, 4),
)
def test_generic_constructor_matches_closed_form(
    growth, blocks, bn_size, compression, stem_type, stem_width, num_classes, in_chans
):
    with torch.device("meta"):
        model = db.DenseNet(
            num_classes,
            in_chans,
            growth_rate=growth,
            block_config=tuple(blocks),
            bn_size=bn_size,
            compression=compression,
            stem_type=stem_type,
            stem_width=stem_width,
        )
    expected = closed_form_params(growth, blocks, bn_size, compression, stem_type, stem_width, num_classes, in_chans)
    assert count(model) == expected


@pytest.mark.parametrize(
    ("depth", "bottleneck", "expected"),
    [
        (40, False, (12, 12, 12)),
        (100, False, (32, 32, 32)),
        (100, True, (16, 16, 16)),
        (250, True, (41, 41, 41)),
        (190, True, (31, 31, 31)),
        (40, True, (6, 6, 6)),
    ],
)
def test_cifar_block_config(depth, bottleneck, expected):
    assert db.cifar_block_config(depth, bottleneck) == expected


@pytest.mark.parametrize(("depth", "bottleneck"), [(41, False), (42, True), (4, False)])
def test_cifar_block_config_rejects_depths_without_whole_blocks(depth, bottleneck):
    with pytest.raises(ValueError, match="does not give whole dense blocks"):
        db.cifar_block_config(depth, bottleneck)
