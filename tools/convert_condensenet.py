"""Convert a trained CondenseNet checkpoint into its deployment form (Huang et al., CVPR 2018, Sec. 3.2).

python tools/convert_condensenet.py CONFIG CHECKPOINT [--out converted.safetensors] [--eval] [--force]

CONFIG is the training config (its model.type is a CondenseNet, e.g. condensenet86_cifar); CHECKPOINT a trainer
checkpoint (last.pth/best.pth) or exported safetensors of that model. The converted weights load into the
registered ``<model.type>_converted`` model: ``tools/eval_cls.py CONFIG converted.safetensors --cfg-options
model.type=<model.type>_converted``. ``--eval`` evaluates both forms on the config's evaluation split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)

from densebackbones.engine import DistInfo, cli, evaluate_record
from densebackbones.engine.checkpoint import export_weights
from densebackbones.engine.cli import resolve_config
from densebackbones.flops import count_macs
from densebackbones.models import CondenseNet, convert
from densebackbones.tasks.classification import ClassificationTask, image_size


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Convert a trained CondenseNet into its deployment form")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--out", help="converted weights (default: converted_<checkpoint name>.safetensors beside it)")
    parser.add_argument("--force", action="store_true", help="convert even if condensation has not finished")
    parser.add_argument("--eval", action="store_true", help="evaluate the trained and the converted model")
    parser.add_argument("--data-root")
    parser.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE")
    return parser


def main(args: argparse.Namespace) -> dict[str, object]:
    task = ClassificationTask()
    cfg = resolve_config(args, task)
    record = task.build(cfg, pretrained=args.checkpoint, training=False)
    model = record.model.eval()
    if not isinstance(model, CondenseNet):
        raise ValueError(f"model.type={cfg['model']['type']!r} is not a CondenseNet; nothing to convert")
    converted = convert(model, force=args.force).eval()
    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out else checkpoint.with_name(f"converted_{checkpoint.stem}.safetensors")
    size = (1, model.in_chans, image_size(cfg), image_size(cfg))
    report: dict[str, object] = {
        "converted": str(export_weights(converted, out, {"converted_from": str(checkpoint)})),
        "params": sum(p.numel() for p in model.parameters()),
        "params_converted": sum(p.numel() for p in converted.parameters()),
        "macs": count_macs(model, size),
        "macs_converted": count_macs(converted, size),
    }
    if args.eval:  # both networks evaluated as the trainer evaluates
        dist = DistInfo()
        for key, net in (("eval", model), ("eval_converted", converted)):
            report[key] = evaluate_record(dataclasses.replace(record, model=net), cfg, dist, show_progress=False)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
