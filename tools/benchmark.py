"""Training and inference throughput and peak memory of dense models, alone or side by side with torchvision/timm.

Plain measurement of registered models (classification, segmentation or detection):

    python tools/benchmark.py --models densenet_bc121_k32 fc_densenet103 --batch-size 16 --img-size 224 \
        [--device cuda] [--amp bf16] [--channels-last] [--compile] [--memory-mode efficient]

Comparison of implementations of one classification model, with ratios to the first one listed:

    python tools/benchmark.py --models densenet_bc100_k12_cifar --batch-size 64 --img-size 32 \
        --impls torchvision ours:plain ours:buffer ours:efficient timm timm:checkpoint torchvision:checkpoint

``ours:<mode>`` is this library in memory mode ``plain``, ``buffer`` or ``efficient``; ``torchvision`` and ``timm``
are their ``DenseNet`` classes built with the same layout (for CIFAR models the stem is swapped for the paper's 3x3
convolution; parameter counts are checked to be equal), ``:checkpoint`` their memory-efficient options
(``memory_efficient=True``: the bottleneck's concatenation and BN-ReLU are checkpointed). Memory format: on the CPU
our blocks compute in channels_last whatever the input's layout (``densebackbones.layers.set_cpu_channels_last``);
``ours:buffer:input-layout`` turns that off for its model, and ``torchvision:channels_last``/``timm:channels_last``
run those models and their input in channels_last, so one table separates what the layout gives from the rest
(``--channels-last`` converts every implementation). ``torchvision:compile``, ``timm:compile`` and
``ours:plain:compile`` run ``torch.compile`` (default Inductor backend) on that model alone, so a table shows whether
compiling helps against the eager modes (under ``torch.compile`` our blocks trace the plain concatenation graph
whatever their mode, hence ``ours:plain``; ``--compile`` compiles every implementation). Compilation happens in the
warm-up steps and is not timed.

Output stride (dilated backbones for DeepLab-style heads, ``output_stride`` 8 or 16): ``ours:<mode>@os8`` is our
model built with ``output_stride=8``; ``--output-stride 32 16 8`` measures each implementation listed (default
``ours:<--memory-mode>``) at each of those strides, as one comparison with ratios to the first:

    python tools/benchmark.py --models densenet_bc121_k32 --batch-size 2 --img-size 512 --output-stride 32 16 8

Test-time inference of segmentation models (eval): ``--seg-inference whole slide:1024:768`` measures each
implementation with each inference (``tasks/seg_inference.py``: whole image, or sliding windows of CROP every STRIDE,
an int or HxW), ratios to the first; ``--img-size`` takes height and width:

    python tools/benchmark.py --models dense_aspp121 --modes eval --batch-size 1 --img-size 1024 2048 \
        --seg-inference whole slide:1024:768

The training input pipeline (issue 36): ``--input-pipeline N`` writes N JPEG images (an ImageFolder tree) and measures
images per second through this library's training loader (``engine.trainer.build_train_loader``: the resumable
sampler, per-sample seeds, the classification task's transforms and mixup collate) against timm's own
(``timm.data.create_loader`` with the same transform settings, ``timm.data.Mixup`` applied to each batch as timm's
``train.py`` does without its prefetcher; both with posterize kept at one bit or more, which Pillow 13 needs),
alternating epochs, ``--workers`` loader processes each:

    python tools/benchmark.py --input-pipeline 512 --workers 1 --batch-size 32 --img-size 224 \
        --auto-augment rand-m9-mstd0.5-inc1 --mixup 0.8 --cutmix 1.0

Deployment runtimes (docs/deployment.md): ``--runtimes`` measures each model at its typical input size (its
``pretrained_cfg``; ``--runtime-size`` overrides) as latency at batch 1 and throughput at ``--batch-size``, in eager
PyTorch (float32, no_grad, the default memory mode), ``torch.compile`` (Inductor), and exported files (tools/export.py's
functions) in onnxruntime and OpenVINO, float32 and int8 (calibrated on ``--calib-images`` random images of the same
size: speed does not depend on the calibration images; accuracy is measured by tools/export.py --int8 on a run), and
ExecuTorch (XNNPACK, float32). Each runtime uses the process's threads (``torch.get_num_threads()``):

    python tools/benchmark.py --runtimes eager compiled onnx onnx-int8 openvino openvino-int8 \
        --models densenet_bc121_k32 peleenet pelee fc_densenet56 --batch-size 32 --iters 5

Timing: all implementations of a comparison run in one process, in interleaved rounds (one step of each per round,
after warm-up). The table gives each one's median step and its speed relative to the first implementation as the
median of the per-round ratios, with their range: a shared or throttled machine slows whole rounds, which moves
both steps of a ratio alike (on the 2-core CI-like VM single steps vary by +-20%). CUDA steps are timed with CUDA
events, CPU steps with ``perf_counter``.

Peak memory: each configuration in its own process. On CUDA ``torch.cuda.max_memory_allocated`` minus the memory
allocated once the model and inputs are in place (parameters, inputs, and for training the optimizer state after a
first step are all part of that floor). On the CPU, the rise of the peak resident set size (``VmHWM``) over the
same floor (the kernel's peak mark is reset there), with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB so
that every tensor's memory is mapped and returned on release; otherwise glibc keeps freed memory resident and the
figure would show the allocator's history rather than the live peak.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)
import numpy as np
import torch
import torch.nn as nn
from densebackbones.heads.ssd import MultiBoxLoss
from PIL import Image
from timm.data import Mixup, create_dataset, create_loader
from timm.models.densenet import DenseNet as TimmDenseNet
from torch.profiler import ProfilerActivity, profile
from torchvision.models import DenseNet as TorchvisionDenseNet

import densebackbones as db
from densebackbones.data import ImageFolderDataset, build_train_transform
from densebackbones.data.transforms import keep_one_posterize_bit
from densebackbones.engine.distributed import DistInfo, amp_dtype, resolve_device
from densebackbones.engine.trainer import build_train_loader
from densebackbones.export import FORMATS, export_model, input_spec
from densebackbones.quantize import quantize_file
from densebackbones.runtimes import open_runtime
from densebackbones.tasks.classification import ClassificationTask, augment_options, mixup_collate
from densebackbones.tasks.seg_inference import SegInference, segment

IMPLS = (
    "ours:plain",
    "ours:buffer",
    "ours:efficient",
    "ours:buffer:input-layout",
    "ours:plain:compile",
    "torchvision",
    "torchvision:checkpoint",
    "torchvision:channels_last",
    "torchvision:compile",
    "timm",
    "timm:checkpoint",
    "timm:channels_last",
    "timm:compile",
)
_CPU_MMAP_THRESHOLD = "131072"
RUNTIME_CHOICES = ("eager", "compiled", "onnx", "onnx-int8", "openvino", "openvino-int8", "executorch")


def seg_inference(spec: str) -> SegInference:
    """``whole`` or ``slide:CROP:STRIDE`` (each an int or HxW): a segmentation model's test-time inference."""
    kind, *sizes = spec.split(":")
    try:
        pairs = [tuple(int(v) for v in size.split("x")) for size in sizes]
        crop, stride = ((p[0] if len(p) == 1 else p) for p in pairs) if kind == "slide" else (None, None)
        if kind not in ("whole", "slide") or (kind == "whole" and sizes) or (kind == "slide" and len(sizes) != 2):
            raise ValueError
        return SegInference(kind, crop, stride)
    except ValueError as err:
        reason = f": {err}" if str(err) else ""
        raise argparse.ArgumentTypeError(
            f"{spec!r}: 'whole' or 'slide:CROP:STRIDE' (e.g. slide:1024:768){reason}"
        ) from None


def impl_spec(spec: str) -> str:
    """An implementation name of ``IMPLS``, optionally with ``@osN`` (ours only: built with ``output_stride=N``) and
    ``#INFERENCE`` (a segmentation model's test-time inference, :func:`seg_inference`)."""
    spec, hash_, inference = spec.partition("#")
    if hash_:
        seg_inference(inference)
    name, at, stride = spec.partition("@")
    if name not in IMPLS:
        raise argparse.ArgumentTypeError(f"unknown implementation {name!r}; choose from {', '.join(IMPLS)}")
    if at and not (name.startswith("ours:") and stride.startswith("os") and stride[2:].isdigit()):
        raise argparse.ArgumentTypeError(f"{spec!r}: '@osN' (output stride N) applies to ours:<mode> only")
    return f"{spec}{hash_}{inference}"


def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, from /proc/self/status."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0: write 5 to clear_refs); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build_reference(impl: str, name: str):
    """torchvision's or timm's DenseNet with the layout of registered model ``name`` (BC models only)."""
    ours = db.create_model(name)
    cfg = db.models.densenet.MODEL_ARCHS.get(name)
    if cfg is None or cfg.get("bn_size", 4) != 4 or cfg.get("compression", 0.5) != 0.5:
        raise SystemExit(
            f"{impl} has no equivalent of {name}: torchvision's and timm's DenseNet are DenseNet-BC only "
            f"(bottleneck 4k, compression 0.5); compare a densenet_bc* model"
        )
    library, _, option = impl.partition(":")
    growth, blocks = cfg["growth_rate"], tuple(cfg["block_config"])
    checkpoint = option == "checkpoint"
    if library == "torchvision":
        model = TorchvisionDenseNet(growth, blocks, 2 * growth, 4, 0, ours.num_classes, memory_efficient=checkpoint)
    else:
        model = TimmDenseNet(growth, blocks, ours.num_classes, bn_size=4, memory_efficient=checkpoint)
    if cfg.get("stem_type") == "cifar":  # the paper's CIFAR stem: one 3x3 convolution, nothing else
        model.features.conv0 = nn.Conv2d(ours.in_chans, 2 * growth, 3, padding=1, bias=False)
        for stem_part in ("norm0", "relu0", "pool0"):
            if hasattr(model.features, stem_part):
                setattr(model.features, stem_part, nn.Identity())
    model.num_classes, model.in_chans = ours.num_classes, ours.in_chans
    if _params(model) != _params(ours):
        raise SystemExit(f"{impl}'s version of {name} has {_params(model):,} parameters, ours {_params(ours):,}")
    return model


def build(args: argparse.Namespace, impl: str | None):
    """The model to measure and how to run one step of it: (model, step function)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    spec, _, inference = (impl or f"ours:{args.memory_mode}").partition("#")
    spec, _, stride = spec.partition("@")
    height, width = _hw(args)
    library, _, option = spec.partition(":")
    mode, _, variant = option.partition(":")
    reference = library != "ours"
    task = None if reference else db.model_task(args.model)
    detection = task == "detection"
    if reference:
        model = build_reference(impl, args.model)
        target_shape = (args.batch_size,)
    elif task == "segmentation":  # dense prediction: per-pixel targets
        model = db.create_model(args.model)
        target_shape = (args.batch_size, height, width)
    elif detection:  # multibox loss on one box per image; inference includes post-processing (NMS)
        model = db.create_model(args.model)
        multibox = MultiBoxLoss(model.priors_for(height, width).to(device))  # boxes of that size
        gt_boxes = [torch.tensor([[0.2, 0.2, 0.6, 0.7]], device=device)] * args.batch_size
        gt_labels = [torch.tensor([1], device=device)] * args.batch_size
        target_shape = (args.batch_size,)
    else:
        kwargs = json.loads(args.model_kwargs or "{}")
        if stride:  # ours:<mode>@osN
            kwargs["output_stride"] = int(stride[2:])
        model = db.create_model(args.model, **kwargs)
        target_shape = (args.batch_size,)
    if not reference:
        db.layers.set_memory_mode(model, mode)
    channels_last = args.channels_last or option == "channels_last"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    inputs = torch.randn(args.batch_size, getattr(model, "in_chans", 3), height, width, device=device)
    if inference and (task != "segmentation" or args.mode != "eval"):
        raise SystemExit(f"{impl}: '#<inference>' applies to segmentation models in eval mode")
    test_time = seg_inference(inference) if inference else None
    inputs = inputs.contiguous(memory_format=memory_format)
    targets = torch.randint(0, model.num_classes, target_shape, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    runner = torch.compile(model) if args.compile or "compile" in (option, variant) else model
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    model.train(args.mode == "train")

    if variant == "input-layout":  # this model's blocks compute in the input's layout (a per-model setting)
        db.layers.set_cpu_channels_last(model, False)

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
                    segment(runner, inputs, test_time) if test_time else runner(inputs)
        if args.mode == "train":
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return model, step


def _hw(args: argparse.Namespace) -> tuple[int, int]:
    """(height, width) of the inputs: ``--img-size`` is one side or height and width."""
    sizes = args.img_size if isinstance(args.img_size, list) else [args.img_size]
    if len(sizes) not in (1, 2):
        raise SystemExit(f"--img-size takes a side or height and width, got {sizes}")
    return (sizes[0], sizes[-1])


def _device_name(device) -> str:

    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def measure_memory(args: argparse.Namespace, impl: str | None) -> float:
    """Peak memory of one configuration (MB over the model-loaded floor); run in a fresh process."""

    device = torch.device(args.device)
    model, step = build(args, impl)
    if args.mode == "train":
        step()  # optimizer state and gradient buffers exist from now on: part of the floor
    if device.type == "cuda":
        torch.cuda.synchronize()
        floor = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    else:
        if not _reset_peak_rss():
            raise SystemExit("CPU peak memory needs Linux's /proc/self/clear_refs (to reset the peak RSS mark)")
        floor = _status_mb("VmRSS")
    for _ in range(args.memory_iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20 - floor
    return _status_mb("VmHWM") - floor


def profile_steps(args: argparse.Namespace, impls: list[str | None], steps) -> None:
    """Where the time goes: torch.profiler's table of one step of each implementation (printed to stderr)."""

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    sort = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
    for impl, step in zip(impls, steps):
        with profile(activities=activities) as prof:
            step()
        print(f"\n## {args.model} {args.mode} {impl or args.memory_mode}", file=sys.stderr)
        print(prof.key_averages().table(sort_by=sort, row_limit=args.profile_rows), file=sys.stderr)


def measure_time(args: argparse.Namespace, impls: list[str | None]) -> list[list[float]]:
    """Seconds per step of each implementation in each round: the implementations run one step each per round,
    interleaved in this process, so a slow period of the machine hits every one of them alike."""

    device = torch.device(args.device)
    steps = [build(args, impl)[1] for impl in impls]
    for step in steps:
        for _ in range(args.warmup):
            step()
    if args.profile:
        profile_steps(args, impls, steps)
    times: list[list[float]] = [[] for _ in impls]
    for _ in range(args.iters):
        for step, record in zip(steps, times):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                step()
                end.record()
                torch.cuda.synchronize()
                record.append(start.elapsed_time(end) / 1000)
            else:
                begin = time.perf_counter()
                step()
                record.append(time.perf_counter() - begin)
    return times


def _child_command(args: argparse.Namespace, task: str, model: str, mode: str, impls: list[str]):
    """(command, environment) of a measuring child process."""
    command = [sys.executable, __file__, "--child", task, "--model", model, "--mode", mode]
    for flag in ("batch_size", "device", "warmup", "iters", "memory_iters", "memory_mode"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    command += ["--img-size", *map(str, _hw(args))]
    command += ["--amp", args.amp] if args.amp else []
    command += [f"--{f.replace('_', '-')}" for f in ("channels_last", "compile") if getattr(args, f)]
    command += ["--impls", *impls] if impls else []
    command += ["--model-kwargs", args.model_kwargs] if args.model_kwargs else []
    command += ["--profile", "--profile-rows", str(args.profile_rows)] if args.profile and task == "time" else []
    env = dict(os.environ, **dict(item.split("=", 1) for item in args.env or []))
    if task == "memory" and args.device == "cpu":
        env["MALLOC_MMAP_THRESHOLD_"] = _CPU_MMAP_THRESHOLD
    return command, env


def _child(args: argparse.Namespace, task: str, model: str, mode: str, impls: list[str]) -> list:
    command, env = _child_command(args, task, model, mode, impls)
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"benchmark of {model} ({mode}, {task}) failed:\n{result.stderr}")
    if args.profile and task == "time":
        print(result.stderr, file=sys.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _concurrent_children(args: argparse.Namespace, model: str, mode: str, copies: int) -> list[list]:
    """The timing child run ``copies`` times at once (started together, each its own process): what a job meets
    beside others on the same cores."""
    command, env = _child_command(args, "time", model, mode, [])
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)]
    procs += [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
              for _ in range(copies - 1)]  # fmt: skip
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"benchmark of {model} ({mode}, time, {copies} copies) failed:\n{err}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def contention(args: argparse.Namespace) -> list[dict]:
    """Step time of one job alone and beside ``--copies - 1`` identical jobs (``--env`` sets e.g.
    ``OMP_WAIT_POLICY``/``GOMP_SPINCOUNT`` for all of them): the slowdown thread oversubscription causes."""
    rows = []
    for model in args.models:
        for mode in args.modes:
            alone = statistics.median(_child(args, "time", model, mode, [])[0])
            together = [statistics.median(r[0]) for r in _concurrent_children(args, model, mode, args.copies)]
            rows.append(dict(model=model, mode=mode, alone=alone, together=max(together)))
    settings = " ".join(args.env or []) or "defaults"
    lines = [
        f"Settings: {_device_name(torch.device(args.device))}, batch {args.batch_size}, {args.img_size}px, "
        f"{args.memory_mode} mode, {settings}",
        "",
        f"| model | mode | ms/step alone | ms/step beside {args.copies - 1} other(s) | slowdown |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        slowdown = r["together"] / r["alone"]
        lines.append(
            f"| {r['model']} | {r['mode']} | {1000 * r['alone']:.0f} | {1000 * r['together']:.0f} | {slowdown:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if args.append:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        with open(Path(args.append), "a") as handle:
            handle.write(f"\n### {stamp}, contention ({settings})\n\n`{' '.join(sys.argv)}`\n\n{table}\n")
    return rows


def speed_ratios(base: list[float], times: list[float]) -> dict[str, float]:
    """Speed relative to ``base`` from rounds run side by side: the median of the per-round ratios (robust to the
    machine slowing down for a while, which moves both steps of a round) and their smallest and largest value."""
    ratios = sorted(b / t for b, t in zip(base, times))
    return dict(speed=statistics.median(ratios), speed_min=ratios[0], speed_max=ratios[-1])


def _command(args: argparse.Namespace) -> str:
    """The command line that repeats this measurement (written next to the table)."""
    parts = ["python tools/benchmark.py", "--models", *args.models, "--modes", *args.modes]
    parts += ["--impls", *args.impls] if args.impls else ["--memory-mode", args.memory_mode]
    parts += ["--output-stride", *map(str, args.output_stride)] if args.output_stride else []
    for flag in ("batch_size", "device", "warmup", "iters", "memory_iters"):
        parts += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    parts += ["--img-size", *map(str, sorted(set(_hw(args)), key=_hw(args).index))]
    parts += ["--seg-inference", *args.seg_inference] if args.seg_inference else []
    parts += [f"--model-kwargs '{args.model_kwargs}'"] if args.model_kwargs else []
    parts += [f"--{f.replace('_', '-')}" for f in ("skip_timing",) if getattr(args, f)]
    parts += ["--amp", args.amp] if args.amp else []
    parts += [f"--{f.replace('_', '-')}" for f in ("channels_last", "compile") if getattr(args, f)]
    return " ".join(parts)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Throughput and memory of dense models, optionally side by side")
    parser.add_argument("--models", nargs="+", default=["densenet_bc100_k12_cifar"])
    parser.add_argument("--modes", nargs="+", default=["train", "eval"], choices=["train", "eval"])
    parser.add_argument(
        "--impls",
        nargs="+",
        type=impl_spec,
        metavar="IMPL",
        help=f"compare implementations; ratios to the first ({', '.join(IMPLS)}; ours:<mode>@osN: output stride N)",
    )
    parser.add_argument(
        "--output-stride",
        nargs="+",
        type=int,
        metavar="N",
        help="measure each implementation (default ours:<--memory-mode>) at these output strides (8, 16, 32)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--img-size", type=int, nargs="+", default=[32], metavar="PX", help="side, or height width")
    parser.add_argument(
        "--seg-inference",
        nargs="+",
        metavar="SPEC",
        help="measure each implementation with these test-time inferences of a segmentation model (eval): whole, "
        "slide:CROP:STRIDE (e.g. slide:1024:768; sizes an int or HxW)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--amp", choices=["bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--memory-mode", default="buffer", choices=["plain", "buffer", "efficient"])
    parser.add_argument("--memory-efficient", action="store_const", const="efficient", dest="memory_mode")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5, help="timed steps (rounds) per configuration")
    parser.add_argument("--memory-iters", type=int, default=2, help="steps in the peak-memory process")
    parser.add_argument(
        "--model-kwargs", help="JSON of model arguments for our models, e.g. '{\"block_config\": [31, 31, 31]}'"
    )
    parser.add_argument("--skip-timing", action="store_true", help="peak memory only")
    parser.add_argument(
        "--copies", type=int, default=1, help="also time this many identical jobs at once (CPU contention)"
    )
    parser.add_argument("--env", nargs="*", metavar="KEY=VALUE", help="environment of the measuring processes")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators per step")
    parser.add_argument("--profile-rows", type=int, default=12, help="operators listed per profile table")
    parser.add_argument("--append", help="append the table, command and date to this markdown file")
    parser.add_argument("--input-pipeline", type=int, metavar="N", help="time the training loaders on N JPEGs")
    parser.add_argument("--workers", type=int, default=1, help="--input-pipeline: loader processes")
    parser.add_argument("--auto-augment", default="rand-m9-mstd0.5-inc1", help="--input-pipeline: timm's policy")
    parser.add_argument("--mixup", type=float, default=0.8, help="--input-pipeline: mixup alpha")
    parser.add_argument("--cutmix", type=float, default=1.0, help="--input-pipeline: CutMix alpha")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIME_CHOICES, help="deployment runtimes to time")
    parser.add_argument("--runtime-size", type=int, nargs="+", help="--runtimes: side or height width")
    parser.add_argument("--calib-images", type=int, default=32, help="--runtimes: int8 calibration images")
    parser.add_argument("--child", choices=["memory", "time"], help=argparse.SUPPRESS)  # internal
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    return parser


def input_pipeline(args: argparse.Namespace) -> list[dict]:
    """Images per second of our training loader and timm's at equal settings (module docstring), median of
    ``--iters`` epochs each after one warm-up epoch, alternating."""
    side = _hw(args)[0]
    data = dict(ClassificationTask.data_defaults, dataset="folder", augment="timm", auto_augment=args.auto_augment,
                re_prob=0.25, mixup_alpha=args.mixup, cutmix_alpha=args.cutmix)  # fmt: skip
    cfg = {"data": data, "train": {"label_smoothing": 0.1}, "model": {"type": "densenet_bc121_k32"}}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.input_pipeline):  # photo-sized JPEGs with structure (smooth noise), 4 classes
            folder = Path(tmp) / "train" / f"class{i % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(small).resize((400, 300), Image.BICUBIC).save(folder / f"{i}.jpg", quality=90)
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        transform = build_train_transform("timm", side, mean, std, options=augment_options(cfg))
        ours_set = ImageFolderDataset(Path(tmp) / "train", transform)
        dist = DistInfo()  # one process on the CPU
        ours, _ = build_train_loader(ours_set, args.batch_size, dist, 0, args.workers, mixup_collate(cfg, 4))
        timm_set = create_dataset("", root=str(Path(tmp) / "train"))
        theirs = create_loader(
            timm_set, input_size=(3, side, side), batch_size=args.batch_size, is_training=True, use_prefetcher=False,
            auto_augment=args.auto_augment, re_prob=0.25, re_mode="pixel", interpolation="bilinear", mean=mean,
            std=std, num_workers=args.workers, persistent_workers=args.workers > 0,
        )  # fmt: skip
        # the same fix on both sides: timm's RandAugment asks Pillow 13 for 0-bit posterize (a worker dies)
        keep_one_posterize_bit(theirs.dataset.transform)
        timm_mixup = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=0.1, num_classes=4)

        def epoch(loader, mix) -> float:
            start, count = time.perf_counter(), 0
            for inputs, targets in loader:
                if mix is not None:
                    inputs, targets = mix(inputs, targets)
                count += len(inputs)
            return count / (time.perf_counter() - start)

        rates: dict[str, list[float]] = {"ours": [], "timm": []}
        for round_ in range(args.iters + 1):
            for name, loader, mix in (("ours", ours, None), ("timm", theirs, timm_mixup)):
                rate = epoch(loader, mix)
                if round_:  # the first epoch starts the workers
                    rates[name].append(rate)
    cores = max(args.workers, 1)
    rows = [dict(loader=name, img_s=statistics.median(r), per_core=statistics.median(r) / cores) for name, r in
            rates.items()]  # fmt: skip
    ratio = rows[0]["img_s"] / rows[1]["img_s"]
    lines = [
        f"Settings: {args.input_pipeline} JPEGs 400x300 -> {side}px, batch {args.batch_size}, {args.workers} worker(s),"
        f" RandAugment {args.auto_augment}, random erasing 0.25, mixup {args.mixup}, CutMix {args.cutmix}",
        "",
        "| loader | img/s | img/s per worker |",
        "|---|---|---|",
        *(f"| {r['loader']} | {r['img_s']:.1f} | {r['per_core']:.1f} |" for r in rows),
        "",
        f"ours / timm: {ratio:.2f}x (median of {args.iters} epochs each, alternating, after a warm-up epoch)",
    ]
    print("\n".join(lines))
    return rows


def _runtime_callable(name: str, model: nn.Module, folder: Path, size: tuple[int, int], calib: int):
    """``images -> outputs`` of one runtime for ``model`` (exported into ``folder`` when a file runtime)."""
    if name == "eager":
        return lambda images: model(images)
    if name == "compiled":
        return torch.compile(model)
    fmt, int8 = name.removesuffix("-int8"), name.endswith("-int8")
    path = folder / f"{fmt}{FORMATS[fmt]}"
    if not path.exists():
        # traced at its own example (no 1x1 map); ranged up to the measured size (ExecuTorch plans for the bound)
        export_model(model, path, fmt, max_size=max(size))
    if int8:
        target = path.with_name(f"{fmt}-int8{path.suffix}")
        generator = torch.Generator().manual_seed(0)
        images = [torch.randn(1, 3, *size, generator=generator) for _ in range(calib)]
        quantize_file(path, target, images)
        path = target
    runtime = open_runtime(path)
    largest = runtime.info.max_batch if runtime.info is not None else None
    if largest is None:
        return runtime
    return lambda images: [runtime(chunk) for chunk in images.split(largest)]  # ExecuTorch: 8 images a call


def runtime_table(args: argparse.Namespace) -> list[dict]:
    """Latency (batch 1) and throughput (``--batch-size``) of each model in each runtime (module docstring)."""
    rows = []
    for model_name in args.models:
        torch.manual_seed(0)
        model = db.create_model(model_name, **json.loads(args.model_kwargs or "{}")).eval()
        _, _, typical = input_spec(model)
        size = tuple(args.runtime_size[:1] * 2 if len(args.runtime_size or ()) == 1 else args.runtime_size or typical)
        with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
            for runtime in args.runtimes:
                run = _runtime_callable(runtime, model, Path(tmp), size, args.calib_images)
                row = {"model": model_name, "size": "x".join(map(str, size)), "runtime": runtime}
                for batch, key in ((1, "latency_ms"), (args.batch_size, "batch_ms")):
                    images = torch.randn(batch, 3, *size)
                    for _ in range(args.warmup):
                        run(images)
                    times = []
                    for _ in range(args.iters):
                        start = time.perf_counter()
                        run(images)
                        times.append(time.perf_counter() - start)
                    row[key] = 1000 * statistics.median(times)
                row["img_s"] = args.batch_size / row["batch_ms"] * 1000
                rows.append(row)
                print(json.dumps(row), flush=True)
    for row in rows:  # speed relative to eager float32 of the same model
        base = next((r for r in rows if r["model"] == row["model"] and r["runtime"] == "eager"), None)
        row["vs_eager"] = row["img_s"] / base["img_s"] if base else float("nan")
    header = (
        f"| model | input | runtime | latency, batch 1 (ms) | throughput, batch {args.batch_size} (img/s) | vs eager |"
    )
    lines = [f"Settings: CPU, {torch.get_num_threads()} threads, median of {args.iters} calls after {args.warmup}", "",
             header, "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {r['model']} | {r['size']} | {r['runtime']} | {r['latency_ms']:.1f} | {r['img_s']:.1f} "
        f"| {r['vs_eager']:.2f}x |"
        for r in rows
    ]
    table = "\n".join(lines)
    print(table)
    if args.append:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        command = " ".join(["python tools/benchmark.py --runtimes", *args.runtimes, "--models", *args.models,
                            "--batch-size", str(args.batch_size), "--iters", str(args.iters), "--warmup",
                            str(args.warmup), *(["--model-kwargs", f"'{args.model_kwargs}'"] if args.model_kwargs
                                                else [])])  # fmt: skip
        with open(Path(args.append), "a") as handle:
            handle.write(f"\n### {stamp}, {platform.node() or 'machine'} (CPU)\n\n`{command}`\n\n{table}\n")
    return rows


def main(args: argparse.Namespace) -> list[dict]:
    if args.input_pipeline:
        return input_pipeline(args)
    if args.runtimes:
        return runtime_table(args)
    if args.child == "memory":
        print(json.dumps(measure_memory(args, args.impls[0] if args.impls else None)))
        return []
    if args.child == "time":
        print(json.dumps(measure_time(args, args.impls or [None])))
        return []

    try:  # a missing GPU or bf16 support is named here, not as a child's traceback
        args.device = str(resolve_device(args.device, option="--device"))  # 'auto' becomes what it picked
        amp_dtype(args.amp, torch.device(args.device), option="--amp")
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if args.copies > 1:
        return contention(args)
    if args.model_kwargs and any(not impl.startswith("ours:") for impl in args.impls or []):
        raise SystemExit("--model-kwargs changes our models only; compare torchvision/timm on registered layouts")
    compared = list(args.impls or [])
    if args.output_stride:
        if any("@" in impl or not impl.startswith("ours:") for impl in compared):
            raise SystemExit("--output-stride takes our implementations without @osN (ours:<mode>)")
        compared = [f"{impl}@os{s}" for impl in compared or [f"ours:{args.memory_mode}"] for s in args.output_stride]
    if args.seg_inference:
        for spec in args.seg_inference:
            seg_inference(spec)  # refused here, in one line, before any child runs
        compared = [
            f"{impl}#{spec}" for impl in compared or [f"ours:{args.memory_mode}"] for spec in args.seg_inference
        ]
    if any("@" in impl for impl in compared):
        tasks = {model: db.model_task(model) for model in args.models}
        if any(task != "classification" for task in tasks.values()):
            raise SystemExit(f"output strides apply to backbones (classification models); got {tasks}")
    rows = []
    for model in args.models:
        for mode in args.modes:
            impls = list(compared)
            rounds = None if args.skip_timing else _child(args, "time", model, mode, impls)
            peaks = [_child(args, "memory", model, mode, [impl] if impl else []) for impl in impls or [None]]
            for j, (impl, peak) in enumerate(zip(impls or [f"ours:{args.memory_mode}"], peaks)):
                label = f"{model} {args.model_kwargs}" if args.model_kwargs else model
                sec = None if rounds is None else statistics.median(rounds[j])
                rows.append(dict(model=label, mode=mode, impl=impl, sec=sec, peak_mb=peak))
            if impls:  # ratios to the first implementation listed
                base = rows[-len(impls)]
                for j, row in enumerate(rows[-len(impls) :]):
                    if rounds is not None:
                        row.update(speed_ratios(rounds[0], rounds[j]))
                    row["memory"] = row["peak_mb"] / base["peak_mb"] if base["peak_mb"] > 0 else float("nan")
    device_name = _device_name(torch.device(args.device))
    settings = (
        f"{device_name}, batch {args.batch_size}, {'x'.join(map(str, _hw(args)))}px, {args.amp or 'fp32'}"
        + (", channels_last" if args.channels_last else "")
        + (", compile" if args.compile else "")
    )
    header = (
        "| model | mode | implementation | img/s | ms/step | peak MB | speed vs first | speed range (rounds) "
        "| memory vs first |"
    )
    lines = [f"Settings: {settings}", "", header, "|" + "---|" * 9]
    for r in rows:  # "-" where a figure was not measured (--skip-timing, or no comparison)
        timing = "- | -" if r["sec"] is None else f"{args.batch_size / r['sec']:.1f} | {1000 * r['sec']:.1f}"
        speed = f"{r['speed']:.2f}x | {r['speed_min']:.2f}-{r['speed_max']:.2f}x" if "speed" in r else "- | -"
        memory = f"{r['memory']:.2f}x" if "memory" in r else "-"
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['impl']} | {timing} | {r['peak_mb']:.0f} | {speed} | {memory} |"
        )
    table = "\n".join(lines)
    if rows and "speed" in rows[0]:
        table += (
            f"\n\nms/step: median of {args.iters} rounds; speed vs first: median of the per-round ratios to the "
            "first implementation's step in the same round."
        )
    print(table)
    if args.append:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        cmd = _command(args)
        with open(Path(args.append), "a") as handle:
            handle.write(f"\n### {stamp}, {platform.node() or 'machine'} ({device_name})\n\n")
            handle.write(f"`{cmd}`\n\n{table}\n")
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
