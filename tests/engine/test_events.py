"""The training loop's step events (engine/events.py), each on its own: the order the loop calls them in, the log
window, the step checkpoint, the preemption check, the training-progress and EMA events, and events of one's own
through ``train.hooks`` (what the tests' fault injection uses)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from densebackbones.engine import Trainer, load_checkpoint, read_csv
from densebackbones.engine.config import merge_defaults
from densebackbones.engine.distributed import DistInfo
from densebackbones.engine.elastic import TrainingPreempted
from densebackbones.engine.events import (
    EmaUpdate,
    LogWindow,
    Preemption,
    StepCheckpoint,
    StepEvent,
    TrainingProgress,
    load_events,
)
from densebackbones.tasks import TopKAccuracy

CALLS: list[tuple[str, int]] = []  # what Recorder saw, for the test that installs it by name


class Recorder(StepEvent):
    """An event of one's own, installed with ``train.hooks=['test_events:Recorder']``."""

    def before_step(self, trainer, loop):
        CALLS.append(("before", trainer.step))

    def after_step(self, trainer, loop):
        CALLS.append(("after", trainer.step))

    def while_saving(self, trainer):
        CALLS.append(("saving", trainer.step))


class Progress(nn.Linear):
    """A model with the training-progress hook (TrainingProgressAware)."""

    def __init__(self) -> None:
        super().__init__(4, 3)
        self.seen: list[float] = []

    def set_training_progress(self, progress: float) -> None:
        self.seen.append(progress)


def trainer(tmp_path, model: nn.Module | None = None, **train) -> Trainer:
    cfg = merge_defaults(
        dict(data=dict(batch_size=8, num_workers=0), optimizer=dict(lr=0.05, base_batch_size=8),
             schedule=dict(type="constant", epochs=2), train=dict(dict(plot=False), **train)),
        {"batch_size": 8, "num_workers": 0, "eval_batch_size": None},
    )  # fmt: skip
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(40, 4, generator=torch.Generator().manual_seed(1)), torch.arange(40) % 3)
    model = model if model is not None else nn.Linear(4, 3)
    return Trainer(cfg, model, data, None, nn.CrossEntropyLoss(), TopKAccuracy(), tmp_path, DistInfo())


def test_the_loop_calls_the_built_in_events_in_order_and_ones_own_before_the_preemption_check(tmp_path):
    run = trainer(tmp_path, hooks=["test_events:Recorder"])
    kinds = [type(event) for event in run.events]
    assert kinds == [TrainingProgress, EmaUpdate, LogWindow, StepCheckpoint, Recorder, Preemption]
    CALLS.clear()
    run.fit()
    steps = [step for moment, step in CALLS if moment == "after"]
    assert steps == list(range(1, 11)) and [s for m, s in CALLS if m == "before"] == list(range(0, 10))
    assert [s for m, s in CALLS if m == "saving"] == [5, 10]  # the two epoch checkpoints


def test_log_window_writes_a_row_every_interval_and_at_the_epochs_end(tmp_path):
    run = trainer(tmp_path, log_interval=2)
    run.fit()
    assert [int(row["step"]) for row in read_csv(tmp_path / "train.csv")] == [2, 4, 5, 7, 9, 10]


def test_log_window_stops_a_non_finite_loss_naming_the_last_good_checkpoint(tmp_path):
    run = trainer(tmp_path, log_interval=1)
    run.loss_fn = lambda outputs, targets: outputs.sum() * float("nan")
    with pytest.raises(RuntimeError, match=r"loss is nan at epoch 1, iteration 1; training stopped"):
        run.fit()


def test_step_checkpoint_inside_the_epoch_only(tmp_path):
    run = trainer(tmp_path, checkpoint_interval_steps=2)
    written = []
    run.save_step = lambda sums: written.append((run.step, dict(sums)))
    run.fit()
    assert [step for step, _ in written] == [2, 4, 6, 8]  # not 10 (the run's end) nor at an epoch's last step
    assert written[0][1]["window_count"] == 2 and written[0][1]["images_seen"] == 16  # the log window is open


def test_preemption_writes_the_steps_checkpoint_and_stops(tmp_path):
    run = trainer(tmp_path)
    run._agree_to_stop = lambda: run.step == 3
    with pytest.raises(TrainingPreempted, match=r"preempted \(SIGTERM\) at step 3 \(epoch 1, 3 steps into it\)"):
        run.fit()
    state = load_checkpoint(tmp_path / "last.pth")
    assert (state["step"], state["epoch_step"]) == (3, 3)


def test_training_progress_and_ema_events(tmp_path):
    model = Progress()
    run = trainer(tmp_path, model=model, ema_decay=0.5)
    run.fit()
    assert model.seen == [step / 10 for step in range(10)]
    assert not torch.equal(run.ema.module.weight, model.weight)  # averaged, not copied


def test_train_hooks_must_name_step_events():
    with pytest.raises(ValueError, match=r"train.hooks: cannot import 'no_such_module:Event'"):
        load_events(["no_such_module:Event"])
    with pytest.raises(ValueError, match=r"train.hooks: 'torch.nn:Linear' is not a StepEvent subclass"):
        load_events(["torch.nn:Linear"])
