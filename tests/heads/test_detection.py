"""DSOD300 and the SSD box machinery (priors, coding, matching, multibox loss, post-processing)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from densebackbones.heads.dsod import DSOD, L2Norm, dsod300
from densebackbones.heads.ssd import (
    COCO_PRIORS,
    VOC_PRIORS,
    MultiBoxLoss,
    boxes_per_cell,
    decode,
    encode,
    make_priors,
    match,
    postprocess,
)
from helpers import tiny_kwargs
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import nms

import densebackbones as db


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def voc_dsod():
    torch.manual_seed(0)
    return dsod300(num_classes=21)


def test_dsod300_parameters(voc_dsod):
    # docs/reference.md: 14.72M trainable (14.8M with BN statistics); COCO 21.78M with BN statistics.
    assert round(count(voc_dsod) / 1e6, 2) == 14.72
    stats = sum(b.numel() for name, b in voc_dsod.named_buffers() if "running" in name)
    assert round((count(voc_dsod) + stats) / 1e6, 1) == 14.8
    coco = dsod300(num_classes=81, priors=COCO_PRIORS)
    coco_stats = sum(b.numel() for name, b in coco.named_buffers() if "running" in name)
    assert round((count(coco) + coco_stats) / 1e6, 2) == 21.78


def test_dsod300_lite_parameters():
    with torch.device("meta"):
        lite = db.create_model("dsod300_lite")
    assert round(count(lite) / 1e6, 1) == 10.4  # official release: 10.4M
    features = lite.backbone.model.features
    assert features.denseblock1.growth_rate == 64 and features.denseblock1.denselayer1.conv1.out_channels == 256


def test_dsod300_layout(voc_dsod):
    features = voc_dsod.backbone.model.features  # the registered dsod_ds64_192_48_1, cut after block 4
    blocks = [features.denseblock1, features.denseblock2, features.denseblock3, features.denseblock4]
    assert [b.num_layers for b in blocks] == [6, 8, 8, 8]
    assert blocks[0].denselayer1.conv1.out_channels == 192 and blocks[0].growth_rate == 48
    assert [features.conv0.stride, features.conv1.out_channels, features.conv2.out_channels] == [(2, 2), 64, 128]
    assert voc_dsod.backbone.feature_info.channels() == [800, 1568] and "norm5" not in dict(features.named_children())
    assert voc_dsod.head.source_channels == [800, 512, 512, 256, 256, 256]
    assert voc_dsod.prior_config.feature_sizes == (38, 19, 10, 5, 3, 2)
    assert all(isinstance(n, L2Norm) and torch.all(n.weight == 20) for n in voc_dsod.head.norms)


def test_dsod300_forward_backward_and_detect(voc_dsod):
    x = torch.randn(2, 3, 300, 300)
    voc_dsod.train()
    loc, conf = voc_dsod(x)
    assert loc.shape == (2, 8744, 4) and conf.shape == (2, 8744, 21)
    loss_fn = MultiBoxLoss(voc_dsod.priors)
    boxes = [torch.tensor([[0.1, 0.1, 0.5, 0.6]]), torch.zeros(0, 4)]  # the second image has no object
    labels = [torch.tensor([3]), torch.zeros(0, dtype=torch.long)]
    loc_loss, conf_loss = loss_fn(loc, conf, boxes, labels)
    (loc_loss + conf_loss).backward()
    assert torch.isfinite(loc_loss) and torch.isfinite(conf_loss)
    assert all(p.grad is not None for p in voc_dsod.parameters())
    voc_dsod.eval()
    detections = voc_dsod.detect(x[:1], score_threshold=0.0, keep_top_k=10)
    assert detections[0]["boxes"].shape == (10, 4) and int(detections[0]["labels"].min()) >= 1
    with torch.no_grad():  # other sizes run, with the default boxes of their own maps (tests/test_geometry.py)
        loc, _ = voc_dsod(torch.randn(1, 3, 256, 256))
    assert loc.shape[1] == len(voc_dsod.priors_for(256, 256)) != len(voc_dsod.priors)


def test_dsod_head_on_a_registered_backbone():
    model = DSOD(5, backbone="densenet_bc121_k32", backbone_kwargs=dict(growth_rate=4, block_config=(1, 1, 1, 1)))
    # strides 16 and 32 (average pools round down: 300 -> 75 -> 37 -> 18 -> 9), then four ceil-mode scales
    assert model.prior_config.feature_sizes == (18, 9, 5, 3, 2, 1)
    loc, conf = model(torch.randn(2, 3, 300, 300))  # two images: training-mode BN on the 1x1 scale
    assert (
        loc.shape[1]
        == conf.shape[1]
        == model.priors.shape[0]
        == sum(n * s * s for n, s in zip(boxes_per_cell(VOC_PRIORS), (18, 9, 5, 3, 2, 1)))
    )


# ------------------------------------------------------------------------------------------------------- priors
def test_prior_count_and_positions():
    priors = make_priors(VOC_PRIORS)
    assert priors.shape == (8744, 4)
    assert boxes_per_cell(VOC_PRIORS) == [4, 6, 6, 6, 4, 4]
    # first location of the 38x38 map: centre at step/2 = 4 px, min size 30, sqrt(30 * 60), ratio 2 and 1/2
    first = priors[:4] * 300
    torch.testing.assert_close(first[0], torch.tensor([4.0, 4.0, 30.0, 30.0]))
    torch.testing.assert_close(first[1], torch.tensor([4.0, 4.0, math.sqrt(1800), math.sqrt(1800)]))
    torch.testing.assert_close(first[2], torch.tensor([4.0, 4.0, 30 * math.sqrt(2), 30 / math.sqrt(2)]))
    torch.testing.assert_close(first[3], torch.tensor([4.0, 4.0, 30 / math.sqrt(2), 30 * math.sqrt(2)]))
    # second location moves one step (8 px) to the right
    torch.testing.assert_close(priors[4, :2] * 300, torch.tensor([12.0, 4.0]))
    # the last scale (2x2, step 300 / ... = 300 px in SSD's config) is centred at 150 px, clipped to [0, 1]
    torch.testing.assert_close(priors[-4, :2], torch.tensor([1.0, 1.0]))  # (1.5, 1.5) * ... clipped
    assert float(priors.min()) >= 0 and float(priors.max()) <= 1
    assert make_priors(COCO_PRIORS)[0, 2] * 300 == pytest.approx(21)


# ------------------------------------------------------------------------------------------------- box coding
box = st.tuples(st.floats(0.0, 0.8), st.floats(0.0, 0.8), st.floats(0.05, 0.2), st.floats(0.05, 0.2))


@settings(max_examples=60, deadline=None)
@given(gt=box, prior=st.tuples(st.floats(0.1, 0.9), st.floats(0.1, 0.9), st.floats(0.05, 0.9), st.floats(0.05, 0.9)))
def test_encode_decode_round_trip(gt, prior):
    x, y, w, h = gt
    corners = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float64)
    priors = torch.tensor([prior], dtype=torch.float64)
    torch.testing.assert_close(decode(encode(corners, priors), priors), corners)


def test_encoding_of_a_prior_itself_is_zero():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    corners = torch.tensor([[0.4, 0.3, 0.6, 0.7]])
    torch.testing.assert_close(encode(corners, priors), torch.zeros(1, 4))
    # a box shifted by 0.02 in x: offset 0.02 / (0.1 * 0.2) = 1
    torch.testing.assert_close(
        encode(corners + torch.tensor([0.02, 0, 0.02, 0]), priors), torch.tensor([[1.0, 0, 0, 0]])
    )


# --------------------------------------------------------------------------------------------------- matching
def test_matching_hand_cases():
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.4, 0.4, 0.5, 0.5], [0.9, 0.1, 0.2, 0.2]])
    # gt 0 covers prior 0 exactly (IoU 1) and prior 2 partly (0.35^2 / (0.5 - 0.35^2) = 0.32 < 0.5);
    # gt 1 overlaps little
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.6, 0.6, 0.7, 0.7]])
    labels = torch.tensor([7, 2])
    boxes, matched = match(gt, labels, priors, 0.5)
    assert matched.tolist() == [7, 2, 0, 0]  # gt 1 still gets its best prior (1), though IoU 0.04
    torch.testing.assert_close(boxes[1], gt[1])
    boxes, matched = match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), priors)
    assert matched.tolist() == [0, 0, 0, 0]


def test_matching_threshold_admits_every_good_prior():
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.27, 0.25, 0.5, 0.5], [0.8, 0.8, 0.1, 0.1]])
    _, matched = match(torch.tensor([[0.0, 0.0, 0.5, 0.5]]), torch.tensor([4]), priors, 0.5)
    assert matched.tolist() == [4, 4, 0]


# ------------------------------------------------------------------------------------------------------- loss
def test_multibox_loss_by_hand():
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5]])
    gt = [torch.tensor([[0.0, 0.0, 0.5, 0.5]])]  # exactly prior 0: regression target 0
    labels = [torch.tensor([1])]
    loc = torch.tensor([[[0.5, -0.5, 2.0, 0.0], [9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]]])
    conf = torch.tensor([[[0.0, 2.0], [1.0, 0.0], [0.0, 3.0]]])  # prior 2 is the hardest negative
    loc_loss, conf_loss = MultiBoxLoss(priors, neg_pos_ratio=1)(loc, conf, gt, labels)
    # smooth-L1 of (0.5, -0.5, 2, 0) against 0: 0.125 + 0.125 + 1.5 + 0 = 1.75; one positive
    assert loc_loss.item() == pytest.approx(1.75)
    # cross-entropy of the positive (class 1) and of the one hardest negative (prior 2, class 0)
    expected = F.cross_entropy(torch.tensor([[0.0, 2.0]]), torch.tensor([1])) + F.cross_entropy(
        torch.tensor([[0.0, 3.0]]), torch.tensor([0])
    )
    assert conf_loss.item() == pytest.approx(expected.item())
    # with 3:1 mining both negatives count (only two exist)
    _, conf_all = MultiBoxLoss(priors, neg_pos_ratio=3)(loc, conf, gt, labels)
    extra = F.cross_entropy(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert conf_all.item() == pytest.approx(expected.item() + extra.item())


# -------------------------------------------------------------------------------------------- post-processing
def test_postprocess_agrees_with_torchvision_nms():
    torch.manual_seed(0)
    priors = make_priors(VOC_PRIORS)[:600]
    loc = torch.randn(1, 600, 4) * 0.5
    conf = torch.randn(1, 600, 4) * 3
    ours = postprocess(loc, conf, priors, score_threshold=0.2, nms_threshold=0.45, top_k=50, keep_top_k=1000)[0]
    boxes = decode(loc[0], priors).clamp(0, 1)
    scores = conf[0].softmax(-1)
    expected = set()
    for cls in range(1, 4):  # a plain per-class loop with torchvision's nms as the reference
        s = scores[:, cls]
        idx = (s > 0.2).nonzero().flatten()
        idx = idx[s[idx].argsort(descending=True)][:50]
        kept = idx[nms(boxes[idx], s[idx], 0.45)]
        expected |= {(cls, int(i)) for i in kept}
    got = set()
    for b, label in zip(ours["boxes"], ours["labels"]):
        prior = int(((boxes - b).abs().sum(1) < 1e-6).nonzero()[0])
        got.add((int(label), prior))
    assert got == expected and len(got) > 10
    assert torch.all(ours["scores"][:-1] >= ours["scores"][1:])  # sorted by score


@pytest.mark.parametrize("name", ["dsod300", "pelee"])
def test_a_checkpoint_of_other_classes_starts_a_fine_tune_and_is_refused_for_evaluation(name, tmp_path, caplog):
    # A 21-class VOC checkpoint into a 5-class detector: the per-level class layers are new (as a classifier's head
    # is), everything else loads; evaluation and prediction refuse it (the reliability issue).
    from densebackbones.models.helpers import trained_head_required

    voc = db.create_model(name, num_classes=21, **tiny_kwargs(name))
    torch.save(voc.state_dict(), tmp_path / "voc.pth")
    overlay = dict(file=str(tmp_path / "voc.pth"))
    with caplog.at_level("WARNING"):
        five = db.create_model(
            name, num_classes=5, pretrained=True, pretrained_cfg_overlay=overlay, **tiny_kwargs(name)
        )
    assert "classifier has 21 classes and the model num_classes=5" in caplog.text
    theirs = voc.state_dict()
    for key, value in five.state_dict().items():
        if key.startswith("head.conf.") and value.ndim:  # (DSOD's class layers end in a batch norm)
            assert value.shape[0] * 21 == theirs[key].shape[0] * 5, key
        else:
            torch.testing.assert_close(value, theirs[key], msg=key)
    with (
        trained_head_required(),
        pytest.raises(ValueError, match="has a 21-class classifier and the model num_classes=5"),
    ):
        db.create_model(name, num_classes=5, pretrained=True, pretrained_cfg_overlay=overlay, **tiny_kwargs(name))
