"""Everything a GPU machine must show in one command (``make gpu-check``), sized for one run of about 5 minutes on an
H100/H200, with every step's output in one log file:

1. ``pytest -m gpu``: every memory mode equals plain on CUDA in float64 (NCHW and channels_last, with and without
   dropout, frozen BN), bf16/fp16 autocast within stated tolerances, FC-DenseNet, DSOD and Pelee steps in every
   mode, the CPU contract guard's steps on the real CUDA kernels;
2. two-iteration runs of ``train_cls`` (DenseNet, a condensing CondenseNet, a multi-exit MSDNet), ``train_seg`` and
   ``train_det`` (DSOD and Pelee) on the digits and shapes configs with ``train.amp=bf16 train.channels_last=True``;
3. a short ``tools/benchmark.py`` comparison against torchvision (DenseNet-121 bf16 channels_last, DenseNet-BC-100
   fp32), its markdown table in the log.

``--dry-run`` runs the same steps on the CPU (GPU tests skipped, tiny benchmark): CI runs it so that this script
cannot rot. Exit status 1 if any step failed; the summary at the end of the log lists each step's status and time.

    python tools/gpu_check.py --log gpu-check.log            # on the GPU machine (docs/gpu.md)
    python tools/gpu_check.py --dry-run --log gpu-check.log  # anywhere
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TWO_ITERATIONS = ["schedule.epochs=1", "train.max_iters_per_epoch=2", "train.plot=False", "data.num_workers=0"]


def _training_steps(device: str, work: Path) -> list[tuple[str, list[str]]]:
    common = [f"train.device={device}", "train.amp=bf16", "train.channels_last=True"]

    def tool(name: str, config: str, run: str) -> list[str]:
        return [
            sys.executable,
            str(REPO / "tools" / name),
            str(REPO / "configs" / config),
            "--work-dir",
            str(work / run),
        ]

    return [
        (
            "train_cls (digits, 2 iterations)",
            tool("train_cls.py", "cls/densenet_bc_digits.py", "cls") + ["--cfg-options", *common, *TWO_ITERATIONS],
        ),
        (
            "train_cls condensenet (digits, 2 iterations: condenses)",
            tool("train_cls.py", "cls/condensenet_digits.py", "cls_condense")
            + ["--cfg-options", *common, *TWO_ITERATIONS],
        ),
        (
            "train_cls msdnet (digits, 2 iterations: exits)",
            tool("train_cls.py", "cls/msdnet_digits.py", "cls_msdnet") + ["--cfg-options", *common, *TWO_ITERATIONS],
        ),
        (
            "train_seg (shapes, 2 iterations)",
            tool("train_seg.py", "seg/fc_densenet_shapes.py", "seg")
            + ["--data-root", str(work / "data" / "shapes_seg"), "--cfg-options", *common, *TWO_ITERATIONS],
        ),
        (
            "train_det (shapes, 2 iterations)",
            tool("train_det.py", "det/dsod_shapes.py", "det")
            + ["--data-root", str(work / "data" / "shapes_det"), "--cfg-options", *common]
            + ["schedule.max_iters=2", "schedule.milestones=(1,)", "data.shapes_train=16", "data.shapes_val=4"]
            + ["train.plot=False", "data.num_workers=0"],
        ),
        (
            "train_det pelee (shapes, 2 iterations)",
            tool("train_det.py", "det/pelee_shapes.py", "det_pelee")
            + ["--data-root", str(work / "data" / "shapes_det"), "--cfg-options", *common]
            + ["schedule.max_iters=2", "schedule.milestones=(1,)", "data.shapes_train=16", "data.shapes_val=4"]
            + ["train.plot=False", "data.num_workers=0"],
        ),
    ]


def _benchmark_steps(device: str) -> list[tuple[str, list[str]]]:
    bench = [sys.executable, str(REPO / "tools" / "benchmark.py"), "--device", device, "--modes", "train"]
    impls = ["--impls", "torchvision", "ours:plain", "ours:buffer", "ours:efficient"]
    if device == "cpu":  # the dry form: the same wiring, seconds of work
        return [
            (
                "benchmark (tiny, cpu)",
                [*bench, "--models", "densenet_bc100_k12_cifar", "--batch-size", "4", "--img-size", "32"]
                + ["--impls", "torchvision", "ours:buffer", "--warmup", "1", "--iters", "1", "--memory-iters", "1"],
            )
        ]
    return [
        (
            "benchmark DenseNet-121 (batch 64, bf16, channels_last)",
            [*bench, "--models", "densenet_bc121_k32", "--batch-size", "64", "--img-size", "224", "--amp", "bf16"]
            + ["--channels-last", "--warmup", "3", "--iters", "10", *impls],
        ),
        (
            "benchmark DenseNet-BC-100 k=12 (batch 64, fp32)",
            [*bench, "--models", "densenet_bc100_k12_cifar", "--batch-size", "64", "--img-size", "32"]
            + ["--warmup", "3", "--iters", "10", *impls],
        ),
    ]


def plan_steps(device: str, work: Path, benchmark: bool = True) -> list[tuple[str, list[str]]]:
    """(name, command) of every step, in order."""
    pytest = [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO)]
    steps = [("pytest -m gpu", [*pytest, "-m", "gpu", "-q", "-p", "no:cacheprovider", str(REPO / "tests")])]
    steps += _training_steps(device, work)
    return steps + (_benchmark_steps(device) if benchmark else [])


def _importable_tree(scratch: Path) -> dict[str, str]:
    """Environment in which the steps import this checkout as pip would install it, whether it is installed or not
    (a bare GPU machine): ``densebackbones/`` with ``heads/`` as ``densebackbones.heads`` laid out in
    ``scratch / 'site'``, first on ``PYTHONPATH`` after any path already there (carried wheels). The steps run in
    ``scratch / 'cwd'``: from the repository root, ``python -m`` would put the bare ``densebackbones/``, which lacks
    ``heads``, first on ``sys.path``. The same layout everywhere, so the dry run in CI tests what a GPU machine gets.
    """
    site = scratch / "site"
    (scratch / "cwd").mkdir()
    shutil.copytree(REPO / "densebackbones", site / "densebackbones", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "heads", site / "densebackbones" / "heads", ignore=shutil.ignore_patterns("__pycache__"))
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(site)) if p)
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")


def _environment_report(env: dict[str, str], cwd: Path) -> str:
    code = (
        "import torch, platform, densebackbones.heads as h; c = torch.cuda.is_available(); "
        "print(f'python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN '"
        "f'{torch.backends.cudnn.version()}, device: ' + (torch.cuda.get_device_name() if c else 'cpu only')); "
        "print(f'densebackbones.heads from {h.__file__}')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    revision = (commit.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")
    return f"commit {revision}\n{(result.stdout or result.stderr).strip()}"


def _run_step(name: str, command: list[str], env: dict[str, str], cwd: Path, log, timeout: float):
    log.write(f"\n## {name}\n\n$ {' '.join(command)}\n\n")
    log.flush()
    print(f"[gpu-check] {name} ...", flush=True)
    begin = time.perf_counter()
    try:
        result = subprocess.run(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
        status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
    except subprocess.TimeoutExpired:
        status = f"FAILED (timed out after {timeout:.0f} s)"
    seconds = time.perf_counter() - begin
    print(f"[gpu-check] {name}: {status} ({seconds:.0f} s)", flush=True)
    return status, seconds


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="GPU tests, short CUDA trainings and a benchmark in one log")
    parser.add_argument("--log", default="gpu-check.log", help="the one log file (overwritten)")
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU (CI runs this)")
    parser.add_argument("--skip-benchmark", action="store_true")
    parser.add_argument("--step-timeout", type=float, default=240.0, help="seconds before a step is stopped")
    return parser


def main(args: argparse.Namespace) -> int:
    device = "cpu" if args.dry_run else "cuda"
    log_path = Path(args.log).resolve()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        scratch = Path(scratch)
        env = _importable_tree(scratch)
        if device == "cuda":
            check = subprocess.run([sys.executable, "-c", "import torch; assert torch.cuda.is_available()"], env=env)
            if check.returncode:
                print("error: CUDA is not available here; run with --dry-run for the CPU form", file=sys.stderr)
                return 2
        steps = plan_steps(device, scratch / "runs", benchmark=not args.skip_benchmark)
        results = []
        log_path.write_text("")
        with open(log_path, "a") as log:  # append mode: the steps' output and ours never overwrite each other
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            log.write(f"# gpu-check{' (dry run on the CPU)' if args.dry_run else ''}, {stamp}\n\n")
            log.write(_environment_report(env, scratch / "cwd") + "\n")
            for name, command in steps:
                results.append((name, *_run_step(name, command, env, scratch / "cwd", log, args.step_timeout)))
            summary = ["", "## Summary", "", "| step | status | seconds |", "|---|---|---|"]
            summary += [f"| {name} | {status} | {seconds:.0f} |" for name, status, seconds in results]
            log.write("\n".join(summary) + "\n")
    print("\n".join(summary[3:]))
    print(f"[gpu-check] log: {log_path}")
    return 0 if all(status == "ok" for _, status, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
