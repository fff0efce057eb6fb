"""Convert an official release's weight file into a safetensors file of a registered model.

python tools/convert_weights.py FILE MODEL OUTPUT [--model-kwargs JSON] [--input-order bgr|rgb]

FILE is any file ``create_model(MODEL, pretrained=True, pretrained_cfg_overlay=dict(file=FILE))`` loads, converted
once: the official DenseNet Lua Torch files (``.t7``, densebackbones/models/torch7.py), the official Caffe models of
DSOD, Pelee and PeleeNet (``.caffemodel``, densebackbones/models/caffe.py: read with ``protobuf``, no Caffe install),
FC-DenseNet's Lasagne parameters (``.npz``, densebackbones/models/lasagne.py) and torch or safetensors checkpoints
(the official PyTorch files of PeleeNet, CondenseNet and MSDNet load by their key names). Each is assigned layer by
layer, every shape checked; a file of another network is refused, naming the first layer that differs and the
registered models it fits. The Caffe files were trained on BGR images: their first convolution is turned to RGB
(``--input-order rgb`` keeps it). ``--model-kwargs`` (JSON) builds the model the file is of, e.g. COCO's 81
classes (``'{"num_classes": 81, "priors": "coco"}'``; an official tag such as ``pelee.caffe_coco`` as MODEL sets
them itself); a file whose classifier has other classes than the model is refused, not given a fresh head. The
output loads with ``create_model(MODEL, pretrained=True, pretrained_cfg_overlay=dict(file=OUTPUT))``.

python tools/convert_weights.py densenet-264.t7 densenet_bc264_k32 work_dirs/densenet_bc264_k32.safetensors
python tools/convert_weights.py DSOD300_VOC0712.caffemodel dsod300 work_dirs/dsod300_voc0712.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)

import densebackbones as db
from densebackbones.engine import cli
from densebackbones.engine.checkpoint import export_weights
from densebackbones.models.caffe import caffe_state_dict
from densebackbones.models.helpers import trained_head_required


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="an official release's weight file as a safetensors file")
    parser.add_argument("file", help="the weight file (.t7, .caffemodel, .npz, or a torch / safetensors checkpoint)")
    parser.add_argument("model", help="the registered model it is (e.g. densenet_bc264_k32, dsod300, fc_densenet103)")
    parser.add_argument("output", help="the .safetensors file to write")
    parser.add_argument(
        "--input-order",
        choices=("bgr", "rgb"),
        default="bgr",
        help="Caffe files: the channel order they were trained on (default: bgr, as the official "
        "data layers read images)",
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
    if not isinstance(args.model_kwargs, dict):
        raise SystemExit(f"--model-kwargs must be a JSON object of create_model arguments, got {args.model_kwargs!r}")
    if args.input_order == "rgb" and Path(args.file).suffix != ".caffemodel":
        raise SystemExit("--input-order applies to Caffe files (.caffemodel); other formats keep their channel order")
    with trained_head_required():  # a classifier of other classes is an error here, not a fresh head
        model = _converted(args)
    path = export_weights(model, args.output, {"source": f"converted from {args.file}"})
    print(f"wrote {path} ({sum(p.numel() for p in model.parameters()):,} parameters of {args.model})")


def _converted(args: argparse.Namespace):
    if Path(args.file).suffix == ".caffemodel" and args.input_order == "rgb":
        model = db.create_model(args.model, **args.model_kwargs).eval()
        model.load_state_dict(caffe_state_dict(args.file, model, input_order="rgb", candidates=[args.model]))
    else:
        overlay = dict(file=args.file)
        model = db.create_model(args.model, pretrained=True, pretrained_cfg_overlay=overlay, **args.model_kwargs)
    return model


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
