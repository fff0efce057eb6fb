"""Train a classifier (ImageNet, CIFAR, SVHN, Fashion-MNIST, digits) with the paper's recipes.

One process:  python tools/train_cls.py configs/cls/densenet_bc100_k12_cifar10.py --data-root data/cifar10
Several GPUs: torchrun --nproc_per_node 8 tools/train_cls.py configs/cls/densenet_bc121_k32_imagenet.py ...
Resume:       the same command with --resume auto (or --resume work_dirs/<run>/last.pth)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from densebackbones.engine import (
    TopKAccuracy,
    Trainer,
    check_config,
    init_distributed,
    load_config,
    merge_defaults,
)
from densebackbones.engine.classification import (
    build_datasets,
    build_model,
    export_weights,
    model_arg_names,
    ten_crop_forward,
)


def parse_cfg_options(items: list[str] | None) -> dict:
    """``key=value`` pairs; values are Python literals when they parse as one (``0.1``, ``True``, ``(1, 2)``)."""
    import ast

    options = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--cfg-options expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train a dense classifier", add_help=True)
    parser.add_argument("config", help="mmengine config file (configs/cls/...)")
    parser.add_argument("--data-root", help="overrides data.root")
    parser.add_argument("--work-dir", help="overrides work_dir (default work_dirs/<config name>)")
    parser.add_argument("--resume", help="'auto' (work_dir/last.pth if present) or a checkpoint path")
    parser.add_argument("--pretrained", help="fine-tune from these weights (a new classifier if the size differs)")
    parser.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return parser


def resolve_config(args: argparse.Namespace) -> dict:
    cfg = load_config(args.config, parse_cfg_options(args.cfg_options))
    raw = cfg.to_dict()
    check_config(raw, model_arg_names())
    resolved = merge_defaults(raw)
    if args.data_root:
        resolved["data"]["root"] = args.data_root
    resolved["work_dir"] = args.work_dir or resolved["work_dir"] or str(Path("work_dirs") / Path(args.config).stem)
    return resolved


def main(args: argparse.Namespace) -> dict:
    resolved = resolve_config(args)
    if args.print_config:
        from mmengine.config import Config

        print(Config(resolved).pretty_text)
        return {}
    dist = init_distributed(resolved["train"]["device"])
    torch.manual_seed(resolved["train"]["seed"] + dist.rank)
    work_dir = Path(resolved["work_dir"])
    model = build_model(resolved, pretrained=args.pretrained)
    train_set, eval_set = build_datasets(resolved)
    label_smoothing = resolved["train"]["label_smoothing"]
    trainer = Trainer(
        resolved,
        model,
        train_set,
        eval_set,
        loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing),
        metric=TopKAccuracy((1, 5)),
        work_dir=work_dir,
        dist=dist,
        eval_forward=ten_crop_forward,
    )
    if dist.is_main:
        from mmengine.config import Config

        work_dir.mkdir(parents=True, exist_ok=True)
        Config(resolved).dump(str(work_dir / "config.py"))
    resume = Trainer.find_resume(work_dir, args.resume)
    if resume is not None:
        trainer.resume(resume)
    metrics = trainer.fit()
    if dist.is_main:
        final = trainer.ema.module if trainer.ema is not None else trainer.model
        weights = export_weights(final, work_dir / "final.safetensors", {"eval": metrics})
        print(f"final metrics: {metrics}", flush=True)
        print(f"checkpoints: {work_dir / 'last.pth'}, {work_dir / 'best.pth'}; weights: {weights}", flush=True)
        print(f"logs: {work_dir / 'train.csv'}, {work_dir / 'eval.csv'}; curves: {work_dir / 'curves.png'}", flush=True)
    return metrics


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
