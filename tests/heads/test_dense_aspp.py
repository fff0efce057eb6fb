"""DenseASPP (issue 37, item 1) against the official code (DeepMotionAIResearch/DenseASPP): parameter counts of every
depth equal the official model's, a checkpoint in the official format (keys, DataParallel prefix, PyTorch 0.3.1's
batch norms) loads and computes what the official network computes (tests/helpers/dense_aspp.py, float64), and the
memory modes agree."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_kwargs
from helpers.dense_aspp import OFFICIAL_CFGS, official_forward, official_parameter_count, official_state_dict

import densebackbones as db

TINY_OFFICIAL = dict(growth_rate=4, num_init_features=8, block_config=(1, 2, 1, 2), d_feature0=8, d_feature1=4)
TINY = dict(backbone_kwargs=dict(growth_rate=4, block_config=(1, 2, 1, 2), stem_width=8), d_feature0=8, d_feature1=4)


@pytest.mark.parametrize("depth", sorted(OFFICIAL_CFGS))
def test_parameter_counts_equal_the_official_models(depth):
    with torch.device("meta"):
        model = db.create_model(f"dense_aspp{depth}")
    assert sum(p.numel() for p in model.parameters()) == official_parameter_count(OFFICIAL_CFGS[depth])


def test_an_official_checkpoint_loads_and_computes_what_the_official_network_does(tmp_path):
    state = official_state_dict(TINY_OFFICIAL, 5)
    torch.save(state, tmp_path / "denseASPP161.pkl")
    model = db.create_model("dense_aspp121", num_classes=5, pretrained=True,
                            pretrained_cfg_overlay=dict(file=str(tmp_path / "denseASPP161.pkl")), **TINY)  # fmt: skip
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().double()(x), official_forward(state, TINY_OFFICIAL, x))


def test_memory_modes_agree_and_the_output_has_the_input_size():
    torch.manual_seed(0)
    model = db.create_model("dense_aspp169", **tiny_kwargs("dense_aspp169")).double().eval()
    x = torch.randn(1, 3, 37, 50, dtype=torch.float64)
    outputs = []
    for mode in ("plain", "buffer", "efficient"):
        model.set_memory_mode(mode)
        with torch.no_grad():
            outputs.append(model(x))
    assert outputs[0].shape == (1, 19, 37, 50)
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0])


@pytest.mark.parametrize("backbone", ["peleenet", "condensenet74_c4_g4", "dsod_ds64_192_48_1"])
def test_sits_on_any_pyramid_backbone_at_output_stride_8(backbone):
    # The head reads the backbone's deepest level at stride 8 (its own extractor at output_stride=8), and the whole
    # model follows the backbone's memory modes with equal results.
    torch.manual_seed(0)
    model = db.create_model("dense_aspp121", backbone=backbone, backbone_kwargs=tiny_kwargs(backbone), num_classes=3)
    tiny = tiny_kwargs(backbone)
    reference = db.create_model(backbone, features_only=True, out_indices=(-1,), output_stride=8, **tiny)
    reference.load_state_dict(model.features.extractor.state_dict())
    model, reference = model.double().eval(), reference.double().eval()
    x = torch.randn(1, 3, 40, 56, dtype=torch.float64)
    with torch.no_grad():
        deepest = reference(x)[-1]
        assert deepest.shape[-2:] == (5, 7)  # stride 8
        torch.testing.assert_close(model.head(deepest), model.head(model.features(x)))
        outputs = []
        for mode in ("plain", "buffer", "efficient"):
            model.set_memory_mode(mode)
            outputs.append(model(x))
    assert outputs[0].shape == (1, 3, 40, 56)
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0])


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="msdnet_imagenet takes output_stride=32 only"):
        db.create_model("dense_aspp121", backbone="msdnet_imagenet")
    with pytest.raises(ValueError, match="output_stride is DenseASPP's to set"):
        db.create_model("dense_aspp121", backbone_kwargs=dict(output_stride=16))


def test_exports_with_dynamic_sizes_from_its_stated_minimum():
    model = db.create_model("dense_aspp121", **tiny_kwargs("dense_aspp121")).eval()
    side = torch.export.Dim("side", min=model.min_input_size, max=1024)
    width = torch.export.Dim("width", min=model.min_input_size, max=1024)
    program = torch.export.export(model, (torch.randn(1, 3, 64, 80),), dynamic_shapes={"x": {2: side, 3: width}})
    for size in ((16, 16), (45, 67)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), model(x))
    with pytest.raises(ValueError, match="two pixels at output stride 8"):
        model(torch.randn(1, 3, 15, 32))
