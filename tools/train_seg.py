"""Train FC-DenseNet (or the FC-DenseNet decoder on a dense backbone) for semantic segmentation.

python tools/train_seg.py configs/seg/fc_densenet103_camvid.py --data-root data/CamVid
python tools/train_seg.py configs/seg/fc_densenet103_camvid_finetune.py \
    --pretrained work_dirs/fc_densenet103_camvid/best.pth
torchrun --nproc_per_node 4 tools/train_seg.py configs/seg/fc_densenet_bc121_k32_camvid.py \
    --cfg-options train.sync_bn=True
"""

from __future__ import annotations

import argparse

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)

from densebackbones.engine import cli
from densebackbones.tasks.segmentation import SegmentationTask


def get_args_parser() -> argparse.ArgumentParser:
    return cli.get_args_parser("Train a dense segmentation model")


def main(args: argparse.Namespace) -> dict[str, float]:
    return cli.train(args, SegmentationTask())


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
