"""output_stride 8/16/32 (dilated backbones for DeepLab-style heads): the published network at 32, feature strides and
sizes at 8 and 16, the same weights at every stride, every memory mode equal to plain in float64 at 8, and the front
doors (create_model, timm, smp's ``tu-`` encoders, DenseNetBackbone and the mmseg config)."""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from mmengine.config import Config
from mmengine.registry import MODELS as ROOT_MODELS
from test_memory_modes import _assert_same_step

import densebackbones as db
from densebackbones.layers import set_memory_mode
from densebackbones.mm import DenseNetBackbone

REPO = Path(__file__).resolve().parents[2]

# Tiny versions of every family with a pyramid (each level at its own stride): a few thousand parameters.
TINY = {
    "densenet_bc121_k32": dict(growth_rate=4, block_config=(1, 2, 1, 1), stem_width=8),
    "dsod_ds64_192_48_1": dict(growth_rate=4, block_config=(1, 1, 2, 1), stem_chs=(8, 8, 8)),
    "peleenet": dict(growth_rate=8, block_config=(1, 1, 2, 1), stem_width=8, bottleneck_width=(1, 1, 1, 1)),
    "condensenet74_c4_g4": dict(growth_rate=(4, 4, 4, 4, 4), block_config=(1, 1, 1, 2, 1)),
}
FAMILIES = list(TINY)

# Weighted sums of every feature level (eval, then train mode) of the tiny models with the weights of _fill, on a
# 2 x 3 x 67 x 67 float64 input, computed with the code before output_stride existed (commit 94d23eb).
GOLDEN = {
    "densenet_bc121_k32": [
        1071.6690899670002, -717.7965731520952, 6.24548895199565, 2.9663855360740903, 3.3212632240450612,
        603.0503540827217, -498.4042014528003, 24.823283151139286, -2.960950341152823, 3.305659303882893,
    ],
    "dsod_ds64_192_48_1": [
        12758.242521707456, 364.1464778212943, -23.718608742734975, -92.43025061904937,
        474.65964001748137, -51.18002253861799, 4.121628042225939, 35.1620891477901,
    ],
    "peleenet": [
        # level 0 (first of each row) is the stem block's stride-2 map since 2026-12-05 (before: the block's output)
        -1558.6598418222952, 177.41503557067358, -38.8056593457969, -11.185827494313216, 4.839077751714874,
        -221.91992946127496, -191.35557974503192, 4.497925936504179, -15.893371923241121, 16.5620639001691,
    ],
    "condensenet74_c4_g4": [
        -13098.213772009212, -1327.304891813421, -96.64323608185362, 51.46943694076032, 8.73029021069566,
        -287.5260589173256, 57.72298399404354, -15.873620764145503, 3.711656296335803, 3.9166782582169026,
    ],
}  # fmt: skip


def tiny(name: str, **kwargs) -> db.DenseNet:
    return db.create_model(name, num_classes=3, **dict(TINY[name], **kwargs))


def _fill(model: torch.nn.Module) -> torch.nn.Module:
    """Deterministic weights and statistics (no RNG), so the golden sums hold on any machine."""
    with torch.no_grad():
        for j, (name, t) in enumerate(sorted(model.state_dict().items())):
            if not t.is_floating_point() or name.endswith("_mask"):
                continue
            v = torch.sin(torch.arange(t.numel(), dtype=t.dtype) * 0.37 + j).view_as(t)
            scale = name.endswith("running_var") or (name.endswith(".weight") and t.ndim == 1)
            t.copy_(1 + 0.5 * v if scale else 0.3 * v)
    return model


def _image(h: int, w: int, batch: int = 2) -> torch.Tensor:
    return torch.sin(torch.arange(batch * 3 * h * w, dtype=torch.float64) * 0.11).view(batch, 3, h, w)


def _levels(model, x) -> list[torch.Tensor]:
    with torch.no_grad():
        return model.forward_intermediates(x, intermediates_only=True)


def _weighted_sum(t: torch.Tensor) -> float:
    return float((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).view_as(t)).sum())


# ------------------------------------------------------------------------------------------ the published network
@pytest.mark.parametrize("name", FAMILIES)
def test_output_stride_32_is_the_model_of_before(name):
    default = _fill(tiny(name).double())
    explicit = _fill(tiny(name, output_stride=32).double())
    assert str(explicit) == str(default)
    x = _image(67, 67)
    sums = []
    for train in (False, True):
        default.train(train), explicit.train(train)
        levels = _levels(default, x)
        for a, b in zip(levels, _levels(explicit, x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        sums += [_weighted_sum(t) for t in levels]
    assert sums == pytest.approx(GOLDEN[name], rel=1e-9, abs=1e-9)


def test_output_stride_32_equals_torchvision():
    reference = torchvision.models.DenseNet(4, (1, 2, 1, 1), 8, num_classes=3).eval()
    ours = tiny("densenet_bc121_k32", output_stride=32).eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 67, 67)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


# --------------------------------------------------------------------------------------------- strides and sizes
@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("name", FAMILIES)
def test_feature_strides_and_sizes_for_odd_inputs(name, output_stride):
    published, dilated = tiny(name).eval(), tiny(name, output_stride=output_stride).eval()
    published_strides = [i["reduction"] for i in published.feature_info]
    strides = [i["reduction"] for i in dilated.feature_info]
    assert strides == [min(s, output_stride) for s in published_strides]
    assert [i["num_chs"] for i in dilated.feature_info] == [i["num_chs"] for i in published.feature_info]
    x = torch.randn(1, 3, 67, 71)  # odd, and not square
    sizes = {s: t.shape[-2:] for s, t in zip(published_strides, _levels(published, x))}  # deepest level per stride
    for stride, t in zip(strides, _levels(dilated, x)):
        assert t.shape[-2:] == sizes[stride], (stride, t.shape)
    # timm's features_only wrapper reports and returns the same.
    features = timm.create_model(name, features_only=True, output_stride=output_stride, **TINY[name]).eval()
    assert features.feature_info.reduction() == strides
    with torch.no_grad():
        assert [t.shape[-2:] for t in features(x)] == [sizes[s] for s in strides]


@pytest.mark.parametrize(
    ("output_stride", "dilations", "pooled", "size"),
    [(8, (1, 1, 2, 4), (True, False, False), (8, 9)), (16, (1, 1, 1, 2), (True, True, False), (4, 4))],
)
def test_densenet_121_layout_at_8_and_16(output_stride, dilations, pooled, size):
    # DenseASPP's setting at 8: transitions 2 and 3 without pooling, blocks 3 and 4 dilated by 2 and 4.
    with torch.device("meta"):  # structure and shapes only
        model = db.create_model("densenet_bc121_k32", output_stride=output_stride, num_classes=0)
    features = model.features
    assert tuple(getattr(features, f"denseblock{i}").denselayer1.conv2.dilation[0] for i in (1, 2, 3, 4)) == dilations
    assert tuple(not isinstance(getattr(features, f"transition{i}").pool, nn.Identity) for i in (1, 2, 3)) == pooled
    assert model.feature_info[-1]["reduction"] == output_stride and model.output_stride == output_stride
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 67, 71, device="meta")).shape[-2:] == size


# ---------------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("name", FAMILIES)
def test_weights_move_between_strides(name, tmp_path):
    source = _fill(tiny(name)).eval()
    shapes = {k: v.shape for k, v in source.state_dict().items()}
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    x = torch.randn(1, 3, 67, 67)
    reference = _levels(source, x)
    for output_stride in (8, 16):
        model = tiny(name, output_stride=output_stride)
        assert {k: v.shape for k, v in model.state_dict().items()} == shapes
        model.load_state_dict(source.state_dict())  # strict
        loaded = tiny(name, output_stride=output_stride, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
        for (key, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
            torch.testing.assert_close(b, a, msg=key)
        # Up to the first removed pooling the maps are the same; later ones see the same weights dilated.
        for level, t in enumerate(_levels(model.eval(), x)):
            if source.feature_info[level]["reduction"] <= output_stride:
                torch.testing.assert_close(t, reference[level])
        back = tiny(name)  # and back to 32: the model of before
        back.load_state_dict(model.state_dict())
        torch.testing.assert_close(_levels(back.eval(), x)[-1], reference[-1])


# ---------------------------------------------------------------------------------------------- memory modes
MODE_CASES = [(name, {}) for name in FAMILIES] + [("densenet_bc121_k32", dict(bn_size=None, proj_drop_rate=0.2))]


@pytest.mark.parametrize("mode", ["buffer", "efficient"])
@pytest.mark.parametrize(("name", "extra"), MODE_CASES, ids=[*FAMILIES, "densenet-basic-dropout"])
def test_every_memory_mode_equals_plain_at_output_stride_8(name, extra, mode):
    # Dilated 3x3 convolutions through the shared buffer's own backward (ATen's convolution_backward with the
    # convolution's dilation and padding): the bottleneck's last conv (efficient), the basic layer's first (buffer).
    plain = tiny(name, output_stride=8, memory_mode="plain", **extra).double()
    other = copy.deepcopy(plain)
    assert set_memory_mode(other, mode) > 0
    x = torch.randn(2, 3, 27, 27, dtype=torch.float64)  # blocks 3 and 4 at 3 x 3, dilated by 2 and 4
    _assert_same_step(plain, other, x)
    plain.eval(), other.eval()
    _assert_same_step(plain, other, x)


# ---------------------------------------------------------------------------------------------------- errors
def test_errors_name_the_strides_a_model_takes():
    with pytest.raises(ValueError, match=r"densenet_bc121_k32 takes output_stride=8, 16 or 32 .*got 4"):
        db.create_model("densenet_bc121_k32", output_stride=4)
    with pytest.raises(ValueError, match=r"peleenet takes output_stride=8, 16 or 32 .*got 12"):
        timm.create_model("peleenet", features_only=True, output_stride=12)
    with pytest.raises(ValueError, match=r"DenseNet takes output_stride=8, 16 or 32"):
        db.DenseNet(output_stride=64)
    for call in (
        lambda: db.create_model("msdnet_anytime_cifar", output_stride=8),
        lambda: timm.create_model("msdnet_imagenet", features_only=True, output_stride=16),
    ):
        with pytest.raises(ValueError, match=r"msdnet_\w+ takes output_stride=32 only, got \d+: MSDNet computes"):
            call()
    with pytest.raises(ValueError, match=r"msdnet_\* \(MSDNet\) takes output_stride=32 only"):
        db.models.MSDNet(output_stride=8)
    with pytest.raises(ValueError, match="output_stride=8, 16 or 32"):
        DenseNetBackbone("densenet_bc121_k32", output_stride=4)


# ------------------------------------------------------------------------------------------------ OpenMMLab, smp
def test_densenet_backbone_output_stride_and_pretrained_init(tmp_path):
    source = tiny("densenet_bc121_k32")
    torch.save(source.state_dict(), tmp_path / "w.pth")
    backbone = DenseNetBackbone(
        "densenet_bc121_k32",
        output_stride=8,
        out_indices=(2, 3, 4),
        init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "w.pth")),
        **TINY["densenet_bc121_k32"],
    )
    backbone.init_weights()
    torch.testing.assert_close(backbone.model.features.conv0.weight, source.features.conv0.weight)
    outs = backbone.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[-2:] for o in outs] == [(8, 8)] * 3


def test_mmseg_deeplabv3_config_builds_the_backbone_at_stride_8():
    cfg = Config.fromfile(str(REPO / "configs/mmseg/deeplabv3_densenet121_os8_cityscapes.py"))
    assert cfg.model.decode_head.type == "ASPPHead" and cfg.custom_imports.imports == ["densebackbones"]
    with torch.device("meta"):  # shapes only: DenseNet-121 as the config has it, without computing
        backbone = ROOT_MODELS.build(cfg.model.backbone)  # the root registry, as mmseg's reaches it
        assert isinstance(backbone, DenseNetBackbone)
        assert [backbone.feature_info[i]["reduction"] for i in backbone.out_indices] == [4, 8, 8, 8]
        outs = backbone.eval()(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape[1:]) for o in outs] == [(256, 16, 24), (512, 8, 12), (1024, 8, 12), (1024, 8, 12)]
    heads = (cfg.model.decode_head, cfg.model.auxiliary_head)
    assert [outs[head.in_index].shape[1] for head in heads] == [head.in_channels for head in heads]


@pytest.mark.parametrize(("decoder", "output_stride"), [("DeepLabV3", 8), ("DeepLabV3Plus", 16), ("DeepLabV3Plus", 8)])
def test_smp_tu_encoders(decoder, output_stride):
    smp = pytest.importorskip("segmentation_models_pytorch")  # the 'dev' extra installs it
    net = getattr(smp, decoder)(
        encoder_name="tu-densenet_bc121_k32",
        encoder_weights=None,
        encoder_output_stride=output_stride,
        classes=3,
        **TINY["densenet_bc121_k32"],  # passed on to timm.create_model
    ).eval()
    assert net.encoder.model.feature_info.reduction() == [min(s, output_stride) for s in (2, 4, 8, 16, 32)]
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 96)).shape == (1, 3, 64, 96)


# ------------------------------------------------------------------------------------------------------ benchmark
def test_benchmark_takes_output_strides():
    sys.path.insert(0, str(REPO / "tools"))
    import benchmark

    parser = benchmark.get_args_parser()
    with pytest.raises(SystemExit, match="--output-stride takes our implementations"):
        benchmark.main(parser.parse_args("--impls torchvision --output-stride 8 --skip-timing".split()))
    with pytest.raises(SystemExit, match="output strides apply to backbones"):
        benchmark.main(parser.parse_args("--models fc_densenet56 --output-stride 8 --skip-timing".split()))
    with pytest.raises(argparse.ArgumentTypeError, match="applies to ours:<mode> only"):
        benchmark.impl_spec("timm@os8")
    kwargs = '{"growth_rate": 4, "block_config": [1, 1, 1, 1]}'
    args = parser.parse_args(["--model-kwargs", kwargs, "--batch-size", "1", "--img-size", "32"])
    args.model, args.mode = "densenet_bc121_k32", "train"
    model, step = benchmark.build(args, "ours:efficient@os8")
    assert model.output_stride == 8 and model.memory_mode == "efficient"
    step()


def test_fc_densenet_decoder_on_a_dilated_backbone():
    # DenseSegmentor's decoder takes the backbone's strides from feature_info; equal strides get no upsampling.
    encoder_kwargs = dict(output_stride=8, **TINY["densenet_bc121_k32"])
    model = db.create_model("fc_densenet_bc121_k32", num_classes=3, encoder_kwargs=encoder_kwargs, growth_rate=4)
    assert model.encoder.feature_info.reduction() == [2, 4, 8, 8, 8]
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 67, 71)).shape == (1, 3, 67, 71)
