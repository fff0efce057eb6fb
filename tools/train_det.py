"""Train a single-shot detector (DSOD, Pelee) on Pascal VOC, COCO or the generated shapes set with its paper's recipe.

python tools/train_det.py configs/det/dsod300_voc.py --data-root data/VOCdevkit
python tools/train_det.py configs/det/pelee_voc.py --data-root data/VOCdevkit
torchrun --nproc_per_node 8 tools/train_det.py configs/det/dsod300_coco.py --data-root data/coco \
    --cfg-options train.sync_bn=True
"""

from __future__ import annotations

import argparse

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)

from densebackbones.engine import cli
from densebackbones.tasks.detection import DetectionTask


def get_args_parser() -> argparse.ArgumentParser:
    return cli.get_args_parser("Train a single-shot detector (DSOD, Pelee)")


def main(args: argparse.Namespace) -> dict[str, float]:
    return cli.train(args, DetectionTask())


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
