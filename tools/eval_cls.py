"""Evaluate a classification checkpoint: top-1 / top-5 accuracy and loss, optionally with ten crops.

python tools/eval_cls.py CONFIG CHECKPOINT [--data-root DIR] [--ten-crop]

CHECKPOINT is a trainer checkpoint (last.pth/best.pth: its EMA weights when the run used EMA), exported
safetensors, or a torchvision/timm state_dict.
"""

from __future__ import annotations

import argparse
import json

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)

from densebackbones.engine import cli, distributed_session, evaluate_record
from densebackbones.engine.cli import resolve_config
from densebackbones.models.helpers import trained_head_required
from densebackbones.tasks.classification import ClassificationTask


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate a dense classifier")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--data-root")
    parser.add_argument("--ten-crop", action="store_true", help="average the softmax of ten crops (ImageNet)")
    parser.add_argument("--batch-size", type=int, help="evaluation batch size per process")
    parser.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE")
    return parser


def main(args: argparse.Namespace) -> dict[str, float]:
    task = ClassificationTask()
    cfg = resolve_config(args, task)
    cfg["data"]["ten_crop"] = args.ten_crop
    with distributed_session(cfg["train"]["device"]) as dist:
        with trained_head_required():  # numbers from the checkpoint's own classifier only
            record = task.build(cfg, pretrained=args.checkpoint, training=False)
        metrics = evaluate_record(record, cfg, dist, batch_size=args.batch_size)  # as the trainer evaluates
        if dist.is_main:
            print(json.dumps({"checkpoint": args.checkpoint, "ten_crop": args.ten_crop, **metrics}, indent=2))
    return metrics


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
