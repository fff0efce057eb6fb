"""tools/benchmark.py builds torchvision's and timm's equivalents of our models and reports side-by-side ratios."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

import densebackbones as db

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import benchmark  # noqa: E402

# Training runs and tool runs: left out of `make test-fast`, run by `make test`.
pytestmark = pytest.mark.integration


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("impl", ["torchvision", "torchvision:checkpoint", "timm", "timm:checkpoint"])
@pytest.mark.parametrize("name", ["densenet_bc100_k12_cifar", "densenet_bc121_k32"])
def test_reference_models_have_our_parameter_count(impl, name):
    assert _params(benchmark.build_reference(impl, name)) == _params(db.create_model(name))


def test_reference_refuses_models_it_cannot_build():
    with pytest.raises(SystemExit, match="DenseNet-BC only"):
        benchmark.build_reference("torchvision", "densenet40_k12_cifar")


def test_comparison_reports_ratios_to_the_first_implementation(tmp_path, capsys):
    args = benchmark.get_args_parser().parse_args(
        [
            "--models",
            "densenet_bc100_k12_cifar",
            "--batch-size",
            "2",
            "--img-size",
            "8",
            "--modes",
            "train",
            "--impls",
            "torchvision",
            "ours:efficient",
            "--iters",
            "1",
            "--warmup",
            "1",
            "--memory-iters",
            "1",
            "--append",
            str(tmp_path / "bench.md"),
        ]
    )
    rows = benchmark.main(args)
    assert [r["impl"] for r in rows] == ["torchvision", "ours:efficient"]
    assert rows[0]["speed"] == rows[0]["memory"] == 1.0
    assert all(r["sec"] > 0 and r["peak_mb"] > 0 for r in rows)
    assert rows[1]["speed"] == pytest.approx(rows[0]["sec"] / rows[1]["sec"])  # one round: its ratio
    assert rows[1]["speed_min"] == rows[1]["speed"] == rows[1]["speed_max"]
    written = (tmp_path / "bench.md").read_text()
    assert "| densenet_bc100_k12_cifar | train | ours:efficient |" in written and "--impls" in written


def test_model_kwargs_change_only_our_models():
    args = benchmark.get_args_parser().parse_args(
        ["--impls", "torchvision", "ours:plain", "--model-kwargs", '{"block_config": [2, 2, 2]}', "--skip-timing"]
    )
    with pytest.raises(SystemExit, match="--model-kwargs changes our models only"):
        benchmark.main(args)


def test_memory_only_comparison_leaves_the_timing_columns_empty(capsys):
    args = benchmark.get_args_parser().parse_args(
        "--impls torchvision ours:efficient --modes train --batch-size 2 --img-size 8 --memory-iters 1 "
        "--skip-timing".split()
    )
    rows = benchmark.main(args)
    assert [r["sec"] for r in rows] == [None, None] and "speed" not in rows[1]
    assert rows[0]["memory"] == 1.0 and rows[1]["memory"] == pytest.approx(rows[1]["peak_mb"] / rows[0]["peak_mb"])
    table = capsys.readouterr().out
    assert f"| ours:efficient | - | - | {rows[1]['peak_mb']:.0f} | - | - | {rows[1]['memory']:.2f}x |" in table
    assert "nan" not in table and "median of" not in table


def test_speed_is_the_median_of_per_round_ratios():
    # Round 2 ran while the machine was slow for both: its ratio (1.25) counts like the others. The ratio of the
    # median steps (4.0 / 1.82 = 2.2) would pair steps of different rounds.
    base, times = [2.0, 10.0, 4.0], [1.0, 8.0, 1.0 / 0.55]
    ratios = benchmark.speed_ratios(base, times)
    assert ratios["speed"] == pytest.approx(2.0)
    assert ratios["speed_min"] == pytest.approx(1.25) and ratios["speed_max"] == pytest.approx(2.2)


def test_profile_prints_the_requested_number_of_operators(capsys):
    args = benchmark.get_args_parser().parse_args(
        ["--batch-size", "2", "--img-size", "8", "--iters", "1", "--warmup", "1", "--profile", "--profile-rows", "3"]
    )
    args.model, args.mode = "densenet_bc100_k12_cifar", "train"
    benchmark.measure_time(args, [None])
    table = capsys.readouterr().err
    assert "## densenet_bc100_k12_cifar train buffer" in table
    rows = [line for line in table.splitlines() if "%" in line and "Self CPU %" not in line]  # operator rows
    assert len(rows) == 3


@pytest.mark.parametrize(
    ("impl", "channels_last"),
    [
        ("ours:buffer", True),  # our CPU default: channels_last blocks for an NCHW input
        ("ours:buffer:input-layout", False),
        ("torchvision", False),
        ("torchvision:channels_last", True),
        ("timm:channels_last", True),
    ],
)
def test_layout_variants_run_their_blocks_in_the_layout_they_name(impl, channels_last):
    args = benchmark.get_args_parser().parse_args(["--batch-size", "2", "--img-size", "8"])
    args.model, args.mode = "densenet_bc100_k12_cifar", "train"
    model, step = benchmark.build(args, impl)
    seen = []
    model.features.denseblock2.register_forward_hook(lambda module, inputs, output: seen.append(output))
    step()
    out = seen[0]
    assert out.is_contiguous(memory_format=torch.channels_last) is channels_last
    assert out.is_contiguous() is not channels_last
    other = db.create_model("densenet_bc100_k12_cifar")  # a setting of that model, not of the process
    assert all(block.cpu_channels_last for block in other.modules() if hasattr(block, "cpu_channels_last"))


@pytest.mark.parametrize(
    ("impl", "compiled"),
    [("torchvision:compile", True), ("timm:compile", True), ("ours:plain:compile", True), ("ours:buffer", False)],
)
def test_compile_variants_compile_their_model_only(monkeypatch, impl, compiled):
    compiled_models = []

    def fake_compile(model, **kwargs):  # records what would be compiled; Inductor itself is too slow for CI
        compiled_models.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    args = benchmark.get_args_parser().parse_args(["--batch-size", "2", "--img-size", "8"])
    args.model, args.mode = "densenet_bc100_k12_cifar", "train"
    model, step = benchmark.build(args, impl)
    step()
    assert compiled_models == ([model] if compiled else [])
    if impl.startswith("ours"):
        assert model.features.denseblock1.memory_mode == impl.split(":")[1]


def test_segmentation_inference_specs_and_a_whole_against_slide_comparison(capsys):
    assert benchmark.seg_inference("slide:64x80:32").crop == (64, 80)
    assert benchmark.seg_inference("whole").mode == "whole"
    for bad in ("slide:64", "tiles", "whole:64", "slide:32:64", "slide:a:b"):
        with pytest.raises(argparse.ArgumentTypeError, match="'whole' or 'slide:CROP:STRIDE'"):
            benchmark.seg_inference(bad)
    argv = "--models fc_densenet56 --modes eval --batch-size 1 --img-size 64 96 --seg-inference whole slide:64:32"
    argv = [*argv.split(), "--iters", "1", "--warmup", "0", "--memory-iters", "1"]
    rows = benchmark.main(benchmark.get_args_parser().parse_args(argv))
    assert [r["impl"] for r in rows] == ["ours:buffer#whole", "ours:buffer#slide:64:32"]
    assert rows[0]["speed"] == 1.0 and rows[1]["sec"] > 0 and "64x96px" in capsys.readouterr().out


@pytest.mark.integration
def test_runtime_table_times_each_runtime_against_eager(tmp_path, capsys):
    kwargs = '{"growth_rate": 4, "block_config": [1, 1, 1]}'
    argv = ["--runtimes", "eager", "onnx", "openvino-int8", "--models", "densenet_bc100_k12_cifar", "--batch-size", "4"]
    argv += ["--iters", "2", "--warmup", "1", "--model-kwargs", kwargs, "--calib-images", "4"]
    argv += ["--append", str(tmp_path / "table.md")]
    rows = benchmark.main(benchmark.get_args_parser().parse_args(argv))
    assert [r["runtime"] for r in rows] == ["eager", "onnx", "openvino-int8"]
    assert rows[0]["vs_eager"] == 1.0 and all(r["latency_ms"] > 0 and r["img_s"] > 0 for r in rows)
    assert rows[1]["img_s"] / rows[0]["img_s"] == pytest.approx(rows[1]["vs_eager"])
    table = (tmp_path / "table.md").read_text()
    assert "| densenet_bc100_k12_cifar | 32x32 | openvino-int8 |" in table and "--runtimes eager onnx" in table
