"""A resumed run with a changed config (the reliability issue, "config changes on resume"): every changed key takes
effect (optimiser settings, schedule, epochs and batch size with the learning-rate schedule a fresh run of the new
config follows) or is refused with one line naming it; the run's config.py changes only when the resume is accepted;
classes are compared by name."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import run_training_tool
from helpers.data_fixtures import write_image_folder
from torch.utils.data import TensorDataset

from densebackbones.engine import Trainer, load_checkpoint, read_csv
from densebackbones.engine.config import check_values, config_changes, merge_defaults
from densebackbones.engine.distributed import DistInfo
from densebackbones.tasks import TopKAccuracy

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import train_cls  # noqa: E402

BASE = dict(
    data=dict(batch_size=16, num_workers=0),
    optimizer=dict(lr=0.1, base_batch_size=16, momentum=0.9, nesterov=True, weight_decay=1e-4),
    schedule=dict(type="multistep", epochs=4, milestones=(2, 3), gamma=0.1, warmup_epochs=0),
    train=dict(log_interval=1, plot=False),
)
# One changed value per key that shapes the optimiser or its schedule (64 samples: 4 steps per epoch at batch 16).
CHANGED = {
    "optimizer.lr": 0.03,
    "optimizer.base_batch_size": 64,
    "optimizer.momentum": 0.5,
    "optimizer.nesterov": False,
    "optimizer.weight_decay": 5e-3,
    "schedule.type": "cosine",
    "schedule.epochs": 6,
    "schedule.milestones": (3,),
    "schedule.gamma": 0.5,
    "data.batch_size": 8,
    "train.max_iters_per_epoch": 2,
}


def config(**changes) -> dict:
    cfg = merge_defaults(
        {k: dict(v) for k, v in BASE.items()}, {"batch_size": 16, "num_workers": 0, "eval_batch_size": None}
    )
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        cfg[section][key] = value
    check_values(cfg)
    return cfg


def trainer(cfg: dict, work_dir: Path) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    data = TensorDataset(torch.randn(64, 4, generator=torch.Generator().manual_seed(1)), torch.arange(64) % 3)
    return Trainer(cfg, model, data, None, nn.CrossEntropyLoss(), TopKAccuracy(), work_dir, DistInfo())


def lr_rows(work_dir: Path) -> dict[int, float]:
    return {int(row["step"]): float(row["lr"]) for row in read_csv(work_dir / "train.csv")}


@pytest.mark.parametrize("key", sorted(CHANGED))
def test_a_changed_optimiser_or_schedule_key_takes_effect_as_in_a_fresh_run(tmp_path, key):
    # Two epochs of the base config, stopped there (a shorter schedule), then resumed with one key changed.
    first = trainer(config(**{"schedule.epochs": 2, "schedule.milestones": (1,)}), tmp_path / "run")
    first.fit()
    cfg = config(**{key: CHANGED[key]})
    resumed = trainer(cfg, tmp_path / "run")
    resumed.resume(tmp_path / "run" / "last.pth")
    start = resumed.step  # steps of the new batch size, where a fresh run would be after these epochs
    fresh = trainer(config(**{key: CHANGED[key]}), tmp_path / "fresh")
    fresh.fit()
    resumed.fit()
    # From the resume on, every step's rate is the fresh run's of the new config; the optimiser's settings too.
    fresh_lr, resumed_lr = lr_rows(tmp_path / "fresh"), lr_rows(tmp_path / "run")
    after = {step: lr for step, lr in fresh_lr.items() if step > start}
    assert after and {step: resumed_lr[step] for step in after} == after
    assert resumed.step == fresh.step
    settings = [{k: v for k, v in g.items() if k != "params"} for g in resumed.optimizer.param_groups]
    assert settings == [{k: v for k, v in g.items() if k != "params"} for g in fresh.optimizer.param_groups]


def test_an_unchanged_resume_is_bit_exact_and_reports_no_change(tmp_path, capsys):
    cfg = config()
    straight = trainer(cfg, tmp_path / "straight")
    straight.fit()
    half = trainer(config(**{"schedule.epochs": 4}), tmp_path / "run")
    half.epochs = 2  # stop after two epochs of the same schedule
    half.fit()
    resumed = trainer(config(), tmp_path / "run")
    resumed.resume(tmp_path / "run" / "last.pth")
    assert "config changes" not in capsys.readouterr().out
    resumed.fit()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_another_optimiser_is_refused_naming_the_key(tmp_path):
    trainer(config(**{"schedule.epochs": 2, "schedule.milestones": (1,)}), tmp_path / "run").fit()
    resumed = trainer(config(**{"optimizer.type": "RMSprop", "optimizer.nesterov": False}), tmp_path / "run")
    with pytest.raises(
        ValueError, match=r"optimizer.type='RMSprop': its optimiser state is that of 'SGD'.*--pretrained"
    ):
        resumed.resume(tmp_path / "run" / "last.pth")


def test_ema_switched_on_at_resume_starts_from_the_checkpoint(tmp_path):
    trainer(config(**{"schedule.epochs": 2, "schedule.milestones": (1,)}), tmp_path / "run").fit()
    resumed = trainer(config(**{"train.ema_decay": 0.9}), tmp_path / "run")
    resumed.resume(tmp_path / "run" / "last.pth")
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, resumed.ema.module.state_dict()[name]), name


def test_config_changes_lists_exactly_the_differing_keys():
    a = config()
    b = config(**{"optimizer.lr": 0.2, "schedule.milestones": [2, 3], "train.seed": 5})  # a list equals a tuple
    b["work_dir"] = "elsewhere"
    assert config_changes(a, b) == {"optimizer.lr": (0.1, 0.2), "train.seed": (0, 5)}
    b["data"]["new_key"] = 1
    assert config_changes(a, b)["data.new_key"] == (None, 1)


# ---------------------------------------------------------------------------------------------- through the tool
FOLDER_CFG = str(REPO / "configs/cls/finetune_folder.py")
TINY_FOLDER = [
    "model.pretrained=False",
    "model.growth_rate=4",
    "model.block_config=(1,1,1,1)",
    "data.image_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "schedule.type=constant",
    "schedule.epochs=1",
]


def run_folder(work_dir: Path, root: Path, *options: str, resume: bool = False) -> dict:
    extra = ("--resume", "auto") if resume else ()
    return run_training_tool(train_cls, FOLDER_CFG, work_dir, *TINY_FOLDER, *options, data_root=root, extra=extra)


@pytest.fixture
def one_epoch_run(tmp_path) -> tuple[Path, Path, str]:
    """A finished one-epoch run of the folder config on three classes: (data root, work dir, its config.py)."""
    root = write_image_folder(tmp_path / "tree", classes=3)
    run = tmp_path / "run"
    run_folder(run, root)
    return root, run, (run / "config.py").read_text()


@pytest.mark.integration  # trains through the tool
def test_the_tool_prints_changes_and_rewrites_config_only_when_accepted(one_epoch_run, capsys):
    root, run, before = one_epoch_run
    with pytest.raises(ValueError, match="optimizer.type='RMSprop'"):
        run_folder(run, root, "schedule.epochs=2", "optimizer.type='RMSprop'", "optimizer.nesterov=False", resume=True)
    assert (run / "config.py").read_text() == before  # refused: the run's config is as it was
    capsys.readouterr()
    run_folder(run, root, "schedule.epochs=2", "optimizer.lr=0.004", resume=True)
    out = capsys.readouterr().out
    assert (
        "config changes since that checkpoint take effect: optimizer.lr: 0.001 -> 0.004; schedule.epochs: 1 -> 2" in out
    )
    assert "lr=0.004" in (run / "config.py").read_text() and "epochs=2" in (run / "config.py").read_text()
    rows = read_csv(run / "train.csv")
    assert float(rows[-1]["lr"]) == pytest.approx(0.004 * 4 / 4)  # constant schedule: the new rate, batch 4 of 4


@pytest.mark.integration  # trains through the tool
def test_a_renamed_class_folder_is_refused_by_name(one_epoch_run):
    root, run, before = one_epoch_run  # classes n00000000, n00000001, n00000002
    for split in ("train", "val"):  # sorted, "zebra" is now class 2: rows 0-1 would train other classes
        shutil.move(root / split / "n00000000", root / split / "zebra")
    with pytest.raises(ValueError, match=r"data.classes differ .*\['n00000000'\] are gone and \['zebra'\] are new"):
        run_folder(run, root, "schedule.epochs=2", resume=True)
    assert (run / "config.py").read_text() == before


def test_reordered_class_names_are_refused(tmp_path):
    # The same names in another order (a reordered classes.txt or COCO category list): refused too.
    trainer(config(**{"schedule.epochs": 2, "schedule.milestones": (1,)}), tmp_path / "run").fit()
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    state["meta"]["classes"] = ["cat", "dog", "owl"]
    torch.save(state, tmp_path / "named.pth")
    resumed = trainer(config(), tmp_path / "run")
    resumed.extra_meta["classes"] = ["dog", "cat", "owl"]
    with pytest.raises(ValueError, match=r"another order \(class 0 was 'cat', is 'dog'\)"):
        resumed.resume(tmp_path / "named.pth")


@pytest.mark.parametrize("change", ["warm-up on", "cosine with warm-up"])
def test_a_schedule_of_another_kind_takes_effect(tmp_path, change):
    # A warm-up switched on makes the schedule a SequentialLR: the checkpoint's scheduler state (a MultiStepLR's)
    # no longer loads into it ("error: _schedulers"); the schedule is rebuilt instead, as for any schedule change.
    new = {"schedule.warmup_epochs": 1}
    if change.startswith("cosine"):
        new["schedule.type"] = "cosine"
    trainer(config(**{"schedule.epochs": 2, "schedule.milestones": (1,)}), tmp_path / "run").fit()
    resumed = trainer(config(**new), tmp_path / "run")
    resumed.resume(tmp_path / "run" / "last.pth")
    fresh = trainer(config(**new), tmp_path / "fresh")
    fresh.fit()
    resumed.fit()
    after = {step: lr for step, lr in lr_rows(tmp_path / "fresh").items() if step > 8}
    assert after and {step: lr_rows(tmp_path / "run")[step] for step in after} == after


def test_fewer_epochs_or_steps_than_trained_are_refused(tmp_path):
    trainer(config(**{"schedule.epochs": 2, "schedule.milestones": (1,)}), tmp_path / "run").fit()
    resumed = trainer(config(**{"schedule.epochs": 1, "schedule.milestones": ()}), tmp_path / "run")
    with pytest.raises(ValueError, match=r"schedule.epochs=1: it has trained 2 epochs already; pass schedule.epochs=2"):
        resumed.resume(tmp_path / "run" / "last.pth")


@pytest.mark.integration  # trains through the tool
def test_a_finished_run_resumed_with_changes_keeps_its_config(one_epoch_run, capsys):
    root, run, before = one_epoch_run
    capsys.readouterr()
    run_folder(run, root, "optimizer.lr=0.3", "train.seed=4", resume=True)  # 1 of 1 epochs: only evaluated
    assert "the run is complete; nothing trains): optimizer.lr" in capsys.readouterr().out
    assert (run / "config.py").read_text() == before  # still the config its weights were trained with
