"""Pretrained-weight loading on checkpoints the tests make: torchvision and timm DenseNets, legacy keys, safetensors."""

from __future__ import annotations

import re

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

import densebackbones as db

TV_TO_OURS = {
    "densenet121": "densenet_bc121_k32",
    "densenet169": "densenet_bc169_k32",
    "densenet201": "densenet_bc201_k32",
    "densenet161": "densenet_bc161_k48",
}


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    # Fresh BN layers are the identity in eval mode; random statistics make logit equality meaningful.
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def tv_densenet121():
    torch.manual_seed(0)
    return _randomise_bn(torchvision.models.densenet121(weights=None))


def _load(name, path, **kwargs):
    return db.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs).eval()


def _legacy_keys(state_dict):
    # torchvision < 0.4 named layer parts 'norm.1', 'conv.2'
    return {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in state_dict.items()}


@pytest.mark.parametrize("tv_name", sorted(TV_TO_OURS))
def test_torchvision_state_dict_gives_identical_logits(tv_name, tmp_path):
    tv_model = _randomise_bn(getattr(torchvision.models, tv_name)(weights=None))
    path = tmp_path / f"{tv_name}.pth"
    torch.save(tv_model.state_dict(), path)
    ours = _load(TV_TO_OURS[tv_name], path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv_model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("style", ["current", "legacy", "safetensors", "training-checkpoint"])
def test_checkpoint_styles(style, tv_densenet121, tmp_path):
    state_dict = tv_densenet121.state_dict()
    if style == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        if style == "legacy":
            state_dict = _legacy_keys(state_dict)
            assert "features.denseblock1.denselayer1.norm.1.weight" in state_dict
        elif style == "training-checkpoint":  # DDP prefix inside a trainer's checkpoint
            state_dict = {"state_dict": {f"module.{k}": v for k, v in state_dict.items()}, "epoch": 3}
        path = tmp_path / "w.pth"
        torch.save(state_dict, path)
    ours = _load("densenet121", path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv_densenet121(x), rtol=1e-5, atol=1e-5)


def test_timm_state_dict_gives_identical_logits(tmp_path):
    timm_model = _randomise_bn(timm.create_model("densenet121"))
    torch.save(timm_model.state_dict(), tmp_path / "timm.pth")
    ours = _load("densenet_bc121_k32", tmp_path / "timm.pth")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), timm_model(x), rtol=1e-5, atol=1e-5)


def test_first_conv_adapted_to_one_channel(tv_densenet121, tmp_path):
    torch.save(tv_densenet121.state_dict(), tmp_path / "w.pth")
    gray = _load("densenet_bc121_k32", tmp_path / "w.pth", in_chans=1)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():  # timm sums the RGB filters: a gray image equals the RGB model on a replicated image
        torch.testing.assert_close(gray(x), tv_densenet121(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_new_num_classes_keeps_features_and_resets_classifier(tv_densenet121, tmp_path):
    torch.save(tv_densenet121.state_dict(), tmp_path / "w.pth")
    model = _load("densenet_bc121_k32", tmp_path / "w.pth", num_classes=10)
    assert model.classifier.out_features == 10
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = torch.relu(tv_densenet121.features(x))
        torch.testing.assert_close(model.forward_features(x), expected, rtol=1e-5, atol=1e-5)


def test_features_only_loads_pretrained(tv_densenet121, tmp_path):
    torch.save(tv_densenet121.state_dict(), tmp_path / "w.pth")
    model = _load("densenet_bc121_k32", tmp_path / "w.pth", features_only=True, out_indices=(4,))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], torch.relu(tv_densenet121.features(x)), rtol=1e-5, atol=1e-5)


def test_wrong_architecture_names_the_model_that_fits(tv_densenet121, tmp_path):
    torch.save(tv_densenet121.state_dict(), tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"does not fit.*densenet_bc121_k32") as err:
        _load("densenet_bc169_k32", tmp_path / "w.pth")
    assert "block_config=(6, 12, 24, 16)" in str(err.value)
    assert "Missing in checkpoint" in str(err.value)


def test_classifier_kept_when_it_fits_and_replaced_with_a_warning_otherwise(tmp_path, caplog):
    source = db.create_model("densenet_bc100_k12_cifar", num_classes=100)
    torch.save(source.state_dict(), tmp_path / "c100.pth")
    # The pretrained config says 10 classes; the file's own shapes decide, so the 100-class head is kept.
    model = _load("densenet_bc100_k12_cifar", tmp_path / "c100.pth", num_classes=100)
    torch.testing.assert_close(model.classifier.weight, source.classifier.weight)
    assert not caplog.records
    with caplog.at_level("WARNING"):
        model = _load("densenet_bc100_k12_cifar", tmp_path / "c100.pth")  # default num_classes=10
    assert model.classifier.out_features == 10
    assert "classifier has 100 classes" in caplog.text and "num_classes=100" in caplog.text
    torch.testing.assert_close(model.features.conv0.weight, source.features.conv0.weight)


def test_partial_checkpoint_is_refused(tv_densenet121, tmp_path):
    state_dict = tv_densenet121.state_dict()
    del state_dict["features.denseblock2.denselayer3.conv1.weight"]
    torch.save(state_dict, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"Missing in checkpoint \(1\): features.denseblock2.denselayer3.conv1.weight"):
        _load("densenet_bc121_k32", tmp_path / "partial.pth")


class _Payload:
    """Unpickling this object would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("payload executed",))


def test_torch_files_load_with_weights_only(tv_densenet121, tmp_path, capsys):
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": tv_densenet121.state_dict(), "extra": _Payload()}, path)
    with pytest.raises(
        ValueError, match=r"unsafe.pth is not a readable weights file .*weights_only=True\) refuses to unpickle"
    ):
        _load("densenet_bc121_k32", path)
    assert "payload executed" not in capsys.readouterr().out


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        _load("densenet_bc121_k32", tmp_path / "nope.pth")


def test_file_without_pretrained_flag_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="pass pretrained=True"):
        db.create_model("densenet_bc121_k32", pretrained_cfg_overlay=dict(file=str(tmp_path / "w.pth")))


def test_pretrained_without_any_weights_is_an_error():
    with pytest.raises(ValueError, match=r"densenet_bc264_k32 has no weights to download; .*Lua Torch .t7 \(loads"):
        db.create_model("densenet_bc264_k32", pretrained=True)


def test_pretrained_configs():
    assert db.list_models(pretrained=True) == sorted(TV_TO_OURS.values())
    model = db.create_model("densenet_bc121_k32.tv_in1k")
    assert model.pretrained_cfg["tag"] == "tv_in1k"
    assert model.pretrained_cfg["url"].endswith("densenet121-a639ec97.pth")
    cifar = db.create_model("densenet_bc100_k12_cifar")
    assert cifar.pretrained_cfg["input_size"] == (3, 32, 32) and cifar.num_classes == 10


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8])
def test_integer_weights_are_refused_not_cast(tmp_path, dtype):
    # load_state_dict would cast an int32 file into the float model without a word (the reliability issue)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in _tiny().state_dict().items()}
    torch.save(state, tmp_path / "ints.pth")
    with pytest.raises(ValueError, match=r"ints.pth holds integer tensors where the model has floating-point weights"):
        db.create_model(
            "densenet_bc121_k32", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "ints.pth")), **TINY
        )


TINY = dict(growth_rate=4, block_config=(1, 1, 1, 1))


def _tiny():
    return db.create_model("densenet_bc121_k32", **TINY)


def test_files_are_diagnosed_by_their_content_not_their_name(tmp_path):
    from safetensors.torch import save_file

    kwargs = dict(growth_rate=4, block_config=(1, 1, 1))
    source = db.create_model("densenet40_k12_cifar", **kwargs)
    save_file(source.state_dict(), tmp_path / "converted.pth")  # a safetensors file under a .pth name loads
    loaded = db.create_model("densenet40_k12_cifar", pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(tmp_path / "converted.pth")), **kwargs)  # fmt: skip
    torch.testing.assert_close(loaded.classifier.weight, source.classifier.weight)
    (tmp_path / "garbage.pth").write_bytes(bytes(range(7, 107)))
    (tmp_path / "net.prototxt").write_text('name: "net"\nlayer { name: "conv" type: "Convolution" }\n')
    for name, reason in (("garbage.pth", "neither a torch file"), ("net.prototxt", "its weights are the .caffemodel")):
        with pytest.raises(ValueError, match=f"{name} is not a readable weights file .*{reason}"):
            db.create_model(
                "densenet40_k12_cifar", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / name))
            )


def test_a_backbones_checkpoint_into_a_task_model_is_pointed_at_the_backbone(tmp_path):
    tiny = dict(growth_rate=4, block_config=(1, 1, 1, 1))
    torch.save(db.create_model("densenet_bc121_k32", **tiny).state_dict(), tmp_path / "densenet.pth")
    overlay = dict(file=str(tmp_path / "densenet.pth"))
    with pytest.raises(ValueError, match=r"densenet\.pth: the checkpoint does not fit .*backbone_kwargs=dict\(pretr"):
        db.create_model("dense_aspp121", backbone_kwargs=tiny, pretrained=True, pretrained_cfg_overlay=overlay)
