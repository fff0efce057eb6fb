"""Never lose a result, never mislabel an evaluation, and a clean message for every failure (the reliability
issue): work-dir protection and locking, resumed logs, class lists by name, checkpoint fall-back, exports that are
what the checkpoint is, and one-line errors from the tools."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from helpers import run_training_tool
from helpers.data_fixtures import write_image_folder

import densebackbones as db
from densebackbones.data import build_classification_dataset
from densebackbones.data.detection import COCODetection, write_shapes_coco
from densebackbones.engine import CSVLogger, Trainer, load_checkpoint, read_csv
from densebackbones.engine.checkpoint import CheckpointError, non_finite_tensors
from densebackbones.engine.cli import TrainingInterrupted, _one_line, run_main
from densebackbones.engine.run_dir import RunDirectory, WorkDirError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import export as export_tool  # noqa: E402
import train_cls  # noqa: E402

# Training runs and tool runs: left out of `make test-fast`, run by `make test`.
pytestmark = pytest.mark.integration

DIGITS_CFG = str(REPO / "configs/cls/densenet_bc_digits.py")
TINY = ["model.growth_rate=4", "model.block_config=(1,1,1)", "data.num_workers=0", "train.max_iters_per_epoch=3"]


def run(work_dir: Path, *options: str, extra=()) -> dict:
    return run_training_tool(train_cls, DIGITS_CFG, work_dir, *TINY, "schedule.epochs=1", *options, extra=extra)


def run_tool(*argv: str, env=None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "tools" / "train_cls.py"), DIGITS_CFG, *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env)


# ------------------------------------------------------------------------------------------- results not lost
def test_a_second_run_never_overwrites_the_first(tmp_path):
    run(tmp_path / "run")
    best = (tmp_path / "run" / "best.pth").read_bytes()
    with pytest.raises(WorkDirError, match=r"already holds a run \(best.pth.*--resume auto.*--overwrite"):
        run(tmp_path / "run")
    assert (tmp_path / "run" / "best.pth").read_bytes() == best and not (tmp_path / "run" / ".lock").exists()
    run(tmp_path / "run", "schedule.epochs=2", extra=("--resume", "auto"))  # continuing is fine
    assert load_checkpoint(tmp_path / "run" / "last.pth")["epoch"] == 2
    run(tmp_path / "run", extra=("--overwrite",))  # starting over only when asked
    assert load_checkpoint(tmp_path / "run" / "last.pth")["epoch"] == 1
    with pytest.raises(WorkDirError, match="contradict"):
        run(tmp_path / "run", extra=("--overwrite", "--resume", "auto"))


def test_a_work_dir_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path):
    # A real second process holds the directory: the run that comes second stops with its pid and host.
    script = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from densebackbones.engine.run_dir import RunDirectory; "
        "d = RunDirectory(sys.argv[2]).claim(False, False); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(REPO), str(tmp_path / "run")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(WorkDirError, match=rf"is in use by another run \(pid {holder.pid} on "):
            run(tmp_path / "run")
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed without releasing its lock: the kernel dropped its flock, and the next run takes the
    # directory (its lock file is still there, naming the dead holder).
    assert (tmp_path / "run" / ".lock").read_text().startswith(f"pid={holder.pid}\n")
    run(tmp_path / "run")
    assert (tmp_path / "run" / "last.pth").exists()


def test_resumed_logs_match_an_uninterrupted_run_row_by_row(tmp_path, monkeypatch):
    options = ("schedule.epochs=2", "train.log_interval=1")
    run(tmp_path / "straight", *options)

    original_log = CSVLogger.log

    def log_then_die(self, row):
        original_log(self, row)
        if self.path.name == "train.csv" and row["step"] == 5:  # killed mid-epoch 2, after the epoch-1 checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(CSVLogger, "log", log_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", *options)
    monkeypatch.setattr(CSVLogger, "log", original_log)
    (tmp_path / "resumed" / ".last.pth.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # a SIGKILL mid-write
    run(tmp_path / "resumed", *options, extra=("--resume", "auto"))

    assert not list((tmp_path / "resumed").glob(".*.tmp"))
    for name, columns in (("train.csv", ("epoch", "step", "loss", "lr")), ("eval.csv", ("epoch", "step", "top1"))):
        straight, resumed = read_csv(tmp_path / "straight" / name), read_csv(tmp_path / "resumed" / name)
        assert len(resumed) == len(straight) > 0, name
        for a, b in zip(straight, resumed):
            assert [a[c] for c in columns] == pytest.approx([b[c] for c in columns], rel=1e-5), name


def test_resume_auto_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog):
    run(tmp_path / "run", "train.save_interval=1")
    last = tmp_path / "run" / "last.pth"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, e.g. by a full disk or an interrupted copy
    with caplog.at_level("WARNING"):
        run(tmp_path / "run", "schedule.epochs=2", "train.save_interval=1", extra=("--resume", "auto"))
    assert "last.pth is not a readable checkpoint" in caplog.text and "resuming from" in caplog.text
    assert load_checkpoint(last)["epoch"] == 2
    for path in (tmp_path / "run").glob("*.pth"):
        path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no other checkpoint in the work dir is intact; pass a readable"):
        run(tmp_path / "run", "schedule.epochs=3", extra=("--resume", "auto"))


def test_a_checkpoint_without_what_resuming_needs_is_named(tmp_path):
    run(tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    del state["rng"], state["scaler"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"partial.pth lacks scaler, rng, which resuming needs .*--pretrained"):
        run(tmp_path / "run2", extra=("--resume", str(tmp_path / "partial.pth")))


def test_resuming_another_models_checkpoint_names_both(tmp_path):
    run(tmp_path / "run")
    with pytest.raises(
        ValueError, match=r"holds another architecture: .*growth_rate': 4.*growth_rate': 8.*--pretrained"
    ):
        run(tmp_path / "run", "model.growth_rate=8", "schedule.epochs=2", extra=("--resume", "auto"))


def test_val_classes_follow_the_training_split_by_name(tmp_path):
    root = write_image_folder(tmp_path / "tree", classes=3)
    shutil.rmtree(root / "val" / "n00000001")  # val lacks the middle class
    with pytest.warns(UserWarning, match="lacks 1 of the training split's 3 classes \\(n00000001\\)"):
        val = build_classification_dataset("imagenet", root, train=False)
    labels = {Path(path).parent.name: label for path, label in val.samples}
    assert labels == {"n00000000": 0, "n00000002": 2}  # by name, not shifted to 0, 1
    (root / "val" / "n00000009").mkdir()
    shutil.copy(next((root / "val" / "n00000000").iterdir()), root / "val" / "n00000009" / "x.JPEG")
    with pytest.raises(ValueError, match="class folder\\(s\\) \\['n00000009'\\] that the training split lacks"):
        build_classification_dataset("imagenet", root, train=False)


def test_export_is_what_the_checkpoint_is(tmp_path):
    model = db.create_model("densenet40_k12_cifar", in_chans=1)  # e.g. trained on Fashion-MNIST
    torch.save(model.state_dict(), tmp_path / "gray.pth")
    argv = ["densenet40_k12_cifar", "--format", "onnx", "--output", str(tmp_path / "gray.onnx")]
    argv += ["--checkpoint", str(tmp_path / "gray.pth"), "--img-size", "32", "--no-fuse", "--max-size", "64"]
    export_tool.main(export_tool.get_args_parser().parse_args(argv))
    dims = onnx.load(str(tmp_path / "gray.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 1  # a 1-channel file, not an adapted 3-channel one
    with pytest.raises(ValueError, match="takes 1-channel input.*--in-chans 3 contradicts the checkpoint"):
        export_tool.main(export_tool.get_args_parser().parse_args([*argv, "--in-chans", "3"]))


def test_evaluation_and_prediction_refuse_a_classifier_that_does_not_fit(tmp_path):
    # A checkpoint whose classifier has 7 outputs, evaluated with the digits' 10 classes: the tools used to evaluate
    # (and predict with) a fresh random classifier after a warning, and report its accuracy.
    run(tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    weights = state["model"]
    weights["classifier.weight"], weights["classifier.bias"] = (
        weights["classifier.weight"][:7],
        weights["classifier.bias"][:7],
    )
    torch.save(state, tmp_path / "seven.pth")
    tools = REPO / "tools"
    options = ["--cfg-options", *TINY]
    good = subprocess.run(
        [sys.executable, str(tools / "eval_cls.py"), DIGITS_CFG, str(tmp_path / "run" / "last.pth"), *options],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stderr
    commands = {
        "eval_cls": [str(tools / "eval_cls.py"), DIGITS_CFG, str(tmp_path / "seven.pth"), *options],
        "predict_cls": [
            str(tools / "predict_cls.py"),
            str(tmp_path / "seven.pth"),
            str(REPO / "README.md"),  # never read: the model is refused first
            "--config",
            str(tmp_path / "run" / "config.py"),
        ],
    }
    for tool, command in commands.items():
        result = subprocess.run([sys.executable, *command], capture_output=True, text=True)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1, (tool, result.stderr)
        assert "has a 7-class classifier and the model num_classes=10" in errors[0], (tool, errors)
        assert "model.num_classes=7" in errors[0]


def test_missing_images_are_found_when_the_data_set_is_built(tmp_path):
    write_shapes_coco(tmp_path / "shapes", num_images=4)
    (tmp_path / "shapes" / "train" / sorted(os.listdir(tmp_path / "shapes" / "train"))[1]).unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 4 files named in .*train.json do not exist under"):
        COCODetection(tmp_path / "shapes" / "train.json", tmp_path / "shapes" / "train")


# -------------------------------------------------------------------------------------------- clean messages
@pytest.mark.parametrize(
    ("options", "message", "code"),
    [
        (["optimizer.lr=1e8"], "error: loss is ", 1),
        (["optimizer.lr=abc"], "error: config key optimizer.lr must be a number, got 'abc' (str)", 2),
        (["schedule.epochs=three"], "error: config key schedule.epochs must be a whole number", 2),
        (["train=5"], "error: config section 'train' must be a dict of keys, got 5", 2),
    ],
    ids=["nan-loss", "lr-type", "epochs-type", "section-type"],
)
def test_tool_failures_are_one_line(options, message, code, tmp_path):
    result = run_tool("--work-dir", str(tmp_path / "run"), "--cfg-options", *TINY, "train.plot=False", *options)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # besides progress bars
    assert len(errors) == 1 and errors[0].startswith(message), result.stderr


@pytest.mark.parametrize("lr", ["1e6", "1e12"])
def test_divergence_never_writes_a_non_finite_checkpoint(lr, tmp_path):
    # With lr 1e6 the loss stays finite for a while (BN normalises the huge weights) while running variances blow up:
    # an epoch's checkpoint used to be written with 6 inf tensors and then named "the last good checkpoint".
    work_dir = tmp_path / "run"
    options = [*TINY, "train.plot=False", "schedule.epochs=3", f"optimizer.lr={lr}"]
    result = run_tool("--work-dir", str(work_dir), "--cfg-options", *options)
    assert result.returncode == 1, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    for path in work_dir.glob("*.pth"):
        state = load_checkpoint(path)
        assert non_finite_tensors({k: state[k] for k in ("model", "optimizer", "model_ema")}) == [], path
    named = error.split("The last good checkpoint is ")[1].split(":")[0]
    assert named == "(none yet)" or Path(named).is_file()


def test_print_config_checks_types_too():
    result = run_tool("--print-config", "--cfg-options", "optimizer.lr=abc")
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: config key optimizer.lr must be a number, got 'abc' (str); e.g. --cfg-options optimizer.lr=0.1"
    )


def test_weights_files_that_are_missing_or_garbage_are_named(tmp_path):
    # fixed bytes, not random ones: one random file in 256 starts like a pickle and torch warns on stderr first
    (tmp_path / "garbage.pth").write_bytes(b"this is not a checkpoint\n" * 4)
    result = run_tool("--work-dir", str(tmp_path / "run"), "--pretrained", str(tmp_path / "missing.pth"))
    assert (
        result.returncode == 2
        and result.stderr.strip() == f"error: weights file {tmp_path / 'missing.pth'} does not exist"
    )
    result = run_tool("--work-dir", str(tmp_path / "run"), "--pretrained", str(tmp_path / "garbage.pth"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / 'garbage.pth'} is not a readable weights file")
    evaluation = subprocess.run(
        [sys.executable, str(REPO / "tools" / "eval_cls.py"), DIGITS_CFG, str(tmp_path / "missing.pth")],
        capture_output=True,
        text=True,
    )
    assert evaluation.returncode == 2
    assert evaluation.stderr.strip() == f"error: weights file {tmp_path / 'missing.pth'} does not exist"
    debug = run_tool("--work-dir", str(tmp_path / "run"), "--pretrained", str(tmp_path / "garbage.pth"), "--debug")
    assert "Traceback" in debug.stderr and debug.returncode == 2  # the traceback when asked for


def test_ctrl_c_says_where_the_last_checkpoint_is(tmp_path, monkeypatch, capsys):
    original_save = Trainer.save

    def save_then_interrupt(self, metrics):
        original_save(self, metrics)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save", save_then_interrupt)
    with pytest.raises(TrainingInterrupted, match=r"interrupted; the last checkpoint is .*last.pth \(continue with"):
        run(tmp_path / "run", "schedule.epochs=2")

    def main(args):
        raise TrainingInterrupted("interrupted; the last checkpoint is x/last.pth")

    capsys.readouterr()  # the interrupted run's progress bars
    monkeypatch.setattr(sys, "argv", ["tool", "config.py"])
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, train_cls.get_args_parser())
    assert (
        exit_info.value.code == 130
        and capsys.readouterr().err.strip() == "interrupted; the last checkpoint is x/last.pth"
    )


def test_a_data_loader_workers_error_keeps_its_own_line():
    worker_error = OSError(
        "Caught OSError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n  File ...\n"
        "OSError: cannot read image /data/val/x.JPEG: truncated. Remove or replace it, or set data.skip_corrupt=True\n"
    )
    assert _one_line(worker_error).startswith("cannot read image /data/val/x.JPEG: truncated. Remove or replace it")


def test_zero_learning_rate_warns(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        run(tmp_path / "run", "optimizer.lr=0")
    assert "optimizer.lr=0: the weights will not change" in caplog.text


def test_lock_is_released_after_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown memory_mode"):
        run(tmp_path / "run", "model.memory_mode='fast'")
    assert not (tmp_path / "run").exists()  # created by the failed run, empty, removed again
    (tmp_path / "kept").mkdir()
    with RunDirectory(tmp_path / "kept").claim(False, False):
        assert (tmp_path / "kept" / ".lock").read_text().startswith(f"pid={os.getpid()}\n")
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / ".lock").exists()


def test_tools_set_the_openmp_spin_count_before_torch_loads():
    # libgomp reads GOMP_SPINCOUNT when torch loads it: cpu_env must be imported before torch and densebackbones.
    checked = 0
    for path in sorted((REPO / "tools").glob("*.py")):
        tree = ast.parse(path.read_text())
        modules = [
            (node.names[0].name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
            for node in tree.body
            if isinstance(node, (ast.Import, ast.ImportFrom))
        ]
        loads_torch = [i for i, m in enumerate(modules) if m in ("torch", "densebackbones", "timm", "torchvision")]
        if not loads_torch:
            continue
        assert "cpu_env" in modules and modules.index("cpu_env") < loads_torch[0], path.name
        checked += 1
    assert checked >= 10
    code = "import os, sys; sys.path.insert(0, 'tools'); import train_cls; print(os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env)
    assert result.stdout.strip() == "3000"


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_every_file_a_run_writes_follows_the_umask(tmp_path, umask):
    # safetensors' save_file made final.safetensors 0600 under umask 022: a shared group could not read it.
    previous = os.umask(umask)
    try:
        run(tmp_path / "run", "train.plot=True")
    finally:
        os.umask(previous)
    files = [p for p in (tmp_path / "run").iterdir() if p.is_file()]
    assert {"last.pth", "best.pth", "final.safetensors", "final.json", "train.csv", "curves.png"} <= {
        p.name for p in files
    }
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in files}
    assert modes == {name: oct(0o666 & ~umask) for name in modes}


EXIT_SCRIPT = """
import sys, torch, torch.nn as nn
from torch.utils.data import TensorDataset
from densebackbones.engine import Trainer, merge_defaults
from densebackbones.engine.distributed import DistInfo
from densebackbones.tasks import TopKAccuracy
cfg = merge_defaults(dict(data=dict(batch_size=4, num_workers=2), schedule=dict(type="constant", epochs=2),
                          train=dict(plot=False)), {"batch_size": 4, "num_workers": 2, "eval_batch_size": None})
calls = []
def loss_fn(outputs, targets):
    calls.append(1)
    if len(calls) == 3:
        raise RuntimeError("a failing step")
    return nn.functional.cross_entropy(outputs, targets)
data = TensorDataset(torch.randn(32, 4), torch.arange(32) % 3)
trainer = Trainer(cfg, nn.Linear(4, 3), data, data, loss_fn, TopKAccuracy(), sys.argv[1], DistInfo())
try:
    trainer.fit()
except RuntimeError as err:
    kept = err  # the traceback keeps the trainer (and its loaders) alive until the interpreter exits
print("failed as expected", flush=True)
"""


def test_a_failed_run_with_loader_workers_lets_the_process_exit(tmp_path):
    # Loader workers ignore SIGTERM (preemption notices); persistent ones that outlived a failed fit() made the
    # interpreter's exit wait for them forever (multiprocessing ends children with SIGTERM, then joins).
    script = tmp_path / "fail.py"
    script.write_text(EXIT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0 and "failed as expected" in result.stdout, result.stderr[-3000:]
