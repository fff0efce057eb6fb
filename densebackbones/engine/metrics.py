"""Metrics accumulated over a whole data set (and across processes), not averaged per batch."""

from __future__ import annotations

import torch

from .distributed import all_reduce_sum

__all__ = ["TopKAccuracy"]


class TopKAccuracy:
    """Top-k accuracy in percent and mean loss, summed over every sample seen on every process."""

    def __init__(self, topk: tuple[int, ...] = (1, 5)) -> None:
        self.topk = topk
        self.reset()

    def reset(self) -> None:
        self.correct = torch.zeros(len(self.topk), dtype=torch.float64)
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss_sum: torch.Tensor | None = None) -> None:
        maxk = min(max(self.topk), logits.shape[1])
        pred = logits.topk(maxk, dim=1).indices
        hits = pred.eq(targets[:, None])
        for i, k in enumerate(self.topk):
            self.correct[i] += hits[:, : min(k, maxk)].any(dim=1).sum().item()
        self.count += targets.numel()
        if loss_sum is not None:
            self.loss_sum += float(loss_sum)

    def compute(self, device: torch.device | str = "cpu") -> dict[str, float]:
        """Totals over all processes (``device`` must suit the process group's backend: CUDA for nccl)."""
        totals = all_reduce_sum(torch.cat([self.correct, self.loss_sum[None], self.count[None]]).to(device)).cpu()
        count = max(totals[-1].item(), 1.0)
        out = {f"top{k}": 100.0 * totals[i].item() / count for i, k in enumerate(self.topk)}
        out["loss"] = totals[-2].item() / count
        return out
