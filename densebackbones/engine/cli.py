"""What every training tool shares: arguments, config resolution and the run itself. A task object supplies the
rest (see :class:`Task`), so that ``tools/train_cls.py`` and ``tools/train_seg.py`` stay a few lines each."""

from __future__ import annotations

import argparse
import ast
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from mmengine.config import Config

from .checkpoint import CheckpointError, atomic_write_text, load_checkpoint
from .config import check_config, load_config, merge_defaults
from .distributed import DistInfo, all_gather_objects, amp_dtype, distributed_session
from .elastic import (
    PREEMPTED_EXIT_CODE,
    TrainingPreempted,
    preemption_handler,
    process_exits_on_stop,
    restart_count,
)
from .run_dir import RunDirectory
from .task import TaskRecord
from .trainer import NonFiniteLossError, Trainer

__all__ = ["Task", "TrainingInterrupted", "get_args_parser", "parse_cfg_options", "resolve_config", "run_main", "train"]

_logger = logging.getLogger(__name__)
DEBUG_ENV = "DENSEBACKBONES_DEBUG"  # set to 1 for full tracebacks instead of one-line errors


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where the last checkpoint is."""


class Task(Protocol):
    """A task for the shared trainer; ``densebackbones.tasks`` holds the classification, segmentation and detection
    adapters. ``build`` makes the run's :class:`~densebackbones.engine.task.TaskRecord` once (model, splits, loss,
    metric, the metric that decides ``best.pth``, evaluation forward, collates, meta data); the engine reads that
    record and nothing else of the task but its config schema, ``check`` (what can be refused before the work dir is
    claimed: transforms, batch sizes) and ``finish``."""

    data_defaults: dict[str, Any]
    data_choices: dict[str, Any]

    def model_arg_names(self, raw_cfg: dict[str, Any]) -> list[str]: ...
    def check(self, cfg: dict[str, Any], world_size: int) -> None: ...
    def build(self, cfg: dict[str, Any], pretrained: str | None = None, training: bool = True) -> TaskRecord: ...
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
    parser.add_argument(
        "--resume", help="'auto' (work_dir/last.pth, or the newest intact checkpoint there) or a checkpoint path"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="start over in a work dir that holds a run (deletes its checkpoints)"
    )
    parser.add_argument("--pretrained", help="start from these weights (a new classifier where sizes differ)")
    parser.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--debug", action="store_true", help=f"full tracebacks on errors (or {DEBUG_ENV}=1)")
    return parser


def resolve_config(args: argparse.Namespace, task: Task) -> dict[str, Any]:
    """Load the config, apply overrides, reject unread keys, fill defaults, data root and work dir."""
    options = parse_cfg_options(args.cfg_options)
    raw = load_config(args.config, options).to_dict()
    if "schedule.epochs" in options and (raw.get("schedule") or {}).get("max_iters"):
        raise ValueError(
            f"--cfg-options schedule.epochs={options['schedule.epochs']} has no effect: {args.config} sets "
            f"schedule.max_iters={raw['schedule']['max_iters']}, which fixes the length in steps; change "
            f"schedule.max_iters, or pass schedule.max_iters=None to count epochs"
        )
    check_config(raw, task.model_arg_names(raw), task.data_defaults, task.data_choices)
    resolved = merge_defaults(raw, task.data_defaults)
    if getattr(args, "data_root", None):
        resolved["data"]["root"] = args.data_root
    work_dir = getattr(args, "work_dir", None)
    resolved["work_dir"] = work_dir or resolved["work_dir"] or str(Path("work_dirs") / Path(args.config).stem)
    return resolved


def train(args: argparse.Namespace, task: Task) -> dict[str, float]:
    """Resolve the config, build everything, train (resuming if asked) and let the task export its results."""
    resolved = resolve_config(args, task)
    if args.print_config:
        print(Config(resolved).pretty_text)
        return {}
    with distributed_session(resolved["train"]["device"]) as dist:
        amp_dtype(resolved["train"]["amp"], dist.device)  # a GPU without bf16 fails here, before model and data
        task.check(resolved, dist.world_size)  # the task's cheap checks, before --overwrite deletes anything
        if resolved["optimizer"]["lr"] == 0:
            _logger.warning("optimizer.lr=0: the weights will not change (set a learning rate to train)")
        work_dir = Path(resolved["work_dir"])
        run_dir = RunDirectory(work_dir)  # rank 0 locks it and checks what it holds, before model and data are built
        overwrite = getattr(args, "overwrite", False)
        resume = args.resume
        if restart_count() > 0:
            # torchrun restarted the group after a worker failed: this attempt continues what the first one began, with
            # the same command line (--overwrite must not delete what it wrote, a --resume PATH is older than last.pth).
            found = Trainer.resume_candidates(work_dir, "auto")
            resume = "auto" if found or not resume else resume
            overwrite = False
            if dist.is_main:
                source = found[0] if found else (resume if resume != "auto" else "the start (no checkpoint yet)")
                print(f"torchrun restart {restart_count()}: resuming from {source}", flush=True)
        with run_dir.claim(bool(resume), overwrite) if dist.is_main else contextlib.nullcontext():
            return _train(args, task, resolved, dist, work_dir, resume)


def _train(
    args: argparse.Namespace, task: Task, resolved: dict[str, Any], dist: DistInfo, work_dir: Path, resume: str | None
) -> dict[str, float]:
    torch.manual_seed(resolved["train"]["seed"] + dist.rank)
    record = task.build(resolved, pretrained=args.pretrained)
    trainer = Trainer.from_record(resolved, record, work_dir, dist)
    _resume(trainer, work_dir, resume, dist)
    # After the resume: a refused one leaves the run's config as it was, and so does a finished run that is only
    # evaluated (its weights were trained with the config it has).
    if dist.is_main and trainer.epoch < trainer.epochs:
        work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(work_dir / "config.py", Config(resolved).pretty_text, "the run's config")
    try:
        with preemption_handler():  # SIGTERM: every rank finishes its step, last.pth is written, exit status 143
            metrics = trainer.fit()
    except KeyboardInterrupt:
        last = work_dir / "last.pth"
        where = f"the last checkpoint is {last} (continue with --resume auto)" if last.exists() else "no checkpoint yet"
        raise TrainingInterrupted(f"interrupted; {where}") from None
    if dist.is_main:
        task.finish(trainer, metrics, (record.train_set, record.eval_set))
        print(f"final metrics: {record.shown(metrics)}", flush=True)
        print(f"checkpoints: {work_dir / 'last.pth'}, {work_dir / 'best.pth'}", flush=True)
        curves = work_dir / "curves.png"
        plotted = f"; curves: {curves}" if curves.exists() else ""  # train.plot=False (or no matplotlib) writes none
        print(f"logs: {work_dir / 'train.csv'}, {work_dir / 'eval.csv'}{plotted}", flush=True)
    return metrics


def _choose_checkpoint(work_dir: Path, resume: str | None) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint to resume from and its content: ``--resume PATH``, or with ``auto`` the work dir's ``last.pth``
    and, should it be unreadable, the newest intact checkpoint there (with a warning naming both)."""
    candidates = Trainer.resume_candidates(work_dir, resume)
    for i, path in enumerate(candidates):
        try:
            return path, load_checkpoint(path, map_location="cpu")
        except CheckpointError as err:
            if resume != "auto" or i == len(candidates) - 1:
                hint = "" if resume != "auto" else " and no other checkpoint in the work dir is intact"
                raise CheckpointError(f"{err}{hint}; pass a readable checkpoint with --resume PATH") from err
            _logger.warning("%s; resuming from %s instead", err, candidates[i + 1])
    return None, None


def _resume(trainer: Trainer, work_dir: Path, resume: str | None, dist: DistInfo | None = None) -> None:
    """Resume from ``--resume`` (:func:`_choose_checkpoint`). Under torchrun rank 0 chooses and every rank loads
    that file: a rank that cannot see it (a work dir that is not shared between nodes) stops every rank with one
    message instead of training from other weights."""
    if not resume:
        return
    distributed = dist is not None and dist.enabled
    choice: dict[str, Any] = {}
    state = None
    if dist is None or dist.is_main:
        try:
            path, state = _choose_checkpoint(work_dir, resume)
            choice = {"path": str(path.resolve()) if path else None}
        except (CheckpointError, FileNotFoundError) as err:
            if not distributed:
                raise
            choice = {"error": str(err), "kind": type(err).__name__}
    if distributed:
        choice = all_gather_objects(choice)[0]  # rank 0's
        if "error" in choice:
            raise (CheckpointError if choice["kind"] == "CheckpointError" else FileNotFoundError)(choice["error"])
        if choice["path"] is not None:
            unseen = [r for r, seen in enumerate(all_gather_objects(Path(choice["path"]).is_file())) if not seen]
            if unseen:
                raise FileNotFoundError(
                    f"rank(s) {unseen} cannot read {choice['path']}, the checkpoint rank 0 resumes from: the work dir "
                    f"must be one folder shared by every node (docs/training.md)"
                )
        else:  # rank 0 found none: a rank that sees one means rank 0's node has another work dir
            found = all_gather_objects(bool(Trainer.resume_candidates(work_dir, resume)))
            seen = [rank for rank, any_found in enumerate(found) if any_found]
            if seen:
                raise FileNotFoundError(
                    f"rank 0 finds no checkpoint in {work_dir} but rank(s) {seen} do: the work dir must be one folder "
                    f"shared by every node (docs/training.md)"
                )
    if choice["path"] is None:  # --resume auto without a checkpoint yet: a fresh start
        if trainer.dist.is_main:
            dropped = trainer.train_log.drop_rows_after(0) + trainer.eval_log.drop_rows_after(0)
            if dropped:
                print(f"no checkpoint in {work_dir} yet: starting over, dropped {dropped} log row(s)", flush=True)
        return
    trainer.resume(choice["path"], state)


def _one_line(err: BaseException) -> str:
    """The message of ``err``: KeyError's without quotes, a DataLoader worker's without its traceback text."""
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if "Original Traceback" in message:  # re-raised from a DataLoader worker: keep the original error's line
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return message


def run_main(main: Callable[[argparse.Namespace], Any], parser: argparse.ArgumentParser) -> None:
    """Run a tool: every expected failure ends with one line (what went wrong, which file, what to do) and a non-zero
    exit status instead of a traceback, which ``--debug`` or ``DENSEBACKBONES_DEBUG=1`` shows: 2 for bad input
    (files, config, data, checkpoints), 1 for a run stopped by a non-finite loss, 130 for Ctrl-C, 143 for a run
    that SIGTERM stopped after writing its checkpoint (preemption; continue with ``--resume auto``)."""
    args = parser.parse_args()
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        with process_exits_on_stop():  # a second SIGTERM after the stop must not end the process before status 143
            main(args)
    except TrainingPreempted as err:  # the checkpoint of the last step is written
        print(str(err), file=sys.stderr)
        sys.exit(PREEMPTED_EXIT_CODE)
    except KeyboardInterrupt as err:  # TrainingInterrupted says where the last checkpoint is
        print(str(err) or "interrupted", file=sys.stderr)
        sys.exit(130)
    except (FileNotFoundError, KeyError, ValueError, TypeError, OSError, NonFiniteLossError) as err:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(err)}", file=sys.stderr)
        sys.exit(1 if isinstance(err, NonFiniteLossError) else 2)
