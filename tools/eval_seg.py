"""Evaluate a segmentation checkpoint over a split: per-class IoU, mIoU and global accuracy, with the config's
test-time inference or the flags' (whole image, sliding windows, scales, flip: densebackbones/tasks/seg_inference.py).

python tools/eval_seg.py CONFIG CHECKPOINT [--data-root DIR] [--split val]
python tools/eval_seg.py CONFIG CHECKPOINT --mode slide --crop 1024 --stride 768 --scales 0.75 1.0 1.25 --flip

This is ``predict_seg.py --eval`` under the name mmsegmentation's and torchvision's users look for; ``predict_seg.py``
also writes the predicted maps (``--out``).
"""

from __future__ import annotations

import argparse

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)
import predict_seg

from densebackbones.engine import cli


def get_args_parser() -> argparse.ArgumentParser:
    parser = predict_seg.get_args_parser()
    parser.description = "Evaluate a segmentation checkpoint (per-class IoU, mIoU, global accuracy)"
    parser.set_defaults(eval=True, split="val")  # Cityscapes' test split has no public labels
    return parser


main = predict_seg.main

if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
