"""MSDNet (Huang et al., ICLR 2018): the official port's parameter counts, the layout (steps, scale pruning), exit
outputs and costs, the loss over exits, the threshold search on a hand-made case, the anytime and budgeted
evaluation tool on the digits demo, and two-iteration training with resume."""

from __future__ import annotations

import copy
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
from densebackbones.models.msdnet import SkippedScale, block_steps
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
    assert flops_of(lambda image: model.classifier[0](model.blocks[0]([image])), x) // 2 == macs[0]
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


@pytest.mark.slow  # the whole demo (75 s); the tool's path runs in the suite on a short training below
def test_the_digits_demo_reaches_its_accuracy_at_every_exit(tmp_path):
    metrics = run_training_tool(train_cls, DEMO_CFG, tmp_path / "run", "data.holdout=300")
    assert metrics["top1"] > 93.0  # chance is 10 %; about 98.9 % (docs/benchmarks.md)
    argv = [DEMO_CFG, str(tmp_path / "run" / "last.pth"), "--holdout", "300", "--out", str(tmp_path / "eval")]
    report = eval_msdnet.main(eval_msdnet.get_args_parser().parse_args([*argv, "--budgets", "4e6"]))
    assert all(p["accuracy"] > 90 for p in report["anytime"])


@pytest.mark.integration
def test_anytime_and_budgeted_evaluation_of_the_digits_demo(tmp_path):
    # a short training (the tool's path, not the demo's accuracy: the slow test above)
    short = ("schedule.epochs=1", "train.max_iters_per_epoch=8", "data.holdout=300")
    metrics = run_training_tool(train_cls, DEMO_CFG, tmp_path / "run", *short)
    argv = [DEMO_CFG, str(tmp_path / "run" / "last.pth"), "--holdout", "300", "--out", str(tmp_path / "eval")]
    report = eval_msdnet.main(eval_msdnet.get_args_parser().parse_args([*argv, "--budgets", "4e6"]))
    assert report["holdout"] == 300 and report["test"] == 360
    anytime = report["anytime"]
    assert [p["exit"] for p in anytime] == [1, 2, 3] and anytime[-1]["accuracy"] == pytest.approx(metrics["top1"])
    costs = [p["macs"] for p in anytime]
    assert all(costs[0] <= p["cost"] <= costs[-1] for p in report["budgeted"])
    assert report["budgets"][0]["val_cost"] <= 4e6
    # the tool builds every exit whatever the config's model.output (a registered MSDNet is final-only by default)
    final_cfg = [*argv, "--cfg-options", "model.output=final", "--out", str(tmp_path / "eval_final")]
    assert eval_msdnet.main(eval_msdnet.get_args_parser().parse_args(final_cfg))["anytime"] == anytime
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


# ------------------------------------------------------------------------------------------- the timm contract
def _tiny_coarsest_last(**kwargs) -> MSDNet:
    """A tiny model whose last block keeps only the coarsest scale, as every registered MSDNet's does (blocks of
    2 layers over 3 scales: block_scales [3, 2, 1]), so that every layer feeds an exit."""
    return _tiny(step=2, **kwargs)


def _all_and_final(**kwargs) -> tuple[MSDNet, MSDNet]:
    """An all-exit tiny model and a final-only one holding its weights (loaded from its state_dict)."""
    torch.manual_seed(0)
    every_exit = _tiny_coarsest_last(output="all", **kwargs).eval()
    final_only = _tiny_coarsest_last(output="final", **kwargs).eval()
    final_only.load_state_dict(every_exit.state_dict())
    return every_exit, final_only


def test_forward_features_of_a_model_pruned_with_its_head_end_at_the_tap():
    """timm's prune contract: prune_intermediate_layers([i]) (prune_head=True) leaves no exit, and forward_features
    then gives block i's map, the tap forward_intermediates returns; every parameter left gets a gradient."""
    _, final_only = _all_and_final()
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        taps = final_only.forward_intermediates(x, intermediates_only=True)
    for i in range(len(taps)):
        pruned = copy.deepcopy(final_only)
        pruned.prune_intermediate_layers([i])
        with torch.no_grad():
            torch.testing.assert_close(pruned.forward_features(x), taps[i])
    pruned.train().forward_features(x).sum().backward()
    assert all(p.grad is not None for p in pruned.parameters())


def test_forward_features_and_head_give_the_final_exit():
    every_exit, final_only = _all_and_final()
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        final_logits = every_exit(x)[-1]
        for model in (every_exit, final_only):
            features = model.forward_features(x)
            # the final exit's two 3x3/2 convolutions and 2x2 pool: 5 px coarsest scale -> 3 -> 2 -> 1
            assert features.shape == (2, model.num_features, 1, 1) and model.num_features == 128
            pooled = model.forward_head(features, pre_logits=True)
            assert pooled.shape == (2, model.head_hidden_size) and model.head_hidden_size == 128
            torch.testing.assert_close(model.forward_head(features), final_logits)
            torch.testing.assert_close(model.get_classifier()(pooled), final_logits)
            last, maps = model.forward_intermediates(x)  # timm: forward_features' map and one map per block
            torch.testing.assert_close(last, features)
            assert [m.shape[-1] for m in maps] == [5, 5, 5]
        output = final_only(x)
    assert isinstance(output, torch.Tensor) and output.shape == (2, 5)
    torch.testing.assert_close(output, final_logits)


@pytest.mark.parametrize("output", ["all", "final"])
def test_every_parameter_gets_a_gradient(output):
    model = _tiny_coarsest_last(output=output).train()
    out = model(torch.randn(2, 3, 20, 20))
    (sum(o.sum() for o in out) if output == "all" else out.sum()).backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []
    if output == "final":
        assert not any(name.startswith("classifier.0.") for name, _ in model.named_parameters())


def test_an_all_exit_model_narrowed_to_its_final_exit_leaves_parameters_unused():
    # What the final-only build prevents: set_output('final') on an all-exit model computes the last exit only.
    model = _tiny_coarsest_last(output="all").train()
    model.set_output("final")
    model(torch.randn(2, 3, 20, 20)).sum().backward()
    unused = {name.split(".")[1] for name, p in model.named_parameters() if p.grad is None}
    assert unused == {"0", "1"}  # classifier.0 and classifier.1
    with pytest.raises(ValueError, match="built with output='final' and has only its last exit"):
        _tiny_coarsest_last(output="final").set_output("all")
    with pytest.raises(ValueError, match="forward_exits needs every exit"):
        _tiny_coarsest_last(output="final").forward_exits(torch.randn(1, 3, 20, 20))


def test_ddp_without_find_unused_parameters_trains_the_final_only_model(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    def two_steps(model: MSDNet) -> None:
        ddp = DistributedDataParallel(model)
        for _ in range(2):
            ddp(torch.randn(2, 3, 20, 20)).sum().backward()

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        two_steps(_tiny_coarsest_last(output="final"))
        narrowed = _tiny_coarsest_last(output="all")
        narrowed.set_output("final")
        with pytest.raises(RuntimeError, match="parameters that were not used in producing loss"):
            two_steps(narrowed)
    finally:
        dist.destroy_process_group()


def test_all_exit_checkpoint_loads_into_the_final_only_model(tmp_path):
    every_exit, final_only = _all_and_final()  # _all_and_final loads with load_state_dict(strict=True)
    dropped = {k for k in every_exit.state_dict() if k.startswith(("classifier.0.", "classifier.1."))}
    assert dropped and set(final_only.state_dict()) == set(every_exit.state_dict()) - dropped
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(final_only(x), every_exit(x)[-1])
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "classifier\.0\.m\.0\.net\.0\.weight"'):
        _tiny_coarsest_last(output="all").load_state_dict(final_only.state_dict())
    # the same through the registry's weights file (load_pretrained), with the port's module. prefix
    every_exit = db.create_model("msdnet_anytime_cifar", output="all").eval()
    path = tmp_path / "all_exits.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in every_exit.state_dict().items()}}, path)
    loaded = db.create_model("msdnet_anytime_cifar", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), every_exit(x)[-1])


@pytest.mark.parametrize(("name", "side"), [("msdnet_anytime_cifar", 20), ("msdnet_imagenet", 160)])
def test_min_input_size_is_in_the_config_and_is_the_smallest_input(name, side):
    assert timm.models.get_pretrained_cfg(name).min_input_size == (3, side, side)  # what timm's tests size by
    tiny = dict(channels=4, growth_rate=2, num_blocks=2, base=1, step=1, num_classes=3)
    model = db.create_model(name, **tiny).eval()
    assert model.pretrained_cfg["min_input_size"] == (3, side, side) == (3, model.min_input_size, model.min_input_size)
    with torch.no_grad():
        assert model(torch.randn(1, 3, side, side)).shape == (1, 3)
        with pytest.raises(ValueError, match=rf"takes inputs of at least {side}x{side} px \(its exits need"):
            model(torch.randn(1, 3, side - 1, side))


@pytest.mark.parametrize("name", ["msdnet_anytime_cifar", "msdnet_budgeted_cifar", "msdnet_imagenet"])
def test_timm_default_cfg_checks(name):
    """timm's test_model_default_cfgs on the meta device (shapes only): the unpooled map at the config's pool_size,
    a pooled num_features vector after reset_classifier(0), the map again without pooling, the classifier and first
    convolution named by the config."""
    with torch.device("meta"):
        model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    x = torch.empty(1, *cfg["input_size"], device="meta")
    assert model.forward_features(x).shape[-2:] == cfg["pool_size"]
    assert model(x).shape == (1, cfg["num_classes"])
    model.reset_classifier(0)
    assert model(x).shape == (1, model.num_features) == (1, model.head_hidden_size)
    model.reset_classifier(0, "")
    assert model(x).shape == (1, model.num_features, *cfg["pool_size"])
    state = model.state_dict()
    assert f"{cfg['classifier']}.weight" not in state  # removed above; present in a fresh model:
    with torch.device("meta"):
        state = timm.create_model(name).state_dict()
    assert f"{cfg['classifier']}.weight" in state and f"{cfg['first_conv']}.weight" in state


def test_global_pool_drop_rate_and_reset_classifier_on_the_models_device_and_dtype():
    model = db.create_model(
        "msdnet_anytime_cifar", num_blocks=3, base=2, step=2, channels=4, growth_rate=2, global_pool="catavgmax",
        drop_rate=0.5, num_classes=4, dtype=torch.float64,
    )  # fmt: skip
    assert model.head_hidden_size == 2 * model.num_features == 256
    x = torch.randn(2, 3, 20, 20, dtype=torch.float64)
    assert model.eval()(x).shape == (2, 4) and model.get_classifier().in_features == 256
    model.train()
    pooled = model.forward_head(torch.ones(2, 128, 1, 1, dtype=torch.float64), pre_logits=True)
    assert set(pooled.unique().tolist()) == {0.0, 2.0}  # dropout 0.5 before the linear layer, in training only
    model.reset_classifier(7, "max")
    head = model.get_classifier()
    assert head.weight.dtype == torch.float64 and head.out_features == 7 and model.head_hidden_size == 128
    assert model.eval()(x).shape == (2, 7)
    with pytest.raises(ValueError, match="global_pool='' keeps the unpooled map"):
        model.reset_classifier(3, "")
    model.reset_classifier(0, "")
    model.reset_classifier(3)  # classes without a pool named: the port's average pool comes back (timm's cfg test)
    assert model.eval()(x).shape == (2, 3) and model.classifier[-1].global_pool.pool_type == "avg"
    with pytest.raises(ValueError, match="unknown global_pool 'mean'"):
        db.create_model("msdnet_anytime_cifar", global_pool="mean")
    with torch.device("meta"):
        on_meta = db.create_model("msdnet_anytime_cifar")
    on_meta.reset_classifier(3)
    assert on_meta.get_classifier().weight.device.type == "meta"


def test_timm_create_model_with_timms_arguments():
    model = timm.create_model(
        "msdnet_anytime_cifar", pretrained=False, num_classes=42, in_chans=1, global_pool="avg", drop_rate=0.1,
        device="cpu", dtype=torch.float32,
    ).eval()  # fmt: skip
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 42)
    features = timm.create_model("msdnet_anytime_cifar", features_only=True, out_indices=(-2, -1))
    assert len(list(features.parameters())) > 0 and not any(
        name.startswith("classifier") for name, _ in features.model.named_parameters()
    )  # the exits are pruned: every parameter of the extractor feeds its maps
    with torch.no_grad():
        maps = features(torch.randn(1, 3, 32, 32))
    assert [m.shape[1:] for m in maps] == [(152, 8, 8), (200, 8, 8)] and features.feature_info.channels() == [152, 200]


def test_memory_mode():
    assert _tiny(memory_mode="efficient").grad_checkpointing and _tiny(memory_efficient=True).memory_mode == "efficient"
    model = _tiny(memory_mode="plain")
    assert not model.grad_checkpointing and model.memory_mode == "plain"
    model.set_memory_mode("efficient")
    assert model.grad_checkpointing
    with pytest.raises(ValueError, match=r"memory_mode='buffer': MSDNet has no shared concatenation buffer .* use "):
        db.create_model("msdnet_anytime_cifar", memory_mode="buffer")
    with pytest.raises(ValueError, match="contradicts"):
        _tiny(memory_efficient=True, memory_mode="plain")


@pytest.mark.parametrize("output", ["all", "final"])
def test_units_whose_maps_nothing_reads_are_not_built(output, monkeypatch):
    """_tiny's last block keeps two scales: its finer unit feeds no exit (they read the coarsest) and no later layer.
    The port builds it; here it is a SkippedScale, the port's checkpoint still loads, and the outputs are the same."""
    model = _tiny(output=output)
    assert model.block_scales[-1] == 2 and isinstance(model.blocks[2][0].layers[0], SkippedScale)
    out = model(torch.randn(2, 3, 20, 20))
    (sum(o.sum() for o in out) if output == "all" else out.sum()).backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []
    with monkeypatch.context() as patch:
        patch.setattr(MSDNet, "_skip_unread_scales", lambda self, read: None)
        torch.manual_seed(0)
        port_layout = _tiny(output="all").eval()  # every unit built, as the port does
    extra = [k for k in port_layout.state_dict() if k.startswith("blocks.2.0.layers.0.")]
    assert extra and not any(k in model.state_dict() for k in extra)
    model.load_state_dict(port_layout.state_dict())
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        expected = port_layout(x)
        got = model.eval()(x)
    torch.testing.assert_close(got if output == "all" else [got], expected if output == "all" else expected[-1:])


def test_features_only_builds_only_what_its_maps_need():
    features = db.create_model("msdnet_anytime_cifar", features_only=True, out_indices=(0, 1, 2))
    maps = features(torch.randn(2, 3, 32, 32))
    sum(m.sum() for m in maps).backward()
    assert [name for name, p in features.named_parameters() if p.grad is None] == []
    # block 2 keeps two scales, of which only the coarsest is returned: its last layer's finer unit is skipped
    assert isinstance(features.model.blocks[2][-1].layers[0], SkippedScale)
