"""Deployment (docs/deployment.md): every registered model exports with a dynamic batch, height and width and matches
eager in onnxruntime and OpenVINO at three shapes; PeleeNet and Pelee in ExecuTorch (XNNPACK); int8 files calibrated
on images keep the float model's outputs; tools/export.py on a run reports the int8 metric; bad input is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAMILIES, run_training_tool, tiny_kwargs, tiny_model
from PIL import Image

import densebackbones as db
from densebackbones.export import ExportInfo, check_shapes, export_model, fuse_batchnorm, input_spec
from densebackbones.quantize import calibration_images, image_transform, quantize_file
from densebackbones.runtimes import OpenVinoRuntime, compare_with_eager, open_runtime, smallest_runnable_size

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import export as export_tool  # noqa: E402
import train_cls  # noqa: E402

pytestmark = pytest.mark.integration


def _export_and_check(model, path, fmt, name, **kwargs):
    exported, info = export_model(model, path, fmt, name=name, **kwargs)
    runtime = open_runtime(path)
    in_chans, _, typical = input_spec(model)
    smallest, _ = smallest_runnable_size(runtime, in_chans, info.min_size, max(typical))
    checks = compare_with_eager(exported, runtime, check_shapes(smallest, info.max_size, typical, in_chans))
    return exported, info, checks, smallest


# One model per family in `make test`; the other registered variants (same code, other sizes) under -m slow.
REGISTRY = [pytest.param(n, marks=[] if n in FAMILIES.values() else [pytest.mark.slow]) for n in db.list_models()]


@pytest.mark.parametrize("name", REGISTRY)
def test_every_registered_model_exports_with_dynamic_shapes_to_onnxruntime_and_openvino(tmp_path, name):
    """One ONNX file per model, dynamic batch/height/width from the model's min_input_size; onnxruntime at the
    smallest size, an odd non-square one and the typical one, and OpenVINO reading the same file (its CPU plug-in
    may start higher: smallest_runnable_size)."""
    model = tiny_model(name, "buffer").eval()  # the default memory mode, what users export
    exported, info, checks, smallest = _export_and_check(model, tmp_path / f"{name}.onnx", "onnx", name)
    in_chans, minimum, typical = input_spec(model)
    assert smallest == info.min_size == minimum  # onnxruntime runs everything PyTorch runs
    assert [c["shape"][2] for c in checks][0] == minimum and len(checks) == 3
    assert all(c["max_rel_error"] < 1e-4 for c in checks)
    openvino = OpenVinoRuntime(tmp_path / f"{name}.onnx")
    smallest_ov, _ = smallest_runnable_size(openvino, in_chans, minimum, max(typical))
    compare_with_eager(exported, openvino, check_shapes(smallest_ov, info.max_size, typical, in_chans))


@pytest.mark.parametrize("name", ["peleenet", "pelee"])
def test_peleenet_and_pelee_run_in_executorch_with_dynamic_shapes(tmp_path, name):
    model = tiny_model(name, "plain").eval()
    _, info, checks, _ = _export_and_check(model, tmp_path / f"{name}.pte", "executorch", name, max_size=320)
    assert info.max_batch == 8 and info.max_size == 320 and len(checks) == 3
    runtime = open_runtime(tmp_path / f"{name}.pte")
    assert runtime(torch.randn(8, 3, info.min_size, info.min_size))[0].shape[0] == 8  # the largest batch runs
    if name == "pelee":  # a detector's file returns its default boxes for the input's size
        assert info.outputs == ["loc", "conf", "priors"]


@pytest.mark.slow  # five minutes over all families: `make test-all`; PeleeNet and Pelee above run in CI
@pytest.mark.parametrize("name", sorted(FAMILIES.values()))
def test_every_family_runs_in_executorch_with_dynamic_shapes(tmp_path, name):
    model = tiny_model(name, "buffer").eval()
    _, smallest, typical = input_spec(model)
    _, info, checks, runnable = _export_and_check(
        model, tmp_path / f"{name}.pte", "executorch", name, max_size=max(640, 2 * smallest, *typical)
    )
    assert runnable == info.min_size == smallest and len(checks) == 3


def test_detector_files_return_the_default_boxes_of_each_size(tmp_path):
    model = tiny_model("dsod300", "plain").eval()
    export_model(model, tmp_path / "dsod.onnx", "onnx", name="dsod300")
    runtime = open_runtime(tmp_path / "dsod.onnx")
    for height, width in [(300, 300), (171, 23), (64, 96)]:
        loc, conf, priors = runtime(torch.randn(1, 3, height, width))
        torch.testing.assert_close(priors, model.priors_for(height, width))  # the eager cache's boxes
        assert loc.shape[1] == conf.shape[1] == priors.shape[0]


def test_features_only_backbone_exports_named_levels(tmp_path):
    model = db.create_model("densenet_bc121_k32", features_only=True, **tiny_kwargs("densenet_bc121_k32")).eval()
    _, info, checks, _ = _export_and_check(model, tmp_path / "f.onnx", "onnx", "densenet_bc121_k32")
    assert info.outputs == [n.replace(".", "_") for n in model.feature_info.module_name()]
    import onnx

    assert [o.name for o in onnx.load(str(tmp_path / "f.onnx")).graph.output] == info.outputs


def test_fused_models_run_with_gradients_enabled_in_every_memory_mode():
    # fuse_batchnorm left conv1's in-place ReLU on a tensor the memory-efficient routes recompute as a graph leaf:
    # "a leaf Variable that requires grad is being used in an in-place operation" outside torch.no_grad()
    x = torch.randn(2, 3, 32, 32)
    for mode in ("plain", "buffer", "efficient"):
        model = tiny_model("densenet_bc121_k32", mode).eval()
        torch.testing.assert_close(fuse_batchnorm(model)(x), model(x), rtol=1e-4, atol=1e-5)


def test_inputs_outside_the_exported_range_are_refused_in_one_line(tmp_path):
    model = tiny_model("densenet_bc121_k32", "plain").eval()
    export_model(model, tmp_path / "m.onnx", "onnx", name="densenet_bc121_k32", max_size=64)
    runtime = open_runtime(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"input 1x3x65x40 is outside .* 32\.\.64 px\); resize the images, or export"):
        runtime(torch.randn(1, 3, 65, 40))
    with pytest.raises(ValueError, match=r"outside .* 3 channels.*\); give 3-channel images$"):
        runtime(torch.randn(1, 1, 40, 40))
    with pytest.raises(ValueError, match=r"input 1025x3x40x40 .*; split the batch into calls of at most 1024 images$"):
        runtime(torch.zeros(1025, 3, 40, 40))
    info = ExportInfo.load(tmp_path / "m.onnx")
    assert (info.min_size, info.max_size, info.outputs) == (32, 64, ["output"])


def test_export_errors(tmp_path):
    model = tiny_model("densenet_bc121_k32", "plain").eval()
    with pytest.raises(ValueError, match=r"a openvino file is named \*\.xml"):
        export_model(model, tmp_path / "m.onnx", "openvino")
    with pytest.raises(ValueError, match="takes inputs of at least 32x32 px"):
        export_model(model, tmp_path / "m.onnx", "onnx", min_size=16)
    with pytest.raises(ValueError, match="format 'tflite'"):
        export_model(model, tmp_path / "m.tflite", "tflite")
    with pytest.raises(ValueError, match="no runtime reads"):
        open_runtime(tmp_path / "m.tflite")


def _write_images(folder: Path, count: int, size: int = 40) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):  # smooth images with structure: a gradient plus a random blob per image
        y, x = np.mgrid[0:size, 0:size]
        cy, cx = rng.uniform(0, size, 2)
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 60.0)
        image = np.stack([x / size, y / size, blob], -1) * 255
        Image.fromarray(image.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.parametrize("fmt, suffix", [("openvino", ".xml"), ("onnx", ".onnx")])
def test_int8_files_keep_the_float_outputs(tmp_path, fmt, suffix):
    torch.manual_seed(0)
    model = db.create_model("densenet_bc100_k12_cifar", num_classes=10, growth_rate=4, block_config=(2, 2, 2))
    folder = _write_images(tmp_path / "calib", 24)
    transform = image_transform((32, 32), 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    images = calibration_images(folder, 24, transform)
    model.train()
    with torch.no_grad():  # BatchNorm statistics of these images: activations in the ranges int8 must cover
        model(torch.cat(images))
    model.eval()
    exported, _ = export_model(model, tmp_path / f"m{suffix}", fmt, name="tiny", img_size=(32, 32))
    info = quantize_file(tmp_path / f"m{suffix}", tmp_path / f"m-int8{suffix}", images)
    assert info.int8 and ExportInfo.load(tmp_path / f"m-int8{suffix}").int8
    batch = torch.cat(images[:8])
    with torch.no_grad():
        expected = exported(batch)
    got = open_runtime(tmp_path / f"m-int8{suffix}")(batch)[0]
    error = float((got - expected).norm() / expected.norm())
    assert error < 0.1, f"int8 logits differ by {error:.3f} of their norm"
    assert float((got - expected).abs().max()) > 0  # it is a different (quantized) computation


def test_calibration_and_quantization_errors(tmp_path):
    transform = image_transform((32, 32), 3, (0.5,) * 3, (0.25,) * 3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no images .* point --calib at a folder"):
        calibration_images(tmp_path / "empty", 10, transform)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        calibration_images(tmp_path / "missing", 10, transform)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match="calibration image .*broken.png cannot be read"):
        calibration_images(tmp_path / "bad", 10, transform)
    with pytest.raises(ValueError, match="int8 quantization takes OpenVINO"):
        quantize_file(tmp_path / "m.pte", tmp_path / "q.pte", [torch.zeros(1, 3, 32, 32)])


def test_export_tool_on_a_run_reports_the_int8_metric_and_enforces_max_drop(tmp_path, capsys):
    run = tmp_path / "run"
    tiny = ["model.growth_rate=4", "model.block_config=(1,1,1)", "data.num_workers=0"]
    run_training_tool(train_cls, str(REPO / "configs/cls/densenet_bc_digits.py"), run, *tiny, "schedule.epochs=1",
                      "train.max_iters_per_epoch=3")  # fmt: skip
    argv = [str(run), "--format", "openvino", "--output", str(tmp_path / "d.xml"), "--int8", "--calib-images", "32"]
    result = export_tool.main(export_tool.get_args_parser().parse_args(argv))
    report = result["int8"]
    assert report["metric"] == "top1" and set(report["pytorch"]) == {"top1", "top5", "loss"}
    assert report["drop"] == pytest.approx(report["pytorch"]["top1"] - report["int8"]["top1"], abs=1e-3)
    assert report["agreement_fp32_runtime"] == 100.0 and 0 <= report["agreement_int8"] <= 100
    assert json.loads((tmp_path / "d-int8.xml.json").read_text())["int8"] is True
    # an impossible threshold fails naming the model, runtime and what to do
    with pytest.raises(ValueError, match=r"int8 densenet_bc100_k12_cifar \(openvino\) loses .*--max-drop -1\)"):
        export_tool.main(export_tool.get_args_parser().parse_args([*argv, "--max-drop", "-1"]))
    with pytest.raises(ValueError, match="--int8 quantizes OpenVINO and ONNX"):
        export_tool.main(export_tool.get_args_parser().parse_args(
            [str(run), "--format", "executorch", "--output", str(tmp_path / "d.pte"), "--int8"]
        ))  # fmt: skip


def test_export_tool_on_a_model_name_calibrates_on_a_folder_and_measures_agreement(tmp_path):
    calib, val = _write_images(tmp_path / "calib", 8), _write_images(tmp_path / "val", 6)
    argv = ["densenet_bc100_k12_cifar", "--format", "onnx", "--output", str(tmp_path / "m.onnx"), "--max-size", "64"]
    argv += ["--int8", "--calib", str(calib), "--calib-images", "8", "--val", str(val), "--val-images", "6"]
    report = export_tool.main(export_tool.get_args_parser().parse_args(argv))["int8"]
    assert report["metric"] == "agreement" and report["agreement_fp32_runtime"] == 100.0
    assert report["drop"] == pytest.approx(100.0 - report["agreement_int8"])
    assert (tmp_path / "m-int8.onnx").is_file() and ExportInfo.load(tmp_path / "m-int8.onnx").int8
    # the int8 options' errors come before the export: no file is written
    empty = tmp_path / "empty"
    empty.mkdir()
    early = [
        (["--int8"], ValueError, "--int8 needs calibration images: pass --calib DIR"),
        (["--int8", "--calib", str(tmp_path / "none")], FileNotFoundError, "--calib .*none: not a folder"),
        (["--int8", "--calib", str(calib), "--max-drop", "1"], ValueError, "--max-drop for a model name .* --val DIR"),
        (["--int8", "--calib", str(calib), "--val", str(empty)], ValueError, "--val .* holds no images"),
        (["--max-drop", "1"], ValueError, "int8 options: add --int8"),
    ]
    for extra, error, message in early:
        output = tmp_path / "early.onnx"
        with pytest.raises(error, match=message):
            export_tool.main(export_tool.get_args_parser().parse_args([*argv[:4], str(output), *argv[5:7], *extra]))
        assert not output.exists()


def test_smallest_runnable_size_searches_up_and_reports_the_runtimes_message(tmp_path):
    class FailsBelow20(OpenVinoRuntime):  # a runtime that lacks what PyTorch runs below 20 px
        def __init__(self) -> None:
            self.path, self.name, self.calls = tmp_path / "m.xml", "openvino", []

        def _run(self, images):
            self.calls.append(images.shape[-1])
            if images.shape[-1] < 20:
                raise RuntimeError(f"kernel larger than the map at {images.shape[-1]}")
            return [images]

    runtime = FailsBelow20()
    assert smallest_runnable_size(runtime, 3, 4, 64) == (20, "kernel larger than the map at 19")
    assert len(runtime.calls) == len(set(runtime.calls))  # no size is run twice
    assert smallest_runnable_size(runtime, 3, 32, 64) == (32, "")
    with pytest.raises(ValueError, match=r"openvino cannot run the model at 10x10 px .*--format executorch or onnx$"):
        smallest_runnable_size(runtime, 3, 4, 10)
