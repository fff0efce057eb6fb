"""The trainer shared by classification, segmentation and detection.

A task supplies the model, the data sets, a loss ``loss_fn(outputs, targets)`` and a metric object
(``reset/update(outputs, targets, loss_sum)/compute(device)``); the trainer owns everything else: torchrun/DDP,
AMP, channels_last, torch.compile, gradient accumulation and clipping, EMA, SyncBN, progress bars, CSV logs,
atomic checkpoints and exact resumption, also mid-epoch from step checkpoints (``train.checkpoint_interval_steps``)
with the data position, and SIGTERM as a preemption notice (``elastic.py``). It is plain PyTorch in the manner of
torchvision's reference scripts.

Model hooks. A model may implement any of the protocols of :mod:`densebackbones.engine.hooks` (training progress,
a regularisation loss, EMA copying its buffers); the trainer knows nothing else about it.
"""

from __future__ import annotations

import functools
import json
import logging
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .checkpoint import (
    atomic_save,
    atomic_write_text,
    get_rng_state,
    non_finite_tensors,
)
from .config import eval_batch_size, micro_batch_size
from .distributed import DistInfo, ShardSampler, all_gather_objects, all_reduce_sum, amp_dtype
from .elastic import (
    ResumableDistributedSampler,
    SampleSeeded,
    TrainingPreempted,
    handler_installed,
    stop_requested,
    worker_ignores_sigterm,
)
from .events import EpochLoop, default_events, load_events
from .hooks import EmaCopiesBuffers, RegularizedModel
from .logs import CSVLogger, plot_run
from .optim import build_optimizer, build_scheduler
from .resume import resume as resume_run
from .task import TaskRecord

__all__ = ["Trainer", "NonFiniteLossError", "TrainingPreempted", "evaluate", "evaluate_record", "evaluation_loader"]

_logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


@functools.lru_cache(maxsize=1)
def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def to_device(batch: Any, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format) -> Any:
    """Move tensors (also inside lists, tuples and dicts: detection targets) to ``device``."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        return batch.contiguous(memory_format=memory_format) if batch.ndim == 4 else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device, memory_format) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device, memory_format) for k, v in batch.items()}
    return batch


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    metric: Any,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    eval_forward: Callable[[nn.Module, Any], Any] | None = None,
    show_progress: bool = True,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, float]:
    """Run ``model`` over ``loader`` and return ``metric.compute()`` (summed over processes, not per batch)."""
    model.eval()
    metric.reset()
    eval_forward = eval_forward or (lambda m, x: m(x))
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    with tqdm(loader, desc="eval", disable=not show_progress, mininterval=2.0) as batches:
        for inputs, targets in batches:
            inputs, targets = to_device((inputs, targets), device, memory_format)
            with autocast:
                outputs = eval_forward(model, inputs)
                loss = loss_fn(outputs, targets)
            outputs = outputs.float() if torch.is_tensor(outputs) else tuple(o.float() for o in outputs)
            metric.update(outputs, targets, loss.float() * len(targets))
    return metric.compute(device)


def evaluation_loader(
    eval_set: Dataset, batch_size: int, dist: DistInfo, workers: int, collate_fn: Callable | None = None, seed: int = 0
) -> DataLoader:
    """The evaluation loader of the trainer and the evaluation tools alike: this process's shard of the split
    (``ShardSampler``: every image once over all processes), in order."""
    return DataLoader(
        eval_set,
        batch_size=batch_size,
        sampler=ShardSampler(len(eval_set), dist.rank, dist.world_size),
        generator=torch.Generator().manual_seed(seed),
        **loader_options(workers, dist.device, collate_fn),
    )


def evaluate_record(
    record: TaskRecord, cfg: dict[str, Any], dist: DistInfo, batch_size: int | None = None, show_progress: bool = True
) -> dict[str, float]:
    """The one evaluation path of ``eval_*`` and ``predict_*`` tools, as the trainer evaluates: the record's model
    over its evaluation split with its loss, metric and ``eval_forward``, the config's precision and memory format,
    metrics summed over all processes. ``batch_size``: per process (default: ``data.eval_batch_size``, else the
    training batch's share)."""
    data, train = cfg["data"], cfg["train"]
    batch = batch_size or eval_batch_size(cfg, dist.world_size)
    loader = evaluation_loader(record.eval_set, batch, dist, data["num_workers"], record.collate_fn)
    memory_format = torch.channels_last if train["channels_last"] else torch.contiguous_format
    model = record.model.to(dist.device, memory_format=memory_format)
    precision = amp_dtype(train["amp"], dist.device)
    return evaluate(model, loader, record.loss_fn, record.metric, dist.device, precision, record.eval_forward,
                    show_progress=show_progress and dist.is_main, memory_format=memory_format)  # fmt: skip


def loader_options(workers: int, device: torch.device, collate_fn: Callable | None) -> dict[str, Any]:
    """The ``DataLoader`` options both of the trainer's loaders share."""
    return dict(
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        collate_fn=collate_fn,
        worker_init_fn=worker_ignores_sigterm,
    )


def build_train_loader(
    train_set: Dataset,
    micro_batch: int,
    dist: DistInfo,
    seed: int,
    workers: int,
    collate_fn: Callable | None = None,
    repeats: int = 1,
) -> tuple[DataLoader, ResumableDistributedSampler]:
    """The training loader and its sampler: DistributedSampler's permutation and shards, able to start mid-epoch,
    each sample's augmentation seeded from (seed, epoch, index), so that a resumed or re-split run reads exactly the
    same batches (elastic.py); the loader draws its workers' base seeds from its own generator, not from the model's
    random stream. ``repeats``: repeated augmentation."""
    sampler = ResumableDistributedSampler(train_set, dist.world_size, dist.rank, seed=seed, repeats=repeats)
    loader = DataLoader(
        SampleSeeded(train_set),
        batch_size=micro_batch,
        sampler=sampler,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
        **loader_options(workers, dist.device, collate_fn),
    )
    return loader, sampler


class Trainer:
    """Train ``model`` on ``train_set`` and evaluate on ``eval_set`` as the resolved config ``cfg`` says.

    Args:
        cfg: resolved config (``config.merge_defaults``): sections data, optimizer, schedule, train.
        model: the model (not yet on the device, not wrapped).
        train_set, eval_set: map-style data sets yielding ``(inputs, targets)``.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` (mean over the batch).
        metric: accumulates evaluation results; its ``compute`` returns a dict of floats.
        work_dir: where checkpoints, logs, the resolved config and plots go (rank 0 only).
        dist: process placement from ``distributed.init_distributed``.
        best_key: metric that selects ``best.pth``; ``best_mode`` is ``'max'`` or ``'min'``.
        eval_forward: optional ``eval_forward(model, inputs) -> outputs`` (e.g. ten-crop averaging).
        collate_fn: optional collate function for both loaders; ``train_collate_fn`` replaces it for the training
            loader (mixup and CutMix mix the training batches only).
        extra_meta: what the task adds to ``meta.json`` and every checkpoint's ``meta`` (e.g. class names).
    """

    def __init__(
        self,
        cfg: dict[str, Any],
        model: nn.Module,
        train_set: Dataset,
        eval_set: Dataset | None,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        metric: Any,
        work_dir: str | Path,
        dist: DistInfo,
        best_key: str = "top1",
        best_mode: str = "max",
        eval_forward: Callable[[nn.Module, Any], Any] | None = None,
        collate_fn: Callable | None = None,
        extra_meta: dict[str, Any] | None = None,
        train_collate_fn: Callable | None = None,
    ) -> None:
        self.cfg = cfg
        self.extra_meta = dict(extra_meta or {})
        self.train_cfg = cfg["train"]
        self.dist = dist
        self.device = dist.device
        self.work_dir = Path(work_dir)
        self.loss_fn = loss_fn.to(dist.device) if isinstance(loss_fn, nn.Module) else loss_fn  # class weights
        self.metric = metric
        self.best_key, self.best_mode = best_key, best_mode
        self.eval_forward = eval_forward  # None: model(inputs), as evaluate() defaults
        self.epochs = cfg["schedule"]["epochs"]

        data_cfg = cfg["data"]
        accum = self.train_cfg["accum_steps"]
        global_batch = data_cfg["batch_size"]
        if global_batch % (dist.world_size * accum):
            raise ValueError(
                f"data.batch_size={global_batch} (global) must be divisible by world size {dist.world_size} x "
                f"train.accum_steps {accum}"
            )
        self.accum_steps = accum
        self.micro_batch = micro_batch_size(cfg, dist.world_size)
        seed = self.train_cfg["seed"]
        workers = data_cfg["num_workers"]
        self.train_loader, self.train_sampler = build_train_loader(
            train_set, self.micro_batch, dist, seed, workers, train_collate_fn or collate_fn,
            self.train_cfg["repeated_aug"],
        )  # fmt: skip
        if len(self.train_loader) < accum:
            raise ValueError(
                f"the training set ({len(train_set)} samples) gives fewer than one optimiser step of "
                f"{global_batch} samples; lower data.batch_size"
            )
        self.eval_loader = None
        if eval_set is not None:
            eval_batch = eval_batch_size(cfg, dist.world_size)
            self.eval_loader = evaluation_loader(eval_set, eval_batch, dist, workers, collate_fn, seed)
        self.iters_per_epoch = len(self.train_loader) // accum
        if self.train_cfg["max_iters_per_epoch"]:
            self.iters_per_epoch = min(self.iters_per_epoch, self.train_cfg["max_iters_per_epoch"])
        # schedule.max_iters (DSOD: 100k iterations) fixes the length in optimiser steps instead of epochs
        self.max_iters = cfg["schedule"].get("max_iters")
        if self.max_iters:
            self.epochs = -(-self.max_iters // self.iters_per_epoch)

        if self.train_cfg["sync_bn"] and dist.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.memory_format = torch.channels_last if self.train_cfg["channels_last"] else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.optimizer = build_optimizer(self.model, cfg["optimizer"], global_batch)
        self.scheduler = build_scheduler(
            self.optimizer, dict(cfg["schedule"], epochs=self.epochs), self.iters_per_epoch
        )
        amp = self.train_cfg["amp"]
        self.amp_dtype = amp_dtype(amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.ema = None
        if self.train_cfg["ema_decay"]:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(
                self.model,
                decay=self.train_cfg["ema_decay"],
                device=self.device,
                exclude_buffers=isinstance(self.model, EmaCopiesBuffers) and self.model.ema_copies_buffers,
            )
        self.ddp_model = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if dist.enabled
            else self.model
        )
        self.forward_model = torch.compile(self.ddp_model) if self.train_cfg["compile"] else self.ddp_model

        self.epoch = 0  # epochs completed
        self.step = 0  # optimiser steps completed
        self.epoch_step = 0  # optimiser steps completed in the current epoch (a step checkpoint's data position)
        self.checkpoint_interval = self.train_cfg.get("checkpoint_interval_steps") or 0
        self.events = default_events(load_events(self.train_cfg.get("hooks") or ()))  # engine/events.py
        self._resumed_loop: dict[str, Any] | None = None  # the epoch's running sums from a step checkpoint
        self._resumed = False
        self.last_step_checkpoint_s: float | None = None  # how long the latest step checkpoint took (all ranks)
        # Barriers and the preemption vote go over gloo (CPU tensors: no GPU synchronisation under nccl).
        self._cpu_group = None
        if dist.enabled and torch.distributed.get_backend() != "gloo":
            self._cpu_group = torch.distributed.new_group(backend="gloo")
        self.best_metric: float | None = None
        self.evals_since_best = 0  # for train.early_stop_patience
        self.history: list[dict[str, float]] = []
        if dist.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self.train_log = CSVLogger(self.work_dir / "train.csv")
            self.eval_log = CSVLogger(self.work_dir / "eval.csv")

    @classmethod
    def from_record(cls, cfg: dict[str, Any], record: TaskRecord, work_dir: str | Path, dist: DistInfo) -> Trainer:
        """The trainer of a task's record (engine/task.py), as the training tools build it."""
        return cls(
            cfg, record.model, record.train_set, record.eval_set, record.loss_fn, record.metric, work_dir, dist,
            best_key=record.best_key, best_mode=record.best_mode, eval_forward=record.eval_forward,
            collate_fn=record.collate_fn, extra_meta=dict(record.meta), train_collate_fn=record.train_collate_fn,
        )  # fmt: skip

    # ---------------------------------------------------------------------------------------------- checkpoints
    def state_dict(self, loop: dict[str, float] | None = None) -> dict[str, Any]:
        """Everything a resumed run needs; collective (every rank calls it). ``loop``: this rank's running sums of
        the epoch in progress (a step checkpoint's), gathered from every rank."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "model_ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "epoch_step": self.epoch_step,  # > 0: written mid-epoch, after that many of its optimiser steps
            "loop": all_gather_objects(loop or {}),  # one entry per rank
            "data": {
                "sampler_epoch": self.train_sampler.epoch,
                "consumed_per_rank": self.epoch_step * self.micro_batch * self.accum_steps,
                "global_batch": self.global_batch,
                "world_size": self.dist.world_size,
                "seed": self.train_sampler.seed,
                "iters_per_epoch": self.iters_per_epoch,
            },
            "best_metric": self.best_metric,
            "evals_since_best": self.evals_since_best,
            "rng": all_gather_objects(get_rng_state()),  # one entry per rank
            "config": self.cfg,
            "meta": self.meta(),
        }

    def meta(self) -> dict[str, Any]:
        return {
            "git_commit": _git_commit(),
            "torch": str(torch.__version__),
            "cuda": torch.version.cuda or "",
            "device": torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else (platform.processor() or platform.machine()),
            "world_size": self.dist.world_size,
            "command": " ".join(sys.argv),
            **self.extra_meta,
        }

    def save(self, metrics: dict[str, float] | None) -> None:
        """Write ``last.pth`` (and ``best.pth``, ``epoch_N.pth``) atomically; rank 0 writes, every rank calls."""
        better = False
        if metrics is not None and self.best_key in metrics:
            value = metrics[self.best_key]
            better = self.best_metric is None or (
                value > self.best_metric if self.best_mode == "max" else value < self.best_metric
            )
            if better:
                self.best_metric = value
            self.evals_since_best = 0 if better else self.evals_since_best + 1
        state = self.state_dict()  # collective (RNG gather)
        self._refuse_non_finite(state)
        if not self.dist.is_main:
            self._while_saving()  # while rank 0 writes
        if self.dist.is_main:
            atomic_save(state, self.work_dir / "last.pth", self._while_saving)
            if better:
                atomic_save(state, self.work_dir / "best.pth")
            every = self.train_cfg["save_interval"]
            if every and self.epoch % every == 0:
                atomic_save(state, self.work_dir / f"epoch_{self.epoch}.pth")
        self._barrier()  # no rank goes on (or reads last.pth after a restart) before the file is complete

    def save_step(self, loop: dict[str, float]) -> None:
        """Write the mid-epoch checkpoint ``last.pth`` (rank 0 writes, every rank calls; atomic, then a barrier)."""
        start = time.perf_counter()
        state = self.state_dict(loop)  # collective
        self._refuse_non_finite(state)
        if self.dist.is_main:
            atomic_save(state, self.work_dir / "last.pth", self._while_saving)
        else:
            self._while_saving()  # while rank 0 writes
        self._barrier()
        self.last_step_checkpoint_s = time.perf_counter() - start

    def _while_saving(self) -> None:
        """The events' ``while_saving``: rank 0's temporary file is complete and not renamed, or rank 0 writes."""
        for event in self.events:
            event.while_saving(self)

    def _refuse_non_finite(self, state: dict[str, Any]) -> None:
        """Never write a checkpoint with NaN or inf weights, EMA or optimiser state: a step with a finite loss can
        still blow the weights up (a huge learning rate), and the message would then name a poisoned file as the last
        good one. Every rank checks its own copy (equal under DDP), so all stop together."""
        bad = non_finite_tensors({k: state[k] for k in ("model", "model_ema", "optimizer") if k in state})
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            self._stop_non_finite(
                f"{len(bad)} tensors of the state to checkpoint are not finite ({shown})",
                "lower optimizer.lr or set train.clip_grad",
            )

    def _barrier(self) -> None:
        if self.dist.enabled:
            torch.distributed.barrier(group=self._cpu_group)

    def _agree_to_stop(self) -> bool:
        """Whether any rank received SIGTERM (every rank gets the same answer); False without the handler."""
        if not handler_installed():
            return False
        flag = torch.tensor([int(stop_requested())])
        if self.dist.enabled:
            torch.distributed.all_reduce(flag, group=self._cpu_group)
        return bool(flag.item())

    def resume(self, path: str | Path, state: dict[str, Any] | None = None) -> None:
        """Continue exactly where the checkpoint was written (engine/resume.py: model, optimiser, schedule, scaler,
        EMA, RNG, and for a step checkpoint the position in the epoch and its running sums; a changed config is
        applied or refused key by key). ``state``: the file's content if loaded."""
        resume_run(self, path, state)

    # ------------------------------------------------------------------------------------------------- training
    def _to_device(self, batch: Any) -> Any:
        return to_device(batch, self.device, self.memory_format)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _check_finite(self, loss_sum: torch.Tensor, where: str) -> None:
        if not torch.isfinite(loss_sum):
            self._stop_non_finite(
                f"loss is {loss_sum.item()} at {where}",
                "lower optimizer.lr, set train.clip_grad or use train.amp='bf16' instead of 'fp16'",
            )

    def _check_finite_grads(self, grad_norm: torch.Tensor, where: str) -> None:
        grad_norm = all_reduce_sum(grad_norm)  # every rank stops together
        if not torch.isfinite(grad_norm):
            self._stop_non_finite(
                f"gradient norm is {grad_norm.item()} in a step up to {where} although the loss was finite",
                "rerun with train.amp=None to see whether reduced precision causes it (docs/troubleshooting.md)",
            )

    def _stop_non_finite(self, what: str, fix: str) -> None:
        last = self.work_dir / "last.pth"
        raise NonFiniteLossError(
            f"{what}; training stopped. The last good checkpoint is {last if last.exists() else '(none yet)'}: "
            f"{fix}, then resume from it."
        )

    @property
    def global_batch(self) -> int:
        """Images per optimiser step over all processes and accumulation steps (``data.batch_size``)."""
        return self.micro_batch * self.accum_steps * self.dist.world_size

    @property
    def total_steps(self) -> int:
        return self.max_iters or self.epochs * self.iters_per_epoch

    def _with_regularization(self, loss: torch.Tensor) -> torch.Tensor:
        extra = self.model.regularization_loss() if isinstance(self.model, RegularizedModel) else None
        return loss if extra is None else loss + extra.to(loss.dtype)

    def train_one_epoch(self) -> dict[str, float]:
        """One epoch: per optimiser step, ``accum_steps`` micro-batches of forward, loss and backward, the step and
        the schedule, then the step events (engine/events.py: EMA, log window, step checkpoint, preemption)."""
        self.ddp_model.train()
        loop = EpochLoop.begin(self)  # the sampler's position, the running sums and the progress bar
        with loop.progress:
            batches = iter(self.train_loader)
            for iteration in range(loop.start, loop.iterations):
                loop.it = iteration
                self._call_events("before_step", loop)
                for micro in range(self.accum_steps):
                    inputs, targets = self._to_device(next(batches))
                    last_micro = micro == self.accum_steps - 1
                    with self.ddp_model.no_sync() if self.dist.enabled and not last_micro else nullcontext():
                        with self._autocast():
                            loss = self.loss_fn(self.forward_model(inputs), targets)
                        loss = self._with_regularization(loss)
                        self.scaler.scale(loss / self.accum_steps).backward()
                    loop.add(loss.detach() / self.accum_steps, targets, self.micro_batch)
                loop.observe_grad_norm(self._clip_gradients())
                self.scaler.step(self.optimizer)  # exactly one optimiser step per update
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.step, self.epoch_step = self.step + 1, iteration + 1
                loop.progress.update(1)
                self._call_events("after_step", loop)
        return loop.summary(self)

    def _clip_gradients(self) -> torch.Tensor | None:
        """``train.clip_grad``: clip the true (unscaled) gradients; the norm, for the log window's finiteness check
        (None when not clipping, or under fp16, whose scaler skips non-finite steps itself). A non-finite norm makes
        clipping write NaN into every gradient and the step into every weight while the step's loss was finite."""
        clip = self.train_cfg["clip_grad"]
        if not clip:
            return None
        self.scaler.unscale_(self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        return None if self.scaler.is_enabled() else grad_norm

    def _call_events(self, moment: str, loop: EpochLoop) -> None:
        for event in self.events:
            getattr(event, moment)(self, loop)

    def _preempted_message(self) -> str:
        return (
            f"preempted (SIGTERM) at step {self.step} (epoch {self.epoch + (1 if self.epoch_step else 0)}, "
            f"{self.epoch_step} steps into it); checkpoint {self.work_dir / 'last.pth'} written: continue with "
            f"--resume auto (exit status 143)"
        )

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated, select best.pth and are exported: the EMA ones when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        """Metrics over the whole evaluation set, summed over all processes (``eval_model`` by default)."""
        if self.eval_loader is None:
            return {}
        if model is None:
            self._share_ema_buffers()
        model = model if model is not None else self.eval_model
        return evaluate(
            model,
            self.eval_loader,
            self.loss_fn,
            self.metric,
            self.device,
            self.amp_dtype,
            self.eval_forward,
            show_progress=self.dist.is_main,
            memory_format=self.memory_format,
        )

    def _share_ema_buffers(self) -> None:
        """Every rank evaluates rank 0's EMA buffers, the ones its checkpoints hold. The EMA averages each rank's own
        BatchNorm statistics (DDP equalises the model's buffers only at each forward's start), so rank 1's differed
        from rank 0's, and a run restarted from a checkpoint (rank 0's buffers on every rank) evaluated its shards
        with other statistics than the uninterrupted run (loss 2.26389 vs 2.26386 in the issue's trial)."""
        if self.ema is None or not self.dist.enabled:
            return
        for buffer in self.ema.module.buffers():
            torch.distributed.broadcast(buffer, src=0)

    def fit(self) -> dict[str, float]:
        """Train from the current epoch to the last; returns the final evaluation metrics."""
        try:
            return self._fit()
        finally:
            self.stop_loader_workers()

    def stop_loader_workers(self) -> None:
        """End the loaders' persistent worker processes (a later loop starts new ones). Loader workers ignore
        SIGTERM (a preemption notice to the process group must not end them mid-step), so workers that outlive the
        run would block the interpreter's exit: multiprocessing ends them with SIGTERM and waits. A trainer that an
        exception's traceback (pytest, a notebook) keeps alive kept its workers alive until then."""
        for loader in (self.train_loader, self.eval_loader):
            iterator = getattr(loader, "_iterator", None)  # DataLoader's persistent-workers iterator
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
                loader._iterator = None

    def _fit(self) -> dict[str, float]:
        if self.dist.is_main:
            print(
                f"training {self.epochs - self.epoch} epochs x {self.iters_per_epoch} iterations, global batch "
                f"{self.global_batch} on {self.dist.world_size} x "
                f"{self.device.type}; work dir {self.work_dir}",
                flush=True,
            )
            atomic_write_text(self.work_dir / "meta.json", json.dumps(self.meta(), indent=2), "the run's meta data")
        metrics: dict[str, float] = {}
        if self.epoch >= self.epochs:  # resumed from the end of a finished run
            if self.dist.is_main:
                print(f"the run is complete ({self.epoch} of {self.epochs} epochs); evaluating its weights", flush=True)
            return self.evaluate() if self.eval_loader is not None else metrics
        while self.epoch < self.epochs:
            train_stats = self.train_one_epoch()
            self.epoch += 1
            self.epoch_step = 0
            metrics = {}
            if self.eval_loader is not None and (
                self.epoch % self.train_cfg["eval_interval"] == 0 or self.epoch == self.epochs
            ):
                metrics = self.evaluate()
                if self.dist.is_main:
                    self.eval_log.log({"epoch": self.epoch, "step": self.step, **metrics})
                    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                    print(
                        f"epoch {self.epoch}: train loss {train_stats['loss']:.4f}, {shown} "
                        f"({train_stats['images'] / train_stats['epoch_time_s']:.0f} img/s)",
                        flush=True,
                    )
            self.history.append({"epoch": self.epoch, **train_stats, **metrics})
            self.save(metrics or None)
            if self.dist.is_main and self.train_cfg["plot"]:
                try:
                    plot_run(self.work_dir)
                except Exception as err:  # a plot must never stop a long run
                    _logger.warning("could not plot the curves: %s", err)
            patience = self.train_cfg["early_stop_patience"]
            if patience and self.evals_since_best >= patience:
                if self.dist.is_main:
                    print(
                        f"early stop after epoch {self.epoch}: no better {self.best_key} than {self.best_metric:.4f} "
                        f"in {patience} evaluations",
                        flush=True,
                    )
                break
            if self.epoch < self.epochs and self._agree_to_stop():  # SIGTERM during the epoch's last step or eval
                raise TrainingPreempted(self._preempted_message())
        return metrics

    @staticmethod
    def resume_candidates(work_dir: str | Path, resume: str | None) -> list[Path]:
        """Checkpoints to resume from, in order of preference: for ``'auto'``, ``last.pth`` and then (should it be
        unreadable) ``epoch_N.pth`` and ``best.pth``, newest first; for a path, that file (which must exist)."""
        if not resume:
            return []
        if resume == "auto":
            work_dir = Path(work_dir)
            others = sorted(
                [*work_dir.glob("epoch_*.pth"), *work_dir.glob("best.pth")],
                key=lambda p: p.stat().st_mtime,
                reverse=True,
            )
            return [p for p in [work_dir / "last.pth", *others] if p.is_file()]
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"--resume {resume}: no such checkpoint")
        return [path]
