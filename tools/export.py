"""Export a registered model, or a finished run, to ONNX, OpenVINO or ExecuTorch, check it against PyTorch, and
optionally quantize it to int8 with its accuracy measured.

python tools/export.py MODEL_OR_RUN --format onnx|openvino|executorch --output FILE [--checkpoint W]
    [--num-classes N] [--in-chans C] [--features-only [--out-indices 1 2 3]] [--img-size H [W]]
    [--min-size S] [--max-size S] [--no-fuse] [--rtol R] [--atol A]
    [--int8 --calib DIR --calib-images N] [--val DIR] [--val-images N] [--max-drop POINTS] [--data-root DIR]
    [--threads N] [--debug]

MODEL_OR_RUN is a registered model name (densebackbones.list_models()) or a finished run's work dir (its
``config.py`` and ``final.safetensors``, and ``final.json`` for its input size and normalisation: the run's model
with its weights). The file takes a batch of 1 to 1024 images (ExecuTorch: 8) of any height and width from the
model's ``min_input_size`` (or ``--min-size``) to ``--max-size``; a JSON description is written beside it
(``FILE.json``, e.g. ``model.onnx.json``), which the runtimes use to refuse inputs outside that range. The file is
compared with PyTorch at three input shapes (the smallest, an odd non-square one, the model's typical size); the
relative errors are printed and a mismatch names the shape.

``--int8`` (OpenVINO: NNCF; ONNX: onnxruntime's static QDQ quantization) calibrates on ``--calib-images`` images of
``--calib`` (a run: its training split when ``--calib`` is not given) and writes ``FILE`` with ``-int8`` before its
suffix beside the float file. Its accuracy is then measured next to the float model's: for a run, the task's metric
on its evaluation split and the agreement of the top-1 class (pixel class for segmentation) with PyTorch; for a
model name, the agreement on ``--val`` images. ``--max-drop P`` fails the command when the int8 model's metric
(agreement for a model name) is more than P points below the float model's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)
import torch

import densebackbones as db
from densebackbones.engine import cli, evaluate_record, init_distributed
from densebackbones.engine.config import check_config, load_config, merge_defaults
from densebackbones.engine.trainer import evaluation_loader
from densebackbones.export import FORMATS, ExportInfo, check_shapes, export_model, input_spec
from densebackbones.models.helpers import InputChannelsMismatch, load_checkpoint_into, trained_head_required
from densebackbones.quantize import calibration_images, image_paths, image_transform, quantize_file
from densebackbones.runtimes import RuntimeModel, compare_with_eager, open_runtime, smallest_runnable_size
from densebackbones.tasks import ClassificationTask, DetectionTask, SegmentationTask

TASKS = (ClassificationTask, SegmentationTask, DetectionTask)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export a dense model (ONNX, OpenVINO, ExecuTorch), check it, int8")
    parser.add_argument("model", help="a registered model name, or a finished run's work dir")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--output", required=True, help=f"the file to write ({', '.join(FORMATS.values())})")
    parser.add_argument("--checkpoint", help="weights for a model name (a training checkpoint or a state_dict)")
    parser.add_argument("--num-classes", type=int, help="classifier size of a model name (default: the model's)")
    parser.add_argument("--in-chans", type=int, help="input channels of a model name (default: the model's)")
    parser.add_argument("--features-only", action="store_true", help="a backbone's feature maps, named outputs")
    parser.add_argument("--out-indices", type=int, nargs="+", help="with --features-only: the levels")
    parser.add_argument("--img-size", type=int, nargs="+", help="the traced example's size (default: typical)")
    parser.add_argument("--min-size", type=int, help="smallest height and width (default: the model's minimum)")
    parser.add_argument("--max-size", type=int, help="largest height and width (default 8192; ExecuTorch 1024)")
    parser.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers separate")
    parser.add_argument("--rtol", type=float, default=1e-4, help="tolerance relative to each value (1e-4)")
    parser.add_argument("--atol", type=float, default=1e-4, help="tolerance, a fraction of the outputs' scale")
    parser.add_argument("--threads", type=int, help="runtime threads (default: PyTorch's)")
    parser.add_argument("--int8", action="store_true", help="also write an int8 file (OpenVINO or ONNX)")
    parser.add_argument("--calib", help="folder of calibration images (default for a run: its training split)")
    parser.add_argument("--calib-images", type=int, default=300, help="calibration images (default 300)")
    parser.add_argument("--val", help="model name: folder of images to measure the int8 agreement on")
    parser.add_argument("--val-images", type=int, default=500, help="images the int8 agreement is measured on")
    parser.add_argument("--max-drop", type=float, help="fail when int8 loses more than this many points")
    parser.add_argument("--data-root", help="a run's data root, when not where it trained")
    parser.add_argument("--debug", action="store_true", help="full tracebacks on errors")
    return parser


# ------------------------------------------------------------------------------------------------ the model
def run_record(work_dir: Path, data_root: str | None, training: bool) -> tuple[Any, dict[str, Any], Any]:
    """(task record with the run's final weights, resolved config, task) of a finished run's work dir."""
    weights, config = work_dir / "final.safetensors", work_dir / "config.py"
    for path in (weights, config):
        if not path.is_file():
            raise FileNotFoundError(
                f"{work_dir} has no {path.name}: pass a finished run's work dir (tools/train_*.py writes "
                f"final.safetensors at the end), or a registered model name"
            )
    raw = load_config(config).to_dict()
    task = run_task(raw, work_dir)
    cfg = merge_defaults(raw, task.data_defaults)
    if data_root:
        cfg["data"]["root"] = data_root
    with trained_head_required():  # the run's own head, never a fresh one
        record = task.build(cfg, pretrained=str(weights), training=training)
    return record, cfg, task


def run_task(raw: dict[str, Any], work_dir: Path) -> Any:
    """The task whose config a run's resolved ``config.py`` is: the one task that accepts all its keys and values
    (each task refuses the others' data keys and data sets)."""
    accepted = []
    for task in (cls() for cls in TASKS):
        try:
            check_config(raw, task.model_arg_names(raw), task.data_defaults, task.data_choices)
        except (ValueError, KeyError, TypeError):
            continue
        accepted.append(task)
    if len(accepted) != 1:
        found = [type(t).__name__ for t in accepted] or "none"
        raise ValueError(f"{work_dir}/config.py: not the config of one task (accepted by: {found})")
    return accepted[0]


def _load(model: torch.nn.Module, path: str) -> None:
    """The checkpoint's weights exactly: its first convolution is never adapted to other input channels, and its
    head must fit (no fresh classifier)."""
    inner = getattr(model, "model", model)  # a features_only wrapper keeps the model as .model
    with trained_head_required():
        if hasattr(inner, "load_pretrained"):  # the family's own key remapping (torchvision's legacy names...)
            inner.load_pretrained(path, adapt_in_chans=False)
        else:
            load_checkpoint_into(inner, path, adapt_in_chans=False)


def named_model(args: argparse.Namespace) -> torch.nn.Module:
    """A registered model (``--features-only``: its feature extractor) with ``--checkpoint``'s weights; the file is
    what the checkpoint is: a checkpoint of 1-channel images gives a 1-channel model, and an ``--in-chans`` that
    contradicts it is an error, never an adaptation."""
    kwargs: dict[str, Any] = {k: v for k, v in (("num_classes", args.num_classes), ("in_chans", args.in_chans)) if v}
    if args.features_only:
        kwargs["features_only"] = True
        if args.out_indices:
            kwargs["out_indices"] = tuple(args.out_indices)
    elif args.out_indices:
        raise ValueError("--out-indices picks feature levels: add --features-only")
    model = db.create_model(args.model, **kwargs)
    if args.checkpoint:
        try:
            _load(model, args.checkpoint)
        except InputChannelsMismatch as err:
            if args.in_chans is not None:
                raise ValueError(f"{err} (--in-chans {args.in_chans} contradicts the checkpoint)") from None
            print(f"the checkpoint takes {err.checkpoint_in_chans}-channel input: exporting that model")
            model = db.create_model(args.model, **dict(kwargs, in_chans=err.checkpoint_in_chans))
            _load(model, args.checkpoint)
    return model.eval()


# ------------------------------------------------------------------------------------------------ accuracy
@torch.no_grad()
def agreement(model: torch.nn.Module, other: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    """Percentage of top-1 classes (per image, or per pixel for dense outputs) on which ``other`` agrees with
    ``model``."""
    same = total = 0
    for images in batches:
        a, b = model(images), other(images)
        if not isinstance(a, torch.Tensor):
            raise ValueError("agreement compares single-output models (classifiers, segmenters); use the run's metric")
        same += int((a.argmax(1) == b.argmax(1)).sum())
        total += a.argmax(1).numel()
    return 100.0 * same / max(total, 1)


def run_batches(record: Any, count: int, split: str) -> list[torch.Tensor]:
    """The first ``count`` images of a record's split, as the evaluation loader batches them (calibration: the
    training split; agreement: the evaluation split)."""
    dataset = record.train_set if split == "train" else record.eval_set
    info = distributed_info()
    loader = evaluation_loader(dataset, 16, info, 0, record.collate_fn)
    batches, seen = [], 0
    for inputs, _ in loader:
        batches.append(inputs[: count - seen])
        seen += len(batches[-1])
        if seen >= count:
            break
    return batches


def distributed_info() -> Any:
    return init_distributed("cpu")  # one process: the runtimes run on the CPU


def int8_report(args, exported, fp32_path, int8_path, record, cfg) -> dict[str, Any]:
    fp32_model, int8_model = (RuntimeModel(open_runtime(p, args.threads)) for p in (fp32_path, int8_path))
    report: dict[str, Any] = {}
    if record is not None:
        output = getattr(record.model, "output", None)
        dist = distributed_info()
        for label, model in (("pytorch", record.model.eval()), ("int8", int8_model)):
            if output is not None:
                model.output = output
            metrics = evaluate_record(dataclasses.replace(record, model=model), cfg, dist, show_progress=False)
            report[label] = {k: round(v, 4) for k, v in record.shown(metrics).items()}
        metric = record.best_key
        report["metric"] = metric
        report["drop"] = round(report["pytorch"][metric] - report["int8"][metric], 4)
        if len(fp32_model.runtime.info.outputs) != 1:  # detectors: the metric only
            return report
        batches = run_batches(record, args.val_images, "eval")
    else:
        if not args.val:
            print("int8: no --val images, so no agreement is measured", file=sys.stderr)
            return report
        in_chans, _, size = input_spec(exported)
        info = fp32_model.runtime.info
        transform = image_transform(_img_size(args) or size, in_chans, info.mean, info.std)
        batches = calibration_images(args.val, args.val_images, transform)
        report["metric"] = "agreement"
    report["agreement_fp32_runtime"] = round(agreement(exported, fp32_model, batches), 3)
    report["agreement_int8"] = round(agreement(exported, int8_model, batches), 3)
    if record is None:
        report["drop"] = round(100.0 - report["agreement_int8"], 4)
    return report


def _img_size(args: argparse.Namespace) -> tuple[int, int] | None:
    if args.img_size is None:
        return None
    if len(args.img_size) not in (1, 2):
        raise ValueError(f"--img-size takes a side or HEIGHT WIDTH, got {args.img_size}")
    return (args.img_size[0], args.img_size[-1])


def check_int8_options(args: argparse.Namespace, is_run: bool) -> None:
    """The int8 options' errors, before the export (minutes for big models) rather than after it."""
    if not args.int8:
        if args.calib or args.val or args.max_drop is not None:
            raise ValueError("--calib, --val and --max-drop are int8 options: add --int8")
        return
    if args.calib:
        image_paths(args.calib, "--calib")
    elif not is_run:
        raise ValueError("--int8 needs calibration images: pass --calib DIR (images like the ones you deploy on)")
    if args.val:
        image_paths(args.val, "--val")
    elif not is_run and args.max_drop is not None:
        raise ValueError(
            "--max-drop for a model name compares int8 with float on --val images: pass --val DIR (a run is "
            "measured on its evaluation split)"
        )


def int8_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}-int8{path.suffix}")


# ------------------------------------------------------------------------------------------------ main
def main(args: argparse.Namespace) -> dict[str, Any]:
    output = Path(args.output)
    if args.int8 and args.format == "executorch":
        raise ValueError(
            "--int8 quantizes OpenVINO and ONNX files (NNCF, onnxruntime); for an int8 model use --format openvino "
            "(the fastest here, docs/deployment.md) or onnx"
        )
    run_dir = Path(args.model)
    is_run = run_dir.is_dir()
    check_int8_options(args, is_run)  # before any export work
    record = cfg = None
    if is_run:
        if args.checkpoint or args.num_classes or args.in_chans or args.features_only:
            raise ValueError(f"{run_dir} is a run: its weights, classes and channels are the run's; drop the options")
        record, cfg, _ = run_record(run_dir, args.data_root, training=args.int8 and not args.calib)
        model, name = record.model.eval(), cfg["model"]["type"]
        # the run's inputs (timm's pretrained_cfg fields its final.json records): size and normalisation of its data
        final_path = run_dir / "final.json"
        final = json.loads(final_path.read_text(encoding="utf-8")) if final_path.is_file() else {}
        run_inputs = {key: final[key] for key in ("input_size", "mean", "std") if key in final}
        model.pretrained_cfg = {**(getattr(model, "pretrained_cfg", None) or {}), **run_inputs}
    else:
        if not db.is_model(args.model):
            raise ValueError(
                f"{args.model!r} is neither a registered model nor a run's work dir (densebackbones.list_models())"
            )
        model, name = named_model(args), args.model
    exported, info = export_model(
        model,
        output,
        args.format,
        name=name,
        img_size=_img_size(args),
        min_size=args.min_size,
        max_size=args.max_size,
        fuse=not args.no_fuse,
    )
    in_chans, _, typical = input_spec(model)
    runtime = open_runtime(output, args.threads)
    smallest, message = smallest_runnable_size(runtime, in_chans, info.min_size, max(typical))
    if smallest > info.min_size:  # the runtime cannot run what PyTorch runs below some size: the file says so
        print(f"{runtime.name} runs {name} from {smallest} px, not {info.min_size} (at {smallest - 1}: {message}); "
              f"the file takes {smallest}..{info.max_size} px")  # fmt: skip
        info.min_size = smallest
    shapes = check_shapes(info.min_size, info.max_size, _img_size(args) or typical, in_chans)
    info.checks = compare_with_eager(exported, runtime, shapes, rtol=args.rtol, atol=args.atol)
    info.source = str(run_dir if record is not None else args.checkpoint or "")
    info.save(output)
    for check in info.checks:
        print(f"{runtime.name} vs PyTorch at {tuple(check['shape'])}: max error {check['max_rel_error']:.1e} of scale")
    print(f"wrote {output} and {ExportInfo.path_for(output).name} ({info.format}: batch 1..{info.max_batch}, "
          f"{info.min_size}..{info.max_size} px; outputs named {', '.join(info.outputs)})")  # fmt: skip
    result: dict[str, Any] = {"file": str(output), "checks": info.checks}
    if args.int8:
        if args.calib:
            transform = image_transform(shapes[-1][2:], in_chans, info.mean, info.std)
            images = calibration_images(args.calib, args.calib_images, transform)
        elif record is not None:
            images = [image[None] for batch in run_batches(record, args.calib_images, "train") for image in batch]
        else:  # refused by check_int8_options
            raise AssertionError("no calibration images")
        target = int8_path(output)
        quantize_file(output, target, images)
        print(f"wrote {target} (int8, calibrated on {len(images)} images)")
        report = int8_report(args, exported, output, target, record, cfg)
        print(json.dumps(report, indent=2))
        result["int8"] = report
        if args.max_drop is not None and report.get("drop") is not None and report["drop"] > args.max_drop:
            raise ValueError(
                f"int8 {name} ({args.format}) loses {report['drop']:.2f} points of {report['metric']} (--max-drop "
                f"{args.max_drop:g}): calibrate on more or more typical images (--calib, --calib-images), or "
                f"deploy the float file {output}"
            )
    return result


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
