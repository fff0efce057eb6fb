"""Metrics accumulated over a whole data set (and across processes), not averaged per batch."""

from __future__ import annotations

import torch

from ..engine.distributed import all_reduce_sum

__all__ = ["TopKAccuracy", "SegmentationMetric", "UNDEFINED"]

UNDEFINED = -100.0  # a metric without a defined value (pycocotools' -1, in percent): never NaN, never a fake 0


class TopKAccuracy:
    """Top-k accuracy in percent and mean loss, summed over every sample seen on every process.

    For a model with several exits (a list of logits, the last the final classifier's: MSDNet) ``top1``/``top5``
    are the final exit's and every exit's top-1 is added as ``top1_exit1``, ``top1_exit2``...
    """

    def __init__(self, topk: tuple[int, ...] = (1, 5)) -> None:
        self.topk = topk
        self.reset()

    def reset(self) -> None:
        self.correct = torch.zeros(len(self.topk), dtype=torch.float64)
        self.exit_correct: torch.Tensor | None = None  # top-1 hits per exit, for multi-exit models
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)

    @torch.no_grad()
    def update(
        self,
        logits: torch.Tensor | list[torch.Tensor],
        targets: torch.Tensor,
        loss_sum: torch.Tensor | None = None,
    ) -> None:
        if isinstance(logits, (list, tuple)):
            hits = torch.tensor([o.argmax(1).eq(targets).sum().item() for o in logits], dtype=torch.float64)
            self.exit_correct = hits if self.exit_correct is None else self.exit_correct + hits
            logits = logits[-1]
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
        exits = self.exit_correct if self.exit_correct is not None else torch.zeros(0, dtype=torch.float64)
        values = torch.cat([self.correct, exits, self.loss_sum[None], self.count[None]])
        totals = all_reduce_sum(values.to(device)).cpu()
        count = max(totals[-1].item(), 1.0)
        out = {f"top{k}": 100.0 * totals[i].item() / count for i, k in enumerate(self.topk)}
        for j in range(len(exits)):
            out[f"top1_exit{j + 1}"] = 100.0 * totals[len(self.topk) + j].item() / count
        out["loss"] = totals[-2].item() / count
        return out


class SegmentationMetric:
    """Per-class IoU, mIoU and global pixel accuracy from one confusion matrix accumulated over the whole data set
    (and all processes); pixels labelled ``ignore_index`` count nowhere.

    mIoU averages over the classes that occur in the labels or the predictions (on pixels that are not ignored)
    anywhere in the split: a class absent from both has no defined IoU and is left out of the mean, as
    mmsegmentation's ``nanmean`` does. Undefined values are reported as -100, never NaN and never a made-up 0: the
    IoU of such a class, and mIoU and ``global_acc`` of a split without any labelled pixel (COCO's metrics mark
    "no ground truth" the same way, pycocotools' -1 in percent). docs/evaluation.md.
    """

    def __init__(self, num_classes: int, ignore_index: int, class_names: tuple[str, ...] | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = class_names or tuple(str(i) for i in range(num_classes))
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.float64)
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss_sum: torch.Tensor | None = None) -> None:
        """``logits`` (N, C, H, W) or predicted labels (N, H, W); ``targets`` (N, H, W)."""
        preds = logits.argmax(1) if logits.ndim == 4 else logits
        valid = targets != self.ignore_index
        bad = valid & ((targets < 0) | (targets >= self.num_classes))
        if bad.any():
            raise ValueError(
                f"labels {sorted(set(targets[bad].unique().tolist()))} are outside 0..{self.num_classes - 1} and not "
                f"the ignore index {self.ignore_index}"
            )
        index = targets[valid] * self.num_classes + preds[valid]
        counts = torch.bincount(index.flatten().long().cpu(), minlength=self.num_classes**2)
        self.confusion += counts.view(self.num_classes, self.num_classes).double()
        self.count += targets.shape[0]
        if loss_sum is not None:
            self.loss_sum += float(loss_sum)

    def compute(self, device: torch.device | str = "cpu") -> dict[str, float]:
        totals = torch.cat([self.confusion.flatten(), self.loss_sum[None], self.count[None]]).to(device)
        totals = all_reduce_sum(totals).cpu()
        confusion = totals[:-2].view(self.num_classes, self.num_classes)  # rows: truth, columns: prediction
        true_positive = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - true_positive
        defined = union > 0  # a class absent from labels and predictions has no IoU
        iou = torch.where(defined, true_positive / union.clamp_min(1), torch.full_like(union, -1.0))
        out = {"mIoU": 100.0 * float(iou[defined].mean()) if defined.any() else UNDEFINED}
        labelled = confusion.sum()
        out["global_acc"] = 100.0 * float(true_positive.sum() / labelled) if labelled > 0 else UNDEFINED
        out["loss"] = float(totals[-2] / totals[-1].clamp_min(1))
        for name, value in zip(self.class_names, iou.tolist()):
            out[f"IoU_{name}"] = 100.0 * value
        return out
