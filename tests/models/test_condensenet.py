"""CondenseNet (Huang et al., CVPR 2018): the official parameter counts and operation counts (training-time and
converted), the condensation schedule, the group lasso by hand, conversion equivalence, converted checkpoints,
ONNX export of the converted model, and the errors for bad group settings and early conversion."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import run_training_tool
from safetensors.torch import save_file

import densebackbones as db
from densebackbones.engine import (
    EmaCopiesBuffers,
    RegularizedModel,
    Trainer,
    TrainingProgressAware,
    load_checkpoint,
    read_csv,
)
from densebackbones.flops import count_macs
from densebackbones.layers import CondensedConv, LearnedGroupConv, channel_shuffle, condensation_stage
from densebackbones.models import CondenseNet, convert

# docs/reference.md: (training-time, converted) parameters, 1000 ImageNet or 10 CIFAR classes.
COUNTS = {
    "condensenet74_c4_g4": (11_922_680, 4_773_944),
    "condensenet74_c8_g8": (11_103_608, 2_935_416),
    "condensenet86_cifar": (1_451_594, 516_202),
    "condensenet182_cifar": (13_792_906, 4_209_226),
}


def _count(name: str) -> int:
    with torch.device("meta"):
        model = db.create_model(name)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_official_parameter_counts(name):
    assert (_count(name), _count(f"{name}_converted")) == COUNTS[name]


# The paper's "FLOPs" of the converted models (multiply-adds as the official measure_model counts them).
PAPER_MFLOPS = {
    "condensenet74_c4_g4": (224, 529),
    "condensenet74_c8_g8": (224, 274),
    "condensenet86_cifar": (32, 65.8),
    "condensenet182_cifar": (32, 513),
}


@pytest.mark.parametrize("name", sorted(PAPER_MFLOPS))
def test_converted_operation_counts_against_the_paper(name):
    # torch.utils.flop_counter counts convolutions and matrix products; the official counter also counts every ReLU
    # input and pooling window (and the classifier's bias). Adding those to our multiply-adds gives the paper's
    # number, which checks the converted architecture op by op; our own count is a little lower.
    size, paper = PAPER_MFLOPS[name]
    model = db.create_model(f"{name}_converted").eval()
    macs = count_macs(model, (1, 3, size, size))
    elementwise = [0]

    def relu(module, inputs, output):
        elementwise[0] += inputs[0].numel()

    def pool(module, inputs, output):
        elementwise[0] += output.numel() * module.kernel_size**2

    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.register_forward_hook(relu)
        elif isinstance(module, nn.AvgPool2d):
            module.register_forward_hook(pool)
    model.global_pool.register_forward_hook(relu)  # one addition per input element, as the official counter
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    official = macs + elementwise[0] + model.classifier.linear.out_features
    assert official / 1e6 == pytest.approx(paper, rel=0.005)
    assert macs < official


def test_condensation_stages():
    assert [condensation_stage(p, 4) for p in (0, 0.16, 1 / 6, 0.3, 1 / 3, 0.49, 0.5, 0.9, 1.0)] == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
        3,
    ]
    assert [condensation_stage(p, 8) for p in (0, 1 / 14, 2 / 14, 0.5)] == [0, 1, 2, 7]


def _tiny(**kwargs) -> CondenseNet:
    args = dict(block_config=(2, 2), growth_rate=(4, 8), num_classes=5, stem_type="cifar")
    return CondenseNet(**dict(args, **kwargs))


def test_schedule_drops_the_expected_channels_at_the_expected_iterations():
    model = _tiny()
    convs = model.learned_convs()
    iterations = 60  # per-iteration progress: stages change at iterations 10, 20 and 30
    drops = []
    for step in range(iterations):
        before = [int(c._mask[:, :, 0, 0].sum()) for c in convs]
        model.set_training_progress(step / iterations)
        after = [int(c._mask[:, :, 0, 0].sum()) for c in convs]
        if before != after:
            drops.append(step)
            for conv, b, a in zip(convs, before, after):
                assert b - a == conv.out_channels * (conv.in_channels // 4)  # in // C inputs per group, all outputs
    assert drops == [10, 20, 30]
    for conv in convs:
        groups = conv._group_weight(conv._mask[:, :, 0, 0])  # (G, out / G, in)
        kept = groups[:, 0, :].sum(1)
        assert kept.tolist() == [conv.in_channels // 4] * 4 and conv.condensed
        assert torch.equal(groups, groups[:, :1].expand_as(groups))  # a group keeps the same inputs for all outputs


def test_drops_are_the_inputs_of_smallest_group_weight():
    conv = LearnedGroupConv(8, 4, groups=2)  # group 0 owns outputs 0 and 2, group 1 outputs 1 and 3
    with torch.no_grad():
        weight = torch.arange(1, 33, dtype=torch.float32).view(4, 8)
        weight[0, 5] = weight[2, 5] = 0.01  # group 0's weakest input is 5, then 0 and 1
        weight[1, 7] = weight[3, 7] = 0.02  # group 1's weakest is 7, then 0 and 1
        conv.conv.weight.copy_(weight.view(4, 8, 1, 1))
    conv.update_condensation(0.5)  # C = 2: one stage, 8 // 2 = 4 inputs per group
    mask = conv._mask[:, :, 0, 0]
    assert mask[0].nonzero().flatten().tolist() == [3, 4, 6, 7]  # dropped 5, 0, 1, 2
    assert mask[1].nonzero().flatten().tolist() == [3, 4, 5, 6]  # dropped 7, 0, 1, 2
    assert torch.equal(mask[0], mask[2]) and torch.equal(mask[1], mask[3])
    assert conv.update_condensation(0.9) == 0  # the last stage is reached once


def test_group_lasso_by_hand():
    conv = LearnedGroupConv(4, 4, groups=2)
    weight = torch.tensor([[1.0, 2.0, 0.0, 1.0], [3.0, 0.0, 1.0, 0.0], [2.0, 2.0, 0.0, 0.0], [4.0, 1.0, 0.0, 2.0]])
    with torch.no_grad():
        conv.conv.weight.copy_(weight.view(4, 4, 1, 1))
    # group 0: outputs 0 and 2; group 1: outputs 1 and 3; per input sqrt(sum of squares), zero clamped at 1e-6.
    group0 = math.sqrt(1 + 4) + math.sqrt(4 + 4) + math.sqrt(1e-6) + math.sqrt(1 + 0)
    group1 = math.sqrt(9 + 16) + math.sqrt(0 + 1) + math.sqrt(1 + 0) + math.sqrt(0 + 4)
    expected = group0 + group1
    assert conv.lasso_loss().item() == pytest.approx(expected)
    model = _tiny(group_lasso_lambda=0.5)
    total = sum(c.lasso_loss() for c in model.learned_convs())
    assert model.regularization_loss().item() == pytest.approx(0.5 * total.item())
    assert _tiny().regularization_loss() is None  # lambda 0: no term
    model.set_training_progress(0.9)  # condensed: the official switch turns the lasso off
    assert model.regularization_loss().item() == 0


def _trained_tiny(dtype=torch.float64) -> CondenseNet:
    torch.manual_seed(0)
    model = _tiny().to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(8, 3, 16, 16, dtype=dtype), torch.randint(0, 5, (8,))
    for step in range(8):  # through the condensation stages, with updates in between
        model.set_training_progress(step / 14)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    assert model.condensation_finished
    return model.eval()


def test_conversion_keeps_the_features_and_the_kept_logits():
    model = _trained_tiny()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    full = convert(model, classifier_keep=1.0).eval()
    half = convert(model).eval()
    with torch.no_grad():
        torch.testing.assert_close(full.forward_features(x), model.forward_features(x))
        torch.testing.assert_close(full(x), model(x))
        # The official classifier keeps the half of the features with the largest weights; the logits lose the rest.
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        kept = torch.zeros_like(model.classifier.weight)
        kept[:, half.classifier.index] = model.classifier.weight[:, half.classifier.index]
        torch.testing.assert_close(half(x), pooled @ kept.T + model.classifier.bias)
    assert half.classifier.in_features == model.num_features // 2
    assert all(isinstance(layer.conv_1, CondensedConv) for layer in half.features.denseblock1.children())
    assert model.learned_convs() and not half.learned_convs()  # the original is left as it was


def test_converted_weights_load_into_the_registered_converted_model(tmp_path):
    model = _trained_tiny(torch.float32)
    converted = convert(model).eval()
    path = tmp_path / "converted.safetensors"
    save_file({k: v.contiguous() for k, v in converted.state_dict().items()}, str(path))
    args = dict(block_config=(2, 2), growth_rate=(4, 8), num_classes=5)
    loaded = db.create_model(
        "condensenet86_cifar_converted", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **args
    ).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), converted(x))
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in converted.parameters())


def test_official_key_names_load(tmp_path):
    model = _tiny().eval()
    official = {}
    for key, value in model.state_dict().items():
        key = key.replace("denseblock1", "denseblock_1").replace("denselayer2", "denselayer_2")
        official["module." + key.replace("features.norm5", "features.norm_last")] = value
    path = tmp_path / "official.pth"
    torch.save({"state_dict": official, "epoch": 3}, path)
    loaded = CondenseNet(block_config=(2, 2), growth_rate=(4, 8), num_classes=5, stem_type="cifar")
    loaded.load_pretrained(str(path))
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x))


@pytest.mark.integration
def test_converted_model_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from densebackbones.export import check_onnx, export_onnx

    converted = convert(_trained_tiny(torch.float32)).eval()
    example = torch.randn(2, 3, 16, 16)
    path = export_onnx(converted, tmp_path / "condensenet.onnx", example)
    diff, scale = check_onnx(converted, path, example)
    assert diff <= 1e-4 * max(scale, 1.0)


@pytest.mark.parametrize("mode", ["buffer", "efficient"])
def test_memory_modes_equal_plain_in_float64(mode):
    plain, other = _trained_tiny().train(), _trained_tiny().train()
    plain.zero_grad(), other.zero_grad()
    plain.set_memory_mode("plain")
    other.set_memory_mode(mode)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    out_p, out_o = plain(x), other(x)
    torch.testing.assert_close(out_o, out_p)
    weights = torch.linspace(-1, 1, out_p.numel(), dtype=out_p.dtype).view_as(out_p)
    (out_p * weights).sum().backward(), (out_o * weights).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), other.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    for (name, a), b in zip(plain.named_buffers(), other.buffers()):
        torch.testing.assert_close(b, a, msg=name)  # masks untouched, BN statistics updated once


def test_early_conversion_and_bad_groups_are_errors():
    with pytest.raises(ValueError, match=r"condensation has not finished .* stage 0 of 3.*force=True"):
        convert(_tiny())
    forced = convert(_tiny(), force=True)
    assert forced.converted and not forced.learned_convs()
    with pytest.raises(ValueError, match="converted already"):
        convert(forced)
    with pytest.raises(ValueError, match=r"groups=3 does not divide the 8 channels .* here: 1, 2, 4"):
        _tiny(groups=3)
    with pytest.raises(ValueError, match=r"condense_factor=16 does not divide"):
        _tiny(condense_factor=16)
    with pytest.raises(ValueError, match="keep=0"):
        convert(_trained_tiny(), classifier_keep=0.0)


def test_channel_shuffle_restores_the_learned_order():
    x = torch.arange(12.0).view(1, 12, 1, 1)  # three groups of four, group-major
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]


# ----------------------------------------------------------------------------------------------- training tools
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import convert_condensenet  # noqa: E402
import eval_cls  # noqa: E402
import train_cls  # noqa: E402

DEMO_CFG = str(REPO / "configs/cls/condensenet_digits.py")


@pytest.mark.integration
def test_trainer_calls_the_progress_hook_and_adds_the_regularization(tmp_path, monkeypatch):
    # The engine's two model hooks, seen from a model that records them: progress = steps done / all steps before
    # every step, and the regularization term inside the logged loss.
    seen: list[float] = []
    original = CondenseNet.set_training_progress

    def record(self, progress):
        seen.append(progress)
        original(self, progress)

    monkeypatch.setattr(CondenseNet, "set_training_progress", record)
    options = ("schedule.epochs=2", "train.max_iters_per_epoch=3", "train.log_interval=1")
    run_training_tool(train_cls, DEMO_CFG, tmp_path / "plain", *options)
    assert seen == [i / 6 for i in range(6)]
    run_training_tool(train_cls, DEMO_CFG, tmp_path / "lasso", *options, "model.group_lasso_lambda=1.0")
    first = [read_csv(tmp_path / run / "train.csv")[0]["loss"] for run in ("plain", "lasso")]
    assert first[1] > first[0] + 10  # the group lasso of every learned conv, weighted 1.0, is in the loss


@pytest.mark.integration
def test_resume_mid_condensation_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    # 12 steps: the stages change at steps 2, 4 and 6; the run is stopped after step 6's checkpoint... before the
    # last drop, which the resumed run must make at the same step with the same masks.
    options = ("schedule.epochs=2", "train.max_iters_per_epoch=6")
    run_training_tool(train_cls, DEMO_CFG, tmp_path / "straight", *options)
    original_save = Trainer.save

    def save_then_stop(self, metrics):
        original_save(self, metrics)
        if self.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_training_tool(train_cls, DEMO_CFG, tmp_path / "resumed", *options)
    stopped = load_checkpoint(tmp_path / "resumed" / "last.pth")["model"]
    stages = {v.item() for k, v in stopped.items() if k.endswith("_stage")}
    assert stages == {2.0}  # mid-condensation: one stage to go
    argv = [DEMO_CFG, str(tmp_path / "resumed" / "last.pth")]
    with pytest.raises(ValueError, match="condensation has not finished"):  # the conversion tool refuses it
        convert_condensenet.main(convert_condensenet.get_args_parser().parse_args(argv))
    monkeypatch.setattr(Trainer, "save", original_save)
    run_training_tool(train_cls, DEMO_CFG, tmp_path / "resumed", *options, extra=("--resume", "auto"))
    straight = load_checkpoint(tmp_path / "straight" / "last.pth")["model"]
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pth")["model"]
    assert {v.item() for k, v in resumed.items() if k.endswith("_stage")} == {3.0}
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key


def _train_and_convert(tmp_path, *options: str) -> tuple[dict, dict]:
    metrics = run_training_tool(train_cls, DEMO_CFG, tmp_path / "run", *options)
    argv = [DEMO_CFG, str(tmp_path / "run" / "last.pth"), "--eval", "--out", str(tmp_path / "converted.safetensors")]
    report = convert_condensenet.main(convert_condensenet.get_args_parser().parse_args(argv))
    assert report["params_converted"] < 0.6 * report["params"] and report["macs_converted"] < 0.6 * report["macs"]
    return metrics, report


@pytest.mark.slow  # the demo's accuracy: 20 epochs, about 57 s; the tools' path runs in the suite below
def test_digits_demo_trains_condenses_and_converts(tmp_path):
    metrics, report = _train_and_convert(tmp_path)
    # Chance is 10 %; the demo reaches about 98.6 % in 20 epochs (docs/benchmarks.md).
    assert metrics["top1"] > 93.0
    assert report["eval_converted"]["top1"] > 90.0  # the condensed classifier keeps half of the features


@pytest.mark.integration
def test_digits_demo_tools_on_a_short_training(tmp_path):
    # two epochs: condensation completes over the schedule, the conversion tool reads the checkpoint
    metrics, report = _train_and_convert(tmp_path, "schedule.epochs=2")
    assert metrics["top1"] > 10.0 and report["params_converted"] > 0
    assert report["eval"]["top1"] == pytest.approx(metrics["top1"])
    argv = [
        DEMO_CFG,
        str(tmp_path / "converted.safetensors"),
        "--cfg-options",
        "model.type=condensenet86_cifar_converted",
    ]
    evaluated = eval_cls.main(eval_cls.get_args_parser().parse_args(argv))
    assert evaluated["top1"] == pytest.approx(report["eval_converted"]["top1"])


def test_the_conversion_tool_refuses_other_models(tmp_path):
    from densebackbones.engine.checkpoint import export_weights

    config = str(REPO / "configs/cls/densenet_bc_digits.py")
    weights = export_weights(
        db.create_model("densenet_bc100_k12_cifar", num_classes=10, in_chans=1), tmp_path / "w.safetensors"
    )
    with pytest.raises(ValueError, match="is not a CondenseNet"):
        convert_condensenet.main(convert_condensenet.get_args_parser().parse_args([config, str(weights)]))


@pytest.mark.parametrize("name", db.list_models(task="classification"))
def test_the_trainer_hooks_are_condensenets_alone(name):
    # The engine's protocols (engine/hooks.py) are how the trainer finds a model's hooks: CondenseNet implements
    # all three, every other family none (so the trainer calls nothing on them).
    with torch.device("meta"):
        model = db.create_model(name)
    hooks = (TrainingProgressAware, RegularizedModel, EmaCopiesBuffers)
    found = [isinstance(model, hook) for hook in hooks]
    assert found == [isinstance(model, CondenseNet)] * 3, (name, found)
