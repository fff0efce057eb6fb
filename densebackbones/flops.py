"""Operation counts with ``torch.utils.flop_counter`` (PyTorch's own counter, not a hand-written one).

PyTorch counts a multiply-add as two FLOPs and counts only matrix products and convolutions. The papers of this
family (DenseNet, CondenseNet, MSDNet, Pelee) report multiply-adds ("FLOPs" there means MACs), and their official
counters add small terms ours leaves out: CondenseNet's ``measure_model`` and MSDNet's ``op_counter`` also count
every ReLU output and pooling window; BN, index selection and shuffles are free in both. :func:`count_macs` is
therefore the number to put beside a paper's "FLOPs"; it comes out a little lower for those reasons.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "count_macs", "flops_of"]


@torch.no_grad()
def flops_of(fn: Callable[..., Any], *args: Any) -> int:
    """FLOPs of ``fn(*args)`` as ``torch.utils.flop_counter`` counts them (2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def count_flops(model: nn.Module, input_size: tuple[int, ...], device: str | torch.device = "cpu") -> int:
    """FLOPs of one eval-mode forward pass on a zero input of ``input_size`` (e.g. ``(1, 3, 224, 224)``), as
    ``torch.utils.flop_counter`` counts them (2 per multiply-add, matrix products and convolutions only)."""
    was_training = model.training
    model.eval()
    try:
        return flops_of(model, torch.zeros(input_size, device=device))
    finally:
        model.train(was_training)


def count_macs(model: nn.Module, input_size: tuple[int, ...], device: str | torch.device = "cpu") -> int:
    """Multiply-adds of one forward pass (:func:`count_flops` / 2), the papers' "FLOPs"."""
    return count_flops(model, input_size, device) // 2
