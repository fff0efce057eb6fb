"""Device and precision settings: a missing GPU, a GPU without bfloat16 and an unknown memory mode are named with
their fix before any model or data is built (the CUDA paths themselves: test_cuda_contracts.py and ``-m gpu``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_training_tool

from densebackbones.engine.distributed import amp_dtype, resolve_device
from densebackbones.tasks.classification import ClassificationTask

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import train_cls  # noqa: E402

DIGITS_CFG = str(REPO / "configs/cls/densenet_bc_digits.py")


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def old_gpu(monkeypatch):  # a Volta-class GPU: CUDA present, no bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")


def test_auto_and_cpu_devices(no_cuda):
    assert resolve_device("auto") == resolve_device(None) == resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_names_the_fix(no_cuda, device):
    with pytest.raises(ValueError, match=rf"train.device='{device}' but CUDA is not available.*train.device=cpu"):
        resolve_device(device)


def test_unknown_device_and_missing_gpu_index(old_gpu):
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="only 'auto', 'cpu', 'cuda'"):
        resolve_device("meta")
    with pytest.raises(ValueError, match=r"only 1 CUDA device\(s\) are visible"):
        resolve_device("cuda:1")
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)


def test_amp_settings(old_gpu):
    assert amp_dtype(None, torch.device("cpu")) is None
    assert amp_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert amp_dtype("fp16", torch.device("cuda", 0)) is torch.float16
    with pytest.raises(ValueError, match="Tesla V100.*no bfloat16 support; use train.amp=fp16"):
        amp_dtype("bf16", torch.device("cuda", 0))
    with pytest.raises(ValueError, match="train.amp must be None, 'bf16' or 'fp16', got 'bf17'"):
        amp_dtype("bf17", torch.device("cpu"))


def _fail_on_data(monkeypatch):
    """Make building the data sets an error, so a test shows its error came before any data was loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("data was loaded before the settings were checked")

    monkeypatch.setattr(ClassificationTask, "build_datasets", refuse)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("train.device=cuda", "CUDA is not available"),
        ("train.amp=bf17", "config key train.amp='bf17': is not one of None, 'bf16', 'fp16'"),
        ("model.memory_mode='fast'", "unknown memory_mode 'fast'; use 'plain'"),
    ],
)
def test_training_tool_checks_settings_before_data(option, message, tmp_path, monkeypatch, no_cuda):
    _fail_on_data(monkeypatch)
    with pytest.raises(ValueError, match=message):
        run_training_tool(train_cls, DIGITS_CFG, tmp_path / "run", option)
    assert not (tmp_path / "run").exists()


def test_gpu_without_bf16_is_refused_before_data(tmp_path, monkeypatch, old_gpu):
    _fail_on_data(monkeypatch)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    with pytest.raises(ValueError, match="use train.amp=fp16"):
        run_training_tool(train_cls, DIGITS_CFG, tmp_path / "run", "train.device=cuda", "train.amp=bf16")


@pytest.mark.integration
def test_benchmark_device_error_is_one_line():
    command = [sys.executable, str(REPO / "tools/benchmark.py"), "--device", "cuda:7"]
    result = subprocess.run(command, capture_output=True, text=True, env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: --device='cuda:7' but CUDA is not available")
