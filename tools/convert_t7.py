"""Convert an official DenseNet Lua Torch 7 file (``.t7``) into a safetensors file of a registered model.

python tools/convert_t7.py densenet-264.t7 densenet_bc264_k32 work_dirs/densenet_bc264_k32.safetensors

The official release (liuzhuang13/DenseNet README: DenseNet-121/169/201/161, 264, 232, cosine-264) is read with the
``torchfile`` package and assigned layer by layer (densebackbones/models/torch7.py), every shape checked; a file of
another model is refused naming the registered models it fits. The output loads with
``create_model(MODEL, pretrained=True, pretrained_cfg_overlay=dict(file=OUTPUT))`` (the ``.t7`` itself loads that
way too; converting once saves reading it each time).
"""

from __future__ import annotations

import argparse

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)

import densebackbones as db
from densebackbones.engine import cli
from densebackbones.engine.checkpoint import export_weights


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="an official DenseNet .t7 file as a safetensors file")
    parser.add_argument("t7", help="the .t7 model file of the official release")
    parser.add_argument("model", help="the registered model it is (e.g. densenet_bc264_k32)")
    parser.add_argument("output", help="the .safetensors file to write")
    return parser


def main(args: argparse.Namespace) -> None:
    model = db.create_model(args.model, pretrained=True, pretrained_cfg_overlay=dict(file=args.t7))
    path = export_weights(model, args.output, {"source": f"converted from {args.t7}"})
    print(f"wrote {path} ({sum(p.numel() for p in model.parameters()):,} parameters of {args.model})")


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
