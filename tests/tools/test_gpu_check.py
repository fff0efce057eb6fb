"""tools/gpu_check.py (``make gpu-check``): its dry form runs every step on the CPU here, so the script that a GPU
machine runs cannot rot; a failing or hanging step fails the run and is named in the log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import gpu_check  # noqa: E402

# Training runs and tool runs: left out of `make test-fast`, run by `make test`.
pytestmark = pytest.mark.integration


def _run(*argv: str) -> int:
    return gpu_check.main(gpu_check.get_args_parser().parse_args(list(argv)))


def test_dry_run_passes_every_step(tmp_path):
    log = tmp_path / "gpu-check.log"
    assert _run("--dry-run", "--log", str(log)) == 0
    text = log.read_text()
    summary = text.split("## Summary")[1]
    names = [name for name, _ in gpu_check.plan_steps("cpu", tmp_path)]
    assert len(names) == 8 and all(f"| {name} | ok |" in summary for name in names)
    assert "densebackbones.heads from " in text and "/site/densebackbones/heads/" in text  # the bare-machine layout
    assert " skipped" in text  # the GPU tests were collected (and skipped on the CPU)
    assert "| densenet_bc100_k12_cifar | train | ours:buffer |" in text  # the benchmark table
    for tool in ("train_cls", "train_seg", "train_det"):
        assert f"tools/{tool}.py" in text and "train.amp=bf16" in text
    assert "configs/det/pelee_shapes.py" in text and "configs/cls/condensenet_digits.py" in text
    assert "configs/cls/msdnet_digits.py" in text


def test_failed_and_hanging_steps_fail_the_run(tmp_path, monkeypatch):
    steps = [
        ("passes", [sys.executable, "-c", "print('fine')"]),
        ("fails", [sys.executable, "-c", "raise SystemExit(3)"]),
        ("hangs", [sys.executable, "-c", "import time; time.sleep(60)"]),
    ]
    monkeypatch.setattr(gpu_check, "plan_steps", lambda device, work, benchmark=True: steps)
    log = tmp_path / "log.md"
    assert _run("--dry-run", "--log", str(log), "--step-timeout", "3") == 1
    summary = log.read_text().split("## Summary")[1]
    assert "| passes | ok |" in summary and "| fails | FAILED (exit 3) |" in summary
    assert "| hangs | FAILED (timed out after 3 s) |" in summary


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_points_to_the_dry_run(tmp_path, capsys):
    assert _run("--log", str(tmp_path / "log")) == 2
    assert "CUDA is not available here; run with --dry-run" in capsys.readouterr().err
