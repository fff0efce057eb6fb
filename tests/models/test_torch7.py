"""The official DenseNet release's Lua Torch 7 files (issue 35): ``.t7`` files written here in torch7's binary format
with the module tree of ``models/densenet.lua`` (tests/helpers/torch7.py; read back by the ``torchfile`` package, which
we did not write) load into the registered models, through ``pretrained_cfg_overlay=dict(file=...)`` and
tools/convert_weights.py, and compute what the Lua network computes (an independent float64 forward of the
file's tree)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.torch7 import forward, official_densenet, write_t7

import densebackbones as db

REPO = Path(__file__).resolve().parents[2]
TINY_IMAGENET = dict(growth_rate=4, block_config=(1, 2, 1, 1), num_classes=5)


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Weights and running statistics that are not the initial ones (so that a wrong assignment shows)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor) * 0.2)
    return model.eval()


def _assert_same_state(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    theirs = model.state_dict()
    for key, value in reference.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(theirs[key], value.float(), msg=key)


@pytest.mark.parametrize("custom_layers", [True, False], ids=["optMemory3", "standard"])
def test_imagenet_layout_loads_and_computes_what_the_lua_network_does(custom_layers, tmp_path):
    source = _randomised(db.create_model("densenet_bc121_k32", **TINY_IMAGENET))
    tree = official_densenet(source, custom_layers=custom_layers, pool_size=2)
    path = tmp_path / "densenet-tiny.t7"
    write_t7(path, tree)
    model = db.create_model("densenet_bc121_k32", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                            **TINY_IMAGENET).eval()  # fmt: skip
    _assert_same_state(model, source)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.double()(x), forward(tree, x))


def test_cifar_layout_with_old_torchs_running_std_and_the_tool(tmp_path):
    source = _randomised(db.create_model("densenet40_k12_cifar"))  # basic layers, no bottleneck
    tree = official_densenet(source, custom_layers=False, pool_size=8, legacy_std=True)
    path, output = tmp_path / "densenet-40.t7", tmp_path / "densenet40.safetensors"
    write_t7(path, tree)
    run = subprocess.run(
        [sys.executable, "tools/convert_weights.py", str(path), "densenet40_k12_cifar", str(output)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    model = db.create_model("densenet40_k12_cifar", pretrained=True, pretrained_cfg_overlay=dict(file=str(output)))
    _assert_same_state(model, source)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().double()(x), forward(tree, x))

    # the same file for another model: one line naming the file and the model it fits, nothing loaded
    with pytest.raises(ValueError, match=r"densenet-40.t7 is not this model .*; it fits densenet40_k12_cifar$"):
        db.create_model("densenet100_k12_cifar", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    # a classifier of another size is replaced, the rest loaded (fine-tuning from the release)
    tuned = db.create_model("densenet40_k12_cifar", num_classes=3, pretrained=True,
                            pretrained_cfg_overlay=dict(file=str(path)))  # fmt: skip
    assert tuned.classifier.out_features == 3
    torch.testing.assert_close(tuned.features.conv0.weight, source.features.conv0.weight)


def test_files_that_are_not_torch7_models(tmp_path):
    source = _randomised(db.create_model("densenet_bc121_k32", **TINY_IMAGENET))
    path = tmp_path / "whole.t7"
    write_t7(path, official_densenet(source, custom_layers=True, pool_size=2))
    truncated = tmp_path / "truncated.t7"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated.t7 is not a readable Torch 7 file"):
        db.create_model("densenet_bc121_k32", pretrained=True, pretrained_cfg_overlay=dict(file=str(truncated)),
                        **TINY_IMAGENET)  # fmt: skip
    with pytest.raises(ValueError, match=r"whole.t7 is not this model .*it fits no registered model of this family"):
        db.create_model("densenet_bc121_k32", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
