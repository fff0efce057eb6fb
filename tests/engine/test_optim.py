"""Optimisers and schedules from the config (engine/optim.py): Adam/AdamW as DenseASPP trains, the poly schedule
against its formula, and the config checks of the keys they read."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from densebackbones.engine.config import DEFAULTS, ConfigError, check_values, merge_defaults
from densebackbones.engine.optim import build_optimizer, build_scheduler
from densebackbones.tasks.segmentation import SEG_DATA


def _cfg(section: str, **values) -> dict:
    return dict(DEFAULTS[section], **values)


@pytest.mark.parametrize("kind", ["Adam", "AdamW"])
def test_adam_takes_the_configs_rate_betas_eps_and_decay(kind):
    model = nn.Linear(3, 2)
    optimizer = build_optimizer(model, _cfg("optimizer", type=kind, lr=3e-4, base_batch_size=8, betas=(0.8, 0.99),
                                            eps=1e-6, weight_decay=1e-5), global_batch_size=16)  # fmt: skip
    assert type(optimizer) is getattr(torch.optim, kind)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (6e-4, (0.8, 0.99), 1e-6, 1e-5)


@pytest.mark.parametrize("warmup_epochs", [0, 1])
def test_poly_schedule_follows_its_formula_per_step(warmup_epochs):
    # lr = lr0 (1 - t / T) ** power over the steps after the warm-up (DeepLab's and DenseASPP's "poly")
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.01)
    scheduler = build_scheduler(optimizer, _cfg("schedule", type="poly", power=0.9, epochs=5,
                                                warmup_epochs=warmup_epochs), iters_per_epoch=4)  # fmt: skip
    warmup, total = 4 * warmup_epochs, 20 - 4 * warmup_epochs
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for step in range(warmup, 20):
        assert rates[step] == pytest.approx(0.01 * (1 - (step - warmup) / total) ** 0.9), step
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("optimizer", "betas", (0.9,), r"optimizer.betas=\(0.9,\): must be two numbers in \[0, 1\)"),
        ("optimizer", "betas", (0.9, 1.0), r"must be two numbers in \[0, 1\)"),
        ("optimizer", "type", "Lion", "optimizer.type='Lion': is not one of 'SGD', 'RMSprop', 'Adam', 'AdamW'"),
        ("schedule", "power", 0.0, r"schedule.power=0.0: must be in \(0.0, inf\)"),
        ("schedule", "type", "polynomial", "is not one of 'multistep', 'cosine', 'poly'"),
        ("data", "scale_range", (2.0, 0.5), "data.scale_range=.*0 < low <= high"),
        ("data", "scale_range", (0.5, math.inf), "data.scale_range=.*0 < low <= high"),
        ("data", "crop_size", (512, 0), r"data.crop_size=\(512, 0\): must be a side or \(height, width\)"),
        ("data", "crop_size", (512, 1024, 3), "must be a side or"),
        ("data", "brightness_shift", 300.0, r"data.brightness_shift=300.0: must be in \[0.0, 255.0\]"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(section, key, value, message):
    cfg = merge_defaults({section: {key: value}}, SEG_DATA)
    with pytest.raises(ConfigError, match=message):
        check_values(cfg)
    check_values(merge_defaults({}, SEG_DATA))  # the defaults pass
