"""torchvision's registry (issue 34): its reference scripts build models with
``torchvision.models.get_model(name, weights=args.weights, num_classes=...)``; every registered dense model is
there after ``import densebackbones``, with torchvision's builder signature."""

from __future__ import annotations

import urllib.error

import pytest
import timm.models._builder
import torch
import torchvision

import densebackbones as db


@pytest.mark.parametrize("name", db.list_models())
def test_every_model_is_in_torchvisions_registry(name):
    assert name in torchvision.models.list_models()
    assert torchvision.models.get_model_builder(name).__name__ == name


def test_get_model_as_the_reference_scripts_call_it(tmp_path):
    model = torchvision.models.get_model("densenet40_k12_cifar", weights=None, num_classes=7)
    assert isinstance(model, db.DenseNet) and model.num_classes == 7
    # a weights file (what a user passes to --weights after training elsewhere)
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    again = torchvision.models.get_model("densenet40_k12_cifar", weights=str(tmp_path / "weights.pth"), num_classes=7)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    with pytest.raises(TypeError, match=r"weights=3 for 'densenet40_k12_cifar': pass None, True/'DEFAULT'"):
        torchvision.models.get_model("densenet40_k12_cifar", weights=3)
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match=f"weights='{missing}' for 'densenet40_k12_cifar': no such file"):
        torchvision.models.get_model("densenet40_k12_cifar", weights=missing)
    with pytest.raises(ValueError, match=r"'in22k' for 'densenet_bc121_k32' is neither a file nor .*tv_in1k"):
        torchvision.models.get_model("densenet_bc121_k32", weights="in22k")


def test_torchvisions_own_densenets_stay_torchvisions():
    assert torchvision.models.get_model_builder("densenet121").__module__.startswith("torchvision")


def test_pretrained_weights_without_a_network_say_what_to_do(monkeypatch):
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", no_network)
    message = r"download the pretrained weights of 'densenet_bc121_k32' \(\[Errno -2\] Name .*pretrained_cfg_overlay"
    for build in (
        lambda: torchvision.models.get_model("densenet_bc121_k32", weights="DEFAULT"),
        lambda: db.create_model("densenet_bc121_k32", pretrained=True),
    ):
        with pytest.raises(OSError, match=message):
            build()
