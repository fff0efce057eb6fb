"""The fault matrix of the reliability issue: every training tool, stopped by each signal at each moment (after an
optimiser step, while a step checkpoint is written, while an epoch checkpoint is written) or by a full disk at each
moment, ends with its documented exit status and one line, leaves a complete checkpoint, and ``--resume auto`` then
ends with exactly the uninterrupted run's weights, EMA, optimiser state and logs.

The faults are real: the tool is a separate process that sends itself the signal (``DENSEBACKBONES_TEST_FAULT``,
``engine/elastic.py``) or fills its work dir's file system, a tmpfs mounted for the test in a user and mount namespace
of its own (``unshare``). The default suite runs a covering design (every signal x moment pair, every disk-full moment,
each tool in turn); ``-m slow`` runs the whole product over the three tools."""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.faults import FAULT_BALLAST, FAULT_ENV, FAULT_HOOK  # noqa: E402

from densebackbones.engine import load_checkpoint, read_csv

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

# 2 epochs x 3 steps: step checkpoints at steps 2 and 4 (6 ends the run), epoch checkpoints after steps 3 and 6; EMA
# and dropout on, a log row per step, so that every part of the state must survive the fault.
COMMON = [
    "train.max_iters_per_epoch=3",
    "train.checkpoint_interval_steps=2",
    "train.log_interval=1",
    "train.ema_decay=0.9",
    "train.plot=False",
    "data.num_workers=0",
    FAULT_HOOK,
]
TOOLS = {
    "cls": ("train_cls.py", "configs/cls/densenet_bc_digits.py", None, [
        "schedule.epochs=2", "model.growth_rate=4", "model.block_config=(1,1,1)", "model.proj_drop_rate=0.2",
    ]),
    "seg": ("train_seg.py", "configs/seg/fc_densenet_shapes.py", "shapes", [
        "schedule.epochs=2", "model.growth_rate=4", "data.batch_size=4",
    ]),
    "det": ("train_det.py", "configs/det/dsod_shapes.py", "shapes_det", [
        "data.batch_size=4", "data.shapes_train=16", "data.shapes_val=4", "schedule.max_iters=6",
        "schedule.milestones=(4,)",
    ]),
}  # fmt: skip
# The moment, as DENSEBACKBONES_TEST_FAULT says it, and the step of the checkpoint each signal leaves behind:
# SIGTERM finishes the step and writes it (no work lost); SIGKILL and SIGINT leave the last complete checkpoint
# (a write they interrupt is discarded: its temporary file, never a half-written last.pth).
MOMENTS = {"5": "after step 5", "save4": "in step 4's checkpoint write", "save3": "in the epoch checkpoint write"}
LEFT_AT = {
    ("kill", "5"): 4, ("kill", "save4"): 3, ("kill", "save3"): 2,
    ("term", "5"): 5, ("term", "save4"): 4, ("term", "save3"): 3,
    ("int", "5"): 4, ("int", "save4"): 3, ("int", "save3"): 2,
}  # fmt: skip
EXIT_STATUS = {"kill": -9, "term": 143, "int": 130}
# A full disk: before the first checkpoint (step 2's), before the first evaluation's log and epoch checkpoint, and
# before the last epoch checkpoint; the checkpoint left behind is the last one written before the disk filled.
DISK_FULL = {"1": None, "3": 2, "5": 4}


def command(tool: str, work_dir: Path, data: Path, *extra: str) -> list[str]:
    script, config, data_name, options = TOOLS[tool]
    argv = [sys.executable, str(REPO / "tools" / script), str(REPO / config), "--work-dir", str(work_dir)]
    if data_name:
        argv += ["--data-root", str(data / data_name)]
    return [*argv, *extra, "--cfg-options", *COMMON, *options]


def environment(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env.update(PYTHONPATH=f"{REPO}:{REPO / 'tests'}", OMP_NUM_THREADS="1")
    if fault:
        env[FAULT_ENV] = fault
    return env


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")  # the shapes sets are generated there by the first run that reads them


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data):
    runs: dict[str, Path] = {}

    def get(tool: str) -> Path:
        if tool not in runs:
            work_dir = tmp_path_factory.mktemp(f"straight_{tool}") / "run"
            result = subprocess.run(command(tool, work_dir, data), env=environment(), capture_output=True, text=True)
            assert result.returncode == 0, result.stderr[-3000:]
            runs[tool] = work_dir
        return runs[tool]

    return get


def assert_same_run(straight: Path, resumed: Path) -> None:
    a, b = load_checkpoint(straight / "last.pth"), load_checkpoint(resumed / "last.pth")
    assert (a["step"], a["epoch"]) == (b["step"], b["epoch"])
    for part in ("model", "model_ema"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    for index, value in a["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, b["optimizer"]["state"][index][name]), (index, name)
    for name in ("train.csv", "eval.csv"):
        rows_a, rows_b = read_csv(straight / name), read_csv(resumed / name)
        columns = [c for c in rows_a[0] if c != "img_per_s"]  # throughput is the only column that may differ
        assert [[r[c] for c in columns] for r in rows_a] == [[r[c] for c in columns] for r in rows_b], name


def last_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------------------------------------- signals
SIGNAL_CASES = list(itertools.product(("kill", "term", "int"), MOMENTS))
COVERING = [(signal, moment, list(TOOLS)[i % 3]) for i, (signal, moment) in enumerate(SIGNAL_CASES)]
EVERY = [(s, m, t) for (s, m), t in itertools.product(SIGNAL_CASES, TOOLS) if (s, m, t) not in COVERING]


def signal_case(straight, data, tmp_path, signal: str, moment: str, tool: str) -> None:
    work_dir = tmp_path / "run"
    fault = f"{signal}@{moment}"
    stopped = subprocess.run(command(tool, work_dir, data), env=environment(fault), capture_output=True, text=True)
    assert stopped.returncode == EXIT_STATUS[signal], (fault, stopped.stdout[-2000:], stopped.stderr[-3000:])
    assert f"{FAULT_ENV}: rank 0 sends itself SIG{signal.upper()}" in stopped.stdout
    left = load_checkpoint(work_dir / "last.pth")
    assert left["step"] == LEFT_AT[signal, moment], fault
    if signal != "kill":  # one line that says where the checkpoint is and how to continue
        line = last_error_line(stopped.stderr)
        expected = "preempted (SIGTERM) at step" if signal == "term" else "interrupted; the last checkpoint is"
        assert line.startswith(expected) and "--resume auto" in line and str(work_dir / "last.pth") in line, line
        assert "Traceback" not in stopped.stderr
    assert not (work_dir / ".lock").exists() or signal == "kill"
    resumed = subprocess.run(
        command(tool, work_dir, data, "--resume", "auto"), env=environment(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(work_dir.glob(".*.tmp"))  # a write the fault interrupted left nothing behind
    assert_same_run(straight(tool), work_dir)


@pytest.mark.parametrize(("signal", "moment", "tool"), COVERING)
def test_a_signal_at_any_moment_loses_nothing(straight, data, tmp_path, signal, moment, tool):
    signal_case(straight, data, tmp_path, signal, moment, tool)


@pytest.mark.slow
@pytest.mark.parametrize(("signal", "moment", "tool"), EVERY)
def test_a_signal_at_any_moment_loses_nothing_every_tool(straight, data, tmp_path, signal, moment, tool):
    signal_case(straight, data, tmp_path, signal, moment, tool)


# ----------------------------------------------------------------------------------------------------- disk full
def _namespaces_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m none /mnt"], capture_output=True)
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(
    not _namespaces_available(), reason="needs `unshare -rm` to mount a small tmpfs (user and mount namespaces)"
)
DISK_COVERING = [(moment, list(TOOLS)[i % 3]) for i, moment in enumerate(DISK_FULL)]
DISK_EVERY = [(m, t) for m, t in itertools.product(DISK_FULL, TOOLS) if (m, t) not in DISK_COVERING]


def disk_full_case(straight, data, tmp_path, moment: str, tool: str) -> None:
    # One shell in a namespace of its own: mount a 64 MiB tmpfs, train until the fault fills it, remove the ballast
    # (space returns), resume, and copy the work dir out (the tmpfs ends with the namespace).
    mount, out = tmp_path / "fs", tmp_path / "out"
    mount.mkdir()
    out.mkdir()
    work_dir = mount / "run"
    first = shlex.join(command(tool, work_dir, data))
    again = shlex.join(command(tool, work_dir, data, "--resume", "auto"))
    script = f"""
        mount -t tmpfs -o size=64m none {mount}
        {FAULT_ENV}=fill@{moment} {first} > {out}/first.out 2> {out}/first.err; echo $? > {out}/first.rc
        cp -a {work_dir} {out}/after_fault
        rm -f {work_dir}/{FAULT_BALLAST}
        {again} > {out}/again.out 2> {out}/again.err; echo $? > {out}/again.rc
        cp -a {work_dir} {out}/run
    """
    subprocess.run(["unshare", "-rm", "sh", "-c", script], env=environment(), check=True, timeout=600)
    first_err = (out / "first.err").read_text()
    assert (out / "first.rc").read_text().strip() == "2", first_err[-3000:]
    line = last_error_line(first_err)
    assert line.startswith("error: could not write ") and " MiB free in " in line and "--resume auto" in line, line
    assert "Traceback" not in first_err
    after = out / "after_fault"
    assert not list(after.glob(".*.tmp")) and not (after / ".lock").exists()
    expected = DISK_FULL[moment]
    if expected is None:
        assert not (after / "last.pth").exists() and "no earlier last.pth exists" in line
    else:
        assert load_checkpoint(after / "last.pth")["step"] == expected
    again_err = (out / "again.err").read_text()
    assert (out / "again.rc").read_text().strip() == "0", again_err[-3000:]
    assert_same_run(straight(tool), out / "run")


@needs_tmpfs
@pytest.mark.parametrize(("moment", "tool"), DISK_COVERING)
def test_a_full_disk_at_any_moment_loses_nothing(straight, data, tmp_path, moment, tool):
    disk_full_case(straight, data, tmp_path, moment, tool)


@needs_tmpfs
@pytest.mark.slow
@pytest.mark.parametrize(("moment", "tool"), DISK_EVERY)
def test_a_full_disk_at_any_moment_loses_nothing_every_tool(straight, data, tmp_path, moment, tool):
    disk_full_case(straight, data, tmp_path, moment, tool)
