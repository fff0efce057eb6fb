"""Convert an official Caffe model (``.caffemodel``) into a safetensors file of a registered model.

python tools/convert_caffe.py DSOD300_VOC0712.caffemodel dsod300 work_dirs/dsod300_voc0712.safetensors

The file is read with ``protobuf`` and Caffe's message definitions (no Caffe install) and assigned layer by layer in
the order the network computes (densebackbones/models/caffe.py), every shape and convolution geometry checked; a file
of another network is refused, naming the first layer that differs and the registered models it fits. The official
DSOD and Pelee files were trained on BGR images: their first convolution is turned to RGB (``--input-order rgb``
keeps it). ``--model-kwargs`` (JSON) builds the model the file is of, e.g. COCO's 81 classes. The output loads with
``create_model(MODEL, pretrained=True, pretrained_cfg_overlay=dict(file=OUTPUT))``; the ``.caffemodel`` itself loads
that way too.
"""

from __future__ import annotations

import argparse
import json

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)

import densebackbones as db
from densebackbones.engine import cli
from densebackbones.engine.checkpoint import export_weights
from densebackbones.models.caffe import caffe_state_dict


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="an official Caffe .caffemodel as a safetensors file")
    parser.add_argument("caffemodel", help="the .caffemodel file of the official release")
    parser.add_argument("model", help="the registered model it is (e.g. dsod300, pelee, peleenet)")
    parser.add_argument("output", help="the .safetensors file to write")
    parser.add_argument(
        "--input-order",
        choices=("bgr", "rgb"),
        default="bgr",
        help="the channel order the file was trained on (default: bgr, as the official data layers)",
    )
    parser.add_argument(
        "--model-kwargs",
        type=json.loads,
        default={},
        metavar="JSON",
        help="create_model arguments of the file's model, e.g. '{\"num_classes\": 81}'",
    )
    return parser  # fmt: skip


def main(args: argparse.Namespace) -> None:
    model = db.create_model(args.model, **args.model_kwargs).eval()
    state = caffe_state_dict(args.caffemodel, model, input_order=args.input_order, candidates=[args.model])
    model.load_state_dict(state)
    path = export_weights(model, args.output, {"source": f"converted from {args.caffemodel}"})
    print(f"wrote {path} ({sum(p.numel() for p in model.parameters()):,} parameters of {args.model})")


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
