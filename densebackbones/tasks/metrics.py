"""Metrics accumulated over a whole data set (and across processes), not averaged per batch."""

from __future__ import annotations

import logging

import torch

from ..engine.distributed import all_gather_objects, all_reduce_sum

__all__ = ["MultiLabelMetric", "TopKAccuracy", "SegmentationMetric", "UNDEFINED"]

_logger = logging.getLogger(__name__)

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


class MultiLabelMetric:
    """Multi-label classification over a whole split (all processes): each class's AUROC and average precision
    (scikit-learn's ``roc_auc_score`` and ``average_precision_score`` of the sigmoid outputs), their means
    ``auroc`` and ``mAP``, and the mean loss.

    A class without positives in the split (or without negatives, for AUROC) has no defined value: it is named in a
    warning, reported as ``UNDEFINED`` (-100, never NaN, as every metric here) and left out of the means (CheXNet,
    Rajpurkar et al. 2017, reports per-class AUROC).
    """

    def __init__(self, class_names: list[str] | tuple[str, ...]) -> None:
        self.class_names = list(class_names)
        self.reset()

    def reset(self) -> None:
        self.scores: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.loss_sum, self.count = 0.0, 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss_sum: torch.Tensor | None = None) -> None:
        self.scores.append(torch.sigmoid(logits.float()).cpu())
        self.targets.append(targets.float().cpu())
        self.count += len(targets)
        if loss_sum is not None:
            self.loss_sum += float(loss_sum)

    def compute(self, device: torch.device | str = "cpu") -> dict[str, float]:
        from sklearn.metrics import average_precision_score, roc_auc_score

        gathered = all_gather_objects((self.scores, self.targets, self.loss_sum, self.count))
        empty = torch.zeros(0, len(self.class_names))
        scores = torch.cat([s for part in gathered for s in part[0]] or [empty]).double().numpy()
        targets = torch.cat([t for part in gathered for t in part[1]] or [empty]).numpy()
        aurocs, aps, no_positive, no_negative = {}, {}, [], []
        for i, name in enumerate(self.class_names):
            positives = int(targets[:, i].sum())
            if positives == 0:
                no_positive.append(name)
                aurocs[name] = aps[name] = UNDEFINED
                continue
            aps[name] = float(average_precision_score(targets[:, i], scores[:, i]))
            if positives == len(targets):
                no_negative.append(name)
                aurocs[name] = UNDEFINED
            else:
                aurocs[name] = float(roc_auc_score(targets[:, i], scores[:, i]))
        if no_positive:
            _logger.warning(
                "class(es) without positives in the evaluation split, left out of auroc and mAP: %s",
                ", ".join(no_positive),
            )
        if no_negative:
            _logger.warning("class(es) without negatives in the evaluation split, left out of auroc: %s", no_negative)
        defined_auroc = [v for v in aurocs.values() if v != UNDEFINED]
        defined_ap = [v for v in aps.values() if v != UNDEFINED]
        out = {
            "auroc": sum(defined_auroc) / len(defined_auroc) if defined_auroc else UNDEFINED,
            "mAP": sum(defined_ap) / len(defined_ap) if defined_ap else UNDEFINED,
            "loss": sum(part[2] for part in gathered) / max(sum(part[3] for part in gathered), 1),
        }
        for name in self.class_names:
            out[f"auroc_{name}"] = aurocs[name]
        for name in self.class_names:
            out[f"AP_{name}"] = aps[name]
        return out
