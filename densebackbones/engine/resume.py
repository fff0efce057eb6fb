"""Resuming a run (``Trainer.resume``): the checkpoint's model, optimiser, schedule, scaler, EMA, RNG and position,
with a changed config applied or refused key by key. Apart from the training loop, which only reads the position
and running sums restored here."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import CheckpointError, load_checkpoint, set_rng_state
from .config import config_changes
from .optim import build_optimizer, build_scheduler

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["resume"]

# What a resumed run reads from a checkpoint (Trainer.state_dict writes them all).
_RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "model_ema", "epoch", "step", "best_metric", "rng")


def resume(trainer: Trainer, path: str | Path, state: dict[str, Any] | None = None) -> None:
    """Continue exactly where the checkpoint was written (model, optimiser, schedule, scaler, EMA, RNG, and for a
    step checkpoint the position in the epoch and its running sums). ``state``: the file's content if loaded.

    A config that differs from the checkpoint's (:func:`~densebackbones.engine.config.config_changes`) is applied
    or refused key by key, before anything is loaded (:func:`refuse_config_changes`): optimiser settings, the
    schedule, the epochs and the batch size take effect with the learning-rate schedule recomputed at the current
    position, everything else as it is read when the run is built; each change is printed."""
    state = load_checkpoint(path, map_location=trainer.device) if state is None else state
    if not isinstance(state, dict) or not {"model", "optimizer", "step"} <= set(state):
        raise CheckpointError(f"{path} is not a training checkpoint (weights only?); start from it: --pretrained")
    missing = [key for key in _RESUME_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} lacks {', '.join(missing)}, which resuming needs (written by another tool or an older "
            f"version?); start a new run from its weights with --pretrained {path}"
        )
    changes = config_changes(state["config"], trainer.cfg) if isinstance(state.get("config"), dict) else {}
    refuse_config_changes(trainer, changes, state, path)
    load_model_state(trainer, state, path, changes)
    trainer.optimizer.load_state_dict(state["optimizer"])
    saved_iters = (state.get("data") or {}).get("iters_per_epoch")
    steps_changed = saved_iters not in (None, trainer.iters_per_epoch)
    reschedule = steps_changed or any(key.startswith(("optimizer.", "schedule.")) for key in changes)
    if not reschedule:  # else rebuilt below (its state may be another kind of schedule's)
        trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    if trainer.ema is not None:
        # train.ema_decay set on resume: the average starts from the checkpoint's weights
        trainer.ema.module.load_state_dict(state["model_ema"] if state["model_ema"] is not None else state["model"])
    trainer.epoch, trainer.step, trainer.best_metric = state["epoch"], state["step"], state["best_metric"]
    trainer.evals_since_best = state.get("evals_since_best", 0)
    trainer.epoch_step = state.get("epoch_step", 0)
    if trainer.epoch_step:
        resume_position(trainer, state, path)
    rng = state["rng"]
    set_rng_state(rng[trainer.dist.rank] if trainer.dist.rank < len(rng) else rng[0])
    trainer._resumed = True
    saved_step = trainer.step
    rescheduled = recompute_schedule(trainer, saved_iters if steps_changed else None) if reschedule else ""
    if trainer.dist.is_main:
        dropped = trainer.train_log.drop_rows_after(saved_step) + trainer.eval_log.drop_rows_after(saved_step)
        extra = f"; dropped {dropped} log row(s) written after that step" if dropped else ""
        where = f" ({trainer.epoch_step} steps into epoch {trainer.epoch + 1})" if trainer.epoch_step else ""
        print(f"resumed from {path}: epoch {trainer.epoch}, step {saved_step}{where}{extra}", flush=True)
        if changes:
            shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
            if trainer.epoch >= trainer.epochs:  # only evaluated: the changes touch nothing trained
                print(f"config changes since that checkpoint (the run is complete; nothing trains): {shown}")
            else:
                print(f"config changes since that checkpoint take effect: {shown}{rescheduled}", flush=True)


def refuse_config_changes(trainer: Trainer, changes: dict[str, tuple[Any, Any]], state: dict[str, Any], path) -> None:
    """One error naming the key for a change a resumed run cannot honour: fewer epochs or steps than trained,
    another optimiser (its state is another's) or other classes (compared by name: a renamed or reordered class
    folder would train row 0 of the classifier as another class)."""
    done, steps_done = state["epoch"], state["step"]
    if trainer.max_iters and trainer.max_iters < steps_done:
        raise ValueError(
            f"cannot resume {path} with schedule.max_iters={trainer.max_iters}: it has trained {steps_done} steps "
            f"already; pass schedule.max_iters={steps_done} or more (evaluate it with the eval tool instead)"
        )
    if not trainer.max_iters and trainer.epochs < done:
        raise ValueError(
            f"cannot resume {path} with schedule.epochs={trainer.epochs}: it has trained {done} epochs already; pass "
            f"schedule.epochs={done} or more (evaluate it with the eval tool instead)"
        )
    for key in ("optimizer.type", "optimizer.decay_norm_and_bias"):  # the state's kind, or its parameter groups
        if key in changes and not (key.endswith("bias") and changes[key][0] is None and changes[key][1]):
            old, new = changes[key]
            raise ValueError(
                f"cannot resume {path} with {key}={new!r}: its optimiser state is that of {old!r}. Resume with "
                f"--cfg-options {key}={old!r}, or start a new run from its weights: --pretrained {path}"
            )
    theirs = (state.get("meta") or {}).get("classes")
    ours = trainer.extra_meta.get("classes")
    if theirs is not None and ours is not None and list(theirs) != list(ours):
        gone = [c for c in theirs if c not in ours]
        new = [c for c in ours if c not in theirs]
        if gone or new:
            what = f"{gone} are gone" if gone else ""
            what += (" and " if gone and new else "") + (f"{new} are new" if new else "")
        else:
            moved = next(i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b)
            what = f"the same names in another order (class {moved} was {theirs[moved]!r}, is {ours[moved]!r})"
        raise ValueError(
            f"cannot resume {path}: data.classes differ from the {len(theirs)} classes it was trained on "
            f"({what}); its classifier's rows would train other classes. Restore the class names of that run "
            f"(folders, classes.txt or annotation file), or start a new run from its weights with --pretrained "
            f"{path} (a new classifier for the new classes)"
        )


def recompute_schedule(trainer: Trainer, old_iters_per_epoch: int | None) -> str:
    """Changed optimiser settings, schedule, epochs or batch size: the loaded optimiser takes the config's
    hyperparameters (its momentum buffers stay) and the learning-rate schedule is rebuilt from the config and
    stepped to the current position, so that the run continues on the schedule a fresh run of this config would
    follow. ``old_iters_per_epoch``: the checkpoint's steps per epoch where another batch size changed them; the
    step count is then recounted from the completed epochs (steps after the resume are steps of the new batch).
    Returns what to add to the printed changes."""
    if old_iters_per_epoch is not None and not trainer.max_iters:
        trainer.step = trainer.epoch * trainer.iters_per_epoch + trainer.epoch_step
    fresh = build_optimizer(trainer.model, trainer.cfg["optimizer"], trainer.global_batch)
    for group, new in zip(trainer.optimizer.param_groups, fresh.param_groups):
        group.update({key: value for key, value in new.items() if key != "params"})
        group.pop("initial_lr", None)  # the new schedule starts from the config's rate
    trainer.scheduler = build_scheduler(
        trainer.optimizer, dict(trainer.cfg["schedule"], epochs=trainer.epochs), trainer.iters_per_epoch
    )
    with warnings.catch_warnings():  # "step() before optimizer.step()": these steps replay the schedule only
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(trainer.step):
            trainer.scheduler.step()
    recount = f", {trainer.iters_per_epoch} steps per epoch, were {old_iters_per_epoch}" if old_iters_per_epoch else ""
    return (
        f" (learning-rate schedule recomputed at step {trainer.step}{recount}: "
        f"lr {trainer.optimizer.param_groups[0]['lr']:.6g})"
    )


def resume_position(trainer: Trainer, state: dict[str, Any], path: str | Path) -> None:
    """A step checkpoint's data position and the epoch's running sums (see ``ResumableDistributedSampler``:
    the position carries over to another number of processes when the global batch is the same)."""
    data = state["data"]
    global_batch = trainer.global_batch
    if data["global_batch"] != global_batch or data["seed"] != trainer.train_sampler.seed:
        raise ValueError(
            f"{path} was written {trainer.epoch_step} steps into an epoch with global batch {data['global_batch']} "
            f"and train.seed={data['seed']}; this run has {global_batch} and {trainer.train_sampler.seed}. Resume "
            f"mid-epoch with the same data.batch_size and train.seed (or from an epoch's checkpoint)"
        )
    if trainer.epoch_step >= trainer.iters_per_epoch:
        raise ValueError(
            f"{path} is {trainer.epoch_step} steps into an epoch, but this run's epochs have {trainer.iters_per_epoch}"
        )
    loops = state["loop"]
    if len(loops) == trainer.dist.world_size:
        loop = dict(loops[trainer.dist.rank])
    else:  # another number of processes: the sums (averaged over ranks when logged) go to rank 0
        scale = trainer.dist.world_size / len(loops)
        loop = {
            "loss_sum": sum(x["loss_sum"] for x in loops) * scale if trainer.dist.is_main else 0.0,
            "window_loss": sum(x["window_loss"] for x in loops) * scale if trainer.dist.is_main else 0.0,
            "window_grad_norm": max(x["window_grad_norm"] for x in loops),
            "window_count": loops[0]["window_count"],
            "images_seen": sum(x["images_seen"] for x in loops) // trainer.dist.world_size,
        }
    trainer._resumed_loop = loop


def load_model_state(
    trainer: Trainer, state: dict[str, Any], path: str | Path, changes: dict[str, tuple[Any, Any]] | None = None
) -> None:
    """The checkpoint's model weights, or one message naming both architectures when they are another's."""
    ours = trainer.model.state_dict()
    theirs = state["model"]
    missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    shapes = [k for k in set(ours) & set(theirs) if tuple(ours[k].shape) != tuple(theirs[k].shape)]
    if missing or unexpected or shapes:
        their_model = ((state.get("config") or {}).get("model")) or {}
        our_model = trainer.cfg.get("model") or {}
        model_keys = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in (changes or {}).items() if k.startswith("model.")]
        changed = f"; changed since: {', '.join(model_keys)}" if model_keys else ""
        raise ValueError(
            f"{path} holds another architecture: it was written by a run of model {their_model or '(unknown)'}, "
            f"this run builds {our_model} ({len(missing)} weights missing, {len(unexpected)} unexpected, "
            f"{len(shapes)} of another shape{changed}). Resume with the config of the run that wrote it, or start "
            f"from its weights with --pretrained {path}"
        )
    trainer.model.load_state_dict(theirs)
