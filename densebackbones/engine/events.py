"""Step events: what happens around each optimiser step besides forward, loss, backward, step and schedule.

The training loop (:meth:`Trainer.train_one_epoch`) reads top to bottom and calls, on every rank, the trainer's
events in order: ``before_step`` before a step's first micro-batch, ``after_step`` after the schedule has stepped,
and ``while_saving`` while a checkpoint is written (on rank 0 when its temporary file is complete and not yet renamed;
on the other ranks while rank 0 writes). The built-in events, each small and tested on its own:

* :class:`TrainingProgress`: the model's training-progress hook (CondenseNet condenses there).
* :class:`EmaUpdate`: timm's ``ModelEmaV3`` average after every step.
* :class:`LogWindow`: every ``train.log_interval`` steps (and at the epoch's end) the window's loss and gradient norm
  are checked for non-finite values on all ranks together, a ``train.csv`` row is written and the bar updated.
* :class:`StepCheckpoint`: ``last.pth`` every ``train.checkpoint_interval_steps`` steps, mid-epoch.
* :class:`Preemption`: after SIGTERM every rank finishes its step, the step checkpoint is written (unless one was
  just written) and the run stops (``elastic.py``).

``train.hooks`` adds events of one's own (``'package.module:ClassName'``, constructed without arguments), called after
the step checkpoint and before the preemption check; the tests inject faults that way (tests/helpers/faults.py).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from .distributed import all_reduce_sum
from .elastic import TrainingPreempted
from .hooks import TrainingProgressAware

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = [
    "EmaUpdate",
    "EpochLoop",
    "LogWindow",
    "Preemption",
    "StepCheckpoint",
    "StepEvent",
    "TrainingProgress",
    "default_events",
    "load_events",
]


@dataclass
class EpochLoop:
    """The running state of one epoch: its position, the sums a step checkpoint keeps (exact float32 values) and
    the progress bar. ``it``: the iteration in progress (0-based); ``saved``: a step checkpoint of this step exists."""

    start: int
    iterations: int
    device: torch.device
    progress: Any = None
    it: int = 0
    loss_sum: torch.Tensor = None
    window_loss: torch.Tensor = None
    window_grad_norm: torch.Tensor = None  # the largest clipped-gradient norm of the log window
    window_count: int = 0
    images_seen: int = 0
    window_start: float = field(default_factory=time.perf_counter)
    epoch_start: float = field(default_factory=time.perf_counter)
    saved: bool = False

    @classmethod
    def begin(cls, trainer: Trainer) -> EpochLoop:
        """Position the sampler (a step checkpoint's epoch continues after its steps) and restore its sums."""
        start = trainer.epoch_step
        trainer.train_sampler.set_epoch(trainer.epoch)
        trainer.train_sampler.set_start(start * trainer.micro_batch * trainer.accum_steps)
        sums, trainer._resumed_loop = trainer._resumed_loop or {}, None
        iterations = trainer.iters_per_epoch
        if trainer.max_iters:
            iterations = min(iterations, trainer.max_iters - (trainer.step - start))
        tensor = {k: torch.tensor(sums.get(k, 0.0), dtype=torch.float32, device=trainer.device) for k in _SUMS}
        # A context manager: an error that stops the epoch also ends the bar's line, so messages start on their own.
        progress = tqdm(
            total=trainer.iters_per_epoch,
            initial=start,
            desc=f"epoch {trainer.epoch + 1}/{trainer.epochs}",
            disable=not trainer.dist.is_main,
            dynamic_ncols=True,
            mininterval=2.0,
        )
        return cls(start, iterations, trainer.device, progress, start, **tensor,
                   window_count=sums.get("window_count", 0), images_seen=sums.get("images_seen", 0))  # fmt: skip

    @property
    def last(self) -> bool:
        """Whether the iteration in progress is the epoch's last (its checkpoint follows the evaluation)."""
        return self.it == self.iterations - 1

    def add(self, loss: torch.Tensor, targets: Any, micro_batch: int) -> None:
        """One micro-batch's share of the step's loss (already divided by the accumulation steps)."""
        self.loss_sum += loss
        self.window_loss += loss
        self.images_seen += len(targets) if hasattr(targets, "__len__") else micro_batch

    def observe_grad_norm(self, grad_norm: torch.Tensor | None) -> None:
        """A clipped step's gradient norm: a non-finite one is checked with the window's loss, without a sync."""
        if grad_norm is not None:
            self.window_grad_norm = torch.maximum(self.window_grad_norm, grad_norm.detach().nan_to_num(float("inf")))

    def running_sums(self) -> dict[str, float]:
        """What a step checkpoint keeps of this epoch."""
        return {
            "loss_sum": self.loss_sum.item(),
            "window_loss": self.window_loss.item(),
            "window_grad_norm": self.window_grad_norm.item(),
            "window_count": self.window_count,
            "images_seen": self.images_seen,
        }

    def summary(self, trainer: Trainer) -> dict[str, float]:
        """The epoch's mean loss over all ranks, its time and images."""
        return {
            "loss": all_reduce_sum(self.loss_sum).item() / trainer.dist.world_size / max(self.iterations, 1),
            "epoch_time_s": time.perf_counter() - self.epoch_start,
            "images": self.images_seen * trainer.dist.world_size,
        }


_SUMS = ("loss_sum", "window_loss", "window_grad_norm")


class StepEvent:
    """An event of the training loop (module docstring); override what is needed. Called on every rank."""

    def before_step(self, trainer: Trainer, loop: EpochLoop) -> None:
        """Before the step's first micro-batch."""

    def after_step(self, trainer: Trainer, loop: EpochLoop) -> None:
        """After the optimiser and the schedule stepped (``trainer.step`` counts this step)."""

    def while_saving(self, trainer: Trainer) -> None:
        """While a checkpoint is written (rank 0: written, not yet renamed)."""


class TrainingProgress(StepEvent):
    """Tell a model that changes during training how far training is (``TrainingProgressAware``)."""

    def before_step(self, trainer: Trainer, loop: EpochLoop) -> None:
        if isinstance(trainer.model, TrainingProgressAware):
            trainer.model.set_training_progress(trainer.step / trainer.total_steps)


class EmaUpdate(StepEvent):
    """timm's ModelEmaV3 update after every optimiser step (``train.ema_decay``)."""

    def after_step(self, trainer: Trainer, loop: EpochLoop) -> None:
        if trainer.ema is not None:
            trainer.ema.update(trainer.model, step=trainer.step)


class LogWindow(StepEvent):
    """Every ``train.log_interval`` steps and at the epoch's end: the window's gradient norm and loss checked for
    non-finite values (summed over ranks, so that every rank stops together: a lone raise would hang DDP), one
    ``train.csv`` row (rank 0) and the progress bar's loss and learning rate."""

    def after_step(self, trainer: Trainer, loop: EpochLoop) -> None:
        loop.window_count += 1
        if loop.window_count != trainer.train_cfg["log_interval"] and not loop.last:
            return
        window_loss = all_reduce_sum(loop.window_loss) / trainer.dist.world_size
        where = f"epoch {trainer.epoch + 1}, iteration {loop.it + 1}"
        trainer._check_finite_grads(loop.window_grad_norm, where)  # non-finite gradients make the next loss NaN
        trainer._check_finite(window_loss, where)
        images = loop.window_count * trainer.global_batch
        row = {
            "epoch": trainer.epoch + 1,
            "step": trainer.step,
            "epoch_float": trainer.epoch + (loop.it + 1) / trainer.iters_per_epoch,
            "lr": trainer.optimizer.param_groups[0]["lr"],
            "loss": window_loss.item() / loop.window_count,
            "img_per_s": images / (time.perf_counter() - loop.window_start),
        }
        if trainer.dist.is_main:
            trainer.train_log.log(row)
        loop.progress.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.3g}")
        loop.window_loss = torch.zeros((), device=loop.device)
        loop.window_grad_norm = torch.zeros((), device=loop.device)
        loop.window_count, loop.window_start = 0, time.perf_counter()


class StepCheckpoint(StepEvent):
    """``last.pth`` every ``train.checkpoint_interval_steps`` optimiser steps, inside an epoch (its end has its own)."""

    def after_step(self, trainer: Trainer, loop: EpochLoop) -> None:
        loop.saved = False
        interval = trainer.checkpoint_interval
        if not loop.last and interval and trainer.step % interval == 0:
            trainer.save_step(loop.running_sums())
            loop.saved = True


class Preemption(StepEvent):
    """After SIGTERM on any rank: every rank has finished the step; write its checkpoint unless one was just written,
    and stop (at the epoch's last step the epoch's own checkpoint follows its evaluation instead, ``fit``)."""

    def after_step(self, trainer: Trainer, loop: EpochLoop) -> None:
        if not loop.last and trainer._agree_to_stop():
            if not loop.saved:
                trainer.save_step(loop.running_sums())
            raise TrainingPreempted(trainer._preempted_message())


def load_events(names: list[str] | tuple[str, ...]) -> list[StepEvent]:
    """``train.hooks``: events named ``'package.module:ClassName'`` (importable), each constructed without
    arguments; a name that does not resolve to a :class:`StepEvent` is refused naming it."""
    events = []
    for name in names:
        module_name, _, class_name = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name) if class_name else None
        except (ImportError, AttributeError) as err:
            raise ValueError(f"train.hooks: cannot import {name!r} ({err}); name 'package.module:ClassName'") from None
        if not (isinstance(cls, type) and issubclass(cls, StepEvent)):
            raise ValueError(
                f"train.hooks: {name!r} is not a StepEvent subclass (densebackbones.engine.events.StepEvent); name "
                f"one as 'package.module:ClassName'"
            )
        events.append(cls())
    return events


def default_events(extra: list[StepEvent]) -> list[StepEvent]:
    """The built-in events in their order, with ``extra`` (``train.hooks``) before the preemption check."""
    return [TrainingProgress(), EmaUpdate(), LogWindow(), StepCheckpoint(), *extra, Preemption()]
