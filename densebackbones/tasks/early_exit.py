"""Anytime and budgeted evaluation of classifiers with several exits (MSDNet, Huang et al., ICLR 2018, Sec. 5),
as the official port's ``adaptive_inference.py`` does it.

* Anytime: every exit's accuracy against the cumulative cost of reaching it.
* Budgeted batch classification ("dynamic evaluation"): a sample leaves at the first exit whose maximum softmax
  reaches that exit's threshold. The thresholds are fitted on a held-out split of the training set so that exit k
  takes the share ``p_k`` of the samples, with ``p_k`` proportional to ``q^k`` (a geometric law; ``q = i / 20`` for
  ``i = 1..39``); the last exit takes the rest. Applied to the test set, each ``q`` gives an accuracy and an
  average cost per image: ``sum_k (share leaving at k) * (cumulative cost of exit k)``.

Everything works on softmax outputs held as one tensor (exits, samples, classes), so the search is exact and needs
no model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

__all__ = [
    "apply_thresholds",
    "collect_exit_probs",
    "dynamic_sweep",
    "fit_thresholds",
    "geometric_proportions",
    "select_budget",
]


@torch.no_grad()
def collect_exit_probs(
    model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Softmax outputs of every exit (exits, samples, classes) and the targets (samples,) over ``loader``."""
    model.eval()
    probs: list[list[Tensor]] = []
    targets = []
    for inputs, labels in loader:
        outputs = model(inputs.to(device))
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        if not probs:
            probs = [[] for _ in outputs]
        for k, logits in enumerate(outputs):
            probs[k].append(F.softmax(logits.float(), dim=1).cpu())
        targets.append(labels.cpu())
    if not targets:
        raise ValueError("the split is empty: nothing to evaluate")
    return torch.stack([torch.cat(p) for p in probs]), torch.cat(targets)


def geometric_proportions(q: float, num_exits: int) -> Tensor:
    """Exit shares proportional to ``q^k``, k = 1..K, summing to 1 (the paper's budget family)."""
    if q <= 0:
        raise ValueError(f"q={q} must be positive")
    shares = torch.tensor([math.exp(math.log(q) * k) for k in range(1, num_exits + 1)], dtype=torch.float64)
    return shares / shares.sum()


def fit_thresholds(probs: Tensor, proportions: Sequence[float] | Tensor) -> Tensor:
    """Thresholds on the maximum softmax, one per exit, from held-out softmax outputs (exits, samples, classes).

    For exit k (all but the last), among the samples no earlier exit took, the ``floor(n * p_k)``-th most confident
    one sets the threshold (the official ``dynamic_eval_find_threshold``; none leave when that is 0). The last
    threshold is -inf: every remaining sample leaves there."""
    confidence = probs.max(dim=2).values
    return _fit(confidence, _confidence_order(confidence), proportions)


def apply_thresholds(
    probs: Tensor, targets: Tensor, thresholds: Tensor, exit_costs: Sequence[float]
) -> dict[str, float | list[float]]:
    """Accuracy (%), average cost per image and the share leaving at each exit when every sample leaves at the
    first exit whose maximum softmax reaches its threshold."""
    confidence, prediction = probs.max(dim=2)
    return _apply(confidence, prediction, targets, thresholds, exit_costs)


def _confidence_order(confidence: Tensor) -> Tensor:
    # Each exit's samples, most confident first (what every threshold search of a sweep starts from).
    return confidence.argsort(dim=1, descending=True, stable=True)


def _fit(confidence: Tensor, order: Tensor, proportions: Sequence[float] | Tensor) -> Tensor:
    num_exits, n = confidence.shape
    if n == 0:
        raise ValueError("the held-out split is empty: thresholds need held-out samples (set data.holdout)")
    if len(proportions) != num_exits:
        raise ValueError(f"{len(proportions)} exit proportions for {num_exits} exits")
    thresholds = torch.full((num_exits,), float("inf"), dtype=confidence.dtype)
    taken = torch.zeros(n, dtype=torch.bool)
    for k in range(num_exits - 1):
        wanted = math.floor(n * float(proportions[k]))
        remaining = order[k][~taken[order[k]]]
        if 1 <= wanted <= len(remaining):
            thresholds[k] = confidence[k, remaining[wanted - 1]]
        taken |= confidence[k] >= thresholds[k]
    thresholds[-1] = -float("inf")
    return thresholds


def _apply(
    confidence: Tensor, prediction: Tensor, targets: Tensor, thresholds: Tensor, exit_costs: Sequence[float]
) -> dict[str, float | list[float]]:
    num_exits, n = confidence.shape
    if n == 0:
        raise ValueError("the split is empty: nothing to evaluate")
    reaches = confidence >= thresholds[:, None].to(confidence.dtype)
    reaches[-1] = True
    exit_index = reaches.to(torch.int8).argmax(dim=0)  # the first exit reached
    chosen = prediction.gather(0, exit_index[None]).squeeze(0)
    shares = torch.bincount(exit_index, minlength=num_exits).double() / n
    cost = float((shares * torch.as_tensor(exit_costs, dtype=torch.float64)).sum())
    return {
        "accuracy": 100.0 * float((chosen == targets).double().mean()),
        "cost": cost,
        "exit_shares": shares.tolist(),
    }


def dynamic_sweep(
    val_probs: Tensor,
    val_targets: Tensor,
    test_probs: Tensor,
    test_targets: Tensor,
    exit_costs: Sequence[float],
    qs: Sequence[float] | None = None,
) -> list[dict[str, object]]:
    """The paper's budget sweep: for each ``q`` (default ``i / 20``, i = 1..39) thresholds fitted on the held-out
    split, then accuracy and average cost on both splits. Maxima and the confidence order are taken once for all
    ``q``."""
    qs = [i / 20 for i in range(1, 40)] if qs is None else qs
    val_confidence, val_prediction = val_probs.max(dim=2)
    test_confidence, test_prediction = test_probs.max(dim=2)
    order = _confidence_order(val_confidence)
    points = []
    for q in qs:
        thresholds = _fit(val_confidence, order, geometric_proportions(q, len(val_confidence)))
        val = _apply(val_confidence, val_prediction, val_targets, thresholds, exit_costs)
        test = _apply(test_confidence, test_prediction, test_targets, thresholds, exit_costs)
        points.append(
            dict(
                q=q,
                thresholds=thresholds.tolist(),
                val_accuracy=val["accuracy"],
                val_cost=val["cost"],
                accuracy=test["accuracy"],
                cost=test["cost"],
                exit_shares=test["exit_shares"],
            )
        )
    return points


def select_budget(points: Sequence[dict[str, object]], budget: float, exit_costs: Sequence[float]) -> dict[str, object]:
    """The sweep point for an average budget per image: the best held-out accuracy among those whose held-out cost
    fits the budget."""
    if budget < exit_costs[0]:
        raise ValueError(
            f"a budget of {budget:,.0f} per image is below the first exit's cost ({exit_costs[0]:,.0f}): no sample can "
            f"be classified; budgets from {exit_costs[0]:,.0f} (first exit) to {exit_costs[-1]:,.0f} (last) fit"
        )
    fitting = [p for p in points if p["val_cost"] <= budget]
    if not fitting:
        cheapest = min(p["val_cost"] for p in points)
        raise ValueError(
            f"no threshold setting of the sweep stays within {budget:,.0f} on the held-out split (the cheapest costs "
            f"{cheapest:,.0f}); raise the budget"
        )
    return max(fitting, key=lambda p: (p["val_accuracy"], -p["val_cost"]))
