"""Registry-driven model tests in the style of timm's: every registered model is covered the day it is added."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
from helpers import CIFAR_MODELS, tiny_densenet, tiny_input
from timm.models import group_parameters

import densebackbones as db
from densebackbones.models.helpers import DenseFeatureGetterNet
from densebackbones.models.msdnet import MSDNet

ALL_MODELS = db.list_models(task="classification")


def test_registry_lists_every_model_of_the_paper():
    imagenet = [n for n in ALL_MODELS if n.startswith("densenet") and not n.endswith("_cifar")]
    assert len(imagenet) == 7, imagenet
    assert len([n for n in CIFAR_MODELS if n.startswith(("densenet", "wide_densenet"))]) == 9, CIFAR_MODELS
    assert [n for n in ALL_MODELS if n.startswith("dsod")] == ["dsod_ds64_192_48_1", "dsod_ds64_256_64_1"]
    assert "peleenet" in ALL_MODELS
    condensenets = ["condensenet182_cifar", "condensenet74_c4_g4", "condensenet74_c8_g8", "condensenet86_cifar"]
    assert [n for n in ALL_MODELS if n.startswith("condensenet")] == sorted(
        condensenets + [f"{n}_converted" for n in condensenets]
    )


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward(name):
    model = db.create_model(name, num_classes=5)
    model.train()
    x = tiny_input(name).requires_grad_()
    outputs = model(x)
    outputs = outputs if isinstance(outputs, list) else [outputs]  # MSDNet: every exit's logits
    assert all(out.shape == (2, 5) and torch.isfinite(out).all() for out in outputs)
    sum(out.square().mean() for out in outputs).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    without_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not without_grad, f"parameters without a finite gradient: {without_grad[:5]}"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_features_only_matches_feature_info(name):
    model = db.create_model(name, features_only=True).eval()
    x = tiny_input(name)
    with torch.no_grad():
        features = model(x)
    assert len(features) == len(model.feature_info) == len(model.feature_info.out_indices)
    for fmap, chs, reduction in zip(features, model.feature_info.channels(), model.feature_info.reduction()):
        assert fmap.shape[1] == chs
        assert fmap.shape[-2:] == (x.shape[-2] // reduction, x.shape[-1] // reduction)


@pytest.mark.parametrize("name", ["densenet_bc121_k32", "densenet_bc100_k12_cifar", "densenet40_k12_cifar"])
def test_out_indices_select_levels(name):
    full = db.create_model(name, features_only=True).eval()
    part = db.create_model(name, features_only=True, out_indices=(1, -1)).eval()
    part.load_state_dict(full.state_dict(), strict=False)
    x = tiny_input(name)
    with torch.no_grad():
        all_maps, some_maps = full(x), part(x)
    assert part.feature_info.out_indices == (1, len(all_maps) - 1)
    torch.testing.assert_close(some_maps[0], all_maps[1])
    torch.testing.assert_close(some_maps[1], all_maps[-1])


def test_features_only_prunes_unused_layers():
    model = db.create_model("densenet_bc121_k32", features_only=True, out_indices=(0, 1))
    names = [n for n, _ in model.model.features.named_children()]
    assert names[-1] == "denseblock1" and "norm5" not in names


def test_forward_intermediates_agrees_with_forward_features():
    model = tiny_densenet(block_config=(2, 2, 2)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        features = model.forward_features(x)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        early = model.forward_intermediates(x, indices=[0], intermediates_only=True, stop_early=True)
    torch.testing.assert_close(final, features)
    torch.testing.assert_close(intermediates[-1], features)
    assert len(intermediates) == len(model.feature_info) == 4
    assert [t.shape[1] for t in intermediates] == [info["num_chs"] for info in model.feature_info]
    torch.testing.assert_close(last_two[0], intermediates[-2])
    torch.testing.assert_close(early[0], intermediates[0])


def test_classifier_reset_and_head():
    model = tiny_densenet(num_classes=3).eval()
    x = torch.randn(2, 3, 8, 8)
    assert isinstance(model.get_classifier(), nn.Linear)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.num_classes == 7
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    model.reset_classifier(0, global_pool="")
    assert model(x).shape == (2, model.num_features, 4, 4)


def test_group_matcher_covers_every_parameter():
    model = db.create_model("densenet_bc121_k32")
    for coarse in (False, True):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        grouped = [name for names in groups.values() for name in names]
        assert sorted(grouped) == sorted(n for n, _ in model.named_parameters())
        assert len(groups) > 4
    first_group = next(iter(group_parameters(model, model.group_matcher()).values()))
    assert all(name.startswith(("features.conv0", "features.norm0")) for name in first_group)


@pytest.mark.parametrize("in_chans", [1, 4])
def test_in_chans(in_chans):
    model = db.create_model("densenet_bc100_k12_cifar", in_chans=in_chans)
    assert model.features.conv0.in_channels == in_chans
    assert model(torch.randn(2, in_chans, 8, 8)).shape == (2, 10)


def test_head_drop_rate():
    model = tiny_densenet(drop_rate=0.5)
    x = torch.randn(4, 3, 8, 8)
    model.train()
    assert model.head_drop.p == 0.5
    assert not torch.equal(model(x), model(x))  # dropout active in training
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def _execution_order(model: nn.Module, x: torch.Tensor) -> list[type]:
    order = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: order.append(type(mod)))
        for m in model.features.modules()  # the paper's dropout; head_drop is timm's, before the classifier
        if isinstance(m, (nn.Conv2d, nn.Dropout))
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    return order


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(bn_size=None, compression=1.0, stem_width=16)],
    ids=["bottleneck", "basic"],
)
def test_paper_dropout_follows_every_conv_but_the_first(kwargs):
    # Sec. 4.2: dropout after each convolution except the first (the stem), none before the classifier.
    model = tiny_densenet(proj_drop_rate=0.2, **kwargs).train()
    order = _execution_order(model, torch.randn(2, 3, 8, 8))
    convs = [i for i, t in enumerate(order) if t is nn.Conv2d]
    drops = [i for i, t in enumerate(order) if t is nn.Dropout]
    assert convs[0] == 0 and order[1] is nn.Conv2d  # the stem conv is not followed by dropout
    assert drops == [i + 1 for i in convs[1:]]
    assert all(m.p == 0.2 for m in model.modules() if isinstance(m, nn.Dropout) and m is not model.head_drop)


def test_no_dropout_modules_without_drop_rate():
    model = tiny_densenet()
    assert [m for m in model.features.modules() if isinstance(m, nn.Dropout)] == []


def test_cifar_layout_of_the_paper():
    model = db.create_model("densenet_bc100_k12_cifar")
    blocks = [m for n, m in model.features.named_children() if n.startswith("denseblock")]
    assert [b.num_layers for b in blocks] == [16, 16, 16]
    assert model.features.conv0.kernel_size == (3, 3) and model.features.conv0.out_channels == 24
    # BC: 1x1 bottleneck to 4k, compression 0.5 in the transitions
    layer = blocks[0].denselayer1
    assert layer.conv1.kernel_size == (1, 1) and layer.conv1.out_channels == 48
    assert model.features.transition1.conv.out_channels == blocks[0].out_chs // 2
    basic = db.create_model("densenet40_k12_cifar")
    assert basic.features.conv0.out_channels == 16 and basic.features.denseblock1.denselayer1.conv2 is None
    assert basic.features.transition1.conv.out_channels == basic.features.transition1.conv.in_channels


def _pre_logits_width(model: nn.Module, like: torch.Tensor) -> int:
    """The pre-logits width of a model's head, from a map shaped like its features (meta tensors: no compute)."""
    return model.forward_head(like.new_empty(2, model.num_features, 3, 3), pre_logits=True).shape[1]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_reset_classifier_keeps_device_dtype_and_pre_logits_width(name):
    with torch.device("meta"):
        model = db.create_model(name)
    model = model.to(torch.float64).eval()  # reset outside the meta context: the default device is the CPU's
    like = torch.empty(0, device="meta", dtype=torch.float64)
    for pool in ["avg", "catavgmax", "max", "avg"]:
        model.reset_classifier(7, pool)
        head = model.get_classifier()
        assert (head.weight.device.type, head.weight.dtype) == ("meta", torch.float64), pool
        assert _pre_logits_width(model, like) == model.head_hidden_size == head.in_features, pool
        # MSDNet's features are its final exit's convolutions (forward_features), not the last block's map
        assert model.num_features == model.feature_info[-1]["num_chs"] or isinstance(model, MSDNet)
        assert not any(m.training for m in model.modules()), pool  # timm's default_cfgs test: eval stays eval
    model.reset_classifier(0, "catavgmax")
    assert _pre_logits_width(model, like) == model.head_hidden_size == 2 * model.num_features


def test_reset_classifier_follows_a_double_model():
    model = tiny_densenet().double().eval()
    model.reset_classifier(7, "catavgmax")
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert model.get_classifier().weight.dtype == torch.float64 and model(x).dtype == torch.float64
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.head_hidden_size)
    assert model.head_hidden_size == 2 * model.num_features


@pytest.mark.parametrize("name", ALL_MODELS)
def test_features_only_forwards_grad_checkpointing(name):
    with torch.device("meta"):
        features = timm.create_model(name, features_only=True)
    features.set_grad_checkpointing()
    assert features.grad_checkpointing and features.model.grad_checkpointing
    if not isinstance(features.model, MSDNet):
        assert features.model.memory_mode == "efficient"
    features.set_grad_checkpointing(False)
    assert not features.grad_checkpointing and not features.model.grad_checkpointing


def test_features_only_with_grad_checkpointing_gives_the_same_maps_and_gradients():
    kwargs = dict(features_only=True, growth_rate=4, block_config=(2, 2, 2))
    torch.manual_seed(0)
    plain = timm.create_model("densenet_bc100_k12_cifar", **kwargs).train()
    checkpointed = timm.create_model("densenet_bc100_k12_cifar", **kwargs).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.set_grad_checkpointing()
    x = torch.randn(2, 3, 8, 8)
    maps = [model(x) for model in (plain, checkpointed)]
    for outs in maps:
        sum(out.square().mean() for out in outs).backward()
    for a, b in zip(*maps):
        torch.testing.assert_close(a, b)
    grads = [{n: p.grad for n, p in model.named_parameters()} for model in (plain, checkpointed)]
    for n, grad in grads[0].items():
        torch.testing.assert_close(grads[1][n], grad, msg=n)


@pytest.mark.parametrize(
    "name",
    ["densenet40_k12_cifar", "peleenet", "dsod_ds64_192_48_1", "condensenet86_cifar_converted", "msdnet_anytime_cifar"],
)
def test_forward_intermediates_with_norm_as_timm(name):
    """timm's DenseNet accepts ``norm=True`` and changes nothing: its last level is the final norm's output."""
    model = db.create_model(name).eval()
    x = tiny_input(name, batch=1)
    with torch.no_grad():
        plain = model.forward_intermediates(x, intermediates_only=True)
        normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
        features = DenseFeatureGetterNet(model, out_indices=(len(plain) - 1,), norm=True)(x)
        if not isinstance(model, MSDNet):
            torch.testing.assert_close(normed[-1], model.forward_features(x))
    for a, b in zip(plain, normed, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(features[0], plain[-1])
