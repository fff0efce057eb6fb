"""Evaluate a detection checkpoint (COCO AP via pycocotools, VOC07 mAP) and/or draw its detections on images.

python tools/predict_det.py CONFIG CHECKPOINT --eval
python tools/predict_det.py CONFIG CHECKPOINT --out detections/ [--limit 20] [--score 0.3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)
import numpy as np
import torch
from PIL import Image, ImageDraw

from densebackbones.engine import cli, evaluate_record, init_distributed
from densebackbones.models.helpers import trained_head_required
from densebackbones.tasks.detection import DetectionTask, class_names


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate a detector checkpoint or draw its detections")
    parser.add_argument("config")
    parser.add_argument("checkpoint", help="trainer checkpoint (last.pth/best.pth) or exported safetensors")
    parser.add_argument("--data-root")
    parser.add_argument("--eval", action="store_true", help="COCO AP, AP50, AP75, AP by size, VOC07 mAP")
    parser.add_argument("--out", help="write <image id>_det.png with the boxes drawn")
    parser.add_argument("--limit", type=int, help="at most this many images for --out")
    parser.add_argument("--score", type=float, default=0.3, help="draw boxes scoring at least this")
    parser.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE")
    return parser


def main(args: argparse.Namespace) -> dict[str, float]:
    if not args.eval and not args.out:
        raise SystemExit("nothing to do: pass --eval, --out DIR, or both")
    task = DetectionTask()
    cfg = cli.resolve_config(args, task)
    dist = init_distributed(cfg["train"]["device"])
    with trained_head_required():  # numbers from the checkpoint's own classifier only
        record = task.build(cfg, pretrained=args.checkpoint, training=False)
    model, dataset, device = record.model.to(dist.device).eval(), record.eval_set, dist.device
    metrics: dict[str, float] = {}
    if args.eval:
        metrics = evaluate_record(record, cfg, dist)  # as the trainer evaluates
        print(json.dumps(metrics, indent=2))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        names = class_names(cfg)
        count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
        for index in range(count):
            image, target = dataset[index]
            det = model.detect(image[None].to(device))[0]
            raw = Image.fromarray(_raw_image(dataset, index))
            h, w = target["input_size"]
            draw = ImageDraw.Draw(raw)
            for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
                if score < args.score:
                    continue
                x1, y1, x2, y2 = (box * torch.tensor([w, h, w, h], device=box.device)).tolist()
                draw.rectangle((x1, y1, x2, y2), outline=(255, 64, 64), width=2)
                draw.text((x1 + 2, y1 + 1), f"{names[int(label) - 1]} {float(score):.2f}", fill=(255, 255, 0))
            raw.save(out / f"{target['image_id']}_det.png")
        print(f"wrote {count} images with detections to {out}")
    return metrics


def _raw_image(dataset, index: int) -> np.ndarray:
    transform, dataset.transform = dataset.transform, None
    try:
        return dataset[index][0]
    finally:
        dataset.transform = transform


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
