"""mmengine integration: registry scope, DenseNetBackbone options and Pretrained init."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision
from mmengine.registry import MODELS as ROOT_MODELS

import densebackbones as db
from densebackbones.mm import DenseNetBackbone


def test_build_from_config_through_our_and_the_root_registry():
    cfg = dict(type="densebackbones.DenseNetBackbone", arch="densenet_bc100_k12_cifar", out_indices=(1, 2, 3))
    for registry in (db.MODELS, ROOT_MODELS):  # ROOT_MODELS is what mmseg/mmdet configs reach
        backbone = registry.build(cfg)
        assert isinstance(backbone, DenseNetBackbone)
        outs = backbone(torch.randn(2, 3, 32, 32))
        assert [o.shape[1:] for o in outs] == [(216, 32, 32), (300, 16, 16), (342, 8, 8)]


def test_registered_models_and_the_generic_class_are_buildable():
    model = db.MODELS.build(dict(type="densenet_bc100_k12_cifar", num_classes=100))
    assert model.num_classes == 100
    tiny = ROOT_MODELS.build(
        dict(type="densebackbones.DenseNet", growth_rate=4, block_config=(1, 1), stem_type="cifar")
    )
    assert isinstance(tiny, db.DenseNet)


def test_frozen_stages_and_norm_eval():
    backbone = DenseNetBackbone("densenet_bc121_k32", out_indices=(1, 2), frozen_stages=1)
    features = backbone.model.features
    backbone.train()
    frozen = [features.conv0, features.norm0, features.denseblock1]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in features.transition1.parameters())
    assert not features.norm0.training and not features.denseblock1.denselayer1.norm1.training
    assert features.transition1.norm.training
    backbone_eval = DenseNetBackbone("densenet_bc121_k32", norm_eval=True).train()
    assert all(not m.training for m in backbone_eval.modules() if isinstance(m, nn.BatchNorm2d))
    assert backbone_eval.model.features.conv0.weight.requires_grad


@pytest.mark.parametrize(
    "arch",
    ["densenet_bc100_k12_cifar", "peleenet", "condensenet86_cifar", "dsod_ds64_192_48_1", "msdnet_anytime_cifar"],
)
def test_frozen_stages_on_every_family(arch):
    # MSDNet's levels are its blocks (blocks.N), not features.*: frozen_stages failed with "no attribute 'features'"
    backbone = DenseNetBackbone(arch, frozen_stages=0).train()
    tap = backbone.feature_info[0]["module"]
    frozen = backbone.model.get_submodule(tap)
    assert all(not p.requires_grad for p in frozen.parameters())
    assert all(not m.training for m in frozen.modules())
    frozen_ids = {id(p) for p in frozen.parameters()}
    assert any(p.requires_grad for p in backbone.parameters() if id(p) not in frozen_ids)
    size = 32 if "cifar" in arch else 64
    outs = backbone(torch.randn(2, 3, size, size))
    sum(o.sum() for o in outs).backward()  # the unfrozen levels train


def test_frozen_stages_out_of_range():
    with pytest.raises(ValueError, match="frozen_stages must be in -1..4"):
        DenseNetBackbone("densenet_bc121_k32", frozen_stages=5)


def test_bad_out_indices_in_backbone():
    with pytest.raises(ValueError, match="out of range"):
        DenseNetBackbone("densenet_bc100_k12_cifar", out_indices=(4,))


def test_pretrained_init_cfg(tmp_path):
    tv_model = torchvision.models.densenet121(weights=None).eval()
    torch.save(tv_model.state_dict(), tmp_path / "tv.pth")
    backbone = DenseNetBackbone(
        "densenet_bc121_k32", out_indices=(4,), init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "tv.pth"))
    )
    backbone.init_weights()
    backbone.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[0], torch.relu(tv_model.features(x)))


def test_norm_and_act_cfg_translation():
    backbone = DenseNetBackbone(
        "densenet_bc100_k12_cifar", norm_cfg=dict(type="SyncBN", momentum=0.01), act_cfg=dict(type="SiLU")
    )
    norms = [m for m in backbone.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert norms and all(m.momentum == 0.01 for m in norms)
    assert any(isinstance(m, nn.SiLU) for m in backbone.modules())
    with pytest.raises(ValueError, match="unsupported norm type"):
        DenseNetBackbone("densenet_bc100_k12_cifar", norm_cfg=dict(type="LN"))


@pytest.mark.parametrize(
    "norm_cfg",
    [dict(type="BN", requires_grad=False), dict(type="SyncBN", requires_grad=False), dict(type="GN", num_groups=2)],
    ids=["BN-frozen", "SyncBN-frozen", "GN"],
)
def test_norm_cfg_requires_grad_and_a_backbone_that_pickles(norm_cfg, tmp_path):
    # requires_grad=False freezes every norm layer's weight and bias, as mmpretrain's DenseNet does (mmdetection#2274:
    # all 42 stayed trainable); the whole backbone saves and loads with torch.save (the GN builder was a lambda).
    backbone = DenseNetBackbone("densenet_bc121_k32", norm_cfg=norm_cfg, out_indices=(3,))
    norm_type = nn.GroupNorm if norm_cfg["type"] == "GN" else nn.modules.batchnorm._NormBase
    norms = [m for m in backbone.modules() if isinstance(m, norm_type)]
    assert len(norms) > 100
    frozen = norm_cfg.get("requires_grad") is False
    assert all(p.requires_grad is not frozen for m in norms for p in m.parameters())
    assert all(p.requires_grad for name, p in backbone.named_parameters() if "conv" in name)
    torch.save(backbone, tmp_path / "backbone.pth")
    again = torch.load(tmp_path / "backbone.pth", weights_only=False)
    x = torch.randn(2, 3, 64, 64)
    backbone.eval(), again.eval()
    torch.testing.assert_close(again(x), backbone(x))


def test_msdnet_backbone_uses_every_parameter_and_loads_an_all_exit_checkpoint(tmp_path):
    tiny = dict(channels=4, growth_rate=2, num_blocks=3, base=2, step=2, num_classes=5)
    every_exit = db.create_model("msdnet_anytime_cifar", output="all", **tiny).eval()
    torch.save(every_exit.state_dict(), tmp_path / "msd.pth")
    tiny.pop("num_classes")
    init_cfg = dict(type="Pretrained", checkpoint=str(tmp_path / "msd.pth"))
    backbone = DenseNetBackbone("msdnet_anytime_cifar", out_indices=(0, 1), init_cfg=init_cfg, **tiny)
    backbone.init_weights()
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        expected = every_exit.forward_intermediates(x, indices=(0, 1), intermediates_only=True)
        for got, want in zip(backbone.eval()(x), expected, strict=True):
            torch.testing.assert_close(got, want)
    sum(m.sum() for m in backbone.train()(x)).backward()
    assert [n for n, p in backbone.named_parameters() if p.grad is None] == []  # no exits, no unread scale
