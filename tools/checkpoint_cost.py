"""The cost of one step checkpoint (``train.checkpoint_interval_steps``): the trainer's own ``save_step`` (state of
every part, RNG gather, atomic write with fsync and rename) for a model, with and without EMA weights.

    python tools/checkpoint_cost.py --model densenet_bc121_k32 --repeats 5 --work-dir /tmp/ckpt_cost

The file is written where ``--work-dir`` points (put it on the file system the run's work dir is on: a network
file system costs more than a local disk). Prints the size of ``last.pth`` and the seconds per checkpoint.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

import densebackbones as db
from densebackbones.engine import DistInfo, Trainer, merge_defaults
from densebackbones.tasks import CLS_DATA, TopKAccuracy


def measure(model_name: str, ema: bool, repeats: int, work_dir: Path) -> tuple[float, list[float]]:
    """(size in MB, seconds of each checkpoint) after one real optimiser step (momentum buffers exist)."""
    torch.manual_seed(0)
    model = db.create_model(model_name, num_classes=1000)
    data = TensorDataset(torch.randn(2, 3, 32, 32), torch.randint(0, 1000, (2,)))
    cfg = merge_defaults(
        dict(
            data=dict(dataset="imagenet", batch_size=2, num_workers=0),
            schedule=dict(type="constant", epochs=1),
            train=dict(plot=False, ema_decay=0.9999 if ema else None, device="cpu"),
        ),
        CLS_DATA,
    )
    trainer = Trainer(cfg, model, data, None, nn.CrossEntropyLoss(), TopKAccuracy(), work_dir, DistInfo())
    trainer.train_one_epoch()  # one step: SGD's momentum buffers are part of the checkpoint
    loop = {"loss_sum": 0.0, "window_loss": 0.0, "window_grad_norm": 0.0, "window_count": 0, "images_seen": 0}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        trainer.save_step(loop)
        times.append(time.perf_counter() - start)
    return (work_dir / "last.pth").stat().st_size / 2**20, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="densenet_bc121_k32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work-dir", help="where last.pth is written (default: a temporary folder)")
    args = parser.parse_args()
    for ema in (False, True):
        with tempfile.TemporaryDirectory(dir=args.work_dir) as folder:
            size, times = measure(args.model, ema, args.repeats, Path(folder))
        print(
            f"{args.model} {'with' if ema else 'without'} EMA: last.pth {size:.1f} MB, step checkpoint "
            f"{statistics.median(times):.3f} s median (min {min(times):.3f}, max {max(times):.3f}) of {len(times)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
