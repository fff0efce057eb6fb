"""Task records (engine/task.py, issue 36): each task builds its run once into an immutable record that the engine
reads as it is. The metric that decides ``best.pth`` follows the config, not the order of calls (a multi-label run
used to depend on ``build_model`` having run before the engine read ``best_key``); the final line's metrics are the
task's headline, not a name filter in the engine; evaluation tools build the evaluation split only."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers.finetune_fixtures import write_multilabel_csv

from densebackbones.engine import DEFAULTS, TaskRecord
from densebackbones.engine.config import merge_defaults
from densebackbones.tasks import ClassificationTask, DetectionTask, SegmentationTask

TINY = dict(growth_rate=4, block_config=(1, 1, 1))


def _cfg(task, data: dict, model: dict) -> dict:
    cfg = merge_defaults({"model": model, "data": data}, task.data_defaults)
    cfg["model"] = model
    return cfg


def test_a_multilabel_record_selects_best_by_auroc_whatever_was_called_before(tmp_path):
    root = write_multilabel_csv(tmp_path / "xray")
    task = ClassificationTask()
    cfg = _cfg(task, dict(dataset="multilabel_csv", root=str(root), num_workers=0, image_size=32),
               dict(type="densenet_bc100_k12_cifar", **TINY))  # fmt: skip
    record = task.build(cfg)
    assert record.best_key == "auroc" and isinstance(record, TaskRecord)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.best_key = "top1"
    assert not hasattr(task, "model") and not hasattr(task, "best_key")  # nothing kept on the task object


def test_the_segmentation_headline_leaves_per_class_iou_to_the_logs(tmp_path):
    task = SegmentationTask()
    cfg = _cfg(task, dict(dataset="shapes", root=str(tmp_path / "shapes")),
               dict(type="fc_densenet56", growth_rate=4, layers_per_block=1))  # fmt: skip
    record = task.build(cfg)
    metrics = {"mIoU": 50.123456, "global_acc": 90.0, "loss": 0.5, "IoU_square": 40.0, "IoU_disc": 60.0}
    assert record.shown(metrics) == {"mIoU": 50.1235, "global_acc": 90.0, "loss": 0.5}
    assert record.best_key == "mIoU" and len(record.train_set) == 64


def test_evaluation_records_hold_no_training_split_and_detection_metrics_read_their_eval_set(tmp_path):
    task = DetectionTask()
    data = dict(dataset="shapes", root=str(tmp_path / "shapes"), shapes_train=2, shapes_val=2, image_size=64)
    model = dict(type="dsod300", backbone_kwargs=dict(growth_rate=4, block_config=(1, 1, 1, 1),
                                                      stem_chs=(8, 8, 16)),
                 head_kwargs=dict(second_half=8, extra_halves=(8, 8, 8, 8)))  # fmt: skip
    cfg = _cfg(task, data, model)
    record = task.build(cfg, training=False)
    assert record.train_set is None and len(record.eval_set) == 2 and record.best_key == "AP50"
    assert record.metric.coco_gt is record.eval_set.coco  # scored against the file the split reads
    torch.testing.assert_close(record.loss_fn.multibox.priors, record.model.priors)  # the model's default boxes


def test_a_bad_best_mode_is_refused():
    with pytest.raises(ValueError, match="best_mode='maximum': 'max' or 'min'"):
        TaskRecord(torch.nn.Identity(), None, None, None, None, "top1", best_mode="maximum")
    assert DEFAULTS["train"]["hooks"] == ()
