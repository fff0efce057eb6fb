"""create_model / list_models, aliases, timm's registry (no overwrite) and bad input."""

from __future__ import annotations

import pytest
import timm
import torch

import densebackbones as db
from densebackbones import registry


def test_unknown_name_lists_closest():
    with pytest.raises(ValueError, match=r"Unknown model 'densenet_bc100_k12_cifr'.*densenet_bc100_k12_cifar"):
        db.create_model("densenet_bc100_k12_cifr")
    # The count is what the named lister prints (aliases are matched but not listed by list_models()).
    with pytest.raises(ValueError, match=rf"Closest registered names: densenet121.*lists all {len(db.list_models())} "):
        db.create_model("densenet12")


def test_aliases_resolve_to_paper_names():
    with torch.device("meta"):
        model = db.create_model("densenet161")
    assert model.pretrained_cfg["architecture"] == "densenet_bc161_k48"
    assert db.is_model("densenet121") and not db.is_model("resnet50")


def test_list_models_filters():
    assert db.list_models("wide_*") == [f"wide_densenet_bc40_k{k}_cifar" for k in (36, 48, 60)]
    assert db.list_models(["*k48", "*bc100*"]) == [
        "densenet_bc100_k12_cifar",
        "densenet_bc161_k48",
        "densenet_bc232_k48",
        "densenet_bc264_k48",
    ]


@pytest.mark.parametrize("name", db.list_models(task="classification"))
def test_timm_create_model_builds_the_same_model(name):
    with torch.device("meta"):
        ours, theirs = db.create_model(name), timm.create_model(name)
    assert type(theirs) is type(ours) and isinstance(ours, (db.models.DenseBackbone, db.models.MSDNet))
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]


def test_timm_features_only_through_timm():
    model = timm.create_model("densenet_bc100_k12_cifar", features_only=True, out_indices=(2, 3))
    assert model.feature_info.channels() == [300, 342]


def test_timm_names_are_not_overwritten():
    for name in ("densenet121", "densenet161", "densenet169", "densenet201", "densenet264d"):
        assert timm.models.model_entrypoint(name).__module__ == "timm.models.densenet"


def test_a_name_timm_already_has_stays_timms():
    def resnet18(pretrained=False, **kwargs):  # same name as a timm model
        raise AssertionError("must not be reachable through timm")

    resnet18.__module__ = "densebackbones.models.fake"
    try:
        registry.register_model(resnet18)
        assert timm.models.model_entrypoint("resnet18").__module__ == "timm.models.resnet"
        assert "resnet18" in registry._skipped_in_timm
        assert registry.model_entrypoint("resnet18").__wrapped__ is resnet18  # with timm's device/dtype arguments
    finally:
        registry._model_entrypoints.pop("resnet18")
        registry._skipped_in_timm.discard("resnet18")
        registry.MODELS.module_dict.pop("resnet18", None)


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_model(db.model_entrypoint("densenet_bc121_k32"))


def test_out_indices_needs_features_only():
    with pytest.raises(ValueError, match="out_indices needs features_only=True"):
        db.create_model("densenet_bc121_k32", out_indices=(1, 2))


@pytest.mark.parametrize(
    ("out_indices", "message"),
    [
        ((5,), "out of range"),
        ((0, 7), "out of range"),
        ((2, 1), "increasing and unique"),
        ((1, -4), "increasing"),
        (6, "last 6 levels"),
        ((), "empty"),
        ("12", "out of range"),
    ],
)
def test_bad_out_indices(out_indices, message):
    with pytest.raises(ValueError, match=message) as err:
        db.create_model("densenet_bc121_k32", features_only=True, out_indices=out_indices)
    assert "features.denseblock1 (256 ch, stride 4)" in str(err.value)  # the message lists the valid levels


@pytest.mark.parametrize("in_chans", [0, -3])
def test_bad_in_chans(in_chans):
    with pytest.raises(ValueError, match="in_chans must be at least 1"):
        db.create_model("densenet_bc100_k12_cifar", in_chans=in_chans)


@pytest.mark.parametrize(
    ("name", "size", "minimum"), [("densenet_bc121_k32", 31, 32), ("densenet_bc100_k12_cifar", 3, 4)]
)
def test_input_smaller_than_total_stride(name, size, minimum):
    model = db.create_model(name).eval()
    with pytest.raises(ValueError, match=f"{name} takes inputs of at least {minimum}x{minimum} px .*total stride"):
        model(torch.randn(1, 3, size, 64))
    features = db.create_model(name, features_only=True).eval()
    with pytest.raises(ValueError, match=f"at least {minimum}x{minimum} px .*; got 64x{size}"):
        features(torch.randn(1, 3, 64, size))


def test_wrong_input_channels():
    model = db.create_model("densenet_bc100_k12_cifar")
    with pytest.raises(ValueError, match="expects 3 input channels, got 1.*in_chans=1"):
        model(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(stem_type="vgg"), "unknown stem_type"),
        (dict(compression=0.0), "compression"),
        (dict(block_config=(2, 0)), "block_config"),
        (dict(transition_pool="lp"), "unknown transition_pool"),
        (dict(num_classes=-1), "num_classes"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        db.DenseNet(**dict(dict(growth_rate=4, block_config=(1, 1), stem_type="cifar"), **kwargs))


@pytest.mark.parametrize("name", db.list_models())
def test_every_factory_takes_timms_device_and_dtype(name):
    """timm >= 1.0.30 passes ``device=``/``dtype=`` to every model factory; parameters and buffers are created
    there (meta: no memory) and floating-point ones cast."""
    model = db.create_model(name, device="meta", dtype=torch.float64)
    tensors = [*model.parameters(), *model.buffers()]
    assert all(t.device.type == "meta" for t in tensors)
    assert all(t.dtype == torch.float64 for t in tensors if t.is_floating_point())
    if db.model_task(name) == "classification":
        via_timm = timm.create_model(name, device="meta", dtype=torch.bfloat16, num_classes=3)
        assert {p.dtype for p in via_timm.parameters()} == {torch.bfloat16}


def test_timm_device_and_dtype_give_a_working_model():
    model = timm.create_model("densenet_bc100_k12_cifar", device="cpu", dtype=torch.float64, num_classes=4)
    assert model(torch.randn(2, 3, 16, 16, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(TypeError, match="dtype=torch.int64: models take a floating-point torch.dtype"):
        db.create_model("densenet_bc100_k12_cifar", dtype=torch.int64)
