"""Optimiser and learning-rate schedule from the config, on torch's optimisers and ``lr_scheduler`` classes.

Schedules step once per optimiser update, so a decay "at epoch 150" happens at iteration 150 * iters_per_epoch,
a cosine schedule is per-iteration (DenseNet-cosine: lr = 0.5 lr0 (1 + cos(pi t / T)), no warm-up), and so is
"poly" (DeepLab's and DenseASPP's lr = lr0 (1 - t / T) ** power, ``torch``'s ``PolynomialLR``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import lr_scheduler

__all__ = ["build_optimizer", "build_scheduler", "scaled_lr"]


def scaled_lr(optim_cfg: dict[str, Any], global_batch_size: int) -> float:
    """Linear scaling: ``lr`` is given per ``base_batch_size`` images (Goyal et al. 2017)."""
    return optim_cfg["lr"] * global_batch_size / optim_cfg["base_batch_size"]


# timm's optimisers, by the config's name (timm's recipes: RMSprop "TF 1.0 behaviour" for the RandAugment family,
# LAMB for ResNet Strikes Back's A recipes).
_TIMM_OPTIMIZERS = {"RMSpropTF": "rmsproptf", "LAMB": "lamb"}


def build_optimizer(model: torch.nn.Module, optim_cfg: dict[str, Any], global_batch_size: int) -> torch.optim.Optimizer:
    """The config's optimiser over the model's trainable parameters. Weight decay reaches every parameter, BN
    included, as the official Torch code (fb.resnet.torch) does; ``decay_norm_and_bias=False`` exempts biases and
    normalisation weights as timm's recipes do (``timm.optim.param_groups_weight_decay``)."""
    lr = scaled_lr(optim_cfg, global_batch_size)
    kind, decay = optim_cfg["type"], optim_cfg["weight_decay"]
    if optim_cfg.get("decay_norm_and_bias", True):
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        from timm.optim import param_groups_weight_decay

        params, decay = param_groups_weight_decay(model, decay), 0.0  # each group carries its own decay
    if kind == "SGD":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=optim_cfg["momentum"],
            nesterov=optim_cfg["nesterov"],
            dampening=0.0,
            weight_decay=decay,
        )
    if kind == "RMSprop":
        return torch.optim.RMSprop(
            params,
            lr=lr,
            alpha=optim_cfg["alpha"],
            eps=optim_cfg["eps"],
            momentum=optim_cfg["momentum"],
            weight_decay=decay,
        )
    if kind in ("Adam", "AdamW"):  # DenseASPP trains with Adam (L2 decay); AdamW decouples the decay
        optimizer = torch.optim.Adam if kind == "Adam" else torch.optim.AdamW
        return optimizer(params, lr=lr, betas=tuple(optim_cfg["betas"]), eps=optim_cfg["eps"], weight_decay=decay)
    if kind in _TIMM_OPTIMIZERS:
        from timm.optim import create_optimizer_v2

        extra = dict(alpha=optim_cfg["alpha"], momentum=optim_cfg["momentum"]) if kind == "RMSpropTF" else {}
        if kind == "LAMB":
            extra["betas"] = tuple(optim_cfg["betas"])
        return create_optimizer_v2(
            params, _TIMM_OPTIMIZERS[kind], lr=lr, weight_decay=decay, eps=optim_cfg["eps"], **extra
        )
    raise ValueError(f"unknown optimizer type {kind!r}; use 'SGD', 'RMSprop', 'Adam', 'AdamW', 'RMSpropTF' or 'LAMB'")


def build_scheduler(
    optimizer: torch.optim.Optimizer, sched_cfg: dict[str, Any], iters_per_epoch: int
) -> lr_scheduler.LRScheduler:
    """Per-iteration schedule: multistep (milestones in epochs, or in iterations when ``max_iters`` is set),
    cosine, poly (``power``), exponential (per epoch), step (every ``decay_epochs``), constant."""
    by_iteration = bool(sched_cfg.get("max_iters"))
    total = sched_cfg["max_iters"] if by_iteration else sched_cfg["epochs"] * iters_per_epoch
    unit = 1 if by_iteration else iters_per_epoch  # milestones in iterations with max_iters, else in epochs
    warmup = int(sched_cfg["warmup_epochs"] * iters_per_epoch)
    kind = sched_cfg["type"]
    if kind == "multistep":
        milestones = sorted(int(m) for m in sched_cfg["milestones"])
        limit = total // unit
        if any(not 0 < m < limit for m in milestones):
            what = "iterations" if by_iteration else "epochs"
            raise ValueError(f"schedule.milestones {milestones} must be {what} inside 1..{limit - 1}")
        main = lr_scheduler.MultiStepLR(optimizer, [m * unit - warmup for m in milestones], gamma=sched_cfg["gamma"])
    elif kind == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1), eta_min=0.0)
    elif kind == "poly":
        main = lr_scheduler.PolynomialLR(optimizer, total_iters=max(total - warmup, 1), power=sched_cfg["power"])
    elif kind == "exponential":
        main = lr_scheduler.StepLR(optimizer, step_size=iters_per_epoch, gamma=sched_cfg["gamma"])
    elif kind == "step":  # timm's "step" (staircase exponential decay): x gamma every decay_epochs, e.g. 2.4
        step = max(round(sched_cfg["decay_epochs"] * iters_per_epoch), 1)
        main = lr_scheduler.StepLR(optimizer, step_size=step, gamma=sched_cfg["gamma"])
    elif kind == "constant":
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        raise ValueError(f"unknown schedule type {kind!r}; use multistep, cosine, poly, exponential, step or constant")
    if warmup <= 0:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
