"""transformers (the 'dev' extra) takes our backbones through its timm classes, as docs/clients.md shows: a
``TimmWrapperForImageClassification`` saved with ``save_pretrained`` loads by ``AutoModelForImageClassification`` in a
fresh process that imports densebackbones (and without the import fails with transformers' "upgrade timm" message,
which the docs explain); ``TimmBackbone`` gives our feature levels; timm's own ``save_for_hf`` folder loads back
through timm's ``local-dir:``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import timm
import torch
from transformers import (
    AutoBackbone,
    TimmBackbone,
    TimmBackboneConfig,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
)

import densebackbones as db

NAME = "densenet40_k12_cifar"
TINY = dict(growth_rate=4, block_config=(1, 1, 1))

FRESH_PROCESS = """
import sys

import torch
if sys.argv[2] == "import":
    import densebackbones  # noqa: F401
from transformers import AutoModelForImageClassification

model = AutoModelForImageClassification.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    torch.save(model(pixel_values=torch.load(sys.argv[1] + "/x.pt")).logits, sys.argv[1] + "/logits.pt")
"""


@pytest.mark.integration
def test_a_saved_wrapper_loads_by_auto_class_in_a_fresh_process(tmp_path):
    wrapper = TimmWrapperForImageClassification(TimmWrapperConfig(architecture=NAME, num_labels=5, model_args=TINY))
    assert isinstance(wrapper.timm_model, db.DenseNet) and wrapper.timm_model.num_classes == 5
    wrapper.save_pretrained(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = wrapper.eval()(pixel_values=x).logits
    script = tmp_path / "load.py"
    script.write_text(textwrap.dedent(FRESH_PROCESS))
    run = subprocess.run([sys.executable, str(script), str(tmp_path), "import"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected)
    # Without the import the name is unknown: timm's "Unknown model", or (newer transformers) a message that blames the
    # timm version; docs/clients.md says what both mean.
    bare = subprocess.run([sys.executable, str(script), str(tmp_path), "no-import"], capture_output=True, text=True)
    assert bare.returncode != 0
    messages = (f"Unknown model ({NAME})", f"The model architecture '{NAME}' is not supported")
    assert any(message in bare.stderr for message in messages)


def test_timm_backbone_gives_our_feature_levels():
    config = TimmBackboneConfig(backbone="densenet_bc121_k32", out_indices=(1, 2, 3, 4), use_pretrained_backbone=False)
    backbone = AutoBackbone.from_config(config).eval()  # what transformers' detection and segmentation models call
    assert isinstance(backbone, TimmBackbone)
    assert backbone.channels == [256, 512, 1024, 1024]
    reference = db.create_model("densenet_bc121_k32", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    assert {f"_backbone.{key}" for key in reference.state_dict()} == set(backbone.state_dict())
    reference.load_state_dict({key.removeprefix("_backbone."): value for key, value in backbone.state_dict().items()})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = backbone(x).feature_maps
        expected = reference(x)
    for ours, theirs in zip(expected, maps, strict=True):
        torch.testing.assert_close(theirs, ours)


def test_timms_save_for_hf_folder_loads_back_through_timm(tmp_path):
    model = timm.create_model(NAME, num_classes=4, **TINY).eval()
    timm.models.save_for_hf(model, tmp_path, model_args=TINY)
    again = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
