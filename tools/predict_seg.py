"""Evaluate a segmentation checkpoint (per-class IoU, mIoU, global accuracy over a split) and/or write colour-coded
prediction PNGs and overlays with a legend naming the classes they show.

python tools/predict_seg.py CONFIG CHECKPOINT --split test --eval
python tools/predict_seg.py CONFIG CHECKPOINT --split test --out predictions/ [--limit 20]
python tools/predict_seg.py CONFIG CHECKPOINT --split val --eval --mode slide --crop 1024 --stride 768 \
    --scales 0.75 1.0 1.25 --flip

``--mode``, ``--crop``, ``--stride``, ``--scales`` and ``--flip`` set the config's ``data.test_*``
(densebackbones/tasks/seg_inference.py): whole image (default) or sliding windows, multi-scale and flip testing, for
the evaluation and the written predictions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)
import numpy as np
import torch
from PIL import Image, ImageDraw

from densebackbones.data.segmentation import build_segmentation_transform, colorize
from densebackbones.engine import cli, evaluate_record, init_distributed
from densebackbones.engine.cli import resolve_config
from densebackbones.models.helpers import trained_head_required
from densebackbones.tasks.segmentation import SegmentationTask, dataset_info, format_iou_table, split_dataset


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate a segmentation checkpoint or write its predictions")
    parser.add_argument("config")
    parser.add_argument("checkpoint", help="trainer checkpoint (last.pth/best.pth) or exported safetensors")
    parser.add_argument("--data-root")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--eval", action="store_true", help="report per-class IoU, mIoU and global accuracy")
    parser.add_argument("--out", help="write <name>_pred.png (colours) and <name>_overlay.png here")
    parser.add_argument("--limit", type=int, help="at most this many images for --out")
    parser.add_argument("--mode", choices=["whole", "slide"], help="data.test_mode: whole image or sliding windows")
    parser.add_argument("--crop", type=int, nargs="+", metavar="PX", help="data.test_crop: window size (or H W)")
    parser.add_argument("--stride", type=int, nargs="+", metavar="PX", help="data.test_stride: window step (or H W)")
    parser.add_argument("--scales", type=float, nargs="+", help="data.test_scales, e.g. 0.75 1.0 1.25")
    parser.add_argument("--flip", action="store_true", default=None, help="data.test_flip: add mirrored images")
    parser.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE")
    return parser


def _inference_options(args: argparse.Namespace) -> list[str]:
    """The inference flags as ``--cfg-options`` entries (the config's ``data.test_*``)."""
    values = dict(test_mode=args.mode, test_crop=args.crop, test_stride=args.stride, test_scales=args.scales,
                  test_flip=args.flip)  # fmt: skip
    pairs = []
    for key, value in values.items():
        if value is not None:
            value = value[0] if isinstance(value, list) and len(value) == 1 and key != "test_scales" else value
            pairs.append(f"data.{key}={tuple(value) if isinstance(value, list) else value!r}")
    return pairs


def main(args: argparse.Namespace) -> dict[str, float]:
    if not args.eval and not args.out:
        raise SystemExit("nothing to do: pass --eval, --out DIR, or both")
    task = SegmentationTask()
    args.cfg_options = [*(args.cfg_options or []), *_inference_options(args)]
    cfg = resolve_config(args, task)
    dist = init_distributed(cfg["train"]["device"])
    with trained_head_required():  # numbers from the checkpoint's own classifier only
        record = task.build(cfg, pretrained=args.checkpoint, training=False)
    model, eval_forward, device = record.model.to(dist.device).eval(), record.eval_forward, dist.device
    info = dataset_info(cfg)
    dataset = split_dataset(cfg, args.split, build_segmentation_transform(info, False))
    metrics: dict[str, float] = {}
    if args.eval:  # the split asked for, evaluated as the trainer evaluates (one image a batch: sizes differ)
        metrics = evaluate_record(dataclasses.replace(record, eval_set=dataset), cfg, dist, batch_size=1)
        print(format_iou_table(metrics))
        print(json.dumps({"split": args.split, "mIoU": metrics["mIoU"], "global_acc": metrics["global_acc"]}))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
        with torch.no_grad():
            for index in range(count):
                image, _ = dataset[index]
                pred = eval_forward(model, image[None].to(device)).argmax(1)[0].cpu().numpy().astype(np.uint8)
                raw, _ = dataset.load(index)
                colours = colorize(pred, info)
                stem = dataset.pairs[index][0].stem
                Image.fromarray(colours).save(out / f"{stem}_pred.png")
                overlay = Image.fromarray((0.5 * raw + 0.5 * colours).astype(np.uint8))
                draw_legend(overlay, sorted(set(np.unique(pred).tolist())), info)
                overlay.save(out / f"{stem}_overlay.png")
        print(f"wrote {count} predictions and overlays to {out}")
    return metrics


def draw_legend(image: Image.Image, labels: list[int], info) -> None:
    """A colour swatch and the name of every class in ``labels``, top left."""
    draw = ImageDraw.Draw(image)
    for row, label in enumerate(labels):
        y = 2 + 12 * row
        draw.rectangle((2, y, 11, y + 9), fill=tuple(info.colors[label]), outline=(255, 255, 255))
        draw.text((14, y - 1), info.classes[label], fill=(255, 255, 255))


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
