"""Fault injection for the tests, as a training step event: ``train.hooks=['helpers.faults:FaultInjection']`` with
the tests folder on ``PYTHONPATH`` (densebackbones/engine/events.py). The library holds no test code: the faults
exist here only.

``DENSEBACKBONES_TEST_FAULT="kill@STEP[:RANK]"`` (or ``term@``, ``int@``) makes the process of that rank (every rank
without one) send itself SIGKILL (SIGTERM, SIGINT) right after optimiser step STEP; ``kill@saveSTEP`` during the
checkpoint write after that step (rank 0: its temporary file is complete and not yet renamed; other ranks: while
rank 0 writes); ``fill@STEP`` fills the work dir's file system (refused on one over 512 MiB: a test's tmpfs only).
Only in the first attempt of a run (not after a resume or a torchrun restart).
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from densebackbones.engine.elastic import restart_count
from densebackbones.engine.events import EpochLoop, StepEvent

FAULT_ENV = "DENSEBACKBONES_TEST_FAULT"
FAULT_BALLAST = ".fault_ballast"  # the file that ``fill`` writes into the work dir (a test removes it: space returns)
FAULT_HOOK = "train.hooks=['helpers.faults:FaultInjection']"  # the --cfg-options entry that installs the event
_FAULTS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT, "fill": None}


class FaultInjection(StepEvent):
    """The fault ``DENSEBACKBONES_TEST_FAULT`` names, at its step (module docstring); nothing when it is unset."""

    def after_step(self, trainer, loop: EpochLoop) -> None:
        inject_fault(trainer.step, trainer.dist.rank, trainer._resumed, "", trainer.work_dir)

    def while_saving(self, trainer) -> None:
        inject_fault(trainer.step, trainer.dist.rank, trainer._resumed, "save", trainer.work_dir)


def inject_fault(step: int, rank: int, resumed: bool, moment: str = "", work_dir: str | Path | None = None) -> None:
    """``moment``: ``""`` right after optimiser step ``step``, ``"save"`` during the checkpoint write that follows
    it; ``work_dir``: the file system that ``fill`` fills."""
    spec = os.environ.get(FAULT_ENV)
    if not spec or resumed or restart_count() > 0:
        return
    kind, _, where = spec.partition("@")
    at, _, on_rank = where.partition(":")
    at_moment = at.rstrip("0123456789")
    if kind not in _FAULTS or at_moment not in ("", "save") or not at[len(at_moment) :].isdigit():
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected KIND@[save]STEP[:RANK], KIND one of {', '.join(_FAULTS)}")
    if at_moment != moment or step != int(at[len(at_moment) :]) or (on_rank and int(on_rank) != rank):
        return
    when = f"after step {step}" if not moment else f"while the checkpoint of step {step} is written"
    if kind == "fill":
        print(f"{FAULT_ENV}: rank {rank} fills the file system of {work_dir} {when}", flush=True)
        _fill_file_system(Path(work_dir if work_dir is not None else "."))
        return
    print(f"{FAULT_ENV}: rank {rank} sends itself SIG{kind.upper()} {when}", flush=True)
    os.kill(os.getpid(), _FAULTS[kind])  # Python runs a SIGINT/SIGTERM handler before the next bytecode


def _fill_file_system(folder: Path) -> None:
    """Write ``folder/.fault_ballast`` until the disk is full; only on a small file system (a test's tmpfs)."""
    total = shutil.disk_usage(folder).total
    if total > 512 * 2**20:
        raise ValueError(
            f"{FAULT_ENV}=fill@...: {folder} is on a {total / 2**30:.1f} GiB file system; fill only a test's"
        )
    fd = os.open(folder / FAULT_BALLAST, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    try:
        for size in (2**20, 2**12, 1):
            chunk = b"\0" * size
            try:
                while os.write(fd, chunk):
                    pass
            except OSError:  # ENOSPC: the next, smaller chunk fills what is left
                continue
    finally:
        os.close(fd)
