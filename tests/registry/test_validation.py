"""Arguments, inputs, checkpoints and config values that used to get no usable message (issue 24, kind C).

Every registered model's constructor arguments are drawn bad (hypothesis, and one canonical bad value per argument
for all of them) and must fail where they enter with one line naming the argument and the value; integer image
batches name the conversion; a CondenseNet checkpoint that does not fit names the arguments that do; config values
fail in the config check with the key and the fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import math
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from densebackbones.heads.ssd import PriorConfig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import densebackbones as db
from densebackbones.engine.cli import resolve_config
from densebackbones.engine.config import ConfigError, check_config
from densebackbones.registry import BUILDER_ARGS, model_class
from densebackbones.tasks import ClassificationTask

MODELS = db.list_models()

# ----------------------------------------------------------------------------------- what is allowed, per argument
# The allowed values, written down here independently of the library: the test's expectation.
# Whole numbers: the smallest allowed value (num_classes depends on the task: 0 removes a classifier's head, a
# segmentation needs one class, a detector background and one class).
INT_MIN = {"num_classes": {"classification": 0, "segmentation": 1, "detection": 2}, "feature_scale": -4}
# Real numbers: (low, high, low open, high open).
FLOAT_RANGES = {
    "drop_rate": (0.0, 1.0, False, True),
    "proj_drop_rate": (0.0, 1.0, False, True),
    "drop_path_rate": (0.0, 1.0, False, True),
    "classifier_drop_rate": (0.0, 1.0, False, True),
    "compression": (0.0, 1.0, True, False),
    "reduction": (0.0, 1.0, False, False),
    "group_lasso_lambda": (0.0, math.inf, False, True),
}
# Sequences whose entries may be negative (feature levels counted from the end).
SIGNED_SEQUENCES = {"backbone_indices", "out_indices"}
# Arguments whose default is None, by kind.
NONE_DEFAULT_KINDS = {
    "stem_width": "int",
    "condense_factor": "int",
    "condense_steps": "int",
    "group_3x3": "int",
    "bn_size": "int",
    "memory_mode": "choice",
    "exit_weights": "floats",
    "backbone_kwargs": "dict",
    "encoder_kwargs": "dict",
    "head_kwargs": "dict",
    "out_indices": "ints",
    "atrous_rates": "ints",
}


def _kind(name: str, arg: str) -> str:
    default = inspect.signature(model_class(name).__init__).parameters[arg].default
    if default is None:
        return NONE_DEFAULT_KINDS[arg]  # a KeyError here: a new argument this test does not know yet; add it above
    if isinstance(default, bool):
        return "flag"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "choice"
    if isinstance(default, tuple) and all(isinstance(v, int) for v in default):
        return "ints"
    if isinstance(default, PriorConfig):
        return "priors"
    if callable(default):
        return "layer"
    raise AssertionError(f"{name}.{arg}: no bad values known for a default of {default!r}; add its kind to the test")


CASES = [(name, arg) for name in MODELS for arg in db.model_arg_names(name) if arg not in BUILDER_ARGS]


def _int_min(name: str, arg: str) -> int:
    if arg == "num_classes":
        return INT_MIN["num_classes"][db.model_task(name)]
    return INT_MIN.get(arg, 1)


def bad_values(name: str, arg: str) -> st.SearchStrategy:
    """Values of ``arg`` that ``create_model(name)`` must refuse (None only where it is not the default)."""
    kind = _kind(name, arg)
    # None is valid where it is the default, and for these arguments everywhere (bn_size=None: no bottleneck).
    if inspect.signature(model_class(name).__init__).parameters[arg].default is None or arg in NONE_DEFAULT_KINDS:
        return _bad_values(name, arg, kind).filter(lambda v: v is not None)
    return _bad_values(name, arg, kind)


def _bad_values(name: str, arg: str, kind: str) -> st.SearchStrategy:
    wrong_type = st.sampled_from(["4", 2.5, [3]])
    if kind == "int":
        return st.one_of(st.integers(max_value=_int_min(name, arg) - 1), st.sampled_from(["4", 2.5, None, True]))
    if kind == "float":
        low, high, low_open, high_open = FLOAT_RANGES[arg]
        below = st.floats(max_value=low, exclude_max=not low_open, allow_nan=False)
        out = [below, st.sampled_from([math.nan, -math.inf, "0.1", None])]
        if math.isfinite(high):
            out.append(st.floats(min_value=high, exclude_min=not high_open, allow_nan=False))
        else:
            out.append(st.just(math.inf))
        return st.one_of(*out)
    if kind == "flag":
        return st.sampled_from(["False", "yes", 0.5, None])
    if kind == "choice":
        return st.one_of(st.text(min_size=1, max_size=6).map(lambda s: f"bogus_{s}"), st.sampled_from([3, None]))
    if kind == "ints":
        default = inspect.signature(model_class(name).__init__).parameters[arg].default or (1, 2)
        bad_entry = st.sampled_from([2.5, "2"]) if arg in SIGNED_SEQUENCES else st.integers(max_value=0)

        @st.composite
        def with_bad_entry(draw):
            values = list(default)
            values[draw(st.integers(0, len(values) - 1))] = draw(bad_entry)
            return tuple(values) if draw(st.booleans()) else values

        return st.one_of(with_bad_entry(), st.sampled_from(["abc", 2.5]))
    if kind == "floats":
        return st.one_of(st.sampled_from(["x", 3, (1.0,)]), st.lists(st.floats(max_value=-0.01), min_size=1))
    if kind == "dict":
        return st.one_of(wrong_type, st.just(("growth_rate", 4)))
    if kind == "priors":
        return st.sampled_from([300, dict(image_size=300), "vocc", "VOC"])  # names of NAMED_PRIORS are allowed
    if kind == "layer":
        return st.sampled_from(["BatchNorm2d", 3, nn.BatchNorm2d(3)])
    raise AssertionError(kind)


def assert_refused(name: str, arg: str, value) -> None:
    with torch.device("meta"), pytest.raises((ValueError, TypeError)) as err:
        db.create_model(name, **{arg: value})
    message = str(err.value)
    assert "\n" not in message, f"{name}({arg}={value!r}): several lines: {message}"
    assert arg in message and repr(value) in message, f"{name}({arg}={value!r}) names neither: {message}"


def test_every_argument_of_every_model_has_a_known_kind():
    assert len(CASES) > 400
    kinds = {(name, arg): _kind(name, arg) for name, arg in CASES}
    assert {"int", "float", "flag", "choice", "ints", "layer", "dict", "priors"} <= set(kinds.values())


# One canonical bad value for every argument of every model: the registry-wide sweep.
CANONICAL = {
    "flag": "False",
    "choice": "bogus",
    "floats": [-1.0],
    "dict": "growth_rate=4",
    "priors": 300,
    "layer": "BatchNorm2d",
}


@pytest.mark.parametrize(("name", "arg"), CASES, ids=[f"{n}-{a}" for n, a in CASES])
def test_every_model_refuses_a_bad_value_of_every_argument(name, arg):
    kind = _kind(name, arg)
    if kind == "int":
        value = _int_min(name, arg) - 1
    elif kind == "float":
        value = -0.5
    elif kind == "ints":
        default = inspect.signature(model_class(name).__init__).parameters[arg].default or (1, 2)
        value = (*default[:-1], 2.5 if arg in SIGNED_SEQUENCES else 0)
    else:
        value = CANONICAL[kind]
    assert_refused(name, arg, value)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bad_arguments_fail_where_they_enter(data):
    name, arg = data.draw(st.sampled_from(CASES), label="model, argument")
    value = data.draw(bad_values(name, arg), label="value")
    assert_refused(name, arg, value)


@settings(max_examples=40, deadline=None)
@given(
    growth_rate=st.integers(1, 16),
    block_config=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    bn_size=st.one_of(st.none(), st.integers(1, 4)),
    compression=st.floats(0.5, 1.0),
    drop_rate=st.floats(0.0, 0.99),
    global_pool=st.sampled_from(["avg", "max", "avgmax", "catavgmax", "fast"]),
    num_classes=st.integers(0, 5),
)
def test_valid_arguments_still_build(growth_rate, block_config, bn_size, compression, drop_rate, global_pool, **kw):
    with torch.device("meta"):
        model = db.DenseNet(
            growth_rate=growth_rate,
            block_config=block_config,
            bn_size=bn_size,
            compression=compression,
            drop_rate=drop_rate,
            proj_drop_rate=drop_rate,
            global_pool=global_pool,
            stem_type="cifar",
            **kw,
        )
    assert model.num_classes == kw["num_classes"]


def test_issue_growth_rate_zero():
    with pytest.raises(ValueError, match=r"^growth_rate must be at least 1, got 0 \(the channels each dense layer"):
        db.DenseNet(num_classes=10, growth_rate=0, block_config=(2, 2), stem_type="cifar")


def test_compression_that_leaves_a_transition_empty():
    message = r"compression=0.01 leaves transition1 no channels \(floor\(0.01 \* 12\)\); raise compression to at "
    message += "least 0.0833"
    with pytest.raises(ValueError, match=message):
        db.DenseNet(growth_rate=4, block_config=(1, 1), stem_type="cifar", compression=0.01)


def test_reset_classifier_checks_its_arguments():
    model = db.DenseNet(num_classes=3, growth_rate=4, block_config=(1, 1), stem_type="cifar")
    with pytest.raises(ValueError, match="num_classes must be at least 0, got -2"):
        model.reset_classifier(-2)
    with pytest.raises(ValueError, match="unknown global_pool 'mean'"):
        model.reset_classifier(3, "mean")
    with torch.device("meta"):
        msd = db.create_model("msdnet_anytime_cifar")
    with pytest.raises(TypeError, match="num_classes must be a whole number"):
        msd.reset_classifier(2.0)


# --------------------------------------------------------------------------------------------------- input dtypes
def _input_for(name: str) -> tuple[int, ...]:
    if name.startswith("msdnet"):
        side = 20 if name.endswith("_cifar") else 160
    elif db.model_task(name) == "detection":
        side = 300
    else:
        side = 32
    return (1, 3, side, side)


@functools.cache
def _meta_model(name: str) -> nn.Module:
    with torch.device("meta"):
        return db.create_model(name).eval()


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(MODELS),
    dtype=st.sampled_from([torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool]),
)
def test_integer_images_name_the_conversion(name, dtype):
    model = _meta_model(name)
    with torch.device("meta"):
        x = torch.zeros(_input_for(name), dtype=dtype)
    with pytest.raises(TypeError) as err:
        model(x)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"input is {dtype}; models take float images: convert and normalise, e.g. x.float()")
    assert "pretrained_cfg['mean']" in message and "pretrained_cfg['std']" in message


def test_uint8_batch_quotes_the_models_statistics():
    model = db.create_model("densenet_bc100_k12_cifar", growth_rate=4, block_config=(1, 1, 1))
    with pytest.raises(TypeError, match=r"torch.uint8.*x.float\(\).div\(255\).*mean \(0.4914, 0.4822, 0.4465\)"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="must be a torch.Tensor image batch .* got ndarray"):
        model(torch.zeros(1, 3, 32, 32).numpy())


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(MODELS),
    dtypes=st.permutations([torch.float32, torch.float64, torch.bfloat16, torch.float16]).map(lambda d: d[:2]),
)
def test_a_batch_of_another_float_precision_names_both_conversions(name, dtypes):
    # Every registered model (meta device): a float batch of another precision than the weights, outside autocast,
    # gets one line naming x.to(...) and model.to(...), not torch's "expected scalar type Double but found Float".
    weights, batch = dtypes
    model = _meta_model(name).to(weights)
    with torch.device("meta"):
        x = torch.zeros(_input_for(name), dtype=batch)
    with pytest.raises(TypeError, match=rf"has {weights} weights but the input is {batch}: .*x.to\({weights}\)"):
        model(x)


def test_autocast_and_matching_precisions_pass_the_precision_check():
    model = db.create_model("densenet_bc100_k12_cifar", growth_rate=4, block_config=(1, 1, 1)).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(1, 3, 8, 8)).dtype == torch.bfloat16
        assert model(torch.randn(1, 3, 8, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16
    with torch.no_grad():
        assert model.double()(torch.randn(1, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("name", ["densenet_bc100_k12_cifar", "peleenet", "fc_densenet56", "msdnet_anytime_cifar"])
def test_a_channels_last_array_layout_is_named_with_the_permute(name):
    # (N, H, W, C), as images come from PIL, numpy or OpenCV: the fix is a permute, not in_chans=W.
    model = _meta_model(name)
    side = _input_for(name)[-1]
    with torch.device("meta"), pytest.raises(ValueError, match=r"looks channels-last \(N, H, W, C\): pass x.permute"):
        model(torch.zeros(1, side, side, 3))


def test_fc_densenet_input_channels_are_named():
    model = db.create_model("fc_densenet56", growth_rate=4, layers_per_block=1)
    with pytest.raises(ValueError, match=r"fc_densenet56 expects 3 input channels, got 1 \(create it with in_chans=1"):
        model(torch.zeros(1, 1, 32, 32))


def test_input_checks_leave_fx_tracing_alone():
    from densebackbones.models.checks import check_input_dtype

    class Net(nn.Module):
        def forward(self, x):
            check_input_dtype(x)
            return x * 2

    graph = torch.fx.symbolic_trace(Net())
    assert torch.equal(graph(torch.ones(2)), torch.full((2,), 2.0))


def test_detector_priors_must_be_a_prior_config():
    from densebackbones.heads.ssd import VOC_PRIORS

    with pytest.raises(TypeError, match=r"priors must be a PriorConfig .*dataclasses.replace"):
        db.create_model("dsod300", priors=dataclasses.asdict(VOC_PRIORS))


# ------------------------------------------------------------------------------------------ CondenseNet checkpoints
def _save(model: nn.Module, path) -> str:
    torch.save(model.state_dict(), path)
    return str(path)


def _load(name: str, path: str, **kwargs) -> nn.Module:
    return db.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path), **kwargs)


def test_issue_converted_condensenet_checkpoint_names_groups(tmp_path):
    path = _save(db.create_model("condensenet74_c8_g8_converted"), tmp_path / "c8.pth")
    with pytest.raises(ValueError) as err:
        _load("condensenet74_c4_g4_converted", path)
    message = str(err.value)
    assert "\n" not in message
    assert "made with growth_rate=(8, 16, 32, 64, 128), block_config=(4, 6, 8, 10, 8)" in message
    assert "groups=8, condense_factor=8, group_3x3=8" in message
    assert "create_model('condensenet74_c4_g4_converted', groups=8, condense_factor=8)" in message
    assert "Registered models with that architecture: condensenet74_c8_g8_converted." in message
    _load("condensenet74_c4_g4_converted", path, groups=8, condense_factor=8)  # the named arguments fit


@pytest.mark.parametrize(
    ("made_with", "expected"),
    [
        (dict(groups=8), "groups=8, condense_factor=8)"),
        (dict(groups=4, condense_factor=8), "create_model('condensenet86_cifar_converted', condense_factor=8)"),
        (dict(groups=8, group_3x3=4), "groups=8, condense_factor=8, group_3x3=4)"),
        (dict(growth_rate=(8, 16, 16)), "growth_rate=(8, 16, 16))"),
    ],
)
def test_converted_condensenet_checkpoints_name_the_arguments_that_fit(tmp_path, made_with, expected):
    path = _save(db.create_model("condensenet86_cifar_converted", **made_with), tmp_path / "w.pth")
    with pytest.raises(ValueError, match="does not fit") as err:
        _load("condensenet86_cifar_converted", path)
    assert expected in str(err.value)
    assert "No registered model of this family has that architecture; build the model with those arguments." in str(
        err.value
    )
    fitting = dict(made_with)
    _load("condensenet86_cifar_converted", path, **fitting)


def test_training_condensenet_checkpoint_names_groups_from_its_masks(tmp_path):
    trained = db.create_model("condensenet86_cifar", groups=8)
    trained.set_training_progress(0.2)  # two of seven condensation stages passed
    path = _save(trained, tmp_path / "train.pth")
    with pytest.raises(ValueError) as err:
        _load("condensenet86_cifar", path)
    assert "a training-time checkpoint made with" in str(err.value)
    assert "create_model('condensenet86_cifar', groups=8, condense_factor=8)" in str(err.value)
    message = r"training-time checkpoint made with .* \(the model is converted\): load it with create_model.*or convert"
    with pytest.raises(ValueError, match=message):
        _load("condensenet86_cifar_converted", path)


# ---------------------------------------------------------------------------------------------------- config values
REPO = Path(__file__).resolve().parents[2]
IMAGENET_CFG = str(REPO / "configs/cls/densenet_bc121_k32_imagenet.py")
DIGITS_CFG = str(REPO / "configs/cls/densenet_bc_digits.py")


def _resolve(config: str, *options: str, task=None) -> dict:
    args = argparse.Namespace(config=config, cfg_options=list(options), data_root=None, work_dir=None)
    return resolve_config(args, task or ClassificationTask())


def test_issue_milestones_past_a_shortened_schedule():
    with pytest.raises(ConfigError) as err:
        _resolve(IMAGENET_CFG, "schedule.epochs=1")
    assert str(err.value) == (
        "config key schedule.milestones=(30, 60) must lie inside the schedule: epochs nowhere (the schedule is too "
        "short for a decay) with schedule.epochs=1; pass schedule.milestones=() (no decay), raise schedule.epochs, "
        "or use schedule.type='cosine'"
    )
    with pytest.raises(ConfigError, match=r"epochs 1\.\.9 with schedule.epochs=10; pass schedule.milestones=\(5, 7\)"):
        _resolve(IMAGENET_CFG, "schedule.epochs=10")
    assert _resolve(IMAGENET_CFG, "schedule.epochs=10", "schedule.milestones=(5,7)")["schedule"]["epochs"] == 10
    with pytest.raises(ConfigError, match=r"after the warm-up \(schedule.warmup_epochs=40\): epochs 41..89"):
        _resolve(IMAGENET_CFG, "schedule.warmup_epochs=40")
    with pytest.raises(
        ConfigError, match=r"iterations 1..49 with schedule.max_iters=50; pass schedule.milestones=\(25, 37"
    ):
        _resolve(IMAGENET_CFG, "schedule.max_iters=50")


def test_config_tool_reports_the_value_in_one_line():
    command = [sys.executable, str(REPO / "tools/train_cls.py"), IMAGENET_CFG, "--cfg-options", "schedule.epochs=1"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: config key schedule.milestones=(30, 60) must lie inside the schedule")
    assert result.stderr.count("\n") == 1


# Bad values of every numeric and named key, written down here: the test's expectation.
BAD_CONFIG_VALUES = {
    "schedule.epochs": st.integers(max_value=0),
    "schedule.max_iters": st.integers(max_value=0),
    "schedule.warmup_epochs": st.integers(max_value=-1),
    "schedule.gamma": st.floats(max_value=0.0),
    "schedule.type": st.text(min_size=1, max_size=5).map(lambda s: f"step_{s}"),
    "optimizer.lr": st.floats(max_value=-1e-9),
    "optimizer.momentum": st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0)),
    "optimizer.weight_decay": st.floats(max_value=-1e-9),
    "optimizer.base_batch_size": st.integers(max_value=0),
    "optimizer.eps": st.floats(max_value=0.0),
    "optimizer.alpha": st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.001)),
    "optimizer.type": st.sampled_from(["Lion", "sgd", "adam"]),
    "optimizer.betas": st.sampled_from([(0.9,), (0.9, 1.0), (-0.1, 0.999)]),
    "schedule.power": st.floats(max_value=0.0),
    "schedule.decay_epochs": st.floats(max_value=0.0),
    "train.repeated_aug": st.integers(max_value=0),
    "data.re_prob": st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.001)),
    "data.mixup_alpha": st.floats(max_value=-1e-9),
    "data.cutmix_alpha": st.floats(max_value=-1e-9),
    "data.mixup_prob": st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.001)),
    "data.cutout": st.integers(max_value=-1),
    "data.test_image_size": st.integers(max_value=0),
    "data.test_crop_pct": st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.001)),
    "data.loss": st.sampled_from(["nll", "BCE"]),
    "data.interpolation": st.sampled_from(["nearest", "lanczos"]),
    "train.accum_steps": st.integers(max_value=0),
    "train.seed": st.integers(max_value=-1),
    "train.log_interval": st.integers(max_value=0),
    "train.eval_interval": st.integers(max_value=0),
    "train.save_interval": st.integers(max_value=-1),
    "train.max_iters_per_epoch": st.integers(max_value=0),
    "train.early_stop_patience": st.integers(max_value=0),
    "train.clip_grad": st.floats(max_value=0.0),
    "train.ema_decay": st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0)),
    "train.label_smoothing": st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0)),
    "train.amp": st.sampled_from(["bf17", "float16", "fp32"]),
    "data.batch_size": st.integers(max_value=0),
    "data.eval_batch_size": st.integers(max_value=0),
    "data.num_workers": st.integers(max_value=-1),
    "data.image_size": st.integers(max_value=0),
    "data.holdout": st.integers(max_value=-1),
    "data.dataset": st.sampled_from(["cifar", "mnist", "imagenet1k"]),
    "data.augment": st.sampled_from(["flip", "autoaugment", "plus2"]),
}


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_bad_config_values_fail_in_the_config_check(data):
    key = data.draw(st.sampled_from(sorted(BAD_CONFIG_VALUES)), label="key")
    value = data.draw(BAD_CONFIG_VALUES[key].filter(lambda v: not (isinstance(v, float) and math.isnan(v))))
    raw = {"model": {"type": "densenet_bc100_k12_cifar"}, "data": {"dataset": "digits"}}
    section, name = key.split(".")
    raw.setdefault(section, {})[name] = value
    task = ClassificationTask()
    with pytest.raises(ConfigError) as err:
        check_config(raw, task.model_arg_names(raw), task.data_defaults, task.data_choices)
    message = str(err.value)
    assert "\n" not in message and f"config key {key}={value!r}" in message, message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["schedule.warmup_epochs=5", "schedule.epochs=5", "schedule.type='cosine'"], "warm-up must end before"),
        (["optimizer.momentum=0.0"], "optimizer.nesterov=True: Nesterov SGD needs momentum"),
        (["train.accum_steps=3"], r"data.batch_size=256: .* train.accum_steps=3 .* e.g. data.batch_size=255"),
        (["schedule.milestones=(60, 30)"], r"schedule.milestones=\(60, 30\): must increase; e.g. \(30, 60\)"),
    ],
)
def test_config_values_that_contradict_each_other(options, message):
    with pytest.raises(ConfigError, match=message):
        _resolve(IMAGENET_CFG, *options)


def test_image_size_below_the_models_smallest_input():
    cfg = _resolve(DIGITS_CFG, "data.image_size=2", "model.growth_rate=4", "model.block_config=(1,1,1)")
    with pytest.raises(ValueError, match=r"data.image_size=2 is below densenet_bc100_k12_cifar's smallest input, 4 px"):
        ClassificationTask().build_model(cfg)


@pytest.mark.parametrize("task", ["cls", "det", "seg"])
def test_every_shipped_config_passes_the_value_checks(task):
    from densebackbones.tasks import DetectionTask, SegmentationTask

    task_obj = {"cls": ClassificationTask, "det": DetectionTask, "seg": SegmentationTask}[task]()
    configs = sorted((REPO / "configs" / task).glob("*.py"))
    assert configs
    for path in configs:
        _resolve(str(path), task=task_obj)


@pytest.mark.parametrize("name", db.list_models())
def test_a_misspelt_argument_names_the_closest_ones(name):
    # Every registered factory (both front doors): a constructor argument with a letter dropped is named with the
    # argument meant, instead of Python's bare "unexpected keyword argument".
    meant = next(arg for arg in db.model_arg_names(name) if len(arg) > 6 and arg not in ("num_classes", "in_chans"))
    misspelt = meant[:3] + meant[4:]
    front_doors = [db.create_model] + ([timm.create_model] if name in db.list_models(task="classification") else [])
    for create in front_doors:
        with pytest.raises(TypeError, match=rf"{name} takes no argument '{misspelt}'; did you mean '{meant}'"):
            create(name, **{misspelt: 1})


def test_epochs_given_where_the_config_counts_steps_is_refused():
    # dsod_shapes.py sets schedule.max_iters=200: schedule.epochs=1 used to be ignored without a word
    from densebackbones.tasks import DetectionTask

    with pytest.raises(ValueError, match=r"schedule.epochs=1 has no effect: .*schedule.max_iters=200.*max_iters=None"):
        _resolve(str(REPO / "configs/det/dsod_shapes.py"), "schedule.epochs=1", task=DetectionTask())
    counted = _resolve(str(REPO / "configs/det/dsod_shapes.py"), "schedule.epochs=1", "schedule.max_iters=None",
                       "schedule.milestones=()", task=DetectionTask())  # fmt: skip
    assert counted["schedule"]["epochs"] == 1 and counted["schedule"]["max_iters"] is None
