"""The official Caffe releases (issue 35): ``.caffemodel`` files written here in Caffe's binary protobuf format, from
the official prototxts (tests/fixtures/caffe, copied from Robert-JunWang/PeleeNet and Robert-JunWang/Pelee) and from
DSOD300 as its official ``NetSpec`` script builds it (tests/helpers/caffe.py), load into the registered models
through ``pretrained_cfg_overlay=dict(file=...)`` and tools/convert_weights.py, and compute what the Caffe network
computes (an independent float64 forward of the file's layers by Caffe's semantics)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.caffe import dsod300, run_net, write_caffemodel

import densebackbones as db
from densebackbones.models.caffe import caffe_state_dict, read_net, weight_units

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "caffe"
TINY_DSOD = dict(
    backbone_kwargs=dict(growth_rate=4, block_config=[1, 2, 1, 1]),
    head_kwargs=dict(second_half=8, extra_halves=[8, 4, 4, 4]),
)


def _official(name: str, tmp_path: Path) -> Path:
    path = tmp_path / name.removesuffix(".gz")
    path.write_bytes(gzip.decompress((FIXTURES / name).read_bytes()))
    return path


def _filled(net, image: torch.Tensor, path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """Random weights in every layer of ``net``, written as a .caffemodel; the blobs the Caffe net computes on
    ``image`` (RGB, given to the net as BGR, as the official data layers read images)."""
    blobs = run_net(net, {"data": image.flip(1)}, fill=True)
    return write_caffemodel(net, path), blobs


def _load(name: str, path: Path, **kwargs) -> torch.nn.Module:
    return db.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs).eval()


def test_the_official_caffe_peleenet_loads_and_computes_what_caffe_does(tmp_path):
    net = read_net(_official("peleenet.prototxt.gz", tmp_path))
    assert [u.kind for u in weight_units(net)].count("norm") == 113  # every BatchNorm with its Scale
    image = torch.rand(2, 3, 224, 224, dtype=torch.float64)
    path, blobs = _filled(net, image, tmp_path / "peleenet.caffemodel")
    model = _load("peleenet", path).double()
    with torch.no_grad():
        torch.testing.assert_close(model(image), blobs["classifier"], rtol=1e-6, atol=1e-6)


def test_the_official_merged_pelee_voc_model_loads_and_computes_what_caffe_does(tmp_path):
    # The README's "Model Merged BN with Conv": convolutions with biases where the model has conv + batch norm.
    net = read_net(_official("pelee_voc_deploy_merged.prototxt.gz", tmp_path))
    image = torch.rand(1, 3, 304, 304, dtype=torch.float64)
    path, blobs = _filled(net, image, tmp_path / "pelee_merged.caffemodel")
    model = _load("pelee", path).double()
    with torch.no_grad():
        loc, conf = model(image)[:2]
    torch.testing.assert_close(loc.reshape(1, -1), blobs["mbox_loc"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conf.reshape(1, -1), blobs["mbox_conf"], rtol=1e-5, atol=1e-5)


def test_dsod300_as_its_official_script_builds_it_and_the_tool(tmp_path):
    # DSOD300_V3_Body + CreateMultiBoxHead(use_batchnorm=True), narrow: the released files have this layer order,
    # the (re-used, learned) concatenation of the further scales and a batch norm after each prediction layer.
    net = dsod300(4, (1, 2, 1, 1), 21, (4, 6, 6, 6, 4, 4), halves=(8, 4, 4, 4), second=8)
    image = torch.rand(1, 3, 300, 300, dtype=torch.float64)
    path, blobs = _filled(net, image, tmp_path / "dsod300.caffemodel")
    model = _load("dsod300", path, **TINY_DSOD).double()
    with torch.no_grad():
        loc, conf = model(image)[:2]
    torch.testing.assert_close(loc.reshape(1, -1), blobs["mbox_loc"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(conf.reshape(1, -1), blobs["mbox_conf"], rtol=1e-6, atol=1e-6)

    output = tmp_path / "dsod300.safetensors"
    kwargs = json.dumps(TINY_DSOD)
    run = subprocess.run(
        [sys.executable, "tools/convert_weights.py", str(path), "dsod300", str(output), "--model-kwargs", kwargs],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    converted = _load("dsod300", output, **TINY_DSOD)
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(converted.state_dict()[key].double(), value, msg=key)


def test_files_that_are_not_caffe_models_of_the_model(tmp_path):
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match=r"garbage\.caffemodel is not a readable Caffe model"):
        _load("peleenet", garbage)

    net = read_net(_official("peleenet.prototxt.gz", tmp_path))
    path, _ = _filled(net, torch.rand(1, 3, 64, 64, dtype=torch.float64), tmp_path / "peleenet.caffemodel")
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated\.caffemodel is not a readable Caffe model"):
        _load("peleenet", truncated)

    # a file of another network: the first layer that differs, and which registered models it fits
    with pytest.raises(ValueError, match=r"peleenet\.caffemodel is not this model .*fits no registered model"):
        _load("dsod300", path, **TINY_DSOD)
    with pytest.raises(ValueError, match=r"is not this model .*it fits peleenet$"):
        _load("peleenet", path, block_config=(3, 4, 8, 5))

    prototxt = _official("peleenet.prototxt.gz", tmp_path)
    with pytest.raises(ValueError, match="holds no weights"):
        caffe_state_dict(prototxt, db.create_model("peleenet"))
