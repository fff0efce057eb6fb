"""Memory-efficient dense layers: recompute the concatenation and its BN-ReLU in the backward pass.

A naive DenseNet stores, for every layer, a new concatenation of all earlier maps and its BN and ReLU outputs,
so training memory grows quadratically with depth (Pleiss et al., "Memory-Efficient Implementation of DenseNets",
2017). Checkpointing the first unit of each layer keeps only the (shared) earlier maps and recomputes the rest.

A plain ``torch.utils.checkpoint`` re-runs BatchNorm in training mode during the recomputation, which updates the
running statistics a second time per step. The official Torch implementation (optMemory 4) saved and restored them;
:func:`checkpoint_once` does the same, so one training step updates them exactly once, as the plain mode does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_once"]

_STAT_NAMES = ("running_mean", "running_var", "num_batches_tracked")


class _FirstCallUpdatesStats:
    """Wraps ``fn`` so that only its first call (the forward pass) may change the norm layers' running statistics;
    later calls (checkpoint's recomputation in backward) restore them afterwards."""

    def __init__(self, fn: Callable[..., Tensor], norm_modules: Iterable[nn.Module]) -> None:
        self.fn = fn
        self.norm_modules = tuple(norm_modules)
        self.calls = 0

    def __call__(self, *inputs: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == 1:
            return self.fn(*inputs)
        saved = [
            (buf, buf.clone())
            for module in self.norm_modules
            for name in _STAT_NAMES
            if isinstance(buf := getattr(module, name, None), Tensor)
        ]
        try:
            return self.fn(*inputs)
        finally:  # also when checkpoint stops the recomputation early
            with torch.no_grad():
                for buf, value in saved:
                    buf.copy_(value)


def checkpoint_once(
    fn: Callable[..., Tensor],
    inputs: tuple[Tensor, ...],
    norm_modules: Iterable[nn.Module] = (),
) -> Tensor:
    """Run ``fn(*inputs)`` without storing its intermediate activations; recompute them in backward.

    Dropout inside ``fn`` draws the same mask in the recomputation (the RNG state is preserved), and the running
    statistics of ``norm_modules`` are updated once, by the forward pass only.

    Args:
        fn: the function to checkpoint.
        inputs: its tensor arguments.
        norm_modules: norm layers used inside ``fn`` whose running statistics must not be updated twice.
    """
    return checkpoint(_FirstCallUpdatesStats(fn, norm_modules), *inputs, use_reentrant=False, preserve_rng_state=True)
