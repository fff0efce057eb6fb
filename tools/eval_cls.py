"""Evaluate a classification checkpoint: top-1 / top-5 accuracy and loss, optionally with ten crops.

python tools/eval_cls.py CONFIG CHECKPOINT [--data-root DIR] [--ten-crop]

CHECKPOINT is a trainer checkpoint (last.pth/best.pth: its EMA weights when the run used EMA), exported
safetensors, or a torchvision/timm state_dict.
"""

from __future__ import annotations

import argparse
import json

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)
import torch
from torch.utils.data import DataLoader

from densebackbones.engine import cli, distributed_session, evaluate
from densebackbones.engine.cli import resolve_config
from densebackbones.engine.distributed import ShardSampler
from densebackbones.models.helpers import trained_head_required
from densebackbones.tasks.classification import ClassificationTask, ten_crop_forward


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
    with distributed_session(cfg["train"]["device"]) as dist:
        with trained_head_required():  # numbers from the checkpoint's own classifier only
            model = task.build_model(cfg, pretrained=args.checkpoint).to(dist.device)
        _, eval_set = task.build_datasets(cfg, ten_crop=args.ten_crop)
        batch = args.batch_size or cfg["data"]["eval_batch_size"] or cfg["data"]["batch_size"]
        loader = DataLoader(
            eval_set,
            batch_size=batch,
            sampler=ShardSampler(len(eval_set), dist.rank, dist.world_size),
            num_workers=cfg["data"]["num_workers"],
            pin_memory=dist.device.type == "cuda",
        )
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg["train"]["amp"])
        metrics = evaluate(
            model,
            loader,
            task.loss_fn(cfg),
            task.metric(cfg),
            dist.device,
            amp,
            ten_crop_forward,
            show_progress=dist.is_main,
        )
        if dist.is_main:
            print(json.dumps({"checkpoint": args.checkpoint, "ten_crop": args.ten_crop, **metrics}, indent=2))
    return metrics


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
