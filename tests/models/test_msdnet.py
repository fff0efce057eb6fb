"""MSDNet (Huang et al., ICLR 2018): the official port's parameter counts, the layout (steps, scale pruning), exit
outputs and costs, the loss over exits, the threshold search on a hand-made case, the anytime and budgeted
evaluation tool on the digits demo, and two-iteration training with resume."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import timm
import torch
from helpers import run_training_tool

import densebackbones as db
from densebackbones.engine import load_checkpoint, read_csv
from densebackbones.flops import flops_of
from densebackbones.models import MSDNet
from densebackbones.models.msdnet import block_steps
from densebackbones.tasks import TopKAccuracy
from densebackbones.tasks.classification import ExitsCrossEntropy
from densebackbones.tasks.early_exit import (
    apply_thresholds,
    dynamic_sweep,
    fit_thresholds,
    geometric_proportions,
    select_budget,
)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import eval_msdnet  # noqa: E402
import train_cls  # noqa: E402

DEMO_CFG = str(REPO / "configs/cls/msdnet_digits.py")


@pytest.mark.parametrize(
    ("name", "params"),
    [("msdnet_anytime_cifar", 3_067_960), ("msdnet_budgeted_cifar", 2_078_924), ("msdnet_imagenet", 23_958_440)],
)
def test_official_parameter_counts(name, params):
    with torch.device("meta"):
        model = db.create_model(name, output="all")
    assert sum(p.numel() for p in model.parameters()) == params  # docs/reference.md, the official port counted


def test_layout_steps_and_scale_pruning():
    assert block_steps(7, 4, 2, "even") == [4, 2, 2, 2, 2, 2, 2]
    assert block_steps(5, 1, 1, "lin_grow") == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="step_mode"):
        block_steps(3, 1, 1, "geometric")
    with torch.device("meta"):
        anytime, imagenet = db.create_model("msdnet_anytime_cifar"), db.create_model("msdnet_imagenet")
    # prune='max': 18 layers over 3 scales, the finest scale goes after layer 7 and the next after layer 13.
    assert anytime.block_scales == [3, 3, 2, 2, 2, 1, 1] and imagenet.block_scales == [4, 3, 2, 1, 1]
    transitions = [m for m in anytime.modules() if type(m).__name__ == "ParallelModule"]
    assert len(transitions) == 2


def _tiny(**kwargs) -> MSDNet:
    args = dict(num_blocks=3, base=2, step=1, channels=4, growth_rate=2, growth_factors=(1, 2, 4))
    args.update(bottleneck_factors=(1, 2, 4), stem_type="cifar", num_classes=5, output="all")
    return MSDNet(**dict(args, **kwargs))


def test_exits_outputs_and_the_final_only_option():
    model = _tiny()
    x = torch.randn(2, 3, 20, 20)
    exits = model(x)
    assert isinstance(exits, list) and [e.shape for e in exits] == [(2, 5)] * 3
    exits[-1].sum().backward()
    model.set_output("final")
    torch.testing.assert_close(model.eval()(x), model.forward_exits(x)[-1])
    assert model.forward_exits(x, num_exits=1)[0].shape == (2, 5)  # later blocks are not run
    plain = timm.create_model("msdnet_anytime_cifar", output="final", num_classes=10).eval()
    with torch.no_grad():
        assert plain(torch.randn(1, 3, 32, 32)).shape == (1, 10)  # a plain classifier through timm
    with pytest.raises(ValueError, match="at least 20x20 px"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="output"):
        model.set_output("best")


def test_exit_costs_are_cumulative():
    model = db.create_model("msdnet_anytime_cifar", output="all")
    costs = model.exit_costs(32)
    macs = [c["macs"] for c in costs]
    assert len(costs) == 7 and macs == sorted(macs) and costs[-1]["params"] == 3_067_960
    # the first exit: block 1 and its classifier only, as counted directly
    x = torch.zeros(1, 3, 32, 32)
    assert flops_of(lambda image: model.classifier[0](model.blocks[0](image)), x) // 2 == macs[0]
    assert 10e6 < macs[0] < macs[-1] < 80e6  # docs/benchmarks.md: 15.0M ... 75.5M


def test_features_only_gives_a_scale_per_block():
    model = db.create_model("msdnet_anytime_cifar", features_only=True).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 32, 32))
    assert len(maps) == 7 and all(m.shape[-1] == 8 for m in maps)  # the coarsest scale, stride 4
    assert [m.shape[1] for m in maps] == model.feature_info.channels()
    finest = db.create_model("msdnet_anytime_cifar", features_only=True, feature_scale=0, out_indices=(0, 1))
    with torch.no_grad():
        assert [m.shape[-1] for m in finest(torch.randn(1, 3, 32, 32))] == [32, 32]
    with pytest.raises(ValueError, match=r"pruned in blocks \[2, 3, 4, 5, 6\]; it exists after blocks \[0, 1\]"):
        db.create_model("msdnet_anytime_cifar", features_only=True, feature_scale=0)


def test_grad_checkpointing_equals_the_plain_step():
    torch.manual_seed(0)
    plain = _tiny().double().train()
    other = _tiny().double().train()
    other.load_state_dict(plain.state_dict())
    other.set_grad_checkpointing(True)
    x = torch.randn(3, 3, 20, 20, dtype=torch.float64)
    for model in (plain, other):
        sum(e.square().sum() for e in model(x)).backward()
    for (name, p), q in zip(plain.named_parameters(), other.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    for (name, a), b in zip(plain.named_buffers(), other.buffers()):
        torch.testing.assert_close(b, a, msg=name)  # BN statistics updated once despite the recomputation


def test_loss_over_exits_and_per_exit_accuracy():
    logits = [torch.randn(4, 3, requires_grad=True) for _ in range(3)]
    targets = torch.tensor([0, 1, 2, 1])
    ce = torch.nn.functional.cross_entropy
    total = ExitsCrossEntropy()(logits, targets)
    torch.testing.assert_close(total, sum(ce(o, targets) for o in logits))
    weighted = ExitsCrossEntropy((0.5, 1.0, 2.0))(logits, targets)
    torch.testing.assert_close(
        weighted, 0.5 * ce(logits[0], targets) + ce(logits[1], targets) + 2 * ce(logits[2], targets)
    )
    with pytest.raises(ValueError, match="2 exit weights for a model with 3 exits"):
        ExitsCrossEntropy((1.0, 1.0))(logits, targets)
    metric = TopKAccuracy((1,))
    right = torch.nn.functional.one_hot(targets, 3).float()
    metric.update([right, -right, right], targets)
    assert metric.compute() == {"top1": 100.0, "top1_exit1": 100.0, "top1_exit2": 0.0, "top1_exit3": 100.0, "loss": 0.0}


def _probs(confidences: list[list[float]], predictions: list[list[int]], classes: int = 3) -> torch.Tensor:
    """(exits, samples, classes) softmax-like outputs with the given maximum and arg-max per exit and sample."""
    probs = torch.zeros(len(confidences), len(confidences[0]), classes)
    for k, (conf, pred) in enumerate(zip(confidences, predictions)):
        for i, (c, p) in enumerate(zip(conf, pred)):
            probs[k, i, :] = (1 - c) / (classes - 1)
            probs[k, i, p] = c
    return probs


def test_threshold_search_on_a_hand_made_case():
    conf = [
        [0.90, 0.80, 0.70, 0.60, 0.55, 0.50, 0.45, 0.40, 0.38, 0.36],  # exit 1
        [0.99, 0.99, 0.99, 0.99, 0.95, 0.50, 0.85, 0.40, 0.80, 0.39],  # exit 2
        [0.99] * 10,  # exit 3
    ]
    targets = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    pred = [[0] * 10, [0] * 9 + [1], [1] * 10]
    probs = _probs(conf, pred)
    thresholds = fit_thresholds(probs, [0.4, 0.3, 0.3])
    # exit 1 takes the 4 most confident (>= 0.60); among the other 6, exit 2 takes the 3 most confident by its own
    # confidence (samples 4, 6, 8: >= 0.80); the last exit takes the remaining 3 (samples 5, 7, 9).
    assert thresholds[:2].tolist() == pytest.approx([0.60, 0.80]) and thresholds[2] == -math.inf
    result = apply_thresholds(probs, targets, thresholds, exit_costs=[10.0, 20.0, 40.0])
    assert result["exit_shares"] == pytest.approx([0.4, 0.3, 0.3])
    assert result["cost"] == pytest.approx(0.4 * 10 + 0.3 * 20 + 0.3 * 40)
    assert result["accuracy"] == pytest.approx(80.0)  # samples 5 and 7 leave at exit 3, which predicts 1
    none_early = fit_thresholds(probs, [0.0, 0.0, 1.0])
    assert apply_thresholds(probs, targets, none_early, [10.0, 20.0, 40.0])["exit_shares"] == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="held-out split is empty"):
        fit_thresholds(probs[:, :0], [0.4, 0.3, 0.3])


def test_geometric_budgets_and_budget_selection():
    shares = geometric_proportions(0.5, 3)
    assert shares.sum().item() == pytest.approx(1.0) and (shares[1] / shares[0]).item() == pytest.approx(0.5)
    probs = _probs([[0.9, 0.4, 0.8, 0.3], [0.9, 0.9, 0.9, 0.9]], [[0, 0, 1, 1], [0, 1, 1, 1]])
    targets = torch.tensor([0, 1, 1, 1])
    points = dynamic_sweep(probs, targets, probs, targets, exit_costs=[1.0, 3.0])
    assert len(points) == 39 and [p["q"] for p in points][:2] == [0.05, 0.1]
    assert all(1.0 <= p["cost"] <= 3.0 for p in points)
    best = select_budget(points, 3.0, [1.0, 3.0])
    assert best["val_accuracy"] == max(p["val_accuracy"] for p in points)
    with pytest.raises(ValueError, match="below the first exit's cost"):
        select_budget(points, 0.5, [1.0, 3.0])


@pytest.mark.integration
def test_two_iterations_train_eval_and_resume(tmp_path):
    options = ("schedule.epochs=2", "train.max_iters_per_epoch=2")
    run_training_tool(train_cls, DEMO_CFG, tmp_path / "run", *options, "schedule.epochs=1")
    metrics = run_training_tool(train_cls, DEMO_CFG, tmp_path / "run", *options, extra=("--resume", "auto"))
    assert load_checkpoint(tmp_path / "run" / "last.pth")["step"] == 4
    assert {"top1", "top5", "loss", "top1_exit1", "top1_exit2", "top1_exit3"} == set(metrics)
    rows = read_csv(tmp_path / "run" / "eval.csv")
    assert len(rows) == 2 and "top1_exit3" in rows[-1]


@pytest.mark.integration
def test_anytime_and_budgeted_evaluation_of_the_digits_demo(tmp_path):
    metrics = run_training_tool(train_cls, DEMO_CFG, tmp_path / "run", "data.holdout=300")
    assert metrics["top1"] > 93.0  # chance is 10 %; about 98.9 % (docs/benchmarks.md)
    argv = [DEMO_CFG, str(tmp_path / "run" / "last.pth"), "--holdout", "300", "--out", str(tmp_path / "eval")]
    report = eval_msdnet.main(eval_msdnet.get_args_parser().parse_args([*argv, "--budgets", "4e6"]))
    assert report["holdout"] == 300 and report["test"] == 360
    anytime = report["anytime"]
    assert [p["exit"] for p in anytime] == [1, 2, 3] and anytime[-1]["accuracy"] == pytest.approx(metrics["top1"])
    assert all(p["accuracy"] > 90 for p in anytime)
    costs = [p["macs"] for p in anytime]
    assert all(costs[0] <= p["cost"] <= costs[-1] for p in report["budgeted"])
    assert report["budgets"][0]["val_cost"] <= 4e6
    saved = json.loads((tmp_path / "eval" / "early_exit.json").read_text())
    assert len(saved["budgeted"]) == 39 and (tmp_path / "eval" / "accuracy_vs_macs.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="held-out split is empty"):
        eval_msdnet.main(eval_msdnet.get_args_parser().parse_args([*argv[:2], "--holdout", "0"]))
    with pytest.raises(ValueError, match="below the first exit's cost"):
        eval_msdnet.main(eval_msdnet.get_args_parser().parse_args([*argv, "--budgets", "1000"]))


def test_holdout_is_a_fixed_random_draw_disjoint_from_training(tmp_path):
    from densebackbones.engine.config import load_config, merge_defaults
    from densebackbones.tasks.classification import CLS_DATA, build_datasets

    cfg = merge_defaults(load_config(DEMO_CFG).to_dict(), CLS_DATA)
    cfg["data"]["holdout"] = 300
    train, _ = build_datasets(cfg)
    held, _ = build_datasets(cfg, holdout_split=True)
    assert len(train) + len(held) == 1437 and not set(train.indices) & set(held.indices)
    assert build_datasets(cfg, holdout_split=True)[0].indices == held.indices  # the same draw every time
    assert held.indices != list(range(1137, 1437))  # not the last images: ImageFolder trees are ordered by class
    cfg["data"]["holdout"] = 1437
    with pytest.raises(ValueError, match=r"data.holdout=1437 must be in 0..1436"):
        build_datasets(cfg)


def test_the_tool_refuses_a_single_exit_model(tmp_path):
    from densebackbones.engine.checkpoint import export_weights

    config = str(REPO / "configs/cls/densenet_bc_digits.py")
    weights = export_weights(
        db.create_model("densenet_bc100_k12_cifar", num_classes=10, in_chans=1), tmp_path / "w.safetensors"
    )
    argv = [config, str(weights), "--holdout", "100"]
    with pytest.raises(ValueError, match="has a single exit"):
        eval_msdnet.main(eval_msdnet.get_args_parser().parse_args(argv))


# Keys of the official port's CIFAR model (models/msdnet.py built under DataParallel): first layer, a dense layer's
# finest and coarser scales, a transition, an exit.
OFFICIAL_KEYS = [
    "module.blocks.0.0.layers.0.net.0.weight",
    "module.blocks.0.0.layers.2.net.1.running_var",
    "module.blocks.0.1.layers.0.conv_normal.net.0.weight",
    "module.blocks.0.1.layers.1.conv_down.net.3.weight",
    "module.blocks.2.1.m.0.net.0.weight",
    "module.classifier.0.m.0.net.0.weight",
    "module.classifier.6.linear.bias",
]


def test_official_key_layout_loads(tmp_path):
    model = db.create_model("msdnet_anytime_cifar", output="all").eval()
    state = model.state_dict()
    assert all(key.removeprefix("module.") in state for key in OFFICIAL_KEYS)
    path = tmp_path / "official.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 300}, path)
    loaded = db.create_model(
        "msdnet_anytime_cifar", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), output="all"
    ).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[-1], model(x)[-1])
