"""tools/train_det.py and tools/predict_det.py on the generated shapes set; detection configs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from helpers import run_training_tool

from densebackbones.engine import load_checkpoint, read_csv
from densebackbones.tasks.detection_eval import COCO_KEYS

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import predict_det  # noqa: E402
import train_det  # noqa: E402

# Training runs and tool runs: left out of `make test-fast`, run by `make test`.
pytestmark = pytest.mark.integration

SHAPES_CFG = str(REPO / "configs/det/dsod_shapes.py")
PELEE_SHAPES_CFG = str(REPO / "configs/det/pelee_shapes.py")


def _train(work_dir: Path, data_root: Path, *options: str, extra=(), config: str = SHAPES_CFG):
    return run_training_tool(train_det, config, work_dir, *options, data_root=data_root, extra=extra)


@pytest.mark.parametrize("config", [SHAPES_CFG, PELEE_SHAPES_CFG], ids=["dsod", "pelee"])
def test_two_iterations_eval_and_resume(tmp_path, config):
    small = ("data.shapes_train=16", "data.shapes_val=4", "train.eval_interval=1", "schedule.milestones=(1,)")
    _train(tmp_path / "run", tmp_path / "data", "schedule.max_iters=2", *small, config=config)
    assert load_checkpoint(tmp_path / "run" / "last.pth")["step"] == 2
    metrics = _train(
        tmp_path / "run", tmp_path / "data", "schedule.max_iters=4", *small, extra=("--resume", "auto"), config=config
    )
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    assert state["step"] == 4 and state["epoch"] == 4  # 16 images, batch 16: one iteration per epoch
    assert {*COCO_KEYS, "mAP_voc07", "mAP_voc", "loss"} == set(metrics)


def test_short_cpu_training_reaches_a_clear_ap50_and_predict_draws(tmp_path):
    metrics = _train(tmp_path / "run", tmp_path / "data")
    best = max(row["AP50"] for row in read_csv(tmp_path / "run" / "eval.csv"))
    # Chance is about 0; 200 CPU iterations reach about 60 here (docs/benchmarks.md).
    assert best > 30.0, metrics
    argv = [
        SHAPES_CFG,
        str(tmp_path / "run" / "best.pth"),
        "--data-root",
        str(tmp_path / "data"),
        "--eval",
        "--out",
        str(tmp_path / "drawn"),
        "--limit",
        "2",
    ]
    evaluated = predict_det.main(predict_det.get_args_parser().parse_args(argv))
    assert evaluated["AP50"] == pytest.approx(best, abs=1e-3)  # predict_det reproduces the trainer's evaluation
    drawn = sorted(p.name for p in (tmp_path / "drawn").iterdir())
    assert drawn == ["1_det.png", "2_det.png"]


@pytest.mark.slow  # a minute of training; DSOD's clear AP50 below stays in the suite, Pelee's resume test too
def test_pelee_shapes_training_reaches_a_clear_ap50(tmp_path):
    _train(tmp_path / "run", tmp_path / "data", config=PELEE_SHAPES_CFG)
    best = max(row["AP50"] for row in read_csv(tmp_path / "run" / "eval.csv"))
    # Chance is about 0; the 120 CPU iterations of the demo reach about 80 (docs/benchmarks.md).
    assert best > 40.0


def test_detection_configs_are_valid():
    from densebackbones.engine.config import check_config, load_config
    from densebackbones.tasks.detection import DET_DATA, DetectionTask

    configs = sorted((REPO / "configs" / "det").glob("*.py"))
    assert [p.stem for p in configs] == [
        "dsod300_coco",
        "dsod300_lite_voc",
        "dsod300_voc",
        "dsod_bc121_k32_voc",
        "dsod_shapes",
        "finetune_coco",
        "pelee_coco",
        "pelee_shapes",
        "pelee_voc",
    ]
    for path in configs:
        raw = load_config(path).to_dict()
        check_config(raw, DetectionTask().model_arg_names(raw), DET_DATA)


def test_iteration_milestones_must_fit_max_iters():
    from densebackbones.engine.optim import build_scheduler

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    cfg = dict(type="multistep", epochs=1, max_iters=100, milestones=(20, 40), gamma=0.1, warmup_epochs=0)
    scheduler = build_scheduler(optimizer, cfg, iters_per_epoch=7)
    for _ in range(40):
        optimizer.step(), scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)
    with pytest.raises(ValueError, match="must be iterations inside 1..99"):
        build_scheduler(optimizer, dict(cfg, milestones=(150,)), iters_per_epoch=7)
