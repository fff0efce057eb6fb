"""Preemption-safe, elastic training: data that resumes mid-epoch, SIGTERM as a preemption notice, torchrun restarts.

* **Data position.** :class:`ResumableDistributedSampler` is torch's ``DistributedSampler`` (same permutation, same
  shards) that can start its next epoch after the samples a step checkpoint says were consumed, without reading
  them (resuming costs nothing however far into the epoch the checkpoint was written). It yields
  ``(index, seed)`` pairs; :class:`SampleSeeded` wraps the data set and seeds Python's, NumPy's and torch's CPU
  generators from that seed before each sample is read, so that a sample's augmentation depends on (train.seed,
  epoch, index) only: not on which loader worker reads it, how many workers there are, how many processes train or
  where in the epoch the run was resumed. In the main process (``num_workers=0``) the generators are restored
  afterwards, so the model's random stream (dropout) is not touched by data loading.
* **Preemption notice.** :func:`preemption_handler` turns SIGTERM (what schedulers and spot machines send) into a
  request that the trainer honours at the next optimiser step's end: every rank agrees on it (one tiny all-reduce per
  step, only while the handler is installed), the checkpoint of that step is written and the tool exits with
  :data:`PREEMPTED_EXIT_CODE`. Loader workers ignore SIGTERM (torchrun signals a worker's whole process group);
  they end with their main process.
* **Restarts.** torchrun sets ``TORCHELASTIC_RESTART_COUNT`` (> 0 from the first restart on): the tools then resume
  from the work dir by themselves (:func:`restart_count`, ``engine/cli.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, get_worker_info

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "ResumableDistributedSampler",
    "SampleSeeded",
    "TrainingPreempted",
    "preemption_handler",
    "process_exits_on_stop",
    "restart_count",
    "sample_seed",
    "stop_requested",
]

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: what a shell reports for a process that SIGTERM ended


class TrainingPreempted(Exception):
    """SIGTERM arrived; every rank finished its step and the checkpoint of that step was written."""


def restart_count() -> int:
    """How often torchrun has restarted this worker group (0: the first attempt, or no torchrun)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


# ------------------------------------------------------------------------------------------------ data position
def sample_seed(seed: int, epoch: int, index: int, copy: int = 0) -> int:
    """The seed of sample ``index``'s augmentation in ``epoch`` of a run with ``train.seed=seed``: a hash of the
    three (BLAKE2b), so that no two (epoch, index) pairs share a seed by arithmetic. A linear formula did: its low
    32 bits, which seed NumPy, repeated sample i's numbers of epoch e for sample i + 2 in epoch e + 2. ``copy``:
    which of a repeated sample's copies (repeated augmentation), each augmented differently."""
    key = f"{seed}/{epoch}/{index}" + (f"/{copy}" if copy else "")
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**63)


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled) whose next epoch can start after ``start`` of this rank's samples and which
    yields ``(index, sample_seed)`` pairs for :class:`SampleSeeded`.

    Rank r's micro-batch m holds the permutation's samples ``[m * B * W, (m + 1) * B * W)`` that are congruent to r
    (B the micro-batch, W the world size), so optimiser step s consumes the permutation's ``[s * G, (s + 1) * G)``
    whatever the split of the global batch G over processes and accumulation: skipping ``s * G / W`` samples on
    every rank continues the epoch exactly, also with another number of processes.

    With ``repeats`` > 1 (repeated augmentation, Hoffer et al. 2020; DeiT's and timm's ``RepeatAugSampler``) an
    epoch holds ``len(dataset)`` samples as before, drawn as ``len(dataset) / repeats`` images each ``repeats``
    times in a row (so on several processes and in one batch), each copy with its own augmentation seed.
    """

    def __init__(
        self, dataset: Any, num_replicas: int, rank: int, seed: int = 0, drop_last: bool = True, repeats: int = 1
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
        if repeats < 1:
            raise ValueError(f"train.repeated_aug={repeats} must be at least 1 (1: no repeated augmentation)")
        self.start, self.repeats = 0, repeats

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this rank's shard in the next ``__iter__`` only."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"cannot start an epoch of {self.num_samples} samples per process at sample {start}")
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, self.start = self.start, 0  # read when the loader's iterator asks for the first batch
        if self.repeats == 1:
            indices = list(super().__iter__())[start:]
            return iter([(index, sample_seed(self.seed, self.epoch, index)) for index in indices])
        generator = torch.Generator().manual_seed(self.seed + self.epoch)  # DistributedSampler's permutation
        order = torch.randperm(len(self.dataset), generator=generator).tolist()
        copies = [(index, copy) for index in order for copy in range(self.repeats)][: len(self.dataset)]
        copies = copies[: self.total_size] if self.drop_last else (copies * -(-self.total_size // len(copies)))
        shard = copies[: self.total_size][self.rank : self.total_size : self.num_replicas][start:]
        return iter([(index, sample_seed(self.seed, self.epoch, index, copy)) for index, copy in shard])


def _seed_generators(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)  # the CPU generator only: CUDA's belongs to the model


# The seed of the sample SampleSeeded served last in this process (a loader worker, or the main process): a batch's
# collate function (mixup) seeds its own draws from it, so that they follow the batch, not the process it runs in.
_LAST_SAMPLE_SEED: list[int | None] = [None]


def last_sample_seed() -> int | None:
    """The augmentation seed of the last sample :class:`SampleSeeded` served in this process (None: none yet)."""
    return _LAST_SAMPLE_SEED[0]


@contextlib.contextmanager
def seeded_generators(seed: int) -> Iterator[None]:
    """Python's, NumPy's and torch's CPU generators seeded from ``seed`` inside the block, restored after it."""
    saved = random.getstate(), np.random.get_state(), torch.default_generator.get_state()
    try:
        _seed_generators(seed)
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.default_generator.set_state(saved[2])


class SampleSeeded(Dataset):
    """Read ``dataset[index]`` for an ``(index, seed)`` pair with the generators seeded from ``seed`` (module
    docstring); in the main process the generators' states are restored afterwards."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        _LAST_SAMPLE_SEED[0] = seed
        if get_worker_info() is not None:  # a loader worker: its generators serve the data only
            _seed_generators(seed)
            return self.dataset[index]
        with seeded_generators(seed):
            return self.dataset[index]


def worker_ignores_sigterm(worker_id: int) -> None:
    """``worker_init_fn`` of the training loader: a SIGTERM sent to the process group (torchrun, srun) must reach
    the main process's preemption handler and not end the worker that its last step still needs."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# --------------------------------------------------------------------------------------------- preemption notice
_STOP = {"installed": False, "requested": False, "process_exits": False}


def stop_requested() -> bool:
    """Whether SIGTERM arrived since :func:`preemption_handler` was entered."""
    return _STOP["requested"]


def handler_installed() -> bool:
    return _STOP["installed"]


def request_stop(*_: Any) -> None:
    """What SIGTERM does under :func:`preemption_handler` (tests may call it directly)."""
    _STOP["requested"] = True


@contextlib.contextmanager
def preemption_handler() -> Iterator[None]:
    """Within the block, SIGTERM asks the trainer to stop after the current step with a checkpoint (raising
    :class:`TrainingPreempted`) instead of ending the process. SIGINT is left alone (Ctrl-C stops at once). Outside
    the main thread (where Python cannot install handlers) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, request_stop)
    _STOP.update(installed=True, requested=False)
    try:
        yield
    finally:
        # After a SIGTERM a tool's process is on its way to exit status 143 with its checkpoint written: a second
        # SIGTERM (schedulers and users repeat it) is ignored from here on, where the previous handler would end the
        # process with -15 before it exits. Called in-process (not through a tool's command line), the previous
        # handler comes back.
        ignore = _STOP["requested"] and _STOP["process_exits"]
        signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore else previous)
        _STOP.update(installed=False, requested=False)


@contextlib.contextmanager
def process_exits_on_stop() -> Iterator[None]:
    """Within the block, this process ends when a preemption stop is done (a tool's ``run_main``): a SIGTERM that
    follows the first is then ignored on the way out (see :func:`preemption_handler`)."""
    _STOP["process_exits"] = True
    try:
        yield
    finally:
        _STOP["process_exits"] = False
