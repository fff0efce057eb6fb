"""The Pelee detector (Wang et al., NeurIPS 2018): the official parameter counts, the training scripts' default boxes,
the head's layout, feature sizes, the head on another backbone, and the errors for inputs and weights that do not
fit."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from densebackbones.heads import Pelee, ResBlock
from densebackbones.heads.ssd import (
    COCO_PRIORS,
    PELEE_COCO_PRIORS,
    PELEE_VOC_PRIORS,
    VOC_PRIORS,
    MultiBoxLoss,
    make_priors,
    script_prior_sizes,
)
from helpers import tiny_pelee
from safetensors.torch import save_file

import densebackbones as db


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def voc_pelee() -> Pelee:
    torch.manual_seed(0)
    return db.create_model("pelee").eval()


def test_official_parameter_counts(voc_pelee):
    assert _trainable(voc_pelee) == 5_425_892  # docs/reference.md: 5.43M for VOC's 21 classes
    with torch.device("meta"):
        coco = db.create_model("pelee", num_classes=81, priors=PELEE_COCO_PRIORS)
    assert _trainable(coco) == 5_981_012  # 5.98M for COCO's 81
    # The backbone is PeleeNet without its classifier: 2,802,248 - 704 * 1000 - 1000.
    assert _trainable(voc_pelee.backbone) == 2_802_248 - 705_000


def test_script_prior_sizes_reproduce_ssd300_and_pelee():
    # One formula, the Caffe training scripts': SSD300's constants come out of it too.
    assert script_prior_sizes(300, 6, 20, 90) == (VOC_PRIORS.min_sizes, VOC_PRIORS.max_sizes)
    assert PELEE_VOC_PRIORS.min_sizes == pytest.approx((30.4, 60.8, 112.48, 164.16, 215.84, 267.52))
    assert PELEE_VOC_PRIORS.max_sizes == pytest.approx((60.8, 112.48, 164.16, 215.84, 267.52, 319.2))
    assert PELEE_COCO_PRIORS.min_sizes == pytest.approx((21.28, 45.6, 100.32, 155.04, 209.76, 264.48))
    assert PELEE_COCO_PRIORS.max_sizes == pytest.approx((45.6, 100.32, 155.04, 209.76, 264.48, 319.2))
    assert COCO_PRIORS.min_sizes[0] == 21  # SSD300's COCO sizes stay DSOD's


def test_prior_count_and_placement(voc_pelee):
    priors = voc_pelee.priors
    # 6 boxes per cell on 19, 19, 10, 5, 3 and 1 px maps.
    assert priors.shape == (6 * (19 * 19 * 2 + 10 * 10 + 5 * 5 + 3 * 3 + 1), 4) == (5142, 4)
    first, second = priors[:6], priors[19 * 19 * 6 : 19 * 19 * 6 + 6]
    # The 19 px map feeds two heads: the same centres (step 16, offset 0.5), different sizes.
    assert torch.allclose(first[:, :2], torch.full((6, 2), 8 / 304)) and torch.allclose(first[:, :2], second[:, :2])
    assert first[0, 2].item() == pytest.approx(30.4 / 304) and second[0, 2].item() == pytest.approx(60.8 / 304)
    assert first[1, 2].item() == pytest.approx(math.sqrt(30.4 * 60.8) / 304)
    # Ratios 2 and 3 with flips: w/h = 2, 1/2, 3, 1/3 after the two square boxes.
    ratios = (first[2:, 2] / first[2:, 3]).tolist()
    assert ratios == pytest.approx([2, 0.5, 3, 1 / 3])
    third = priors[19 * 19 * 12]  # first cell of the 10 px map: Caffe's step 30.4 = 304 / 10
    assert third[:2].tolist() == pytest.approx([15.2 / 304, 15.2 / 304])
    last = priors[-6:]
    assert torch.allclose(last[:, :2], torch.full((6, 2), 0.5))
    assert last[1, 2].item() == pytest.approx(math.sqrt(267.52 * 319.2) / 304)
    assert last[2, 2].item() == pytest.approx(267.52 * math.sqrt(2) / 304)
    assert last[2, 2].item() > 1  # a box wider than the image: the Pelee scripts do not clip
    assert torch.equal(priors, make_priors(PELEE_VOC_PRIORS))


def test_head_layout(voc_pelee):
    head = voc_pelee.head
    # Extra layers: conv with bias and ReLU, no BN; 10 -> 5 -> 3 -> 1 px.
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in head.extras.modules())
    convs = [m for m in head.extras.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (256, 1, 1, 0),
        (256, 3, 2, 1),
        (128, 1, 1, 0),
        (256, 3, 1, 0),
        (128, 1, 1, 0),
        (256, 3, 1, 0),
    ]
    assert all(c.bias is not None for c in convs)
    assert [type(r) for r in head.res_blocks] == [ResBlock] * 5
    assert [r.branch1.conv.in_channels for r in head.res_blocks] == [512, 704, 256, 256, 256]
    # Six 1x1 heads with bias: 24 box offsets and 6 x 21 scores per cell.
    assert head.head_maps == (0, 0, 1, 2, 3, 4)
    for loc, conf in zip(head.loc, head.conf):
        assert loc.kernel_size == conf.kernel_size == (1, 1) and loc.bias is not None
        assert (loc.out_channels, conf.out_channels) == (24, 126)


def test_feature_sizes_forward_backward_and_detect(voc_pelee):
    x = torch.randn(1, 3, 304, 304)
    with torch.no_grad():
        maps = voc_pelee.head.sources(*voc_pelee.backbone(x))
    assert [tuple(m.shape[1:]) for m in maps] == [(256, 19, 19), (256, 10, 10), (256, 5, 5), (256, 3, 3), (256, 1, 1)]
    model = tiny_pelee().train()
    images = torch.randn(2, 3, 144, 144)
    loc, conf = model(images)
    assert loc.shape == (2, model.priors.shape[0], 4) and conf.shape == (2, model.priors.shape[0], 3)
    gt = [torch.tensor([[0.1, 0.1, 0.5, 0.6]]), torch.tensor([[0.3, 0.2, 0.9, 0.8], [0.0, 0.5, 0.3, 0.9]])]
    labels = [torch.tensor([1]), torch.tensor([2, 1])]
    loc_loss, conf_loss = MultiBoxLoss(model.priors)(loc, conf, gt, labels)
    (loc_loss + conf_loss).backward()
    assert all(p.grad is not None for p in model.parameters())
    detections = model.eval().detect(images)
    assert len(detections) == 2 and set(detections[0]) == {"boxes", "scores", "labels"}


def test_the_head_sits_on_a_registered_backbone():
    with torch.device("meta"):
        model = db.create_model("pelee_bc121_k32")
    # DenseNet-121's strides 16 and 32 at 304 px: 19 and 9 (floor pools); the extra layers then reach 5, 3, 1.
    assert model.prior_config.feature_sizes == (19, 19, 9, 5, 3, 1)
    assert model.head.res_blocks[0].branch1.conv.in_channels == 1024
    assert model.head.res_blocks[1].branch1.conv.in_channels == 1024
    assert db.model_task("pelee_bc121_k32") == "detection" and "pelee" in db.list_models(task="detection")


def test_inputs_that_do_not_reach_the_one_pixel_source():
    with pytest.raises(ValueError, match=r"224x224 inputs .*\(7, 7\) px.*at least 9x9.*strides \[16, 32\]"):
        db.create_model("pelee", priors=dataclasses.replace(PELEE_VOC_PRIORS, image_size=224))
    model = tiny_pelee().eval()
    with torch.no_grad():  # larger inputs run with the default boxes of their own maps
        loc, _ = model(torch.randn(1, 3, 176, 176))
    assert loc.shape[1] == len(model.priors_for(176, 176)) != len(model.priors)
    with pytest.raises(ValueError, match=f"takes inputs of at least {model.min_input_size}x"):
        model(torch.randn(1, 3, model.min_input_size - 1, 176))


def test_backbone_levels_past_the_stages_name_what_fits():
    with pytest.raises(ValueError, match="out_indices .* out of range for peleenet, which has 5 feature levels"):
        db.create_model("pelee", backbone_indices=(3, 5))


def test_weights_of_another_width_are_refused(tmp_path):
    def load(path):
        return db.create_model(
            "pelee",
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(path)),
            backbone_indices=(2, 3),
            backbone_kwargs=dict(growth_rate=8, block_config=(1, 1, 1, 1), stem_width=8),
            head_kwargs=dict(extra_chs=((8, 8), (8, 8), (8, 8)), res_chs=8),
            priors=dataclasses.replace(PELEE_VOC_PRIORS, image_size=144),
            num_classes=3,
        )

    path = tmp_path / "weights.safetensors"
    other = tiny_pelee(backbone_kwargs=dict(growth_rate=16, block_config=(1, 1, 1, 1), stem_width=8))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="does not fit.*Shape mismatches"):
        load(path)
    same = tiny_pelee()
    save_file({k: v.contiguous() for k, v in same.state_dict().items()}, str(path))
    loaded = load(path)
    x = torch.randn(1, 3, 144, 144)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x)[1], same.eval()(x)[1])
