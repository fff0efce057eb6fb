"""What every training tool shares: arguments, config resolution and the run itself. A task object supplies the
rest (see :class:`Task`), so that ``tools/train_cls.py`` and ``tools/train_seg.py`` stay a few lines each."""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from .config import check_config, load_config, merge_defaults
from .distributed import amp_dtype, init_distributed
from .trainer import Trainer

__all__ = ["Task", "get_args_parser", "parse_cfg_options", "resolve_config", "train", "run_main"]


class Task(Protocol):
    """A task for the shared trainer; ``densebackbones.tasks`` holds the classification, segmentation and detection
    adapters."""

    data_defaults: dict[str, Any]
    best_key: str
    best_mode: str

    def model_arg_names(self, raw_cfg: dict[str, Any]) -> list[str]: ...
    def build_model(self, cfg: dict[str, Any], pretrained: str | None = None) -> torch.nn.Module: ...
    def build_datasets(self, cfg: dict[str, Any]) -> tuple[Any, Any]: ...
    def loss_fn(self, cfg: dict[str, Any]) -> torch.nn.Module: ...
    def metric(self, cfg: dict[str, Any]) -> Any: ...
    def eval_forward(self, model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor: ...
    def finish(self, trainer: Trainer, metrics: dict[str, float], datasets: tuple[Any, Any]) -> None: ...


def parse_cfg_options(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values are Python literals when they parse as one (``0.1``, ``True``, ``(1, 2)``)."""
    options = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--cfg-options expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def get_args_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config", help="mmengine config file")
    parser.add_argument("--data-root", help="overrides data.root")
    parser.add_argument("--work-dir", help="overrides work_dir (default work_dirs/<config name>)")
    parser.add_argument("--resume", help="'auto' (work_dir/last.pth if present) or a checkpoint path")
    parser.add_argument("--pretrained", help="start from these weights (a new classifier where sizes differ)")
    parser.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return parser


def resolve_config(args: argparse.Namespace, task: Task) -> dict[str, Any]:
    """Load the config, apply overrides, reject unread keys, fill defaults, data root and work dir."""
    raw = load_config(args.config, parse_cfg_options(args.cfg_options)).to_dict()
    check_config(raw, task.model_arg_names(raw), task.data_defaults)
    resolved = merge_defaults(raw, task.data_defaults)
    if getattr(args, "data_root", None):
        resolved["data"]["root"] = args.data_root
    work_dir = getattr(args, "work_dir", None)
    resolved["work_dir"] = work_dir or resolved["work_dir"] or str(Path("work_dirs") / Path(args.config).stem)
    return resolved


def train(args: argparse.Namespace, task: Task) -> dict[str, float]:
    """Resolve the config, build everything, train (resuming if asked) and let the task export its results."""
    from mmengine.config import Config

    resolved = resolve_config(args, task)
    if args.print_config:
        print(Config(resolved).pretty_text)
        return {}
    dist = init_distributed(resolved["train"]["device"])
    amp_dtype(resolved["train"]["amp"], dist.device)  # a GPU without bf16 fails here, before model and data
    torch.manual_seed(resolved["train"]["seed"] + dist.rank)
    work_dir = Path(resolved["work_dir"])
    model = task.build_model(resolved, pretrained=args.pretrained)
    datasets = task.build_datasets(resolved)
    trainer = Trainer(
        resolved,
        model,
        *datasets,
        loss_fn=task.loss_fn(resolved),
        metric=task.metric(resolved),
        work_dir=work_dir,
        dist=dist,
        best_key=task.best_key,
        best_mode=task.best_mode,
        eval_forward=task.eval_forward,
        collate_fn=getattr(task, "collate_fn", None),
    )
    if dist.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        Config(resolved).dump(str(work_dir / "config.py"))
    resume = Trainer.find_resume(work_dir, args.resume)
    if resume is not None:
        trainer.resume(resume)
    metrics = trainer.fit()
    if dist.is_main:
        task.finish(trainer, metrics, datasets)
        shown = {k: round(v, 4) for k, v in metrics.items() if not k.startswith("IoU_")}
        print(f"final metrics: {shown}", flush=True)
        print(f"checkpoints: {work_dir / 'last.pth'}, {work_dir / 'best.pth'}", flush=True)
        print(f"logs: {work_dir / 'train.csv'}, {work_dir / 'eval.csv'}; curves: {work_dir / 'curves.png'}", flush=True)
    return metrics


def run_main(main: Callable[[argparse.Namespace], Any], parser: argparse.ArgumentParser) -> None:
    """Run a tool: a missing file, a bad config key or bad data ends with its message and exit status 2 instead of
    a traceback (the messages name the problem and the fix)."""
    try:
        main(parser.parse_args())
    except (FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err  # KeyError's str() adds quotes
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
