"""PeleeNet (Wang et al., NeurIPS 2018): the official parameter count and layout, the official checkpoint's key
layout, feature maps at 224 and 304 px, and every memory mode against the plain one in float64."""

from __future__ import annotations

import copy

import pytest
import torch

import densebackbones as db
from densebackbones.layers import TwoWayDenseLayer, set_memory_mode, two_way_bottleneck


def _meta(name: str, **kwargs):
    with torch.device("meta"):
        return db.create_model(name, **kwargs)


def test_official_parameter_count_and_widths():
    model = _meta("peleenet")
    assert sum(p.numel() for p in model.parameters()) == 2_802_248  # docs/reference.md, official definition
    assert model.feature_info[-1]["num_chs"] == 704 and model.classifier.in_features == 704
    assert [b.out_chs for b in model.modules() if isinstance(b, db.layers.DenseBlock)] == [128, 256, 512, 704]
    assert isinstance(model.head_drop, torch.nn.Dropout) and model.head_drop.p == 0.05


def test_two_way_bottleneck_with_the_official_cap():
    assert [two_way_bottleneck(512, 32, w) for w in (1, 2, 4, 4)] == [16, 32, 64, 64]
    assert two_way_bottleneck(32, 32, 4) == 16  # 64 > 32 / 2: capped to int(32 / 8) * 4
    layer = TwoWayDenseLayer(32, 32, bottleneck_width=4)
    assert layer.branch1a.conv.out_channels == 16 and layer.branch2c.conv.out_channels == 16
    with pytest.raises(ValueError, match="odd 5"):
        TwoWayDenseLayer(32, 5)
    with pytest.raises(ValueError, match="bottleneck of 0 channels"):
        TwoWayDenseLayer(8, 4, bottleneck_width=1)


def test_feature_maps_at_224_and_at_the_detectors_304():
    model = db.create_model("peleenet", features_only=True).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224))
    assert [tuple(m.shape[1:]) for m in maps] == [
        (32, 112, 112),  # the stem block's first unit: smp's stride-2 level
        (128, 56, 56),
        (256, 28, 28),
        (512, 14, 14),
        (704, 7, 7),
    ]
    detector_view = db.create_model("peleenet", features_only=True, out_indices=(3, 4), transition_ceil=True).eval()
    with torch.no_grad():
        maps = detector_view(torch.randn(1, 3, 304, 304))
    assert [tuple(m.shape[1:]) for m in maps] == [(512, 19, 19), (704, 10, 10)]  # the stage-3 pool rounds up
    with pytest.raises(ValueError, match="out_indices"):
        db.create_model("peleenet", features_only=True, out_indices=(5,))


@pytest.mark.parametrize("mode", ["buffer", "efficient"])
def test_stride_2_level_is_the_stem_units_map_in_every_mode(mode):
    # Level 0 sits inside the stem block (recomputed as a whole in the efficient mode): the map of its first unit,
    # and a loss on it trains the stem as in the plain mode.
    kwargs = dict(growth_rate=8, block_config=(1, 1, 1, 1), stem_width=8, features_only=True)
    torch.manual_seed(0)
    plain = db.create_model("peleenet", memory_mode="plain", **kwargs).double()
    other = db.create_model("peleenet", memory_mode=mode, **kwargs).double()
    other.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    results = []
    for model in (plain, other):
        maps = model.train()(x)
        sum((m * torch.linspace(-1, 1, m.numel(), dtype=m.dtype).view_as(m)).sum() for m in maps).backward()
        results.append((maps, [p.grad for p in model.parameters()]))
    torch.testing.assert_close(results[1], results[0])
    stem = plain.model.features.stemblock if hasattr(plain, "model") else plain.features.stemblock
    torch.testing.assert_close(results[0][0][0], stem.stem1(x))  # training mode: the same batch statistics


# Keys of the official checkpoint (peleenet_acc7208.pth.tar: DataParallel's ``module.`` prefix, ``state_dict``).
OFFICIAL_KEYS = [
    "module.features.stemblock.stem1.conv.weight",
    "module.features.stemblock.stem2b.norm.running_mean",
    "module.features.stemblock.stem3.norm.weight",
    "module.features.denseblock1.denselayer1.branch1a.conv.weight",
    "module.features.denseblock2.denselayer4.branch2c.norm.running_var",
    "module.features.denseblock4.denselayer6.branch2b.conv.weight",
    "module.features.transition3.conv.weight",
    "module.features.transition4.norm.bias",
    "module.classifier.weight",
    "module.classifier.bias",
]


def test_official_checkpoint_layout_loads_with_identical_logits(tmp_path):
    source = db.create_model("peleenet").eval()
    with torch.no_grad():
        for p in source.parameters():
            p.uniform_(-0.1, 0.1)
    official = {f"module.{k}": v for k, v in source.state_dict().items()}
    assert set(OFFICIAL_KEYS) <= set(official)
    torch.save({"epoch": 120, "arch": "peleenet", "state_dict": official, "best_acc1": 72.08}, tmp_path / "p.pth.tar")
    loaded = db.create_model(
        "peleenet", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "p.pth.tar"))
    ).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)
    wider = {k: v for k, v in official.items()}
    wider["module.classifier.weight"] = torch.zeros(1000, 705)
    torch.save({"state_dict": wider}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="classifier|shape"):
        db.create_model("peleenet", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "other.pth")))


def _tiny(**kwargs):
    args = dict(growth_rate=8, block_config=(2, 2), bottleneck_width=(1, 2), stem_width=16, num_classes=3)
    return db.models.PeleeNet(**dict(args, **kwargs)).double()


def _step(model, x, seed):
    torch.manual_seed(seed)
    x = x.clone().requires_grad_()
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out, x.grad


@pytest.mark.parametrize("mode", ["buffer", "efficient"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_memory_modes_equal_plain_in_float64(mode, train):
    plain = _tiny(memory_mode="plain", drop_rate=0.2)
    other = copy.deepcopy(plain)
    set_memory_mode(other, mode)
    plain.train(train), other.train(train)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    for seed in (0, 1):
        out_p, grad_p = _step(plain, x, seed)
        out_o, grad_o = _step(other, x, seed)
        torch.testing.assert_close(out_o, out_p)
        torch.testing.assert_close(grad_o, grad_p)
    for (name, p), q in zip(plain.named_parameters(), other.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    for (name, a), b in zip(plain.named_buffers(), other.buffers()):
        torch.testing.assert_close(b, a, msg=name)  # running statistics updated once per step, also recomputing
    assert other.memory_mode == mode and other.grad_checkpointing == (mode == "efficient")


@pytest.mark.parametrize("mode", ["plain", "buffer", "efficient"])
def test_efficient_mode_keeps_no_stem_or_transition_maps(mode, monkeypatch):
    # saved-tensor hooks send units down the plain route (layers/routes.py): here they only observe
    monkeypatch.setattr(db.layers.routes, "_saved_tensor_hooks_active", lambda: False)
    # Outside the dense blocks the efficient mode recomputes the stem and the post-activation transitions in backward:
    # a training forward keeps none of the stem's half-resolution maps and far fewer bytes than the other modes.
    model = db.create_model("peleenet", memory_mode=mode, num_classes=3).train()
    units = [m for m in model.modules() if getattr(m, "follows_memory_mode", False)]
    assert len(units) > 20 and {u.memory_mode for u in units} == {mode}
    saved: dict[int, int] = {}
    half_resolution = []

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        if t.dim() == 4 and t.shape[-1] == 32:  # the stem's 1/2-resolution maps of a 64 px input
            half_resolution.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    if mode == "efficient":
        assert half_resolution == [] and sum(saved.values()) < 2**21  # the blocks' buffers and small tensors only
    else:
        # (the buffer mode's layer graphs are saved under the block's own hooks, out of this count)
        assert half_resolution and sum(saved.values()) > 2**22
