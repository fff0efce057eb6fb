"""Train and inference throughput (img/s) and peak memory of registered models (classification or segmentation).

python tools/benchmark.py --models densenet_bc100_k12_cifar densenet_bc121_k32 --batch-size 16 --img-size 64 \
    [--device cuda] [--amp bf16] [--channels-last] [--compile] [--memory-efficient] [--append docs/benchmarks.md]

Each configuration runs in its own subprocess so that peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated``; on the CPU the rise of the process's peak resident set size over the
model-loaded floor (``ru_maxrss``). Timing uses CUDA events on the GPU and ``perf_counter`` on the CPU, after
warm-up iterations.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(args: argparse.Namespace) -> dict:
    """Run one configuration in this process and return its figures."""
    import torch
    from densebackbones.heads import (
        DETECTION_MODELS,
        SEGMENTATION_MODELS,
        create_detection_model,
        create_segmentation_model,
    )

    import densebackbones as db

    device = torch.device(args.device)
    torch.manual_seed(0)
    detection = args.model in DETECTION_MODELS
    if args.model in SEGMENTATION_MODELS:  # dense prediction: per-pixel targets
        model = create_segmentation_model(args.model, memory_efficient=args.memory_efficient).to(device)
        target_shape = (args.batch_size, args.img_size, args.img_size)
    elif detection:  # multibox loss on one box per image; inference includes post-processing (NMS)
        from densebackbones.heads.ssd import MultiBoxLoss

        model = create_detection_model(args.model, backbone_kwargs=dict(memory_efficient=args.memory_efficient))
        model = model.to(device)
        multibox = MultiBoxLoss(model.priors)
        gt_boxes = [torch.tensor([[0.2, 0.2, 0.6, 0.7]], device=device)] * args.batch_size
        gt_labels = [torch.tensor([1], device=device)] * args.batch_size
        target_shape = (args.batch_size,)
    else:
        model = db.create_model(args.model, memory_efficient=args.memory_efficient).to(device)
        target_shape = (args.batch_size,)
    in_chans = getattr(model, "in_chans", 3)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    inputs = torch.randn(args.batch_size, in_chans, args.img_size, args.img_size, device=device)
    inputs = inputs.contiguous(memory_format=memory_format)
    targets = torch.randint(0, model.num_classes, target_shape, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    runner = torch.compile(model) if args.compile else model
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            if args.mode == "train" and detection:
                loc, conf = runner(inputs)
                loss = sum(multibox(loc.float(), conf.float(), gt_boxes, gt_labels))
            elif args.mode == "train":
                loss = torch.nn.functional.cross_entropy(runner(inputs), targets)
            elif detection:
                model.detect(inputs)  # forward and post-processing
            else:
                with torch.no_grad():
                    runner(inputs)
        if args.mode == "train":
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    model.train(args.mode == "train")
    floor_mb = _peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        floor_mb = torch.cuda.memory_allocated() / 2**20
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(args.iters):
            step()
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        begin = time.perf_counter()
        for _ in range(args.iters):
            step()
        seconds = time.perf_counter() - begin
        peak_mb = _peak_rss_mb()
    return {
        "model": args.model,
        "mode": args.mode,
        "batch": args.batch_size,
        "img": args.img_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "amp": args.amp or "fp32",
        "channels_last": args.channels_last,
        "compile": args.compile,
        "memory_efficient": args.memory_efficient,
        "img_per_s": args.batch_size * args.iters / seconds,
        "ms_per_iter": 1000 * seconds / args.iters,
        "peak_mb": peak_mb - floor_mb,
    }


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Throughput and memory of dense models")
    parser.add_argument("--models", nargs="+", default=["densenet_bc100_k12_cifar"])
    parser.add_argument("--modes", nargs="+", default=["train", "eval"], choices=["train", "eval"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--memory-efficient", action="store_true")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--append", help="append the table, command and date to this markdown file")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)  # internal: one configuration
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    return parser


def main(args: argparse.Namespace) -> list[dict]:
    if args.single:
        print(json.dumps(measure(args)))
        return []
    rows = []
    for model in args.models:
        for mode in args.modes:
            command = [sys.executable, __file__, "--single", "--model", model, "--mode", mode]
            for flag in ("batch_size", "img_size", "device", "warmup", "iters"):
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            command += ["--amp", args.amp] if args.amp else []
            command += [
                f"--{f.replace('_', '-')}" for f in ("channels_last", "compile", "memory_efficient") if getattr(args, f)
            ]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode:
                raise SystemExit(f"benchmark of {model} ({mode}) failed:\n{result.stderr}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    header = (
        "| model | mode | batch | img | device | amp | channels_last | compile | mem-eff | img/s | ms/iter | peak MB |"
    )
    lines = [header, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['batch']} | {r['img']} | {r['device']} | {r['amp']} | "
            f"{r['channels_last']} | {r['compile']} | {r['memory_efficient']} | {r['img_per_s']:.1f} | "
            f"{r['ms_per_iter']:.1f} | {r['peak_mb']:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.append:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        cmd = "python tools/benchmark.py " + " ".join(sys.argv[1:])
        with open(Path(args.append), "a") as handle:
            handle.write(f"\n### {stamp}, {platform.node() or 'machine'} ({platform.processor() or 'cpu'})\n\n")
            handle.write(f"`{cmd}`\n\n{table}\n")
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
