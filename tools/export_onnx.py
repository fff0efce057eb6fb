"""Export a registered model to ONNX and check it with onnxruntime.

python tools/export_onnx.py densenet_bc121_k32 --output work_dirs/densenet121.onnx [--checkpoint best.pth] \
    [--img-size 224] [--no-fuse] [--num-classes 10] [--in-chans 1] [--dynamic-size]

The file is what the checkpoint is: a checkpoint trained on 1-channel images gives a 1-channel model (its input
channels are read from it; ``--in-chans`` that contradicts the checkpoint is an error, never an adaptation).

BatchNorm layers that directly follow a convolution are folded into it first (``--no-fuse`` keeps them); the file
takes a dynamic batch size, and with ``--dynamic-size`` any height and width (checked at a second, odd size too:
segmentation models); the ONNX output is compared with PyTorch's on a random batch and the largest
difference printed (the command fails when it exceeds ``--atol``).
"""

from __future__ import annotations

import argparse

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)
import torch

import densebackbones as db
from densebackbones.engine import cli
from densebackbones.export import check_onnx, export_onnx, fuse_batchnorm
from densebackbones.models.helpers import InputChannelsMismatch, load_checkpoint_into


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="ONNX export of a dense model, checked with onnxruntime")
    parser.add_argument("model", help="registered model name (densebackbones.list_models())")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--checkpoint", help="weights to load (a training checkpoint or a state_dict)")
    parser.add_argument("--num-classes", type=int, help="classifier size (default: the model's)")
    parser.add_argument("--in-chans", type=int, help="input channels (default: the checkpoint's, else the model's)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=2, help="batch of the check (the file's batch is dynamic)")
    parser.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers separate")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument(
        "--dynamic-size", action="store_true", help="any height and width (32-8192), checked at two sizes"
    )
    parser.add_argument("--atol", type=float, default=1e-4)
    return parser


def _load(model: torch.nn.Module, path: str) -> None:
    """The checkpoint's weights exactly: its first convolution is never adapted to other input channels."""
    if hasattr(model, "load_pretrained"):  # the family's own key remapping (torchvision's legacy names...)
        model.load_pretrained(path, adapt_in_chans=False)
    else:
        load_checkpoint_into(model, path, adapt_in_chans=False)


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    """The model with the checkpoint's weights and input channels (see the module docstring)."""
    kwargs = {k: v for k, v in (("num_classes", args.num_classes), ("in_chans", args.in_chans)) if v is not None}
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


def main(args: argparse.Namespace) -> tuple[float, float]:
    model = build_model(args)
    if not args.no_fuse:
        model = fuse_batchnorm(model)
        print(f"folded {model.num_folded} BatchNorm layers into the convolutions before them")
    example = torch.randn(args.batch_size, getattr(model, "in_chans", 3), args.img_size, args.img_size)
    path = export_onnx(model, args.output, example, opset=args.opset, dynamic_size=args.dynamic_size)
    diff, peak = check_onnx(model, path, example, atol=args.atol)
    if args.dynamic_size:  # another, odd and non-square size through the same file
        other = torch.randn(1, example.shape[1], args.img_size + 13, args.img_size - 7)
        diff, peak = max((diff, peak), check_onnx(model, path, other, atol=args.atol))
    print(f"wrote {path}; onnxruntime vs PyTorch: max abs difference {diff:.2e} (outputs up to {peak:.2e})")
    return diff, peak


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
