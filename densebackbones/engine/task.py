"""What a task hands the engine: one immutable record per run, built once by the task (``densebackbones.tasks``)
from the resolved config, which the trainer and the evaluation tools read as it is: no ``getattr`` probing, no
state on the task object whose value depends on the order of calls, no metric names the engine must know."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn
from torch.utils.data import Dataset

__all__ = ["TaskRecord"]


@dataclass(frozen=True)
class TaskRecord:
    """A task built for one run.

    Args:
        model: the model (not yet on the device).
        train_set: the training split (None when built for evaluation only).
        eval_set: the evaluation split.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        metric: accumulates evaluation results (``reset/update/compute``).
        best_key: the metric that decides ``best.pth``; ``best_mode`` ``'max'`` or ``'min'``.
        eval_forward: ``eval_forward(model, inputs) -> outputs`` at evaluation (ten crops, sliding windows...).
        collate_fn: both loaders' collate (None: PyTorch's default); ``train_collate_fn`` the training loader's
            where it differs (mixup).
        meta: what ``meta.json`` and every checkpoint record besides the engine's fields (class names).
        headline: the metrics the final line prints (None: all of them; per-class ones stay in the logs).
    """

    model: nn.Module
    train_set: Dataset | None
    eval_set: Dataset | None
    loss_fn: Callable[[Any, Any], Any]
    metric: Any
    best_key: str
    best_mode: str = "max"
    eval_forward: Callable[[nn.Module, Any], Any] | None = None
    collate_fn: Callable | None = None
    train_collate_fn: Callable | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    headline: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.best_mode not in ("max", "min"):
            raise ValueError(f"best_mode={self.best_mode!r}: 'max' or 'min'")

    def shown(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """The headline metrics, rounded for the final line."""
        keys = self.headline if self.headline is not None else tuple(metrics)
        return {k: round(metrics[k], 4) for k in keys if k in metrics}
