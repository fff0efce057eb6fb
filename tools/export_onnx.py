"""Export a registered model to ONNX and check it with onnxruntime.

python tools/export_onnx.py densenet_bc121_k32 --output work_dirs/densenet121.onnx [--checkpoint best.pth] \
    [--img-size 224] [--no-fuse] [--num-classes 10]

BatchNorm layers that directly follow a convolution are folded into it first (``--no-fuse`` keeps them); the file
takes a dynamic batch size; the ONNX output is compared with PyTorch's on a random batch and the largest
difference printed (the command fails when it exceeds ``--atol``).
"""

from __future__ import annotations

import argparse

import torch

import densebackbones as db
from densebackbones.export import check_onnx, export_onnx, fuse_batchnorm
from densebackbones.models.helpers import load_checkpoint_into


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="ONNX export of a dense model, checked with onnxruntime")
    parser.add_argument("model", help="registered model name (densebackbones.list_models())")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--checkpoint", help="weights to load (a training checkpoint or a state_dict)")
    parser.add_argument("--num-classes", type=int, help="classifier size (default: the model's)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=2, help="batch of the check (the file's batch is dynamic)")
    parser.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers separate")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--atol", type=float, default=1e-4)
    return parser


def main(args: argparse.Namespace) -> tuple[float, float]:
    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = db.create_model(args.model, **kwargs)
    if args.checkpoint:
        load_checkpoint_into(model, args.checkpoint)
    model.eval()
    if not args.no_fuse:
        model = fuse_batchnorm(model)
        print(f"folded {model.num_folded} BatchNorm layers into the convolutions before them")
    example = torch.randn(args.batch_size, model.in_chans, args.img_size, args.img_size)
    path = export_onnx(model, args.output, example, opset=args.opset)
    diff, peak = check_onnx(model, path, example, atol=args.atol)
    print(f"wrote {path}; onnxruntime vs PyTorch: max abs difference {diff:.2e} (outputs up to {peak:.2e})")
    return diff, peak


if __name__ == "__main__":
    main(get_args_parser().parse_args())
