"""Input geometry of every registered model: from its minimum up, any height and width (odd, non-square) either
runs with the task's output shape or is refused with one ValueError line naming the sizes the model takes; the
detectors' default boxes follow the actual prediction maps, cached per input size, and are exactly the papers' at
300 (DSOD) and 304 (Pelee)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from densebackbones.heads import DSOD, Pelee
from densebackbones.heads.ssd import PELEE_VOC_PRIORS, VOC_PRIORS, MultiBoxLoss, boxes_per_cell, make_priors
from helpers import TINY_DSOD_BACKBONE, TINY_DSOD_HEAD, TINY_PELEE_HEAD, TINY_PELEENET, tiny_kwargs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import densebackbones as db
from densebackbones.models.helpers import InputSizeCheck, input_is_refused
from densebackbones.tasks.detection import DetectionLoss, DetectionMetric

NAMES = db.list_models()

# The smallest side each registered model takes (what its min_input_size must say): the total stride of the dense
# backbones (32 ImageNet, 4 CIFAR, 16 DSOD's), 5 px at MSDNet's coarsest scale, 2 ** poolings for FC-DenseNet, and
# for the detectors the smallest input at which the backbone and all six prediction maps exist (Pelee: the extra
# layers need 9 px on the stride-32 map).
EXPECTED_MIN = {
    **{name: 4 for name in NAMES if name.endswith("_cifar") and "msdnet" not in name and "condense" not in name},
    "condensenet86_cifar": 4,
    "condensenet86_cifar_converted": 4,
    "condensenet182_cifar": 4,
    "condensenet182_cifar_converted": 4,
    "msdnet_anytime_cifar": 20,
    "msdnet_budgeted_cifar": 20,
    "msdnet_imagenet": 160,
    "dsod_ds64_192_48_1": 16,
    "dsod_ds64_256_64_1": 16,
    "dsod300": 16,
    "dsod300_lite": 16,
    "dsod_bc121_k32": 32,
    "pelee": 257,
    "pelee_bc121_k32": 285,
    "fc_densenet56": 32,
    "fc_densenet67": 32,
    "fc_densenet103": 32,
    "fc_densenet_bc121_k32": 32,
    "fc_densenet_bc169_k32": 32,
    **{name: 16 for name in NAMES if name.startswith("dense_aspp")},  # output stride 8: two pixels to interpolate
    "deeplabv3_densenet121": 8,  # DenseNet-121 at output stride 8: one pixel at the deepest level
}
EXPECTED_MIN.update({name: 32 for name in NAMES if name not in EXPECTED_MIN})

_MODELS: dict[tuple[str, bool, str], torch.nn.Module] = {}


def tiny_model(name: str, features_only: bool = False, device: str = "cpu") -> torch.nn.Module:
    """The tiny variant, built once per test session; on ``'meta'`` its forward computes shapes only."""
    key = (name, features_only, device)
    if key not in _MODELS:
        kwargs = tiny_kwargs(name)
        if features_only:
            kwargs["features_only"] = True
        torch.manual_seed(0)
        with torch.device(device):
            _MODELS[key] = db.create_model(name, **kwargs).eval()
    return _MODELS[key]


def min_side(model: torch.nn.Module) -> int:
    return getattr(model, "model", model).min_input_size


def check_geometry(name: str, model: torch.nn.Module, height: int, width: int, features_only: bool = False) -> None:
    """The input either runs with the task's output shape or is refused in one line naming the sizes taken."""
    task = db.model_task(name)
    minimum = min_side(model)
    x = torch.randn(1, 3, height, width, device=next(model.parameters()).device)
    if height < minimum or width < minimum:
        with pytest.raises(ValueError) as err:
            model(x)
        message = str(err.value)
        assert "\n" not in message
        assert f"{name} takes inputs of at least {minimum}x{minimum} px" in message
        assert message.endswith(f"got {height}x{width}")
        return
    with torch.no_grad():
        out = model(x)
    if features_only:  # maps of the stated reductions, rounded up or down as the model's pools do
        for info, fmap in zip(model.feature_info.get_dicts(), out):
            r = info["reduction"]
            for size, side in zip(fmap.shape[-2:], (height, width)):
                assert side // r <= size <= math.ceil(side / r), (name, info, fmap.shape, height, width)
    elif task == "classification":  # MSDNet: every exit's logits
        for logits in out if isinstance(out, list) else [out]:
            assert logits.shape == (1, model.num_classes)
    elif task == "segmentation":
        assert out.shape == (1, model.num_classes, height, width)
    else:
        loc, conf = out
        priors = model.priors_for(height, width)
        sizes = model.source_sizes(height, width)
        count = sum(n * h * w for n, (h, w) in zip(boxes_per_cell(model.prior_config), sizes))
        assert loc.shape == (1, count, 4) and conf.shape == (1, count, model.num_classes) and len(priors) == count


# ------------------------------------------------------------------------------------------------ the registry
@pytest.mark.parametrize("name", NAMES)
def test_every_model_states_its_minimum_and_refuses_below_it(name):
    model = tiny_model(name)
    minimum = EXPECTED_MIN[name]
    assert model.min_input_size == minimum
    assert model.pretrained_cfg["min_input_size"] == (3, minimum, minimum)  # timm's key, which timm's tests read
    check_geometry(name, model, minimum, minimum + 3)  # the minimum runs, at a non-square size
    check_geometry(name, model, minimum - 1, minimum + 5)  # one pixel less on either side: one line
    check_geometry(name, model, minimum + 6, minimum - 1)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_size_from_the_minimum_runs_or_is_refused_in_one_line(data):
    # On the meta device: the layers' own shape rules without arithmetic, so many sizes cost little (the real
    # kernels run at each model's minimum above and in the detector tests below).
    name = data.draw(st.sampled_from(NAMES), label="name")
    features_only = db.model_task(name) == "classification" and data.draw(st.booleans(), label="features_only")
    model = tiny_model(name, features_only, device="meta")
    minimum = min_side(model)
    sides = st.integers(max(1, minimum - 3), 2 * minimum + 64)
    height, width = data.draw(sides, label="height"), data.draw(sides, label="width")
    check_geometry(name, model, height, width, features_only)


class _Checked(InputSizeCheck, torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.min_input_size, self.in_chans = 4, 3

    def forward(self, x):
        self._check_input(x)
        return x + 1


def test_the_check_is_scriptable_and_traceable():
    scripted = torch.jit.script(input_is_refused)
    assert scripted(torch.zeros(1, 3, 8, 9), 9, 3) and not scripted(torch.zeros(1, 3, 9, 9), 9, 3)
    module = torch.jit.script(_Checked())  # the mixin adds nothing TorchScript cannot compile
    assert module(torch.zeros(1, 3, 4, 5)).sum() == 60
    traced = torch.fx.symbolic_trace(_Checked())  # skipped while tracing: no control flow on shape proxies
    assert traced(torch.zeros(1, 3, 4, 5)).sum() == 60
    model = tiny_model("msdnet_anytime_cifar")
    graph = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, 21, 26)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x))


# ------------------------------------------------------------------------------------------------ detectors
def tiny_dsod300() -> DSOD:
    """DSOD300's geometry (stem, pools, dense prediction structure, SSD300's boxes) with k=4."""
    return DSOD(
        3, backbone="dsod_ds64_192_48_1", backbone_indices=(1, 2), backbone_kwargs=TINY_DSOD_BACKBONE,
        head_kwargs=TINY_DSOD_HEAD, priors=VOC_PRIORS,
    )  # fmt: skip


def tiny_pelee304() -> Pelee:
    """Pelee's geometry (stem block, ceil transitions, strides 16 and 32, extra layers, Pelee's VOC boxes)."""
    return Pelee(
        3, backbone="peleenet", backbone_indices=(3, 4), backbone_kwargs=dict(TINY_PELEENET, transition_ceil=True),
        head_kwargs=TINY_PELEE_HEAD, priors=PELEE_VOC_PRIORS,
    )  # fmt: skip


@pytest.fixture(scope="module")
def detectors():
    torch.manual_seed(0)
    return {"dsod": tiny_dsod300().eval(), "pelee": tiny_pelee304().eval()}


@pytest.mark.parametrize(
    ("kind", "size", "count", "preset"), [("dsod", 300, 8744, VOC_PRIORS), ("pelee", 304, 5142, PELEE_VOC_PRIORS)]
)
def test_the_papers_boxes_at_the_papers_size(detectors, kind, size, count, preset):
    model = detectors[kind]
    assert model.prior_config == preset  # the real maps at 300/304 are the paper's
    priors = model.priors_for(size, size)
    assert priors is model.priors and priors.shape == (count, 4)
    assert torch.equal(priors, make_priors(preset))
    square = [(s, s) for s in preset.feature_sizes]
    assert torch.equal(make_priors(preset, (size, size), square), priors)
    assert model.min_input_size == EXPECTED_MIN["dsod300" if kind == "dsod" else "pelee"]


def test_non_square_boxes_follow_the_maps_per_axis(detectors):
    model = detectors["dsod"]
    sizes = model.source_sizes(300, 400)
    assert sizes == [(38, 50), (19, 25), (10, 13), (5, 7), (3, 4), (2, 2)]  # heights as at 300, widths from 400
    priors = model.priors_for(300, 400).view(-1, 4)
    assert len(priors) == 11504  # 4*38*50 + 6*19*25 + 6*10*13 + 6*5*7 + 4*3*4 + 4*2*2
    first = priors[: 4 * 38 * 50].view(38, 50, 4, 4)
    paper = make_priors(VOC_PRIORS)[: 4 * 38 * 38].view(38, 38, 4, 4)
    torch.testing.assert_close(first[:, 0, :, 1], paper[:, 0, :, 1])  # rows: SSD's step 8 of 300
    torch.testing.assert_close(first[0, :, 0, 0], (torch.arange(50) + 0.5) / 50)  # columns tile the 50-wide map
    torch.testing.assert_close(first[0, 0, :, 2:], paper[0, 0, :, 2:])  # sizes: the same fractions of each axis


@pytest.mark.parametrize("kind", ["dsod", "pelee"])
@pytest.mark.parametrize("size", [(304, 400), (300, 400), (401, 303)])
def test_loss_and_detect_at_other_sizes(detectors, kind, size):
    model = detectors[kind]
    x = torch.randn(2, 3, *size)
    model.set_output("loc_conf_priors")
    try:
        model.train()
        outputs = model(x)
    finally:
        model.set_output("loc_conf")
        model.eval()
    loc, conf, priors = outputs
    assert loc.shape[1] == conf.shape[1] == len(priors) == len(model.priors_for(*size))
    assert priors is model.priors_for(*size)  # the forward's boxes are the cached ones
    targets = [
        dict(boxes=torch.tensor([[0.1, 0.1, 0.5, 0.6]]), labels=torch.tensor([1])),
        dict(boxes=torch.tensor([[0.3, 0.2, 0.9, 0.8]]), labels=torch.tensor([2])),
    ]
    loss = DetectionLoss(model.priors, model.prior_config.variances)(outputs, targets)
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match=f"{len(priors)} predictions for {len(model.priors)} default boxes"):
        MultiBoxLoss(model.priors)(loc, conf, [t["boxes"] for t in targets], [t["labels"] for t in targets])
    metric = DetectionMetric(model.priors, model.prior_config.variances, ("a", "b"))
    for target, image_id in zip(targets, (1, 2)):
        target.update(input_size=size, image_id=image_id, abs_boxes=target["boxes"] * 100)
        target.update(abs_labels=target["labels"], abs_difficult=torch.zeros(1, dtype=torch.bool))
    metric.update(tuple(o.detach() for o in outputs), targets)
    assert len(metric.predictions) == 2
    detections = model.detect(x[:1], score_threshold=0.0, keep_top_k=5)
    assert detections[0]["boxes"].shape == (5, 4)


def test_default_boxes_are_cached_per_input_size(detectors):
    model = detectors["dsod"]
    model._prior_cache.clear()
    first = model.priors_for(65, 97)
    assert model.priors_for(65, 97) is first and list(model._prior_cache) == [(65, 97)]
    with torch.no_grad():
        loc, conf = model(torch.randn(1, 3, 65, 97))
        _, _, sizes = model.head(*model.backbone(torch.randn(1, 3, 65, 97)))
        model.detect(torch.randn(1, 3, 65, 97))
    assert list(model._prior_cache) == [(65, 97)] and model.priors_for(65, 97) is first and len(first) == loc.shape[1]
    assert model.source_sizes(65, 97) == sizes  # the meta forward's map sizes are the real ones
    assert model.priors_for(97, 65) is not first and len(model._prior_cache) == 2


def test_a_priors_config_for_another_size_scales_with_the_task():
    model = DSOD(3, backbone="dsod_ds64_192_48_1", backbone_indices=(1, 2), backbone_kwargs=TINY_DSOD_BACKBONE,
                 head_kwargs=TINY_DSOD_HEAD, priors=dataclasses.replace(VOC_PRIORS, image_size=64)).eval()  # fmt: skip
    with torch.no_grad():
        loc, _ = model(torch.randn(1, 3, 64, 97))
    assert loc.shape[1] == len(model.priors_for(64, 97)) != len(model.priors)
