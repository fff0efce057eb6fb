"""tools/train_cls.py and the engine: every data-set kind in its real format, resume, DDP, checkpoints, faults."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import run_training_tool
from helpers.data_fixtures import write_cifar10, write_cifar100, write_fashion_mnist, write_image_folder, write_svhn

import densebackbones as db
from densebackbones.data import build_classification_dataset
from densebackbones.engine import NonFiniteLossError, Trainer, atomic_save, load_checkpoint
from densebackbones.engine.config import check_config
from densebackbones.engine.config import merge_defaults as merge_sections
from densebackbones.tasks import CLS_DATA, ClassificationTask, TopKAccuracy

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import eval_cls  # noqa: E402
import train_cls  # noqa: E402

# Training runs and tool runs: left out of `make test-fast`, run by `make test`.
pytestmark = pytest.mark.integration

DIGITS_CFG = str(REPO / "configs/cls/densenet_bc_digits.py")


def merge_defaults(cfg: dict) -> dict:
    """A classification config with every section filled from the defaults."""
    return merge_sections(cfg, CLS_DATA)


TINY = ["model.growth_rate=4", "model.block_config=(1,1,1)", "train.plot=False", "data.num_workers=0"]


def run_train(config: str, work_dir: Path, *options: str, extra: tuple[str, ...] = ()) -> dict:
    return run_training_tool(train_cls, config, work_dir, *TINY, *options, extra=extra)


DATASET_CASES = {
    "cifar10": (write_cifar10, "densenet_bc100_k12_cifar10.py", []),
    "cifar100": (write_cifar100, "densenet_bc100_k12_cifar100.py", []),
    "svhn": (write_svhn, "densenet_bc100_k12_svhn.py", []),
    "fashion_mnist": (write_fashion_mnist, "densenet_bc100_k12_fashion_mnist.py", []),
    "imagenet": (
        write_image_folder,
        "densenet_bc121_k32_imagenet.py",
        ["data.image_size=32", "model.block_config=(1,1,1,1)", "model.num_classes=3"],
    ),
    "imagenet_peleenet": (  # PeleeNet's recipe: crop-and-flip augmentation, cosine schedule
        write_image_folder,
        "peleenet_imagenet.py",
        ["data.image_size=32", "model.block_config=(1,1,1,1)", "model.growth_rate=8", "model.num_classes=3"],
    ),
}


@pytest.mark.parametrize("kind", sorted(DATASET_CASES))
def test_two_iterations_train_and_eval_on_real_format(kind, tmp_path):
    writer, config, options = DATASET_CASES[kind]
    root = writer(tmp_path / "data")
    metrics = run_train(
        str(REPO / "configs/cls" / config),
        tmp_path / "run",
        "schedule.epochs=1",
        "schedule.type=constant",
        "train.max_iters_per_epoch=2",
        "data.batch_size=4",
        *options,
        extra=("--data-root", str(root)),
    )
    assert set(metrics) == {"top1", "top5", "loss"} and 0.0 <= metrics["top1"] <= 100.0
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    assert state["epoch"] == 1 and state["step"] == 2
    assert (tmp_path / "run" / "final.safetensors").exists() and (tmp_path / "run" / "config.py").exists()
    rows = (tmp_path / "run" / "train.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,epoch_float,lr,loss") and len(rows) == 2


def test_digits_default_and_test_tool(tmp_path, capsys):
    run_train(DIGITS_CFG, tmp_path / "run", "schedule.epochs=1", "train.max_iters_per_epoch=3")
    metrics = eval_cls.main(
        eval_cls.get_args_parser().parse_args([DIGITS_CFG, str(tmp_path / "run" / "best.pth"), "--cfg-options", *TINY])
    )
    logged = (tmp_path / "run" / "eval.csv").read_text().splitlines()[-1].split(",")
    assert abs(float(logged[2]) - metrics["top1"]) < 1e-3  # test.py reproduces the trainer's evaluation
    exported = db.create_model(
        "densenet_bc100_k12_cifar",
        in_chans=1,
        growth_rate=4,
        block_config=(1, 1, 1),
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "run" / "final.safetensors")),
    )
    last = load_checkpoint(tmp_path / "run" / "last.pth")["model"]
    for key, value in exported.state_dict().items():
        torch.testing.assert_close(value, last[key])


def test_resume_gives_identical_weights(tmp_path, monkeypatch):
    options = ("schedule.epochs=2", "train.max_iters_per_epoch=3", "model.proj_drop_rate=0.2")
    run_train(DIGITS_CFG, tmp_path / "straight", *options)

    original_save = Trainer.save

    def save_then_stop(self, metrics):
        original_save(self, metrics)
        if self.epoch == 1:
            raise KeyboardInterrupt  # the job is stopped right after its first checkpoint

    monkeypatch.setattr(Trainer, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_train(DIGITS_CFG, tmp_path / "resumed", *options)
    monkeypatch.setattr(Trainer, "save", original_save)
    run_train(DIGITS_CFG, tmp_path / "resumed", *options, extra=("--resume", "auto"))

    straight = load_checkpoint(tmp_path / "straight" / "last.pth")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pth")
    assert resumed["step"] == straight["step"] == 6
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert len((tmp_path / "resumed" / "eval.csv").read_text().splitlines()) == 3  # header + 2 epochs


DDP_SCRIPT = r"""
import sys, torch, torch.nn as nn
sys.path.insert(0, sys.argv[2])
from densebackbones.engine import Trainer, init_distributed, merge_defaults
from densebackbones.tasks import CLS_DATA, TopKAccuracy
from densebackbones.data import build_classification_dataset, build_train_transform
import densebackbones as db
cfg = merge_defaults(dict(data=dict(dataset="digits", batch_size=16, num_workers=0, augment="none"),
    schedule=dict(type="constant", epochs=1), train=dict(max_iters_per_epoch=4, plot=False, log_interval=2)), CLS_DATA)
dist = init_distributed("cpu")
torch.manual_seed(0)
# GroupNorm normalises per sample, so 2 x 8 samples give exactly the gradients of 1 x 16 (SyncBN is CUDA-only).
model = db.DenseNet(10, 1, growth_rate=4, block_config=(2, 2), stem_type="cifar",
                    norm_layer=lambda c: nn.GroupNorm(1, c))
tf = build_train_transform("none", 8, (0.3,), (0.37,))
train = build_classification_dataset("digits", None, True, tf)
trainer = Trainer(cfg, model, train, None, nn.CrossEntropyLoss(), TopKAccuracy(), sys.argv[1], dist)
trainer.fit()
if dist.is_main:
    torch.save(trainer.model.state_dict(), sys.argv[1] + "/weights.pt")
"""


def test_ddp_two_processes_equal_one_process(tmp_path):
    script = tmp_path / "ddp_job.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one"), str(REPO)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    double = subprocess.run(
        [*torchrun, str(script), str(tmp_path / "two"), str(REPO)], env=env, capture_output=True, text=True, timeout=300
    )
    assert double.returncode == 0, double.stderr[-2000:]
    one = torch.load(tmp_path / "one" / "weights.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "weights.pt", weights_only=True)
    initial = db.DenseNet(
        10, 1, growth_rate=4, block_config=(2, 2), stem_type="cifar", norm_layer=lambda c: nn.GroupNorm(1, c)
    )
    assert any(not torch.allclose(initial.state_dict()[k], one[k]) for k in one)  # training changed the weights
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)


def test_checkpoint_killed_mid_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / "last.pth"
    atomic_save({"epoch": 1, "weights": torch.ones(3)}, path)
    crash = f"""
import os, signal, torch
from densebackbones.engine import atomic_save
def dying_save(obj, handle):
    handle.write(b"partial checkpoint bytes")
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
atomic_save({{"epoch": 2}}, {str(path)!r})
"""
    result = subprocess.run([sys.executable, "-c", crash], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["weights"], torch.ones(3))


def test_failed_write_removes_its_temporary_file(tmp_path, monkeypatch):
    atomic_save({"epoch": 1}, tmp_path / "last.pth")
    monkeypatch.setattr(torch, "save", lambda obj, handle: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"epoch": 2}, tmp_path / "last.pth")
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]
    assert load_checkpoint(tmp_path / "last.pth")["epoch"] == 1


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = merge_defaults(
        dict(
            data=dict(dataset="digits", batch_size=16, num_workers=0),
            schedule=dict(epochs=3, type="constant"),
            train=dict(max_iters_per_epoch=2, plot=False),
        )
    )
    calls = {"n": 0}

    def loss_fn(outputs, targets):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(outputs, targets)
        return loss * float("nan") if calls["n"] > 2 else loss  # diverges in the second epoch

    model = db.DenseNet(10, 1, growth_rate=4, block_config=(1, 1), stem_type="cifar")
    train = build_classification_dataset("digits", None, True, lambda x: x.float() / 255)
    trainer = Trainer(cfg, model, train, None, loss_fn, TopKAccuracy(), tmp_path, db.engine.DistInfo())
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2.*last\.pth"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "last.pth")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize(
    ("kind", "layout"),
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("svhn", "train_32x32.mat"),
        ("fashion_mnist", "images-idx3"),
        ("imagenet", "<class name>"),
    ],
)
def test_missing_root_names_the_expected_layout(kind, layout, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"Expected layout: .*{layout}"):
        build_classification_dataset(kind, tmp_path / "nowhere", True)


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path):
    root = write_image_folder(tmp_path / "imagenet", classes=2, per_class=2)
    bad = root / "train" / "n00000001" / "broken.JPEG"
    bad.write_bytes(b"this is not a jpeg")
    strict = build_classification_dataset("imagenet", root, True)
    index = [i for i, (p, _) in enumerate(strict.samples) if p.endswith("broken.JPEG")][0]
    with pytest.raises(OSError, match="broken.JPEG.*skip_corrupt"):
        strict[index]
    lenient = build_classification_dataset("imagenet", root, True, skip_corrupt=True)
    with pytest.warns(UserWarning, match="broken.JPEG"):
        image, _ = lenient[index]
    assert image.size == (48, 40) and lenient.num_skipped == 1


def test_empty_or_malformed_files_are_reported(tmp_path):
    write_cifar10(tmp_path / "c10")
    (tmp_path / "c10" / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="test_batch is not a CIFAR python batch"):
        build_classification_dataset("cifar10", tmp_path / "c10", False)
    write_fashion_mnist(tmp_path / "fm", gz=False)
    (tmp_path / "fm" / "t10k-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        build_classification_dataset("fashion_mnist", tmp_path / "fm", False)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (dict(optimizer=dict(lrr=0.1)), "optimizer.lrr is not used. Did you mean 'lr'"),
        (dict(trian=dict()), "section 'trian' is not used. Did you mean 'train'"),
        (
            dict(model=dict(type="densenet_bc100_k12_cifar", growth=4)),
            "model.growth is not used. Did you mean 'growth_rate'",
        ),
        (dict(data=dict(batchsize=4)), "Did you mean 'batch_size'"),
    ],
)
def test_unread_config_keys_are_errors(cfg, message):
    raw = dict(cfg, model=cfg.get("model") or dict(type="densenet_bc100_k12_cifar"))
    with pytest.raises(KeyError, match=message):
        check_config(raw, ClassificationTask().model_arg_names(raw), CLS_DATA)


def test_every_shipped_config_is_valid(tmp_path):
    from densebackbones.engine.config import load_config

    configs = sorted((REPO / "configs" / "cls").glob("*.py"))
    assert len(configs) >= 40
    for path in configs:
        raw = load_config(path).to_dict()
        check_config(raw, ClassificationTask().model_arg_names(raw), CLS_DATA)
        cfg = merge_defaults(raw)
        assert db.is_model(cfg["model"]["type"]), path.name
        milestones = cfg["schedule"]["milestones"]
        if cfg["schedule"]["type"] == "multistep":
            assert all(0 < m < cfg["schedule"]["epochs"] for m in milestones), path.name


def test_batch_size_must_split_over_processes_and_accumulation(tmp_path):
    cfg = merge_defaults(dict(data=dict(dataset="digits", batch_size=10, num_workers=0), train=dict(accum_steps=4)))
    model = db.DenseNet(10, 1, growth_rate=4, block_config=(1, 1), stem_type="cifar")
    train = build_classification_dataset("digits", None, True)
    with pytest.raises(ValueError, match="divisible by world size 1 x train.accum_steps 4"):
        Trainer(cfg, model, train, None, nn.CrossEntropyLoss(), TopKAccuracy(), tmp_path, db.engine.DistInfo())


def test_plot_logs_tool(tmp_path):
    run_train(DIGITS_CFG, tmp_path / "run", "schedule.epochs=2", "train.max_iters_per_epoch=2")
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/plot_logs.py"), str(tmp_path / "run")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    png = tmp_path / "run" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    shutil.rmtree(tmp_path / "run")


@pytest.mark.parametrize(
    "options",
    [
        ("train.amp='bf16'", "train.channels_last=True"),
        ("train.accum_steps=2", "train.clip_grad=1.0"),
        ("train.ema_decay=0.9", "train.save_interval=1", "schedule.warmup_epochs=1", "schedule.type='cosine'"),
        ("optimizer.type='RMSprop'", "optimizer.lr=0.001", "schedule.type='exponential'", "schedule.gamma=0.995"),
    ],
    ids=["bf16-channels-last", "accumulation-clipping", "ema-warmup-cosine", "rmsprop-exponential"],
)
def test_engine_options(options, tmp_path):
    metrics = run_train(DIGITS_CFG, tmp_path / "run", "schedule.epochs=2", "train.max_iters_per_epoch=2", *options)
    assert metrics["top1"] >= 0.0
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    assert state["step"] == 4
    if "train.ema_decay=0.9" in options:
        assert state["model_ema"] is not None and (tmp_path / "run" / "epoch_1.pth").exists()
        assert any(not torch.equal(state["model_ema"][k], v) for k, v in state["model"].items())
    if "train.accum_steps=2" in options:
        assert state["config"]["train"]["accum_steps"] == 2


def test_lr_scales_with_global_batch(tmp_path):
    run_train(
        DIGITS_CFG,
        tmp_path / "run",
        "schedule.epochs=1",
        "schedule.type='constant'",
        "train.max_iters_per_epoch=1",
        "data.batch_size=128",
    )
    row = (tmp_path / "run" / "train.csv").read_text().splitlines()[1].split(",")
    assert float(row[3]) == pytest.approx(0.1 * 128 / 64)  # lr per 64 images, global batch 128


def test_pretrained_fine_tunes_with_a_new_classifier(tmp_path, caplog):
    source = db.create_model(
        "densenet_bc100_k12_cifar", num_classes=100, in_chans=1, growth_rate=4, block_config=(1, 1, 1)
    )
    torch.save(source.state_dict(), tmp_path / "c100.pth")
    with caplog.at_level("WARNING"):
        run_train(
            DIGITS_CFG,
            tmp_path / "run",
            "schedule.epochs=1",
            "train.max_iters_per_epoch=1",
            "optimizer.lr=0.0",
            extra=("--pretrained", str(tmp_path / "c100.pth")),
        )
    assert "classifier has 100 classes" in caplog.text
    tuned = load_checkpoint(tmp_path / "run" / "last.pth")["model"]
    assert tuned["classifier.weight"].shape == (10, source.num_features)
    torch.testing.assert_close(tuned["features.conv0.weight"], source.features.conv0.weight)  # lr 0: unchanged


def test_ten_crop_evaluation(tmp_path):
    root = write_image_folder(tmp_path / "data", classes=3, per_class=2)
    config = str(REPO / "configs/cls/densenet_bc121_k32_imagenet.py")
    options = ["data.image_size=32", "model.block_config=(1,1,1,1)", "model.num_classes=3", "data.batch_size=3"]
    run_train(
        config,
        tmp_path / "run",
        "schedule.epochs=1",
        "schedule.type='constant'",
        "train.max_iters_per_epoch=1",
        *options,
        extra=("--data-root", str(root)),
    )
    argv = [config, str(tmp_path / "run" / "last.pth"), "--data-root", str(root), "--cfg-options", *TINY, *options]
    single = eval_cls.main(eval_cls.get_args_parser().parse_args(argv))
    ten = eval_cls.main(eval_cls.get_args_parser().parse_args([*argv[:4], "--ten-crop", *argv[4:]]))
    assert ten["loss"] != single["loss"] and 0 <= ten["top1"] <= 100


def test_tool_reports_bad_config_without_traceback(tmp_path):
    command = [sys.executable, str(REPO / "tools/train_cls.py"), DIGITS_CFG, "--cfg-options", "data.batch_siz=3"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: config key data.batch_siz is not used. Did you mean 'batch_size', 'eval_batch_size', 'image_size'?"
    )


def test_plot_before_the_first_evaluation_warns_nothing(tmp_path, recwarn):
    from densebackbones.engine import CSVLogger, plot_run

    CSVLogger(tmp_path / "train.csv").log(dict(epoch=1, step=1, epoch_float=1.0, lr=0.1, loss=2.0, img_per_s=9.0))
    png = plot_run(tmp_path)  # eval.csv does not exist yet (train.eval_interval > 1)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert not [w for w in recwarn if "legend" in str(w.message).lower()]
