"""FC-DenseNet's official Lasagne release (issue 35): ``.npz`` files of ``get_all_param_values`` order, written here
from FC-DenseNet.py's layer structure (tests/helpers/lasagne.py), load into the registered FC-DenseNet103 through
``pretrained_cfg_overlay=dict(file=...)`` and tools/convert_weights.py, and compute what the Lasagne network computes
(an independent float64 forward by Lasagne's layer semantics, its transposed convolutions written as scatters)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.lasagne import fc_densenet_forward, fc_densenet_params

import densebackbones as db

REPO = Path(__file__).resolve().parents[2]
LAYERS = [1, 2, 1, 1, 2, 2, 1, 2, 1, 1, 2]  # FC-DenseNet103's five pools, narrow
TINY = dict(growth_rate=4, layers_per_block=LAYERS, first_conv_chs=8)


def _file(tmp_path: Path, num_classes: int = 11, layers: list[int] = LAYERS) -> tuple[Path, list[np.ndarray]]:
    params = fc_densenet_params(num_classes, 8, 5, 4, layers)
    path = tmp_path / "FC-DenseNet103_weights.npz"
    np.savez(path, *params)
    return path, params


def test_the_lasagne_release_loads_and_computes_what_lasagne_does(tmp_path):
    path, params = _file(tmp_path)
    model = db.create_model("fc_densenet103.lasagne_camvid", pretrained=True,
                            pretrained_cfg_overlay=dict(file=str(path)), **TINY).eval().double()  # fmt: skip
    x = torch.rand(1, 3, 360, 480, dtype=torch.float64)  # CamVid's size: odd maps, centre-cropped upsamplings
    with torch.no_grad():
        torch.testing.assert_close(model(x), fc_densenet_forward(params, x, 5, LAYERS), rtol=1e-5, atol=1e-5)
    assert model.pretrained_cfg["mean"] == (0.0, 0.0, 0.0)  # the tag's [0, 1] pixels

    output = tmp_path / "fc_densenet103.safetensors"
    run = subprocess.run(
        [sys.executable, "tools/convert_weights.py", str(path), "fc_densenet103", str(output),
         "--model-kwargs", json.dumps(TINY)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    converted = db.create_model("fc_densenet103", pretrained=True, pretrained_cfg_overlay=dict(file=str(output)),
                                **TINY).eval().double()  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x))


def test_other_classes_start_a_fine_tune(tmp_path):
    path, _ = _file(tmp_path)
    model = db.create_model("fc_densenet103", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                            num_classes=5, **TINY)  # fmt: skip
    assert model.decoder.classifier.out_channels == 5  # a fresh classifier; the rest loaded


def test_files_that_are_not_the_lasagne_release_of_the_model(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(ValueError, match=r"garbage\.npz is not a readable \.npz file"):
        db.create_model("fc_densenet103", pretrained=True, pretrained_cfg_overlay=dict(file=str(garbage)), **TINY)
    named = tmp_path / "named.npz"
    np.savez(named, weights=np.zeros(3))
    with pytest.raises(ValueError, match=r"named\.npz is not a Lasagne parameter file"):
        db.create_model("fc_densenet103", pretrained=True, pretrained_cfg_overlay=dict(file=str(named)), **TINY)
    path, _ = _file(tmp_path, layers=[1, 1, 1, 1, 2, 2, 1, 2, 1, 1, 2])  # another network
    with pytest.raises(ValueError, match=r"FC-DenseNet103_weights\.npz is not this model .*arr_\d+ has shape"):
        db.create_model("fc_densenet103", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **TINY)
