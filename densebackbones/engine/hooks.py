"""The optional model hooks the trainer calls, as ``typing.Protocol``s: the whole of what the engine knows about a
model besides ``nn.Module``. A model implements any of them by having the attribute (no base class, no import of
this module); the trainer tests ``isinstance(model, Hook)`` (runtime-checkable protocols check the attribute's
presence) and calls it. CondenseNet implements all three; see :mod:`densebackbones.engine.trainer`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["EmaCopiesBuffers", "RegularizedModel", "TrainingProgressAware"]


@runtime_checkable
class TrainingProgressAware(Protocol):
    """A model that changes its own structure during training (CondenseNet's condensation, Sec. 3.1)."""

    def set_training_progress(self, progress: float) -> None:
        """Called before every optimiser step's forward with the fraction of training done (optimiser steps
        completed / all steps, in [0, 1))."""


@runtime_checkable
class RegularizedModel(Protocol):
    """A model with a loss term of its own (CondenseNet's group lasso)."""

    def regularization_loss(self) -> Tensor | None:
        """A term added to every micro-batch's loss; None adds nothing."""


@runtime_checkable
class EmaCopiesBuffers(Protocol):
    """A model whose buffers are structure (masks, stages), not statistics: the EMA copy takes them as they are
    instead of averaging them, when ``ema_copies_buffers`` is True."""

    ema_copies_buffers: bool
